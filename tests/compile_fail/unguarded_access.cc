// expect: requires holding mutex
// clang only: -Wthread-safety -Werror=thread-safety rejects a guarded member used without its lock.
#include "prism/internal/thread_annotations.h"

class Account {
 public:
  void deposit(int n) {
    prism::internal::MutexLock lock(mu_);
    balance_ += n;
  }
  int peek() const { return balance_; }  // no lock: the analysis must reject this

 private:
  mutable prism::internal::Mutex mu_;
  int balance_ PRISM_GUARDED_BY(mu_) = 0;
};

int main() { return Account().peek(); }
