// expect: unresolved overloaded function|couldn't infer template argument|reference to overloaded function
// An overloaded name has no single type: the compiler says so (Prism cannot see it); pick one
// overload with static_cast<int (*)(int)>(scale).
#include <prism/prism.h>

int scale(int x) { return 2 * x; }
double scale(double x) { return 2 * x; }

int main() { prism::task(scale).remote(1); }
