#include "history.h"

namespace prism::dashboard {

void History::add(const Sample& s) {
  internal::MutexLock lock(mu_);
  if (samples_.size() < capacity_) {
    samples_.push_back(s);
    return;
  }
  samples_[next_] = s;
  next_ = next_ + 1 == capacity_ ? 0 : next_ + 1;
}

std::vector<Sample> History::snapshot() const {
  internal::MutexLock lock(mu_);
  std::vector<Sample> out;
  out.reserve(samples_.size());
  out.insert(out.end(), samples_.begin() + static_cast<std::ptrdiff_t>(next_), samples_.end());
  out.insert(out.end(), samples_.begin(), samples_.begin() + static_cast<std::ptrdiff_t>(next_));
  return out;
}

}  // namespace prism::dashboard
