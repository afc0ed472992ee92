#include "object_store/store_account.h"

#include "object_store/spill_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "prism/errors.h"

namespace prism::internal {

StoreAccount::~StoreAccount() {
  MutexLock lock(spill_mu_);
  if (spill_dir_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(spill_dir_, ec);  // (every file of a freed value is gone already)
}

std::string StoreAccount::spill_file(const std::string& bytes) {
  std::string path;
  {
    MutexLock lock(spill_mu_);
    if (spill_dir_.empty()) {
      try {
        spill_dir_ = make_spill_dir(spill_root(), "prism-store");
      } catch (const std::exception& e) {
        throw ObjectStoreFullError(e.what());
      }
    }
    path = spill_dir_ + "/" + std::to_string(++next_file_);
  }
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    throw ObjectStoreFullError("the spill file " + path + " cannot be created: " +
                               std::strerror(errno));
  }
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : ENOSPC;
      ::close(fd);
      ::unlink(path.c_str());
      throw ObjectStoreFullError("spilling to " + path + " failed: " + std::strerror(err));
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  ::close(fd);
  spilled_.fetch_add(bytes.size(), std::memory_order_relaxed);
  return path;
}

std::shared_ptr<void> StoreAccount::reserve(size_t bytes, bool enforce_capacity) {
  const auto n = static_cast<int64_t>(bytes);
  if (enforce_capacity) {
    int64_t used = used_.load(std::memory_order_relaxed);
    do {
      if (n > capacity_ - used) return nullptr;
    } while (!used_.compare_exchange_weak(used, used + n, std::memory_order_relaxed));
  } else {
    used_.fetch_add(n, std::memory_order_relaxed);
  }
  objects_.fetch_add(1, std::memory_order_relaxed);
  std::shared_ptr<StoreAccount> self = shared_from_this();
  return std::shared_ptr<void>(static_cast<void*>(this), [self, n](void*) {
    self->used_.fetch_sub(n, std::memory_order_relaxed);
    self->objects_.fetch_sub(1, std::memory_order_relaxed);
  });
}

}  // namespace prism::internal
