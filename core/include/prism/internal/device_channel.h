// prism/internal/device_channel.h — a direct path between the GPUs of two processes, for results
// kept live on a GPU (remote_call.h, LiveResult): NCCL send/recv on the CUDA backend. The
// cluster transport uses it to answer a pull of a kept GPU result whose reader runs on a GPU of
// the other node; only the GPU module knows devices, and registers the factory.
//
// Communicators: one per ordered pair of GPUs (this process's `device` sending to the peer's
// `peer_device`), so each carries one direction only and its sends and receives cannot wait on
// each other. The sender creates it on the first transfer and hands the receiver its id with the
// offer; both sides join on a thread of the communicator's own, which then runs its transfers one
// at a time in the order of their `seq` (the sender's order, whatever order the offers arrive in).
// A communicator that fails (cannot be joined, a transfer fails or is refused by the receiving
// side, a transfer it waits for is never offered, its peer is forgotten) is aborted for good:
// what is queued on it fails, and that side takes no more on it (the caller uses the staged
// path). The sending side is not told of a refusal: its transfer fails when its peer's side of
// the communicator goes, or at its deadline.
//
// Not for users.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "prism/internal/remote_call.h"

namespace prism::internal {

class DeviceChannels {
 public:
  virtual ~DeviceChannels() = default;  // aborts every communicator; joins their threads

  // What moves the bytes (1: NCCL; 2: loopback sockets between logical GPUs, for tests): both
  // ends of a transfer must have the same.
  virtual uint8_t kind() const noexcept = 0;
  // Whether GPU `device` of this process can send or receive on a channel.
  virtual bool usable(int device) const noexcept = 0;

  // The sending side: transfer number `seq` of communicator `comm` (ids this process gives;
  // `id` is not empty when the communicator is new: the receiver joins it with that).
  struct Offer {
    uint64_t comm = 0;
    uint64_t seq = 0;
    std::string id;
  };
  // Queues the transfer of `value` (a LiveResult's value of type `tag`, kept on GPU `device`) to
  // GPU `peer_device` of `peer` (a number the caller gives each connection, never reused). The
  // transfer runs on the communicator's thread, after its contents are complete (no host wait
  // for the producer); `done` is called there when it ended ("" or why it failed). Returns
  // comm == 0 when it cannot go this way (the communicator failed earlier, the value is not one
  // this channel moves): nothing was queued and `done` is not called.
  using SendDone = std::function<void(const std::string& error)>;
  virtual Offer send(uint64_t peer, std::shared_ptr<void> value, const void* tag, int device,
                     int peer_device, SendDone done) = 0;

  // The receiving side: `offer` of `peer` (with the value's stub, LiveResult-style: what its
  // reader here needs to know of it) lands on GPU `device`. `done` is called on the
  // communicator's thread with the value made live here (`live` and its `stub`), or null and
  // why not.
  using ReceiveDone =
      std::function<void(LiveResult* live, std::string* stub, const std::string& error)>;
  virtual void receive(uint64_t peer, const Offer& offer, std::string_view stub, int device,
                       ReceiveDone done) = 0;

  // `peer` is gone: its communicators are aborted and what is queued on them fails.
  virtual void forget(uint64_t peer) noexcept = 0;

  // The staged path's receiving end, pipelined: a value kept on another node's GPU, pulled as
  // bytes in parts for a GPU call here (no channel between the two), lands on GPU `device` part
  // by part, each part's upload running on a thread of the channels' own while the next part
  // arrives, and is kept there as a received value is.
  class Landing {
   public:
    virtual ~Landing() = default;  // (unfinished: its uploads queued are dropped)
    // The part at `offset` of the value's serialized form (parts come in order, each written
    // once); `data` stays valid while `keep` lives. Throws prism::Error if it is not the next.
    virtual void write(uint64_t offset, std::string_view data, std::shared_ptr<const void> keep) = 0;
    // After the last part: `done` as for receive(), on the landing thread.
    virtual void finish(ReceiveDone done) = 0;
  };
  // A landing for a value of `total` bytes whose first part is `head`; null when it is not one
  // this lands (a value that is not a whole tensor, or no such GPU).
  virtual std::unique_ptr<Landing> land(std::string_view head, uint64_t total, int device) = 0;
  // Every communicator is aborted and its thread joined (what was queued fails); from then on
  // send() offers nothing and receive() refuses. The destructor does it too.
  virtual void close() noexcept = 0;
};

// New channels for one cluster link (null: the GPU module is not linked). kind() is 0 when this
// process has no transport between GPUs (values kept on a GPU then travel staged through host
// memory, landing on GPUs with land()). Set by the GPU module when it is linked.
using DeviceChannelsFactory = std::unique_ptr<DeviceChannels> (*)();
void set_device_channels_factory(DeviceChannelsFactory factory) noexcept;
std::unique_ptr<DeviceChannels> make_device_channels();

}  // namespace prism::internal
