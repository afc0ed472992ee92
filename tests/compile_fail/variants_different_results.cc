// expect: prism::variants: every variant must return the same type
// Two implementations of one function that disagree on the result type.
#include <prism/prism.h>

int on_cpu(int x) { return x; }
double on_gpu(int x) { return x; }

int main() { prism::task(prism::variants(on_cpu, on_gpu)).remote(1); }
