// expect: a parameter of a move-only type
// A move-only parameter taken by value: the task keeps its arguments and passes const A&.
#include <prism/prism.h>

#include <memory>

int take(std::unique_ptr<int> p) { return *p; }

int main() { prism::task(take).remote(std::make_unique<int>(1)); }
