// expect: the callable cannot be called with these arguments
// An argument of a type the parameter cannot be made from.
#include <prism/prism.h>

#include <string>

int length(const std::string& s) { return static_cast<int>(s.size()); }

int main() { prism::task(length).remote(42); }
