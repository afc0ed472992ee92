// expect: takes a different number of arguments than were given
// Default arguments do not apply when a function is called through a pointer.
#include <prism/prism.h>

int add(int a, int b = 2) { return a + b; }

int main() { prism::task(add).remote(1); }
