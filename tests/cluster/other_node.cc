// A node binary that is not the test binary: it registers other functions, so the driver must
// refuse it at join (the binary fingerprint). Exits non-zero when refused.
#include <cstdio>
#include <cstdlib>

#include <prism/prism.h>

namespace {
int unrelated(int x) { return x * 3; }
PRISM_REMOTE(unrelated);
}  // namespace

int main() {
  try {
    prism::serve();  // joins (PRISM_ADDRESS) and never returns, unless refused (throws)
  } catch (const std::exception& e) {
    std::fprintf(stderr, "other_node: %s\n", e.what());
    return 3;
  }
  std::fprintf(stderr, "other_node: not started as a node\n");
  return 2;
}
