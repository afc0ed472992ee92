// spilled_value.cc — see spilled_value.h.
#include "object_store/spilled_value.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "prism/errors.h"

namespace prism::internal {

SpilledValue::~SpilledValue() {
  ::unlink(path_.c_str());
  store_->count_unspilled(bytes_);
}

void SpilledValue::fetch(ObjectEntry* entry, std::chrono::steady_clock::time_point) {
  MutexLock lock(mu_);
  if (entry->state() != ObjState::kRemote) return;  // restored by another reader
  std::string bytes(bytes_, '\0');
  const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  size_t got = 0;
  int err = 0;
  if (fd < 0) {
    err = errno;
  } else {
    while (got < bytes.size()) {
      const ssize_t n = ::read(fd, bytes.data() + got, bytes.size() - got);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        err = n < 0 ? errno : EIO;
        break;
      }
      got += static_cast<size_t>(n);
    }
    ::close(fd);
  }
  if (err != 0) {
    throw ObjectLostError(ErrorCode::kUnavailable, "a spilled value cannot be read back from " +
                                                       path_ + ": " + std::strerror(err));
  }
  store_->count_restored(bytes_);
  // In memory again: counted in the store (beyond its capacity if need be, as a task result),
  // for as long as this record lives, which is the entry's life. (Kept here rather than
  // attach()ed to the entry: another reader may be reading this record through the entry.)
  restored_ = store_->reserve(bytes_, /*enforce_capacity=*/false);
  materialize(entry, bytes);
}

}  // namespace prism::internal
