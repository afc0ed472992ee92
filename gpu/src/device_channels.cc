#include "device_channels.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <deque>
#include <functional>
#include <iterator>
#include <map>
#include <set>
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
#include "prism/internal/thread_policy.h"
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
// Invariants: jobs_, id_, next_, next_free_ and broken_ are under mu_. The thread runs
// job `next_` (from 1, one at a time, mu_ released while it runs) and calls each job's `done`
// exactly once: "" after its transfer, or why not. Once broken_ is set (the join or a transfer
// failed, a transfer it waits for did not come within the timeout, or abort()), no job is
// queued any more, every job queued is done with that reason, the communicator is destroyed
// (aborted) by the thread, the only one that touches it, and the thread ends (finished()). A
// transfer that failed is aborted before its job (and the tensor it holds) goes, and the tensor
// was marked used by the transfer's stream, so its memory is not reused under a kernel still
// running. The destructor aborts and joins the thread: a transfer in flight gives up at its next
// check of abort_.
class Channel {
 public:
  using Run = std::function<void(PairComm&, const Stop&)>;  // throws when it failed
  using Done = std::function<void(const std::string& error)>;

  // (The receiving side may be made before the offer with the id arrives: `id` empty.)
  Channel(PairTransport& transport, std::string id, int rank, int device)
      : transport_(transport), rank_(rank), device_(device), id_(std::move(id)) {
    thread_ = std::thread([this] {
      prism::internal::use_default_thread_policy();
      loop();
    });
  }
  ~Channel() {
    abort("the channel was closed");  // (the thread ends on it)
    thread_.join();
  }
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  int device() const noexcept { return device_; }
  bool finished() const noexcept { return finished_.load(std::memory_order_acquire); }

  // Queues the next transfer in order (the sending side); 0: broken, nothing queued.
  uint64_t queue_next(uint64_t bytes, Run run, Done done) {
    uint64_t seq = 0;
    {
      MutexLock lock(mu_);
      if (!broken_.empty()) return 0;
      seq = next_free_++;
      jobs_.emplace(seq, Job{bytes, std::move(run), std::move(done)});
    }
    wake();
    return seq;
  }
  // Queues transfer `seq` (the receiving side: the sender's order), with the communicator's id
  // when the offer carries it. Returns why not (then `done` is not called).
  std::string queue_at(uint64_t seq, const std::string& id, uint64_t bytes, Run run, Done done) {
    {
      MutexLock lock(mu_);
      if (!broken_.empty()) return broken_;
      if (!id.empty() && !id_.empty()) return "a communicator offered twice";
      if (seq < next_ || jobs_.count(seq) != 0) {
        return "transfer " + std::to_string(seq) + " was offered twice";
      }
      if (!id.empty()) id_ = id;
      jobs_.emplace(seq, Job{bytes, std::move(run), std::move(done)});
    }
    wake();
    return {};
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
    uint64_t bytes = 0;
    Run run;
    Done done;
  };

  void wake() noexcept {
    word_.fetch_add(1, std::memory_order_release);
    prism::internal::futex_wake_all(&word_);
  }

  // How long `bytes` may take: the timeout, and a second more per 64 MiB.
  static std::chrono::steady_clock::duration allowance(uint64_t bytes) {
    return channel_timeout() + std::chrono::seconds(bytes >> 26);
  }

  void loop() noexcept {
    std::unique_ptr<PairComm> comm;
    // While later transfers wait for transfer next_ (its offer not here yet): since when.
    prism::internal::Deadline gap_until = prism::internal::kNoDeadline;
    for (;;) {
      const uint32_t seen = word_.load(std::memory_order_acquire);
      std::vector<Job> failed;
      std::string why;
      Job job;
      std::string id;
      {
        MutexLock lock(mu_);
        if (broken_.empty() && !jobs_.empty() && jobs_.count(next_) == 0) {
          if (gap_until == prism::internal::kNoDeadline) {
            gap_until = std::chrono::steady_clock::now() + channel_timeout();
          } else if (std::chrono::steady_clock::now() >= gap_until) {
            broken_ = "transfer " + std::to_string(next_) + " was never offered";
          }
        }
        if (!broken_.empty()) {
          why = broken_;
          for (auto& [seq, j] : jobs_) failed.push_back(std::move(j));
          jobs_.clear();
        } else if (auto it = jobs_.find(next_); it != jobs_.end()) {
          job = std::move(it->second);
          jobs_.erase(it);
          ++next_;
          id = id_;
          gap_until = prism::internal::kNoDeadline;
        }
      }
      if (!why.empty()) {
        comm.reset();  // (aborts it)
        for (Job& j : failed) finish(j, why);
        finished_.store(true, std::memory_order_release);
        return;  // (broken for good: nothing more is queued)
      }
      if (job.run) {
        run(job, id, &comm);
        continue;
      }
      prism::internal::futex_wait(&word_, seen, gap_until);
    }
  }

  void run(Job& job, const std::string& id, std::unique_ptr<PairComm>* comm) noexcept {
    std::string error;
    try {
      const Stop stop{&abort_, std::chrono::steady_clock::now() + allowance(job.bytes)};
      if (!*comm) {
        if (id.empty()) throw Error(ErrorCode::kUnavailable, "a communicator without its id");
        *comm = transport_.join(id, rank_, device_, stop);
      }
      job.run(**comm, stop);
    } catch (const std::exception& e) {
      error = e.what();
    } catch (...) {
      error = "unknown error";
    }
    if (!error.empty()) {
      comm->reset();  // (aborted before the job's tensor can go)
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
  const int rank_;
  const int device_;
  std::atomic<bool> abort_{false};
  std::atomic<bool> finished_{false};
  std::atomic<uint32_t> word_{0};
  mutable Mutex mu_;
  std::string id_ PRISM_GUARDED_BY(mu_);
  std::map<uint64_t, Job> jobs_ PRISM_GUARDED_BY(mu_);
  uint64_t next_ PRISM_GUARDED_BY(mu_) = 1;       // the transfer to run next
  uint64_t next_free_ PRISM_GUARDED_BY(mu_) = 1;  // (sending side) the next one queued
  std::string broken_ PRISM_GUARDED_BY(mu_);
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
    lander_.stop();  // (what it had queued is dropped: its landings' `done` say so)
    {
      MutexLock lock(mu_);
      closed_ = true;
      for (auto& [key, side] : sending_) all.push_back(std::move(side.channel));
      for (auto& [key, channel] : receiving_) all.push_back(std::move(channel));
      for (auto& channel : retired_) all.push_back(std::move(channel));
      sending_.clear();
      receiving_.clear();
      retired_.clear();
      refused_.clear();
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
    std::vector<std::unique_ptr<Channel>> reaped;  // (joined after mu_)
    MutexLock lock(mu_);
    reap_locked(&reaped);
    if (closed_) return {};
    const SendKey key{peer, device, peer_device};
    auto it = sending_.find(key);
    if (it == sending_.end()) {
      try {
        std::string id = transport_.new_id();
        SendSide side;
        side.comm = next_comm_++;
        side.channel = std::make_unique<Channel>(transport_, id, /*rank=*/0, device);
        it = sending_.emplace(key, std::move(side)).first;
        offer.id = std::move(id);
      } catch (const std::exception& e) {
        PRISM_LOG(kWarning) << "gpu: no device channel from gpu:" << device << " (" << e.what()
                            << "); values go through host memory";
        return {};
      }
    }
    offer.comm = it->second.comm;
    offer.seq = it->second.channel->queue_next(
        tensor->nbytes(),
        [tensor](PairComm& comm, const Stop& stop) {
          // After its contents are complete (the producer's ready event), on this thread's own
          // stream: the producer's stream is not waited for on the host. The memory is marked
          // used by the stream whether the send completes or not (a failed one may still run).
          // (Counted before it goes, as the staged path counts: a reader that has it finds it
          // counted here.)
          const Stream s = task_stream(tensor->device());
          tensor->wait_on(s);
          count_network(/*sent=*/true, tensor->nbytes());
          try {
            comm.send(tensor->raw_data(), tensor->nbytes(), tensor->device().index, s.handle(),
                      stop);
          } catch (...) {
            tensor->record_use(s);
            throw;
          }
          tensor->record_use(s);
        },
        std::move(done));
    if (offer.seq == 0) return {};  // (broken: staged)
    return offer;
  }

  // An offer this side refuses breaks its communicator (or marks it refused, if this side has
  // none yet): the transfers after it would wait for it forever; they are refused at once.
  void receive(uint64_t peer, const Offer& offer, std::string_view stub, int device,
               ReceiveDone done) override {
    auto made = std::make_shared<Tensor>();
    DType dtype = DType::kUInt8;
    std::vector<int64_t> shape;
    std::string why;
    if (!usable(device)) why = "gpu:" + std::to_string(device) + " has no device channel";
    uint64_t bytes = 0;  // (of its elements)
    if (why.empty()) {
      try {
        read_stub(stub, &dtype, &shape);
        bytes = dtype_size(dtype);
        for (const int64_t d : shape) bytes *= static_cast<uint64_t>(d);
      } catch (const std::exception& e) {
        why = e.what();
      }
    }
    std::vector<std::unique_ptr<Channel>> reaped;  // (joined after mu_)
    {
      MutexLock lock(mu_);
      reap_locked(&reaped);
      const std::pair<uint64_t, uint64_t> key{peer, offer.comm};
      auto it = receiving_.find(key);
      if (closed_) {
        why = "the cluster link closed";
      } else if (refused_.count(key) != 0) {
        why = "an earlier transfer on its communicator was refused";
      } else if (why.empty() && it != receiving_.end() && it->second->device() != device) {
        why = "a communicator's transfers go to one GPU";
      }
      if (why.empty() && it == receiving_.end()) {
        try {
          it = receiving_
                   .emplace(key, std::make_unique<Channel>(transport_, /*id=*/"", /*rank=*/1,
                                                           device))  // (queue_at gives the id)
                   .first;
        } catch (const std::exception& e) {
          why = std::string("no channel: ") + e.what();
        }
      }
      if (why.empty()) {
        why = it->second->queue_at(
            offer.seq, offer.id, bytes,
            [made, dtype, shape, device](PairComm& comm, const Stop& stop) {
              Tensor t = Tensor::empty(dtype, shape, Device::gpu(device));
              const Stream s = task_stream(t.device());
              try {
                comm.recv(t.raw_data(), t.nbytes(), device, s.handle(), stop);
              } catch (...) {
                t.record_use(s);  // (a failed receive may still be writing)
                throw;
              }
              t.record(s);  // (its readers on other streams wait for the transfer)
              count_network(/*sent=*/false, t.nbytes());
              *made = std::move(t);
            },
            [made, done](const std::string& error) {
              if (!error.empty()) return done(nullptr, nullptr, error);
              deliver_live(*made, done);
            });
      }
      if (!why.empty() && !closed_) {
        if (it != receiving_.end()) {
          it->second->abort("a transfer on it was refused: " + why);
        } else {
          refused_.insert(key);
        }
      }
    }
    if (!why.empty()) done(nullptr, nullptr, why);
  }

  std::unique_ptr<Landing> land(std::string_view head, uint64_t total, int device) override {
    {
      MutexLock lock(mu_);
      if (closed_) return nullptr;
    }
    auto st = std::make_shared<LandingState>();
    if (device < 0 || (backend_instance().kind() == Backend::kCuda &&
                       device >= backend_instance().device_count())) {
      return nullptr;
    }
    uint64_t elements = 0;
    if (!read_wire_header(head, &st->dtype, &st->shape, &st->head, &elements) ||
        st->head + elements != total) {
      return nullptr;
    }
    st->device = device;
    st->total = total;
    return std::make_unique<LandingImpl>(lander_, std::move(st));
  }

  void forget(uint64_t peer) noexcept override {
    std::vector<std::unique_ptr<Channel>> reaped;  // (joined after mu_)
    MutexLock lock(mu_);
    reap_locked(&reaped);
    for (auto it = refused_.begin(); it != refused_.end();) {
      it = it->first == peer ? refused_.erase(it) : std::next(it);
    }
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
  // The thread of the landings' uploads: jobs run in order; stop() joins it, and the jobs left
  // are called with run == false (dropped). Invariants: jobs_ and stopped_ under mu_; no job is
  // queued once stopped_ is set (post() drops it at once).
  class Lander {
   public:
    using Job = std::function<void(bool run)>;
    ~Lander() { stop(); }
    void post(Job job) {
      {
        MutexLock lock(mu_);
        if (!stopped_) {
          jobs_.push_back(std::move(job));
          if (!thread_.joinable()) thread_ = std::thread([this] {
      prism::internal::use_default_thread_policy();
      loop();
    });
          job = nullptr;
        }
      }
      if (job) return job(false);
      word_.fetch_add(1, std::memory_order_release);
      prism::internal::futex_wake_all(&word_);
    }
    void stop() noexcept {
      std::deque<Job> dropped;
      {
        MutexLock lock(mu_);
        stopped_ = true;
      }
      word_.fetch_add(1, std::memory_order_release);
      prism::internal::futex_wake_all(&word_);
      if (thread_.joinable()) thread_.join();
      {
        MutexLock lock(mu_);
        dropped.swap(jobs_);
      }
      for (Job& j : dropped) j(false);
    }

   private:
    void loop() noexcept {
      for (;;) {
        const uint32_t seen = word_.load(std::memory_order_acquire);
        Job job;
        {
          MutexLock lock(mu_);
          if (stopped_) return;
          if (!jobs_.empty()) {
            job = std::move(jobs_.front());
            jobs_.pop_front();
          }
        }
        if (job) {
          job(true);
          continue;
        }
        prism::internal::futex_wait(&word_, seen, prism::internal::kNoDeadline);
      }
    }
    Mutex mu_;
    std::deque<Job> jobs_ PRISM_GUARDED_BY(mu_);
    bool stopped_ PRISM_GUARDED_BY(mu_) = false;
    std::atomic<uint32_t> word_{0};
    std::thread thread_;
  };

  // A landing's tensor and how far it is. The lander's jobs touch tensor and error only; next is
  // the writer's (one thread at a time: write() is called in order).
  struct LandingState {
    DType dtype = DType::kUInt8;
    std::vector<int64_t> shape;
    uint64_t head = 0;   // the header's bytes, before the elements
    uint64_t total = 0;  // the serialized form's
    int device = -1;
    uint64_t next = 0;   // the offset of the next part
    std::atomic<bool> cancelled{false};
    Tensor tensor;       // made by the first upload
    std::string error;   // the first failure
  };

  class LandingImpl final : public Landing {
   public:
    LandingImpl(Lander& lander, std::shared_ptr<LandingState> st)
        : lander_(lander), st_(std::move(st)) {}
    ~LandingImpl() override {
      if (!finished_) st_->cancelled.store(true, std::memory_order_release);
    }

    void write(uint64_t offset, std::string_view data, std::shared_ptr<const void> keep) override {
      LandingState& st = *st_;
      if (finished_ || offset != st.next || data.size() > st.total - st.next) {
        throw Error(ErrorCode::kInvalidArgument,
                    "a part at " + std::to_string(offset) + " of " + std::to_string(data.size()) +
                        " bytes, not the next of a value of " + std::to_string(st.total));
      }
      st.next += data.size();
      lander_.post([st = st_, offset, data, keep = std::move(keep)](bool run) {
        if (!run || st->cancelled.load(std::memory_order_acquire) || !st->error.empty()) return;
        try {
          const Device gpu = Device::gpu(st->device);
          if (!st->tensor.defined()) st->tensor = Tensor::empty(st->dtype, st->shape, gpu);
          // The elements in this part: [from, to) of the form, at from - head in the tensor.
          const uint64_t from = std::max<uint64_t>(offset, st->head);
          const uint64_t to = offset + data.size();
          if (to <= from) return;
          const Stream s = task_stream(gpu);
          DeviceGuard on(gpu);
          DeviceBackend& b = backend_instance();
          b.copy(static_cast<char*>(st->tensor.raw_data()) + (from - st->head), gpu,
                 data.data() + (from - offset), Device::host(), to - from, s.handle());
          b.stream_synchronize(s.handle());  // (the part's buffer goes with `keep`)
        } catch (const std::exception& e) {
          st->error = e.what();
        }
      });
    }

    void finish(ReceiveDone done) override {
      if (finished_) throw Error(ErrorCode::kInvalidArgument, "a landing finished twice");
      finished_ = true;
      if (st_->next != st_->total) {
        return done(nullptr, nullptr,
                    "its parts ended after " + std::to_string(st_->next) + " of " +
                        std::to_string(st_->total) + " bytes");
      }
      lander_.post([st = st_, done = std::move(done)](bool run) {
        if (!run) return done(nullptr, nullptr, "the cluster link closed");
        if (!st->error.empty()) return done(nullptr, nullptr, "its upload failed: " + st->error);
        try {
          const Device gpu = Device::gpu(st->device);
          if (!st->tensor.defined()) st->tensor = Tensor::empty(st->dtype, st->shape, gpu);
          st->tensor.record(task_stream(gpu));  // (its uploads, complete already)
          count_copy(Device::host(), gpu, st->tensor.nbytes());
          count_network(/*sent=*/false, st->tensor.nbytes());
          deliver_live(st->tensor, done);
        } catch (const std::exception& e) {
          done(nullptr, nullptr, std::string("it could not be kept: ") + e.what());
        }
      });
    }

   private:
    Lander& lander_;
    std::shared_ptr<LandingState> st_;
    bool finished_ = false;
  };

  // Moves the forgotten channels whose threads have ended to `out` (joined, at once, when the
  // caller lets go of them after mu_).
  void reap_locked(std::vector<std::unique_ptr<Channel>>* out) PRISM_REQUIRES(mu_) {
    for (auto it = retired_.begin(); it != retired_.end();) {
      if ((*it)->finished()) {
        out->push_back(std::move(*it));
        it = retired_.erase(it);
      } else {
        ++it;
      }
    }
  }

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
  Lander lander_;
  Mutex mu_;
  std::map<SendKey, SendSide> sending_ PRISM_GUARDED_BY(mu_);
  std::map<std::pair<uint64_t, uint64_t>, std::unique_ptr<Channel>> receiving_
      PRISM_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Channel>> retired_ PRISM_GUARDED_BY(mu_);
  std::set<std::pair<uint64_t, uint64_t>> refused_ PRISM_GUARDED_BY(mu_);  // (peer, comm)
  uint64_t next_comm_ PRISM_GUARDED_BY(mu_) = 1;
  bool closed_ PRISM_GUARDED_BY(mu_) = false;
};

// No transport between GPUs: channels that only land values (kind 0, nothing usable).
class NoTransport final : public PairTransport {
 public:
  uint8_t kind() const noexcept override { return 0; }
  bool usable(int) const noexcept override { return false; }
  std::string new_id() override {
    throw Error(ErrorCode::kUnavailable, "no transport between GPUs");
  }
  std::unique_ptr<PairComm> join(const std::string&, int, int, const Stop&) override {
    throw Error(ErrorCode::kUnavailable, "no transport between GPUs");
  }
};

}  // namespace

// (device_channels.h) A const Tensor would not keep live: `t` is a handle of its own.
void deliver_live(Tensor t, const prism::internal::DeviceChannels::ReceiveDone& done) {
  LiveResult live;
  live.min_bytes = 0;
  std::string stub;
  prism::internal::encode_result(t, &stub, nullptr, &live);
  if (live.value == nullptr) return done(nullptr, nullptr, "the tensor that came could not be kept");
  done(&live, &stub, {});
}

namespace {

std::unique_ptr<prism::internal::DeviceChannels> make_process_channels() {
  PairTransport* transport = pair_transport();
  return make_channels(transport != nullptr ? *transport : no_transport());
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
      if (!nccl && want == "nccl") {
        PRISM_LOG(kWarning) << "gpu: PRISM_DEVICE_CHANNEL=nccl, but " << why
                            << ": GPU values cross nodes through host memory";
      } else if (!nccl) {
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

PairTransport& no_transport() {
  static NoTransport none;
  return none;
}

std::unique_ptr<prism::internal::DeviceChannels> make_channels(PairTransport& transport) {
  return std::make_unique<Channels>(transport);
}

void register_device_channels() noexcept {
  prism::internal::set_device_channels_factory(&make_process_channels);
}

}  // namespace prism::gpu::internal
