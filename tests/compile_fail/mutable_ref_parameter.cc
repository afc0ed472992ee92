// expect: a parameter is a non-const reference
// A task function that takes its argument by non-const reference.
#include <prism/prism.h>

void bump(int& x) { ++x; }

int main() {
  int v = 1;
  prism::task(bump).remote(v);
}
