// spilled_value.h — a value of the embedded object store that did not fit and went to a file.
//
// A put() whose value does not fit in the store's capacity is serialized into a file of the
// store's spill directory (StoreAccount::spill_file) instead of being refused; its entry is done
// as kRemote with a SpilledValue as its RemoteValue, as a value that lives on another node is.
// The first reader (get, a task's argument) reads the file back and builds the value
// (RemoteValue::materialize): the entry is then kReady, its bytes counted in the store (beyond
// its capacity if need be, as a task result's are) until the entry goes, and its file with it.
//
// Thread-safe: readers of one entry share one restore (mu_).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "object_store/store_account.h"
#include "prism/internal/object_entry.h"
#include "prism/internal/thread_annotations.h"

namespace prism::internal {

class SpilledValue final : public RemoteValue {
 public:
  SpilledValue(std::shared_ptr<StoreAccount> store, std::string path, uint64_t bytes)
      : store_(std::move(store)), path_(std::move(path)), bytes_(bytes) {}
  ~SpilledValue() override;
  void fetch(ObjectEntry* entry, std::chrono::steady_clock::time_point deadline) override;
  uint64_t size() const noexcept override { return bytes_; }

 private:
  const std::shared_ptr<StoreAccount> store_;
  const std::string path_;
  const uint64_t bytes_;
  Mutex mu_;  // one restore at a time
  std::shared_ptr<void> restored_ PRISM_GUARDED_BY(mu_);  // its bytes in the store, once read back
};

}  // namespace prism::internal
