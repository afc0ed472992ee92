// expect: a parameter is a non-const reference
// The same diagnosis for actor methods.
#include <prism/prism.h>

struct Counter {
  void add_into(int& out) { out += n; }
  int n = 1;
};

int main() {
  auto c = prism::actor<Counter>().remote();
  int out = 0;
  c.task(&Counter::add_into).remote(out);
}
