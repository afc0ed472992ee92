// expect: use prism::get_shared\(ref\)
// get() returns a copy: a move-only result must be read with get_shared().
#include <prism/prism.h>

#include <memory>

std::unique_ptr<int> make() { return std::make_unique<int>(7); }

int main() {
  auto r = prism::task(make).remote();
  auto v = prism::get(r);
}
