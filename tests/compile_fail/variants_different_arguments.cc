// expect: prism::variants: every variant must accept the arguments the first one accepts
// The GPU implementation takes another argument type than the CPU one.
#include <prism/prism.h>
#include <string>

int on_cpu(int x) { return x; }
int on_gpu(const std::string& s) { return static_cast<int>(s.size()); }

int main() { prism::task(prism::variants(on_cpu, on_gpu)).remote(1); }
