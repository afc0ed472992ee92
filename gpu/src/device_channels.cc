#include "device_channels.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "backend.h"
#include "common/event.h"
#include "common/log.h"
#include "device_context.h"
#include "prism/errors.h"
#include "prism/internal/thread_annotations.h"
#include "storage.h"

namespace prism::gpu::internal {

using prism::internal::LiveResult;
using prism::internal::Mutex;
using prism::internal::MutexLock;

void Stop::check(const char* what) const {
  if (abort != nullptr && abort->load(std::memory_order_acquire)) {
    throw Error(ErrorCode::kUnavailable, std::string(what) + " was aborted (the channel closed)");
  }
  if (std::chrono::steady_clock::now() >= deadline) {
    throw Error(ErrorCode::kUnavailable,
                std::string(what) + " took longer than PRISM_DEVICE_CHANNEL_TIMEOUT_S");
  }
}

namespace {

std::chrono::steady_clock::duration channel_timeout() {
  static const double seconds = [] {
    const char* v = std::getenv("PRISM_DEVICE_CHANNEL_TIMEOUT_S");
    const double s = v != nullptr ? std::atof(v) : 0;
    return s > 0 ? s : 60.0;
  }();
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(seconds));
}

// One communicator and the thread that joins it and runs its transfers.
// Invariants: jobs_, next_, broken_ and closing_ are under mu_. The thread runs job `next_`
// (from 1, one at a time, mu_ released while it runs) and calls each job's `done` exactly once:
// "" after its transfer, or why not. Once broken_ is set (the join or a transfer failed, or
// abort()), every job queued, or queued later, is done with that reason, and the communicator is
// destroyed (aborted) by the thread, the only one that touches it. The destructor aborts, wakes
// the thread and joins it: a transfer in flight gives up at its next check of abort_.
class Channel {
 public:
  using Run = std::function<void(PairComm&, const Stop&)>;  // throws when it failed
  using Done = std::function<void(const std::string& error)>;

  Channel(PairTransport& transport, std::string id, int rank, int device)
      : transport_(transport), id_(std::move(id)), rank_(rank), device_(device) {
    thread_ = std::thread([this] { loop(); });
  }
  ~Channel() {
    abort("the channel was closed");
    {
      MutexLock lock(mu_);
      closing_ = true;
    }
    wake();
    thread_.join();
  }
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  int device() const noexcept { return device_; }

  // Queues the next transfer in order (the sending side); 0: broken, nothing queued.
  uint64_t queue_next(Run run, Done done) {
    uint64_t seq = 0;
    {
      MutexLock lock(mu_);
      if (!broken_.empty()) return 0;
      seq = next_free_++;
      jobs_.emplace(seq, Job{std::move(run), std::move(done)});
    }
    wake();
    return seq;
  }
  // Queues transfer `seq` (the receiving side: the sender's order). Returns why not if broken
  // or `seq` was queued before (then `done` is not called).
  std::string queue_at(uint64_t seq, Run run, Done done) {
    {
      MutexLock lock(mu_);
      if (!broken_.empty()) return broken_;
      if (seq < next_ || jobs_.count(seq) != 0) {
        return "transfer " + std::to_string(seq) + " was offered twice";
      }
      jobs_.emplace(seq, Job{std::move(run), std::move(done)});
    }
    wake();
    return {};
  }
  bool broken() const {
    MutexLock lock(mu_);
    return !broken_.empty();
  }
  void abort(const std::string& why) noexcept {
    abort_.store(true, std::memory_order_release);
    {
      MutexLock lock(mu_);
      if (broken_.empty()) broken_ = why;
    }
    wake();
  }

 private:
  struct Job {
    Run run;
    Done done;
  };

  void wake() noexcept {
    word_.fetch_add(1, std::memory_order_release);
    prism::internal::futex_wake_all(&word_);
  }

  void loop() noexcept {
    std::unique_ptr<PairComm> comm;
    for (;;) {
      const uint32_t seen = word_.load(std::memory_order_acquire);
      std::vector<Job> failed;
      std::string why;
      Job job;
      bool closing = false;
      {
        MutexLock lock(mu_);
        if (!broken_.empty()) {
          why = broken_;
          for (auto& [seq, j] : jobs_) failed.push_back(std::move(j));
          jobs_.clear();
        } else if (auto it = jobs_.find(next_); it != jobs_.end()) {
          job = std::move(it->second);
          jobs_.erase(it);
          ++next_;
        }
        closing = closing_;
      }
      if (!why.empty()) comm.reset();  // (aborts it)
      for (Job& j : failed) finish(j, why);
      if (job.run) {
        run(job, &comm);
        continue;
      }
      if (closing) return;
      prism::internal::futex_wait(&word_, seen, prism::internal::kNoDeadline);
    }
  }

  void run(Job& job, std::unique_ptr<PairComm>* comm) noexcept {
    std::string error;
    try {
      const Stop stop{&abort_, std::chrono::steady_clock::now() + channel_timeout()};
      if (!*comm) *comm = transport_.join(id_, rank_, device_, stop);
      job.run(**comm, stop);
    } catch (const std::exception& e) {
      error = e.what();
    } catch (...) {
      error = "unknown error";
    }
    if (!error.empty()) {
      PRISM_LOG(kWarning) << "gpu: a device channel on gpu:" << device_ << " failed (" << error
                          << "); values it would carry go through host memory";
      MutexLock lock(mu_);
      if (broken_.empty()) broken_ = error;
    }
    finish(job, error);
  }

  static void finish(Job& job, const std::string& error) noexcept {
    try {
      job.done(error);
    } catch (const std::exception& e) {
      PRISM_LOG(kError) << "gpu: a device channel's callback threw: " << e.what();
    } catch (...) {
      PRISM_LOG(kError) << "gpu: a device channel's callback threw";
    }
  }

  PairTransport& transport_;
  const std::string id_;
  const int rank_;
  const int device_;
  std::atomic<bool> abort_{false};
  std::atomic<uint32_t> word_{0};
  mutable Mutex mu_;
  std::map<uint64_t, Job> jobs_ PRISM_GUARDED_BY(mu_);
  uint64_t next_ PRISM_GUARDED_BY(mu_) = 1;       // the transfer to run next
  uint64_t next_free_ PRISM_GUARDED_BY(mu_) = 1;  // (sending side) the next one queued
  std::string broken_ PRISM_GUARDED_BY(mu_);
  bool closing_ PRISM_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

// Invariants: the maps and closed_ are under mu_, taken before a Channel's own lock, never
// after; a channel's callbacks run on its thread without mu_. A channel forgotten (its peer
// went) is aborted and kept in retired_ until close() joins it, so forget() never waits for a
// thread (it runs on the caller's network thread, which the callbacks may need). No channel is
// made once closed_ is set.
class Channels final : public prism::internal::DeviceChannels {
 public:
  explicit Channels(PairTransport& transport) : transport_(transport) {}
  ~Channels() override { close(); }

  void close() noexcept override {
    std::vector<std::unique_ptr<Channel>> all;
    {
      MutexLock lock(mu_);
      closed_ = true;
      for (auto& [key, side] : sending_) all.push_back(std::move(side.channel));
      for (auto& [key, channel] : receiving_) all.push_back(std::move(channel));
      for (auto& channel : retired_) all.push_back(std::move(channel));
      sending_.clear();
      receiving_.clear();
      retired_.clear();
    }
    for (auto& channel : all) channel->abort("the cluster link closed");
    all.clear();  // (joins each thread: what was queued is done with that reason)
  }

  uint8_t kind() const noexcept override { return transport_.kind(); }
  bool usable(int device) const noexcept override { return transport_.usable(device); }

  Offer send(uint64_t peer, std::shared_ptr<void> value, const void* tag, int device,
             int peer_device, SendDone done) override {
    if (value == nullptr || tag != live_tag() || !usable(device)) return {};
    auto tensor = std::static_pointer_cast<const Tensor>(value);
    if (!tensor->defined() || !(tensor->device() == Device::gpu(device))) return {};
    Offer offer;
    MutexLock lock(mu_);
    if (closed_) return {};
    const SendKey key{peer, device, peer_device};
    auto it = sending_.find(key);
    if (it == sending_.end()) {
      std::string id;
      try {
        id = transport_.new_id();
      } catch (const std::exception& e) {
        PRISM_LOG(kWarning) << "gpu: no device channel from gpu:" << device << " (" << e.what()
                            << "); values go through host memory";
        return {};
      }
      SendSide side;
      side.comm = next_comm_++;
      side.channel = std::make_unique<Channel>(transport_, id, /*rank=*/0, device);
      it = sending_.emplace(key, std::move(side)).first;
      offer.id = std::move(id);
    }
    offer.comm = it->second.comm;
    offer.seq = it->second.channel->queue_next(
        [tensor](PairComm& comm, const Stop& stop) {
          // After its contents are complete (the producer's ready event), on this thread's own
          // stream: the producer's stream is not waited for on the host.
          const Stream s = task_stream(tensor->device());
          tensor->wait_on(s);
          comm.send(tensor->raw_data(), tensor->nbytes(), tensor->device().index, s.handle(),
                    stop);
          tensor->record_use(s);
          count_network(/*sent=*/true, tensor->nbytes());
        },
        std::move(done));
    if (offer.seq == 0) return {};  // (broken: staged)
    return offer;
  }

  void receive(uint64_t peer, const Offer& offer, std::string_view stub, int device,
               ReceiveDone done) override {
    auto refuse = [&](const std::string& why) { done(nullptr, nullptr, why); };
    if (!usable(device)) return refuse("gpu:" + std::to_string(device) + " has no device channel");
    // The tensor is made on the channel's thread (its allocation may wait for memory); its stub
    // is checked here.
    auto made = std::make_shared<Tensor>();
    DType dtype = DType::kUInt8;
    std::vector<int64_t> shape;
    try {
      read_stub(stub, &dtype, &shape);
    } catch (const std::exception& e) {
      return refuse(e.what());
    }
    std::string why;
    {
      MutexLock lock(mu_);
      const std::pair<uint64_t, uint64_t> key{peer, offer.comm};
      auto it = receiving_.find(key);
      if (closed_) {
        why = "the cluster link closed";
      } else if (it == receiving_.end() && offer.id.empty()) {
        why = "an offer on a communicator this process never joined";
      } else if (it != receiving_.end() && !offer.id.empty()) {
        why = "a communicator offered twice";
      } else {
        if (it == receiving_.end()) {
          it = receiving_
                   .emplace(key, std::make_unique<Channel>(transport_, offer.id, /*rank=*/1,
                                                           device))
                   .first;
        }
        if (it->second->device() != device) {
          why = "a communicator's transfers go to one GPU";
        } else {
          why = it->second->queue_at(
              offer.seq,
              [made, dtype, shape, device](PairComm& comm, const Stop& stop) {
                Tensor t = Tensor::empty(dtype, shape, Device::gpu(device));
                const Stream s = task_stream(t.device());
                comm.recv(t.raw_data(), t.nbytes(), device, s.handle(), stop);
                t.record(s);  // (its readers on other streams wait for the transfer)
                count_network(/*sent=*/false, t.nbytes());
                *made = std::move(t);
              },
              [made, done](const std::string& error) {
                if (!error.empty()) return done(nullptr, nullptr, error);
                // Kept here as a task's result would be: its stub, the tensor beside it.
                LiveResult live;
                live.min_bytes = 0;
                std::string kept_stub;
                prism::internal::encode_result(*made, &kept_stub, nullptr, &live);
                if (live.value == nullptr) {
                  return done(nullptr, nullptr, "the received tensor could not be kept");
                }
                done(&live, &kept_stub, {});
              });
        }
      }
    }
    if (!why.empty()) refuse(why);
  }

  void forget(uint64_t peer) noexcept override {
    MutexLock lock(mu_);
    for (auto it = sending_.begin(); it != sending_.end();) {
      if (it->first.peer == peer) {
        it->second.channel->abort("the peer went away");
        retired_.push_back(std::move(it->second.channel));
        it = sending_.erase(it);
      } else {
        ++it;
      }
    }
    for (auto it = receiving_.begin(); it != receiving_.end();) {
      if (it->first.first == peer) {
        it->second->abort("the peer went away");
        retired_.push_back(std::move(it->second));
        it = receiving_.erase(it);
      } else {
        ++it;
      }
    }
  }

 private:
  struct SendKey {
    uint64_t peer;
    int device;
    int peer_device;
    bool operator<(const SendKey& o) const {
      return std::tie(peer, device, peer_device) < std::tie(o.peer, o.device, o.peer_device);
    }
  };
  struct SendSide {
    uint64_t comm = 0;
    std::unique_ptr<Channel> channel;  // (broken ones stay: no new communicator for the pair)
  };

  PairTransport& transport_;
  Mutex mu_;
  std::map<SendKey, SendSide> sending_ PRISM_GUARDED_BY(mu_);
  std::map<std::pair<uint64_t, uint64_t>, std::unique_ptr<Channel>> receiving_
      PRISM_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Channel>> retired_ PRISM_GUARDED_BY(mu_);
  uint64_t next_comm_ PRISM_GUARDED_BY(mu_) = 1;
  bool closed_ PRISM_GUARDED_BY(mu_) = false;
};

std::unique_ptr<prism::internal::DeviceChannels> make_process_channels() {
  PairTransport* transport = pair_transport();
  if (transport == nullptr) return nullptr;
  return make_channels(*transport);
}

}  // namespace

PairTransport* pair_transport() {
  static PairTransport* const transport = []() -> PairTransport* {
    const char* v = std::getenv("PRISM_DEVICE_CHANNEL");
    const std::string want = v != nullptr ? v : "";
    if (want == "none") return nullptr;
    const Backend backend = backend_instance().kind();
    if (want == "sockets") {
      if (backend != Backend::kHost) {
        PRISM_LOG(kWarning) << "gpu: PRISM_DEVICE_CHANNEL=sockets is for logical GPUs (the host "
                               "backend); this process has CUDA devices: no device channel";
        return nullptr;
      }
      return make_socket_transport().release();  // (never destroyed: lives until exit)
    }
    if (!want.empty() && want != "nccl") {
      PRISM_LOG(kWarning) << "gpu: PRISM_DEVICE_CHANNEL=" << want
                          << " is not one of nccl, sockets, none: no device channel";
      return nullptr;
    }
#ifdef PRISM_GPU_CUDA
    if (backend == Backend::kCuda) {
      std::string why;
      std::unique_ptr<PairTransport> nccl = make_nccl_transport(&why);
      if (!nccl) {
        PRISM_LOG(kInfo) << "gpu: no NCCL (" << why
                         << "): GPU values cross nodes through host memory";
      }
      return nccl.release();
    }
#endif
    return nullptr;
  }();
  return transport;
}

std::unique_ptr<prism::internal::DeviceChannels> make_channels(PairTransport& transport) {
  return std::make_unique<Channels>(transport);
}

void register_device_channels() noexcept {
  prism::internal::set_device_channels_factory(&make_process_channels);
}

}  // namespace prism::gpu::internal
