// The GPU module's side of prism/internal/device_channel.h: channels between the GPUs of two
// processes, each a communicator of two ranks (rank 0 sends, rank 1 receives) with a thread of
// its own, made by a PairTransport:
//  * NCCL (cuda/nccl_pairs.cc), on the CUDA backend: libnccl.so.2 is loaded when first needed
//    (so a program without it, or without a GPU, runs as before, staged). NEVER EXECUTED in this
//    project's CI (no GPU there): only its loading and unique ids are tested (NcclPairs tests).
//  * loopback sockets (host/socket_pairs.cc), between logical GPUs of the host backend, when
//    PRISM_DEVICE_CHANNEL=sockets: what runs the channel protocol (offers, joins, ordering,
//    failures) in the tests here, in place of NCCL.
// PRISM_DEVICE_CHANNEL=none turns channels off (every GPU value crosses staged).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "prism/gpu/tensor.h"
#include "prism/internal/device_channel.h"

namespace prism::gpu::internal {

// When a channel operation gives up: the channel is being torn down (`abort`) or its deadline
// passed (PRISM_DEVICE_CHANNEL_TIMEOUT_S per join and per transfer, default 60 s).
struct Stop {
  const std::atomic<bool>* abort = nullptr;
  std::chrono::steady_clock::time_point deadline;
  bool due() const noexcept {
    return (abort != nullptr && abort->load(std::memory_order_acquire)) ||
           std::chrono::steady_clock::now() >= deadline;
  }
  // Throws prism::Error (kUnavailable) saying why `what` stopped, if it is time to.
  void check(const char* what) const;
};

// One joined communicator, used by its channel's thread only. Its destructor aborts what is in
// flight and frees it.
class PairComm {
 public:
  virtual ~PairComm() = default;
  // Moves `bytes` at `data` (memory of GPU `device`) from rank 0 to rank 1, queued on `stream`
  // (of that device, after what is queued there already); returns when the transfer is complete
  // and throws prism::Error when it failed or `stop` came first (the communicator is then
  // unusable).
  virtual void send(const void* data, size_t bytes, int device, void* stream, const Stop& stop) = 0;
  virtual void recv(void* data, size_t bytes, int device, void* stream, const Stop& stop) = 0;
};

class PairTransport {
 public:
  virtual ~PairTransport() = default;
  virtual uint8_t kind() const noexcept = 0;  // (DeviceChannels::kind)
  virtual bool usable(int device) const noexcept = 0;
  // A new communicator's id (rank 0's side makes it; rank 1 joins with it).
  virtual std::string new_id() = 0;
  // Joins communicator `id` as `rank` on GPU `device`; returns once both ranks have joined, or
  // throws prism::Error.
  virtual std::unique_ptr<PairComm> join(const std::string& id, int rank, int device,
                                         const Stop& stop) = 0;
};

// The process's transport, chosen on first use as said above (null: none). Lives until exit.
PairTransport* pair_transport();
std::unique_ptr<PairTransport> make_socket_transport();
#ifdef PRISM_GPU_CUDA
// Null (and *why) when libnccl.so.2 cannot be loaded or lacks what is needed.
std::unique_ptr<PairTransport> make_nccl_transport(std::string* why);
#endif

// The dtype and shape that `stub` (a kept tensor's stub, Placement<Tensor>::write_stub) names;
// anything else is refused as a malformed value.
void read_stub(std::string_view stub, DType* dtype, std::vector<int64_t>* shape);
// The header of a tensor's serialized form (write_tensor) at the start of `head`: its dtype,
// shape, the header's size and the elements' byte count. False when `head` does not start with
// a whole header of a defined tensor.
bool read_wire_header(std::string_view head, DType* dtype, std::vector<int64_t>* shape,
                      uint64_t* header_bytes, uint64_t* element_bytes);

// Hands `t` (arrived on its GPU from another process; a handle, moved into the value) to `done`
// as a value kept live here, as a task's result is kept: its stub, the tensor beside it.
void deliver_live(Tensor t, const prism::internal::DeviceChannels::ReceiveDone& done);

// DeviceChannels over `transport` (which must outlive them), for tests; make_device_channels()
// uses pair_transport(), or no_transport() (kind 0: only landings) when there is none.
std::unique_ptr<prism::internal::DeviceChannels> make_channels(PairTransport& transport);
PairTransport& no_transport();

// Registers the factory (gpu_support.cc, when the module is linked).
void register_device_channels() noexcept;

}  // namespace prism::gpu::internal
