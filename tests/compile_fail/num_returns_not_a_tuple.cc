// expect: num_returns<N>\(\): the callable must return a std::tuple or std::pair
// num_returns<2>() on a function that returns one value.
#include <prism/prism.h>

int one() { return 1; }

int main() { auto [a, b] = prism::task(one).num_returns<2>().remote(); }
