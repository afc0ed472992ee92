#include "cluster_link.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <unordered_map>
#include <optional>
#include <unordered_set>
#include <memory>
#include <typeinfo>
#include <thread>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "actor/actor_core.h"
#include "api/registry_internal.h"
#include "api/runtime_core.h"
#include "api/runtime_registry.h"
#include "prism/internal/remote_call.h"
#include "prism/internal/thread_policy.h"
#include "prism/internal/variant_run.h"
#include "auth.h"
#include "clock_offset.h"
#include "failure_detector.h"
#include "common/event.h"
#include "common/log.h"
#include "job_dir.h"
#include "prism/serialize.h"
#include "launcher.h"
#include "prism/internal/device_channel.h"
#include "prism/internal/device_support.h"
#include "object_table.h"
#include "output_forwarder.h"
#include "ref_table.h"
#include "prism/errors.h"
#include "prism/internal/buffer_pool.h"
#include "prism/internal/thread_annotations.h"
#include "ucx_comm.h"
#include "wire.h"

// Referenced by Prism::cluster's link options so that this object (and its registration) is
// kept in every program that links the module.
extern "C" {
extern const int prism_cluster_module_anchor;
const int prism_cluster_module_anchor = 1;
}

namespace prism::cluster {

using internal::ActorCore;
using prism::ActorId;
using internal::ClusterConfig;
using internal::ClusterRole;
using prism::InitOptions;
using internal::Deadline;
using internal::Mutex;
using internal::MutexLock;
using internal::ResourceRequest;
using internal::RuntimeCore;
using internal::TaskRecord;

namespace {

WireResources to_wire(const ResourceRequest& r) {
  WireResources w;
  w.cpu = r.cpu;
  w.gpu = r.gpu;
  w.memory = r.memory;
  w.gpu_memory = r.gpu_memory;
  w.custom = r.custom;
  return w;
}

ResourceRequest from_wire(const WireResources& w) {
  ResourceRequest r;
  r.cpu = w.cpu;
  r.gpu = w.gpu;
  r.memory = w.memory;
  r.gpu_memory = w.gpu_memory;
  r.custom = w.custom;
  return r;
}

int64_t custom_amount(const WireResources& w, const std::string& name) {
  for (const auto& [n, v] : w.custom) {
    if (n == name) return v;
  }
  return 0;
}

// True if `r` fits in `total` minus `used` (used may be empty: can the node ever run it).
bool fits(const ResourceRequest& r, const WireResources& total, const WireResources& used) {
  if (r.cpu > total.cpu - used.cpu || r.gpu > total.gpu - used.gpu ||
      r.memory > total.memory - used.memory) {
    return false;
  }
  if (r.gpu_memory > 0 && (r.gpu == 0 || r.gpu_memory > total.gpu_memory)) return false;
  for (const auto& [name, amount] : r.custom) {
    if (amount > custom_amount(total, name) - custom_amount(used, name)) return false;
  }
  return true;
}

void add(WireResources* into, const ResourceRequest& r, int sign) {
  into->cpu += sign * r.cpu;
  into->gpu += sign * r.gpu;
  into->memory += sign * r.memory;
  for (const auto& item : r.custom) {
    const std::string& name = item.first;
    auto it = std::find_if(into->custom.begin(), into->custom.end(),
                           [&](const auto& p) { return p.first == name; });
    if (it == into->custom.end()) {
      into->custom.emplace_back(name, sign * item.second);
    } else {
      it->second += sign * item.second;
    }
  }
}

double load(const WireResources& total, const WireResources& used) {
  return total.cpu > 0 ? static_cast<double>(used.cpu) / static_cast<double>(total.cpu) : 0.0;
}

uint64_t fnv1a(const std::vector<std::string>& items) {
  uint64_t h = 1469598103934665603ull;
  for (const auto& s : items) {
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
  }
  return h;
}

std::string hostname() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "?";
  return buf;
}

// What differs between two sorted lists of "name type" signatures, for a refused join.
std::string describe_difference(const std::vector<std::string>& mine,
                                const std::vector<std::string>& theirs) {
  std::vector<std::string> only_mine, only_theirs;
  std::set_difference(mine.begin(), mine.end(), theirs.begin(), theirs.end(),
                      std::back_inserter(only_mine));
  std::set_difference(theirs.begin(), theirs.end(), mine.begin(), mine.end(),
                      std::back_inserter(only_theirs));
  auto list = [](const std::vector<std::string>& v) {
    std::string s;
    for (size_t i = 0; i < v.size() && i < 5; ++i) s += (i ? ", " : "") + v[i];
    if (v.size() > 5) s += ", ... (" + std::to_string(v.size()) + " in all)";
    return s.empty() ? std::string("none") : s;
  };
  return "its registered functions differ from the driver's (a different binary?): only the "
         "driver has [" + list(only_mine) + "], only the node has [" + list(only_theirs) + "]";
}

// For tests only, read each time (a join, a message that lends refs, a borrow's release: each
// costs far more than a getenv): a pause of `var` milliseconds (1 to 10,000; unset: none) at a
// point where a loaded machine's preemption could stop a thread, widening a window that must be
// safe. PRISM_TESTING_JOIN_PAUSE_MS: a joining node, right after it connects to its driver (the
// driver's hello may reach its progress thread first). PRISM_TESTING_WELCOME_PAUSE_MS: the
// driver, between making a joining node ready and queueing its welcome (another thread may
// place a task on the node meanwhile). PRISM_TESTING_LEND_PAUSE_MS: between encoding a message
// whose refs lend objects (their keys chosen) and recording the lends (a borrow of the same
// keys may end meanwhile). PRISM_TESTING_RELEASE_PAUSE_MS: between ending a borrow in the
// table and freeing what it held (the same keys may be lent again meanwhile).
void testing_pause(const char* var) {
  const char* v = std::getenv(var);
  const int ms = v != nullptr ? std::atoi(v) : 0;
  if (ms >= 1 && ms <= 10'000) std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

// PRISM_TRANSFER_PART_BYTES: the part size of values sent in parts (at least 4 KiB, at most
// what one message carries, which is the default).
size_t transfer_part_bytes() {
  const char* v = std::getenv("PRISM_TRANSFER_PART_BYTES");
  if (v == nullptr || *v == '\0') return kMaxObjectPartBytes;
  char* end = nullptr;
  const unsigned long long n = std::strtoull(v, &end, 10);
  if (end == v || *end != '\0') {
    PRISM_LOG(kWarning) << "cluster: PRISM_TRANSFER_PART_BYTES=" << v
                        << " is not a number of bytes; using " << kMaxObjectPartBytes;
    return kMaxObjectPartBytes;
  }
  return static_cast<size_t>(std::clamp<unsigned long long>(n, 4096, kMaxObjectPartBytes));
}

// The largest message decoded from a peer before it authenticated (a join carries the names of
// the registered functions: ~100 bytes each).
constexpr size_t kMaxHandshakeBytes = size_t{4} << 20;
// The numbers a node gives the actors it has the driver create elsewhere (the driver's own
// numbers never have this bit).
constexpr uint64_t kNodeActorBit = uint64_t{1} << 63;

// Connections that may wait to prove the token at once (on_accept).
constexpr size_t kMaxAwaitingAuth = 32;

// Node: after the driver sent a nested task back (no room anywhere else), the node keeps its
// nested tasks for this long before asking again.
constexpr std::chrono::milliseconds kSpillBackoff{20};

// A num_returns call's results may stay on the node one by one up to this many (more travel
// back inline, in one piece).
constexpr size_t kMaxElements = 1024;

// A live result (a GPU tensor kept on its GPU) goes to a puller in parts of this many bytes (at
// most): each part is sent as soon as it is written, while the next one downloads.
constexpr size_t kStagedPartBytes = size_t{16} << 20;

// Points the invoker (or an actor's result writer) run on this thread at `elements` for its
// result (result_elements_sink), and unpoints it however the call ends. Null: the sink is left
// as it is outside every such call, null (no thread-local write for a call of one result).
class ElementsSink {
 public:
  explicit ElementsSink(std::vector<std::string>* elements) noexcept : set_(elements != nullptr) {
    if (set_) internal::result_elements_sink() = elements;
  }
  ~ElementsSink() {
    if (set_) internal::result_elements_sink() = nullptr;
  }
  ElementsSink(const ElementsSink&) = delete;
  ElementsSink& operator=(const ElementsSink&) = delete;

 private:
  const bool set_;
};

// The same for a result that may stay here live (live_result_sink: a GPU tensor kept on its GPU).
class LiveSink {
 public:
  explicit LiveSink(internal::LiveResult* live) noexcept : set_(live != nullptr) {
    if (set_) internal::live_result_sink() = live;
  }
  ~LiveSink() {
    if (set_) internal::live_result_sink() = nullptr;
  }
  LiveSink(const LiveSink&) = delete;
  LiveSink& operator=(const LiveSink&) = delete;

 private:
  const bool set_;
};

// PRISM_NESTED_SPILL: "0" keeps every task a node can run on that node (default: busy nodes
// spill nested tasks).
bool nested_spill_enabled() {
  const char* v = std::getenv("PRISM_NESTED_SPILL");
  return v == nullptr || std::string(v) != "0";
}

struct Peer {
  enum class State { kAwaitingAuth, kReady, kDead };
  State state = State::kAwaitingAuth;
  uint8_t challenge[kChallengeBytes] = {};
  PeerRole role = PeerRole::kNode;
  uint64_t accepted = 0;  // driver: the order of its connection (the oldest unproven goes first)
  int index = 0;
  std::string name;  // "node3 (host pid 1234)"
  WireResources totals;
  WireResources used;  // requests of the calls in flight there
  ClockOffset clock;  // driver: the node's steady clock minus ours
  int64_t ping_sent_ns = -1;  // driver: the clock ping in flight (-1: none)
  // Driver: the node's own counts, as it last reported them (kNodeStats).
  bool reported = false;
  NodeStatsMsg report;
  std::chrono::steady_clock::time_point reported_at{};
  // Driver: where this node listens for other nodes' direct pulls (AuthMsg.listen; "" if it
  // does not). Node, for an `outgoing` direct peer: where that node listens.
  std::string address;
  // Node: a direct connection with another node of the job (PeerRole::kPeer), for pulls only;
  // `outgoing` when this node made it (to pull from that node): it answers that node's hello
  // (`sent_auth`), and the pulls redirected there before the handshake ended wait in `queued`.
  bool direct = false;
  bool outgoing = false;
  bool sent_auth = false;
  std::vector<uint64_t> queued;
  // Node, an outgoing direct peer: when it was made (its handshake must end within the
  // heartbeat timeout, however much the other side says meanwhile), and when a pull was last
  // sent there or last seen in flight there (it is closed once idle: close_if_idle).
  std::chrono::steady_clock::time_point connected{};
  std::chrono::steady_clock::time_point last_used{};
};

// Driver: a kSpansQuery waiting for `peer`'s kSpansReply. The reply (or `lost`) is written
// before `done` is set.
struct SpanQuery {
  PeerId peer = 0;
  internal::Event done;
  bool lost = false;  // the node went away (or the link shut down) first
  SpansReplyMsg reply;
};

struct Pending {
  TaskRecord* task;  // null for an actor's creation
  PeerId peer;
  ResourceRequest request;
  std::string peer_name;
  std::weak_ptr<ActorCore> creating;  // an actor's creation: the actor
  uint64_t result_object = 0;  // the number a large result may stay there under
  bool may_spill = false;      // a task's first placement: the node may send it back
};

// Driver: how to compute again a task result that stayed on a node, should every copy of it be
// lost with its nodes (lineage, DESIGN §8). Kept while the result's entry lives (lineages_);
// small: the call, not its values.
struct Lineage {
  CallMsg call;  // as sent, references included (call_id and result_object are set per run)
  ResourceRequest request;
  std::string task_name;
  // Per reference argument (call.objects, in order): its own lineage, to rebuild it in turn if it
  // was lost too (its value is not kept for this); else null, and its entry is pinned below so
  // that its value stays while this result may need it (a put, a result that cannot be
  // computed again).
  std::vector<std::shared_ptr<Lineage>> arg_lineage;
  std::vector<internal::EntryPtr> pinned;
  // Runs it may still have (the task's retries when it finished; each run of a rebuild counts
  // one). Under the link's mu_.
  int runs_left = 0;
  // A result of a num_returns call (elements > 0): which one. Its rebuild runs the call again
  // with the same numbers (result_object - element for the first) and keeps that one only.
  uint32_t element = 0;
  uint32_t elements = 0;
};

// Driver: an object being computed again (rebuild()). Every waiter is called once, with "" or
// why it could not be.
struct Rebuild {
  std::shared_ptr<Lineage> lineage;
  std::vector<std::function<void(const std::string& error)>> done;
  // Arguments rebuilt only for this run (their entries are gone): freed once it ended.
  std::vector<uint64_t> temporary;
  size_t args_missing = 0;
  std::string arg_error;  // the first argument that could not be rebuilt
  PeerId peer = 0;        // the node computing it now (0: none yet)
  uint64_t call_id = 0;
};

// Driver: an actor placed on a node.
struct RemoteActor {
  RemoteActor() = default;
  RemoteActor(std::weak_ptr<ActorCore> a, PeerId where, ResourceRequest held)
      : actor(std::move(a)), peer(where), request(std::move(held)) {}

  std::weak_ptr<ActorCore> actor;
  PeerId peer = 0;
  ResourceRequest request;  // held there for its life (counted in the node's `used`)
  // An actor that may be restarted when its node dies (ActorOptions::max_restarts): its
  // creation as first sent (call id and refs aside), sent again to the node chosen then, and the
  // restarts left (-1: no limit). Null: it dies with its node.
  std::shared_ptr<const ActorCreateMsg> recipe;
  int restarts_left = 0;
  // The objects its constructor's arguments lend (null: none), pinned while it may restart and
  // lent again to the node it restarts on, under the same keys (the recipe's bytes name them).
  // Let go with no lock held (Link::drop_deferred): the last pin may free an entry.
  std::shared_ptr<const std::vector<RefTable::Lend>> recipe_lends;
};

// Node: a get_actor waiting for the driver's answer. The answer is written before `done` is set.
struct Lookup {
  internal::Event done;
  std::string payload;
  std::string error;
};

// Driver: a node's actor call relayed to the node that holds the actor.
struct Relay {
  PeerId origin = 0;
  uint64_t origin_call = 0;
  PeerId holder = 0;
  ResourceRequest request;  // a node's task: what it holds on `holder` (counted in its `used`)
  std::string holder_name;  // "node2 (host pid 7)", for errors
  bool task = false;        // a node's task (else an actor call)
  // An actor call: its actor's key, and, when the actor may be restarted and its calls sent
  // again (max_task_retries; a call that lends no refs), the call as relayed, with the retries
  // it used: sent to the actor's new node if its node dies (retry_relay_locked).
  uint64_t actor = 0;
  std::shared_ptr<const ActorCallMsg> call{};
  int retries_used = 0;
  // Once its holder died: null if it was sent again, else why not ("" : its actor was not
  // restarted) (Link::retry_relay_locked).
  const char* not_retried = "";
};

// ResultMsg.error_type of a task lost with the node it ran on (a system failure): the caller
// may run it again under its max_retries.
constexpr const char* kLostWithNode = "prism::LostWithNode";

// Node: an actor held for the driver (an ActorHandle<T> made by the constructor's invoker).
struct HeldActor {
  void* handle = nullptr;
  void (*kill)(void*) = nullptr;
  void (*drop)(void*) = nullptr;
};

// Node: a call of the driver's, until its arguments are all here.
struct ServedCall {
  CallMsg call;
  PeerId peer = 0;
  internal::FunctionKey key;
  internal::RemoteInvoker invoker = nullptr;
  std::vector<Blob> blobs;           // the referenced arguments' bytes, as they arrive
  std::atomic<size_t> remaining{0};  // blobs missing, plus one until all pulls were asked
  std::atomic<bool> failed{false};   // an argument could not be had (answered once)
  std::shared_ptr<const RefTable::Incoming> refs;  // the ObjectRefs its message lent
};

class Link;
std::atomic<Link*> g_link{nullptr};  // the global runtime's link (for link_counters)

// The link as the objects it placed on other nodes see it: entries may outlive the link (refs
// stay readable after their runtime is gone), so they reach it through this, which the link's
// destructor detaches.
struct ObjectService {
  Mutex mu;
  Link* link PRISM_GUARDED_BY(mu) = nullptr;
};

// The link, for what ends borrows and announces lent objects (BorrowKeeper, an Incoming's last
// holder, a lent entry done): apart from ObjectService, whose mutex is held where those may run
// (a fetch that fails its pulls lets go of calls, their Incomings and their arguments). Nothing
// done under this mutex ends a borrow or lets go of an Incoming.
struct RefService {
  Mutex mu;
  Link* link PRISM_GUARDED_BY(mu) = nullptr;
};

// Held by an entry whose value has copies on other nodes: when the entry goes, they are freed.
class ObjectKeeper {
 public:
  ObjectKeeper(std::weak_ptr<ObjectService> service, uint64_t id)
      : service_(std::move(service)), id_(id) {}
  ~ObjectKeeper();
  ObjectKeeper(const ObjectKeeper&) = delete;
  ObjectKeeper& operator=(const ObjectKeeper&) = delete;
  uint64_t id() const noexcept { return id_; }

 protected:
  const std::weak_ptr<ObjectService> service_;
  const uint64_t id_;
};

// A task result that stayed on the node that computed it (ObjState::kRemote on the driver).
class RemoteObject final : public internal::RemoteValue, public ObjectKeeper {
 public:
  RemoteObject(std::weak_ptr<ObjectService> service, uint64_t id, uint64_t bytes,
               std::string where)
      : ObjectKeeper(std::move(service), id), bytes_(bytes), where_(std::move(where)) {}
  void fetch(internal::ObjectEntry* entry, Deadline deadline) override;
  uint64_t size() const noexcept override { return bytes_; }

 private:
  const uint64_t bytes_;     // its serialized size (the node's ResultMsg::object_bytes)
  const std::string where_;  // "node2 (host pid 7)": where it was produced, for errors
  // Builds the value once: readers that waited together share the pull (ObjectTable), and the
  // first to get here materializes it.
  internal::Mutex materialize_mu_;
};

// A borrowed object's value, once its lender said it is done (RefReadyMsg): pulled from the
// lender (which passes it on from wherever it lives) by the first reader here.
class BorrowedValue final : public internal::RemoteValue {
 public:
  BorrowedValue(std::weak_ptr<ObjectService> service, PeerId from, uint64_t pull, uint64_t bytes,
                std::string where)
      : service_(std::move(service)), from_(from), pull_(pull), bytes_(bytes),
        where_(std::move(where)) {}
  void fetch(internal::ObjectEntry* entry, Deadline deadline) override;
  uint64_t pull() const noexcept { return pull_; }
  uint64_t bytes() const noexcept { return bytes_; }
  uint64_t size() const noexcept override { return bytes_; }

 private:
  const std::weak_ptr<ObjectService> service_;
  const PeerId from_;
  const uint64_t pull_;
  const uint64_t bytes_;
  const std::string where_;  // "node2": the lender, for errors
  internal::Mutex materialize_mu_;
};

// Tied to a borrowed entry (attach, before it can complete): when the entry goes, the borrow
// may end (RefTable::dropped).
class BorrowKeeper {
 public:
  BorrowKeeper(std::weak_ptr<RefService> service, PeerId from, uint64_t key,
               const internal::ObjectEntry* entry)
      : service_(std::move(service)), from_(from), key_(key), entry_(entry) {}
  ~BorrowKeeper();
  BorrowKeeper(const BorrowKeeper&) = delete;
  BorrowKeeper& operator=(const BorrowKeeper&) = delete;

 private:
  const std::weak_ptr<RefService> service_;
  const PeerId from_;
  const uint64_t key_;
  const internal::ObjectEntry* const entry_;  // (identity only: it is being freed)
};

// The refs of the message this thread is handling (Link::handle), for the handlers that decode
// it or keep it for later (incoming()).
thread_local const std::shared_ptr<const RefTable::Incoming>* t_incoming = nullptr;
class IncomingScope {
 public:
  explicit IncomingScope(const std::shared_ptr<const RefTable::Incoming>* in) noexcept
      : saved_(std::exchange(t_incoming, in)) {}
  ~IncomingScope() { t_incoming = saved_; }
  IncomingScope(const IncomingScope&) = delete;
  IncomingScope& operator=(const IncomingScope&) = delete;

 private:
  const std::shared_ptr<const RefTable::Incoming>* const saved_;
};
std::shared_ptr<const RefTable::Incoming> incoming() {
  return t_incoming != nullptr ? *t_incoming : nullptr;
}

// ObjectDataMsg.error of a pull that failed because the object's owner died (a borrower then
// throws OwnerDiedError).
constexpr const char* kOwnerDied = "[owner died] ";
// ObjectDataMsg.error of a pull sent to a node that has no copy (a secondary copy it evicted to
// make room): the driver asks another holder.
constexpr const char* kNotHeld = "[not held] ";
bool not_held(const std::string& why) { return why.rfind(kNotHeld, 0) == 0; }
// Why a value of another node's is not waited for on the network thread (it would deliver it):
// a task whose arguments are encoded there (dispatched as a borrowed argument arrived) runs
// where it is instead, or fails saying this.
constexpr const char* kOnNetworkThread =
    "it would have to be waited for on the cluster's network thread (a task was sent to another "
    "node as its arguments arrived)";

class Link final : public internal::ClusterLink {
 public:
  Link(RuntimeCore* rt, const ClusterConfig& config)
      : rt_(rt),
        config_(config),
        signatures_(internal::registered_signatures()),
        detector_(std::chrono::duration_cast<FailureDetector::Clock::duration>(
            std::chrono::duration<double>(config.heartbeat_timeout_s))) {
    fingerprint_ = fnv1a(signatures_);
    UcxComm::Callbacks cb;
    cb.on_message = [this](PeerId p, std::string_view data) { on_message(p, data); };
    cb.on_accept = [this](PeerId p) { on_accept(p); };
    cb.on_peer_error = [this](PeerId p, const std::string& why) { on_peer_error(p, why); };
    cb.on_activity = [this](PeerId p, uint64_t arriving) {
      MutexLock lock(mu_);
      detector_.heard(p, arriving);
    };
    comm_ = std::make_unique<UcxComm>(std::move(cb));
    {
      MutexLock lock(service_->mu);
      service_->link = this;
    }
    {
      MutexLock lock(ref_service_->mu);
      ref_service_->link = this;
    }
    g_link.store(this, std::memory_order_release);
  }

  void start() override {
    // Values kept for other nodes beyond the object store's capacity go to files (object_table.h).
    {
      const char* dir = std::getenv("PRISM_SPILL_DIR");
      const char* tmp = std::getenv("TMPDIR");
      const int64_t capacity = rt_->store().capacity();
      objects_.set_spill(capacity > 0 ? static_cast<uint64_t>(capacity) : 0,
                         dir != nullptr && *dir ? dir : (tmp != nullptr && *tmp ? tmp : "/tmp"));
    }
    // A node's GPU values may cross to other nodes' GPUs directly (NCCL), when it has channels.
    if (config_.role == ClusterRole::kNode) channels_ = internal::make_device_channels();
    if (config_.role == ClusterRole::kDriver) {
      start_driver();
    } else {
      start_node();
    }
  }

  ~Link() override {
    output_.stop();  // its reader sends through comm_
    stop_reporter();  // (and so does the reporter)
    stop_watchdog();  // (and the watchdog)
    stop_stager();    // (and the stager)
    if (channels_) channels_->close();  // (and the device channels' threads)
    Link* self = this;
    g_link.compare_exchange_strong(self, nullptr);
    {
      MutexLock lock(service_->mu);  // (waits for a free or a fetch that is using the link)
      service_->link = nullptr;
    }
    {
      // (Entries freed from now on do not tell the table: it forgets them all now.)
      MutexLock lock(ref_service_->mu);
      ref_service_->link = nullptr;
      refs_.close();
    }
    fail_pulls(kHere, "the cluster link has shut down");
    stop_waiting_tasks();
    // comm_, the last member, is destroyed first: it joins the progress thread, so no callback
    // runs once the members it uses go (resetting it here would race with a running callback's
    // reads of comm_ itself).
  }

  // ---- ClusterLink ----

  bool offer(TaskRecord* task) noexcept override {
    if (config_.role == ClusterRole::kNode) return offer_to_driver(task);
    if (config_.role != ClusterRole::kDriver) return false;
    // A variant call goes where the runtime's planner placed it (here: runs here).
    if (const internal::TaskExtras* x = task->extras(); x != nullptr && x->variant) {
      if (x->variant->peer == 0) return false;
      return place(task, /*runs_here=*/false, /*spilled_from=*/0, /*to=*/x->variant->peer);
    }
    const bool nodes = ready_nodes_.load(std::memory_order_acquire) > 0;
    if (!nodes && !waits_for_nodes()) return false;
    // No node yet: a default task runs here whenever this node has a CPU (no scheduler lock).
    if (!nodes && task->has_default_request() && rt_->scheduler().cpu_slots() > 0) return false;
    const ResourceRequest& request = task->request();
    const bool runs_here = rt_->runs_here(task);  // (the shape's cached answer: no lock)
    if (runs_here && (!nodes || rt_->scheduler().fits_now(request))) return false;
    return place(task, runs_here, /*spilled_from=*/0);
  }

  // Driver: sends `task` to the node chosen for it, or keeps it waiting for a node that fits to
  // join; false: the caller runs it here (or fails it). A first placement may spill: the node
  // sends it back (kSpilled) when it turns out to have no room now (work this process did not
  // send there: nested tasks). Then it goes, without spilling again, to another node with room,
  // else back to `spilled_from`, which queues it.
  // `to`: that node only (a variant call placed by the runtime's planner), without spilling.
  bool place(TaskRecord* task, bool runs_here, PeerId spilled_from, PeerId to = 0) noexcept {
    const ResourceRequest& request = task->request();
    std::string function, args;
    Transfer transfer(this);
    RefContext refs(this);  // (ObjectRefs inside the arguments: lent to the node)
    try {
      internal::RefScopeGuard scope(&refs);
      if (!task->encode_remote(&function, &args, &transfer)) return false;
    } catch (...) {
      return false;  // (out of memory while encoding, an argument lost: run it here)
    }
    CallMsg call;
    call.objects = std::move(transfer.refs);
    call.may_spill = spilled_from == 0 && to == 0;
    if (task->remote_materializer() != nullptr) {
      call.result_object = objects_.new_id();
    } else if (const size_t n = task->remote_elements(); n != 0 && n <= kMaxElements) {
      // (results written one by one: each large one stays there as result_object + its index)
      call.num_returns = static_cast<uint32_t>(n);
      call.result_object = objects_.new_ids(n);
    }
    PeerId peer = 0;
    {
      MutexLock lock(mu_);
      if (shut_down_) return false;  // (pending_ was emptied: a call recorded now would wait)
      if (to != 0) {
        auto it = peers_.find(to);
        if (it == peers_.end() || it->second.state != Peer::State::kReady || shut_down_) {
          return false;  // that node went away since the choice: fails here (infeasible)
        }
        peer = to;
      } else if (spilled_from == 0) {
        peer = choose_node_locked(request, runs_here, transfer.bytes_at);
      } else {
        peer = choose_node_locked(request, /*runs_here=*/true, transfer.bytes_at, spilled_from);
        if (peer == 0) {  // nobody has room now: it waits where it was sent
          auto back = peers_.find(spilled_from);
          peer = back != peers_.end() && back->second.state == Peer::State::kReady
                     ? spilled_from
                     : choose_node_locked(request, /*runs_here=*/false, transfer.bytes_at);
        }
        if (peer == 0) return false;
      }
      if (peer == 0) {
        if (runs_here || !waits_for_nodes() || shut_down_) return false;
        // No node fits it (yet): it waits for one to join, or for the timeout (wait_for_fit).
        const auto wait = std::chrono::duration_cast<internal::Clock::duration>(
            std::chrono::duration<double>(config_.infeasible_timeout_s));
        waiting_.push_back(Waiting{task, internal::Clock::now() + wait});
        start_waiting_timer_locked();
        return true;
      }
      Peer& p = peers_[peer];
      add(&p.used, request, +1);
      call.call_id = next_call_++;
      pending_.emplace(call.call_id, Pending{task, peer, request, p.name, {}, call.result_object,
                                             call.may_spill});
    }
    const uint64_t call_id = call.call_id;
    call.function = std::move(function);
    call.task_name = task->function_name();
    call.request = to_wire(request);
    call.args = std::move(args);
    std::string why;
    bool gone = false;
    const bool sent = send_lending(peer, std::move(call), refs.lends, &why, &gone);
    if (!sent) {
      // The node went away between the choice and the send, or the call cannot be encoded:
      // arguments passed by value larger than one message.
      // A node that went away: the call stays in pending_ for its failure handler, which takes
      // it with the others in flight there and runs it again elsewhere (under max_retries), as
      // a call lost there. The handler runs after this: the call was recorded under mu_ while
      // the node was ready, and the handler marks it dead and takes its calls under mu_ (or it
      // ran already and took this one). Unless it could run here: then it does.
      if (gone && !runs_here && to == 0) return true;
      Pending pending{};
      if (!take_pending(call_id, &pending)) return true;  // failed by the handler
      // (A variant call placed on that node by the planner goes back to it: another variant may
      // run here.)
      if (why.empty() || runs_here || to != 0) return false;  // run here, or fail here
      rt_->fail_task(task, std::make_exception_ptr(Error(
                               ErrorCode::kInvalidArgument,
                               "task '" + task->function_name() + "' cannot go to another node: " +
                                   why + " (pass large values as ObjectRefs: prism::put)")));
      return true;
    }
    return true;
  }

  // Node: a ready task this node can never run (its request fits only elsewhere) goes to the
  // driver, which runs it or relays it to a node that can. A task this node can run but has no
  // room for now (busy with other work: nested tasks) may spill: the driver runs it, or sends it
  // to a node with room now, or sends it back (kSpilled), and then it queues here; after a
  // refusal this node does not ask again for kSpillBackoff (the cluster is busy too). Its
  // arguments travel inline (a node's values are not pulled from it), its result comes back
  // inline.
  bool offer_to_driver(TaskRecord* task) noexcept {
    bool spill = false;
    if (rt_->runs_here(task)) {  // (the shape's cached answer: no lock)
      if (!may_spill_nested(task)) return false;
      spill = true;
    }
    const ResourceRequest& request = task->request();
    CallMsg call;
    call.may_spill = spill;
    RefContext refs(this);  // (ObjectRefs inside the arguments: lent to the driver)
    try {
      internal::RefScopeGuard scope(&refs);
      if (!task->encode_remote(&call.function, &call.args)) return false;
    } catch (...) {
      return false;  // (out of memory while encoding: fails here as infeasible)
    }
    PeerId driver = 0;
    {
      MutexLock lock(mu_);
      if (!joined_ || driver_lost_ || job_ended_ || shut_down_) return false;
      driver = driver_;
      auto d = peers_.find(driver);
      call.call_id = next_call_++;
      pending_.emplace(call.call_id, Pending{task, driver, ResourceRequest{},
                                             d != peers_.end() ? d->second.name : "the driver",
                                             {}, 0, spill});
    }
    const uint64_t id = call.call_id;
    call.task_name = task->function_name();
    call.request = to_wire(request);
    bool sent = false;
    std::string why;
    try {
      if (!refs.lends.empty()) call.refs = refs_.prepare(refs.lends, driver);
      std::string frame;
      encode(Message(std::move(call)), &frame);
      sent = comm_->send(driver, std::move(frame));
    } catch (const std::exception& e) {
      why = e.what();
    }
    if (!refs.lends.empty()) {
      apply(sent ? refs_.announce(refs.lends, driver) : refs_.unprepare(refs.lends, driver));
    }
    if (sent) return true;
    Pending p{};
    if (!take_pending(id, &p)) return true;  // failed by the peer-error handler
    if (why.empty() || spill) return false;  // (the driver is gone: runs here, or fails here)
    rt_->fail_task(task, std::make_exception_ptr(Error(
                             ErrorCode::kInvalidArgument,
                             "task '" + task->function_name() + "' cannot go to another node: " + why)));
    return true;
  }

  std::vector<VariantNode> variant_nodes(const std::vector<ResourceRequest>& requests,
                                         const std::vector<internal::ObjectEntry*>& args,
                                         int64_t* elsewhere) const override {
    std::vector<VariantNode> out;
    if (elsewhere != nullptr) *elsewhere = 0;
    if (config_.role != ClusterRole::kDriver) return out;
    // Where the arguments' values are: each holder's bytes (objects the link knows: values that
    // live on nodes, and local values nodes were sent or pulled).
    std::map<PeerId, int64_t> held;
    for (internal::ObjectEntry* e : args) {
      uint64_t id = 0;
      if (auto* remote = dynamic_cast<RemoteObject*>(e->remote_value())) {
        id = remote->id();
      } else {
        id = objects_.id_of(e->id());  // (a value spilled to a file here counts as here)
      }
      std::vector<PeerId> holders;
      uint64_t bytes = 0;
      if (id == 0 || !objects_.where(id, &holders, &bytes)) continue;
      bool here = e->state() == internal::ObjState::kReady;
      for (PeerId p : holders) {
        held[p] += static_cast<int64_t>(bytes);
        here = here || p == kHere;
      }
      if (!here && elsewhere != nullptr) *elsewhere += static_cast<int64_t>(bytes);
    }
    MutexLock lock(mu_);
    for (const auto& [id, p] : peers_) {
      if (p.state != Peer::State::kReady || p.role != PeerRole::kNode) continue;
      VariantNode n;
      n.peer = id;
      n.name = node_name(p.name);
      for (const ResourceRequest& r : requests) {
        double lanes = 0;
        if (fits(r, p.totals, WireResources{})) {
          lanes = std::numeric_limits<double>::infinity();
          auto per = [&](int64_t have, int64_t want) {
            if (want > 0) lanes = std::min(lanes, static_cast<double>(have / want));
          };
          per(p.totals.cpu, r.cpu);
          per(p.totals.gpu, r.gpu);
          per(p.totals.memory, r.memory);
          if (!std::isfinite(lanes)) lanes = 1;  // (asks for custom resources only)
          lanes = std::max(1.0, lanes);
        }
        n.lanes.push_back(lanes);
      }
      const auto h = held.find(id);
      n.bytes_held = h == held.end() ? 0 : h->second;
      out.push_back(std::move(n));
    }
    return out;
  }

  // Node: whether a ready task this node can run should ask the driver for room elsewhere: it
  // has no room here now, it was not sent back already, and no refusal came lately.
  // Every nested task a node runs passes here: the common answers (room here now, a refusal
  // lately) take no link lock (fits_now takes the scheduler's, as the driver's offer does).
  bool may_spill_nested(TaskRecord* task) noexcept {
    if (!nested_spill_) return false;
    if (spilled_back_count_.load(std::memory_order_acquire) > 0) {
      MutexLock lock(mu_);
      if (spilled_back_.erase(task) != 0) {  // sent back: it queues here
        spilled_back_count_.fetch_sub(1, std::memory_order_acq_rel);
        return false;
      }
    }
    if (internal::Clock::now().time_since_epoch().count() <
        spill_backoff_until_.load(std::memory_order_relaxed)) {
      return false;
    }
    if (rt_->scheduler().fits_now(task->request())) return false;
    MutexLock lock(mu_);
    return joined_ && !driver_lost_ && !job_ended_ && !shut_down_;
  }

  bool waits_for_nodes() const override {
    return config_.role == ClusterRole::kDriver && config_.launcher == nullptr;
  }

  std::string infeasible_elsewhere(const ResourceRequest& request, bool actor) const override {
    MutexLock lock(mu_);
    if (config_.role == ClusterRole::kNode) {
      // A node's task or actor goes to the driver, which knows every node (it fails there
      // naming their shapes if none fits).
      (void)actor;
      return joined_ && !driver_lost_ ? std::string() : std::string("the driver is gone");
    }
    for (const auto& [id, p] : peers_) {
      if (p.state == Peer::State::kReady && p.role == PeerRole::kNode &&
          fits(request, p.totals, WireResources{})) {
        return {};
      }
    }
    return ready_nodes_.load() == 0 ? "no other node has joined the cluster"
                                    : "no other node of the cluster can run it either";
  }

  bool serve() override {
    for (;;) {
      const uint32_t seen = changes_.load(std::memory_order_acquire);
      {
        MutexLock lock(mu_);
        if (job_ended_) return true;
        if (driver_lost_) return false;
      }
      internal::futex_wait(&changes_, seen, internal::kNoDeadline);
    }
  }

  void wait_for_nodes(int n, Deadline deadline) override {
    for (;;) {
      const uint32_t seen = changes_.load(std::memory_order_acquire);
      if (ready_nodes_.load(std::memory_order_acquire) >= n) return;
      if (internal::Clock::now() >= deadline) {
        throw TimeoutError("prism::wait_for_nodes: " + std::to_string(ready_nodes_.load()) +
                           " of " + std::to_string(n) + " nodes joined before the deadline");
      }
      internal::futex_wait(&changes_, seen, deadline);
    }
  }

  int node_count() const override { return 1 + ready_nodes_.load(std::memory_order_acquire); }

  uint64_t tasks_in_flight() const override {
    MutexLock lock(mu_);
    uint64_t n = waiting_.size();
    for (const auto& [id, p] : pending_) n += p.task != nullptr ? 1 : 0;
    return n;
  }

  void add_stats(Stats* stats) const override {
    const ObjectTable::Stats o = objects_.stats();
    stats->objects.secondary_bytes += o.secondary_bytes;
    stats->objects.spilled_bytes += o.spilled_bytes;
    stats->objects.restored_bytes += o.restored_bytes;
    stats->transfers.node_pulls += o.pulls;
    stats->transfers.node_pulled_bytes += o.pulled_bytes;
    stats->transfers.node_served += o.served;
    stats->transfers.node_served_bytes += o.served_bytes;
    MutexLock lock(mu_);
    for (const auto& [id, p] : peers_) {
      if (p.state != Peer::State::kReady || p.role != PeerRole::kNode) continue;
      NodeStats n;
      n.node = node_name(p.name);
      n.total = resource_map(p.totals);
      n.available = resource_map(p.totals);
      // What this process sent there and is still held there (its own view: work the node
      // got elsewhere is not in it).
      for (auto& [name, amount] : resource_map(p.used)) n.available[name] -= amount;
      if (p.reported) {  // what the node itself counts (its last report)
        const NodeStatsMsg& r = p.report;
        n.reported = true;
        n.reported_at = p.reported_at;
        n.tasks_waiting_for_arguments = r.tasks_waiting_for_arguments;
        n.tasks_queued = r.tasks_queued;
        n.tasks_running = r.tasks_running;
        n.tasks_done = r.tasks_done;
        n.tasks_failed = r.tasks_failed;
        n.objects = r.objects;
        n.primary_bytes = r.primary_bytes;
        n.capacity_bytes = r.capacity_bytes;
        n.secondary_bytes = r.secondary_bytes;
        n.spilled_bytes = r.spilled_bytes;
        n.threads = static_cast<int>(std::min<uint32_t>(r.threads, INT32_MAX));
        n.pulls = r.pulls;
        n.pulled_bytes = r.pulled_bytes;
        n.served = r.served;
        n.served_bytes = r.served_bytes;
      }
      stats->nodes.push_back(std::move(n));
    }
  }

  static std::map<std::string, double> resource_map(const WireResources& r) {
    std::map<std::string, double> m;
    const double u = internal::kUnitsPerResource;
    m["CPU"] = static_cast<double>(r.cpu) / u;
    m["GPU"] = static_cast<double>(r.gpu) / u;
    m["memory"] = static_cast<double>(r.memory);
    for (const auto& [name, amount] : r.custom) m[name] = static_cast<double>(amount) / u;
    return m;
  }

  std::map<std::string, double> cluster_totals() const override {
    std::map<std::string, double> m;
    MutexLock lock(mu_);
    for (const auto& [id, p] : peers_) {
      if (p.state != Peer::State::kReady || p.role != PeerRole::kNode) continue;
      const double u = internal::kUnitsPerResource;
      m["CPU"] += static_cast<double>(p.totals.cpu) / u;
      m["GPU"] += static_cast<double>(p.totals.gpu) / u;
      m["memory"] += static_cast<double>(p.totals.memory);
      for (const auto& [name, amount] : p.totals.custom) {
        m[name] += static_cast<double>(amount) / u;
      }
    }
    return m;
  }

  void shutdown() noexcept override {
    output_.stop();  // (node) what was printed so far goes out first
    stop_reporter();
    stop_watchdog();
    stop_stager();
    if (channels_) channels_->close();
    std::vector<Pending> lost;
    std::vector<PeerId> nodes;
    {
      MutexLock lock(mu_);
      if (shut_down_) return;
      shut_down_ = true;
      for (auto& [id, p] : pending_) lost.push_back(p);
      pending_.clear();
      for (auto& [id, p] : peers_) {
        if (p.state == Peer::State::kReady) nodes.push_back(id);
      }
    }
    if (config_.role == ClusterRole::kDriver) {
      std::string frame;
      try {
        encode(ShutdownMsg{}, &frame);
      } catch (...) {
      }
      for (PeerId id : nodes) comm_->send(id, frame);
    }
    for (Pending& p : lost) {
      if (p.task == nullptr) continue;
      rt_->fail_task(p.task, rt_->lost_error("the job ended before the task finished on another "
                                             "node"));
    }
    fail_pulls(kHere, "the job ended");
    fail_span_queries(kHere);
    stop_waiting_tasks();
    // Node: the driver's actors held here lose their handles (they stop with the runtime).
    std::map<uint64_t, HeldActor> held;
    {
      MutexLock lock(mu_);
      held.swap(held_actors_);
    }
    for (auto& [key, a] : held) a.drop(a.handle);
  }

  // ---- actors on other nodes (driver) ----

  bool offer_actor(ActorCore* actor, TaskRecord* create) noexcept override {
    if (config_.role == ClusterRole::kNode) return offer_actor_to_driver(actor, create);
    if (config_.role != ClusterRole::kDriver || ready_nodes_.load(std::memory_order_acquire) == 0) {
      return false;
    }
    const ResourceRequest& request = actor->request();
    const bool runs_here = rt_->scheduler().infeasible_reason(request).empty();
    if (runs_here && (request.empty() || rt_->scheduler().fits_now(request))) return false;
    ActorCreateMsg msg;
    RefContext refs(this);
    try {
      internal::RefScopeGuard scope(&refs);
      if (!create->encode_remote(&msg.constructor, &msg.args)) return false;
    } catch (...) {
      return false;
    }
    PeerId peer = 0;
    {
      MutexLock lock(mu_);
      peer = choose_node_locked(request, runs_here, {});
      if (peer == 0) return false;
      Peer& p = peers_[peer];
      add(&p.used, request, +1);
      msg.call_id = next_call_++;
      msg.actor = next_actor_++;
      pending_.emplace(msg.call_id,
                       Pending{nullptr, peer, ResourceRequest{}, p.name, actor->weak_from_this()});
      remote_actors_.emplace(msg.actor, RemoteActor{actor->weak_from_this(), peer, request});
    }
    send_actor_create(actor, create, peer, std::move(msg), refs.lends);
    return true;
  }

  // Sends the creation of `actor` (msg: its call id, number, constructor and arguments set) to
  // `peer`, where it is built, and makes `actor` forward its calls there under that number.
  // `lends`: the objects its arguments' refs lend (this process's entries: kept pinned with the
  // recipe of an actor that may restart, to lend them again to its next node).
  void send_actor_create(ActorCore* actor, TaskRecord* create, PeerId peer, ActorCreateMsg msg,
                         const std::vector<RefTable::Lend>& lends) {
    msg.type_name = actor->type_name();
    msg.name = actor->options().name;
    msg.max_concurrency = static_cast<uint32_t>(actor->options().max_concurrency);
    msg.request = to_wire(actor->request());
    const uint64_t key = msg.actor;
    if (config_.role == ClusterRole::kDriver && actor->options().max_restarts != 0 &&
        std::all_of(lends.begin(), lends.end(),
                    [](const RefTable::Lend& l) { return static_cast<bool>(l.entry); })) {
      std::shared_ptr<const std::vector<RefTable::Lend>> pins;  // (let go here if not kept)
      try {
        auto recipe = std::make_shared<const ActorCreateMsg>(msg);
        if (!lends.empty()) pins = std::make_shared<const std::vector<RefTable::Lend>>(lends);
        MutexLock lock(mu_);
        if (auto it = remote_actors_.find(key); it != remote_actors_.end()) {
          it->second.recipe = std::move(recipe);
          it->second.recipe_lends = std::move(pins);
          it->second.restarts_left = actor->options().max_restarts;
        }
      } catch (...) {
        // Out of memory for the copies: it dies with its node instead.
      }
    }
    send_lending(peer, std::move(msg), lends);
    // Sent before the actor can forward its first call (the same peer's queue keeps the order).
    rt_->counters().add(internal::TaskCounters::kRemote);  // placed there: done, for the stats
    rt_->remote_task_done();
    create->release_run();
    actor->become_remote(key);
  }

  // Node: an actor this node can never hold (its request fits only elsewhere) is created through
  // the driver, which builds it itself or on a node that can; this node calls it through the
  // driver, as it calls an imported handle, under a number of its own (kNodeActorBit), and
  // dropping its last handle here stops it there.
  bool offer_actor_to_driver(ActorCore* actor, TaskRecord* create) noexcept {
    const ResourceRequest& request = actor->request();
    if (rt_->scheduler().infeasible_reason(request).empty()) return false;
    ActorCreateMsg msg;
    std::string why;
    RefContext refs(this);
    try {
      internal::RefScopeGuard scope(&refs);
      if (!create->encode_remote(&msg.constructor, &msg.args)) {
        why = "its constructor and arguments cannot travel (register the actor with PRISM_ACTOR "
              "and pass serializable arguments)";
      }
    } catch (const std::exception& e) {
      why = e.what();
    }
    PeerId driver = 0;
    if (why.empty()) {
      MutexLock lock(mu_);
      if (!joined_ || driver_lost_ || job_ended_ || shut_down_) {
        why = "the driver is gone";
      } else {
        driver = driver_;
        auto d = peers_.find(driver);
        msg.call_id = next_call_++;
        msg.actor = kNodeActorBit | next_actor_++;
        pending_.emplace(msg.call_id,
                         Pending{nullptr, driver, ResourceRequest{},
                                 d != peers_.end() ? d->second.name : "the driver",
                                 actor->weak_from_this()});
        remote_actors_.emplace(msg.actor, RemoteActor{actor->weak_from_this(), driver, {}});
      }
    }
    if (!why.empty()) {  // it cannot be built here either: say why, rather than wait forever
      std::exception_ptr error;
      try {
        error = std::make_exception_ptr(InfeasibleError(
            "infeasible actor " + actor->type_name() + " on " + rt_->node_id() + ": " +
            rt_->scheduler().infeasible_reason(request) + "; another node could hold it, but " +
            why));
      } catch (...) {
        error = std::current_exception();
      }
      actor->refuse_creation(create, std::move(error));
      return true;
    }
    send_actor_create(actor, create, driver, std::move(msg), refs.lends);
    return true;
  }

  void forward_actor_call(ActorCore* actor, uint64_t key, TaskRecord* call) noexcept override {
    ActorCallMsg msg;
    std::string why;
    RefContext refs(this);
    try {
      internal::RefScopeGuard scope(&refs);
      if (!call->encode_remote(&msg.method, &msg.args)) {
        why = "the actor " + actor->type_name() + " lives on another node, and this method " +
              "cannot go there: register it with PRISM_ACTOR, with serializable parameters and "
              "result (prism/serialize.h)";
      }
      msg.task_name = call->function_name();
    } catch (const std::exception& e) {
      why = std::string("cannot send the call: ") + e.what();
    }
    PeerId peer = 0;
    if (why.empty()) {
      MutexLock lock(mu_);
      auto it = remote_actors_.find(key);
      if (it == remote_actors_.end()) {
        why = "actor " + actor->type_name() + " is gone from its node";
      } else {
        peer = it->second.peer;
        msg.call_id = next_call_++;
        msg.actor = key;
        // The driver's calls: a large result may stay on the actor's node (a node's calls go
        // through the driver, which cannot hand it on: theirs come back inline), and so may
        // each of a num_returns call's results (result_object + its index).
        if (config_.role == ClusterRole::kDriver) {
          if (call->remote_materializer() != nullptr) {
            msg.result_object = objects_.new_id();
          } else if (const size_t n = call->remote_elements(); n != 0 && n <= kMaxElements) {
            msg.num_returns = static_cast<uint32_t>(n);
            msg.result_object = objects_.new_ids(n);
          }
        }
        pending_.emplace(msg.call_id, Pending{call, peer, ResourceRequest{}, peers_[peer].name,
                                              {}, msg.result_object});
      }
    }
    if (!why.empty()) {
      rt_->fail_task(call, std::make_exception_ptr(ActorDiedError(why)));
      return;
    }
    const uint64_t id = msg.call_id;
    const bool sent = send_lending(peer, std::move(msg), refs.lends);
    Pending p{};
    if (!sent && take_pending(id, &p)) {
      rt_->fail_task(call, std::make_exception_ptr(ActorDiedError(
                               "actor " + actor->type_name() + ": its node is gone")));
    }
  }

  void drop_remote_actor(const ActorCore* actor, uint64_t key, bool kill) noexcept override {
    PeerId peer = 0;
    {
      MutexLock lock(mu_);
      auto it = remote_actors_.find(key);
      if (it == remote_actors_.end()) return;
      // A handle of the same actor arrived after this proxy's last one went (its weak_ptr had
      // expired as this one finalized): the new proxy owns the record now.
      if (std::shared_ptr<ActorCore> current = it->second.actor.lock();
          current != nullptr && current.get() != actor) {
        return;
      }
      peer = it->second.peer;
      auto p = peers_.find(peer);
      if (p != peers_.end()) add(&p->second.used, it->second.request, -1);
      forget_actor_locked(it);
    }
    // A node's proxy of an imported handle dropping its last handle tells nobody (the driver
    // keeps what it exported until the job ends); killing through it does reach the actor. An
    // actor this node had created elsewhere is released (it finishes its calls, then stops).
    if (config_.role == ClusterRole::kNode && !kill && (key & kNodeActorBit) == 0) return;
    send(peer, ActorKillMsg{key, !kill});
  }

  // ---- actor handles that travel ----

  uint64_t export_actor(ActorCore* actor, void* typed_handle, void (*kill)(void*),
                        void (*drop)(void*)) override {
    uint64_t key = 0;
    bool keep = false;
    {
      MutexLock lock(mu_);
      if (config_.role == ClusterRole::kDriver) {  // (no task leaves a node yet)
        key = export_locked(actor, HeldActor{typed_handle, kill, drop}, &keep);
      }
    }
    if (!keep) drop(typed_handle);
    if (key == 0) {
      throw Error(ErrorCode::kInvalidArgument,
                  "an actor handle cannot leave a node yet (only the driver's handles travel)");
    }
    return key;
  }

  // Driver: the number nodes call `actor` by. An actor on a node keeps its number there (calls
  // are relayed); one living here keeps `held` (a typed handle) for the calls from nodes, and
  // *kept says so (else the caller drops it).
  uint64_t export_locked(ActorCore* actor, HeldActor held, bool* kept) PRISM_REQUIRES(mu_) {
    *kept = false;
    if (auto it = exported_.find(actor->id()); it != exported_.end()) return it->second;
    uint64_t key = 0;
    for (const auto& [k, a] : remote_actors_) {
      if (a.actor.lock().get() == actor) key = k;
    }
    if (key == 0) {
      key = next_actor_++;
      held_actors_[key] = held;
      *kept = true;
    }
    exported_[actor->id()] = key;
    return key;
  }

  std::shared_ptr<ActorCore> find_named_actor(const std::string& name,
                                              const std::type_info& type) override {
    auto wait = std::make_shared<Lookup>();
    ActorLookupMsg msg;
    msg.name = name;
    msg.type = type.name();
    PeerId driver = 0;
    {
      MutexLock lock(mu_);
      driver = driver_;
      msg.call_id = next_call_++;
      lookups_[msg.call_id] = wait;
    }
    const uint64_t id = msg.call_id;
    send(driver, Message(std::move(msg)));
    const bool answered = wait->done.wait_until(internal::deadline_after(std::chrono::seconds(30)));
    {
      MutexLock lock(mu_);
      lookups_.erase(id);
    }
    if (!answered) {
      throw TimeoutError("prism::get_actor('" + name + "'): no answer from the driver");
    }
    if (!wait->error.empty()) throw Error(ErrorCode::kInvalidArgument, wait->error);
    uint64_t key = 0;
    try {
      key = prism::from_bytes<uint64_t>(wait->payload);
    } catch (const std::exception&) {
      throw Error(ErrorCode::kInternal, "prism::get_actor: a malformed answer from the driver");
    }
    return import_actor(key, type, type.name());
  }

  // Driver: a node looks an actor up by name.
  void on_actor_lookup(PeerId peer, const ActorLookupMsg& msg) {
    ResultMsg r;
    r.call_id = msg.call_id;
    std::shared_ptr<ActorCore> actor;
    for (const auto& a : rt_->actors().all()) {
      if (a->name() == msg.name) actor = a;
    }
    if (!actor || std::string(actor->type().name()) != msg.type) {
      r.status = CallStatus::kSystemError;
      r.error_code = static_cast<int32_t>(ErrorCode::kInvalidArgument);
      r.message = actor ? "the actor named '" + msg.name + "' is a " + actor->type_name() +
                              ", not the type asked for"
                        : "no live actor named '" + msg.name + "' in the cluster";
      send(peer, Message(std::move(r)));
      return;
    }
    const internal::ActorHandleOps* ops = actor->handle_ops();
    void* typed = ops != nullptr ? ops->make(actor) : nullptr;
    bool kept = false;
    uint64_t key = 0;
    {
      MutexLock lock(mu_);
      key = export_locked(actor.get(),
                          HeldActor{typed, ops ? ops->kill : nullptr, ops ? ops->drop : nullptr},
                          &kept);
      if (kept && typed == nullptr) {  // (a proxy without typed operations cannot be served)
        held_actors_.erase(key);
        exported_.erase(actor->id());
        key = 0;
      }
    }
    if (!kept && typed != nullptr) ops->drop(typed);
    if (key == 0) {
      r.status = CallStatus::kSystemError;
      r.error_code = static_cast<int32_t>(ErrorCode::kInvalidArgument);
      r.message = "the actor named '" + msg.name + "' cannot be reached from nodes";
    } else {
      r.payload = prism::to_bytes(key);
    }
    send(peer, Message(std::move(r)));
  }

  std::shared_ptr<ActorCore> import_actor(uint64_t key, const std::type_info& type,
                                          const char* type_name) override {
    for (;;) {
      std::shared_ptr<ActorCore> known;
      {
        MutexLock lock(mu_);
        if (config_.role != ClusterRole::kNode) {
          throw Error(ErrorCode::kInvalidArgument, "actor handles arrive only on nodes");
        }
        auto it = remote_actors_.find(key);
        if (it != remote_actors_.end()) known = it->second.actor.lock();
      }
      // The proxy here may be finalizing, its last handle gone (it is still reachable until its
      // last reference goes): it is reused only if a handle can still be taken of it.
      if (known != nullptr && known->try_acquire_handle()) return known;
      // A new proxy, its calls bound for the driver (which runs or relays them), made whole
      // (its handle counted, its number set: a kill through it reaches the actor) before anyone
      // can find it.
      std::shared_ptr<ActorCore> proxy = internal::new_actor(rt_, internal::ActorOptions{}, type,
                                                             type_name);
      proxy->handle_acquired();
      proxy->become_remote(key);
      {
        MutexLock lock(mu_);
        auto it = remote_actors_.find(key);
        const std::shared_ptr<ActorCore> now =
            it == remote_actors_.end() ? nullptr : it->second.actor.lock();
        if (now == nullptr || now == known) {
          remote_actors_[key] = RemoteActor{proxy, driver_, ResourceRequest{}};
          return proxy;
        }
      }
      // Another task's import recorded its new proxy meanwhile: that one serves both (of two
      // proxies, only one could own the record). Ours was never seen: its handle's release
      // finalizes it, and as the record is not its own, that sends nothing.
      proxy->handle_released();
    }
  }

  LinkCounters counters() const {
    LinkCounters c;
    c.unauthenticated = unauthenticated_.load(std::memory_order_relaxed);
    c.malformed = malformed_.load(std::memory_order_relaxed);
    c.refused_joins = refused_joins_.load(std::memory_order_relaxed);
    c.unknown_results = unknown_results_.load(std::memory_order_relaxed);
    c.evicted_handshakes = evicted_.load(std::memory_order_relaxed);
    c.spilled = spilled_.load(std::memory_order_relaxed);
    c.nested_placed = nested_placed_.load(std::memory_order_relaxed);
    c.nested_sent_back = nested_sent_back_.load(std::memory_order_relaxed);
    c.nested_refused = nested_refused_.load(std::memory_order_relaxed);
    c.declared_dead = declared_dead_.load(std::memory_order_relaxed);
    c.dropped_connections = dropped_.load(std::memory_order_relaxed);
    c.lost_tasks_retried = lost_retried_.load(std::memory_order_relaxed);
    c.actor_restarts = actor_restarts_.load(std::memory_order_relaxed);
    c.objects_rebuilt = rebuilt_.load(std::memory_order_relaxed);
    c.redirected = redirected_.load(std::memory_order_relaxed);
    c.direct_fallbacks = direct_fallbacks_.load(std::memory_order_relaxed);
    c.direct_closed_idle = direct_closed_idle_.load(std::memory_order_relaxed);
    c.device_sends = device_sends_.load(std::memory_order_relaxed);
    c.device_receives = device_receives_.load(std::memory_order_relaxed);
    c.device_landings = device_landings_.load(std::memory_order_relaxed);
    {
      MutexLock lock(mu_);
      c.epoch = epoch_;
      for (const auto& [id, p] : peers_) c.direct_connections += p.direct ? 1 : 0;
    }
    return c;
  }

 private:
  // ---- starting ----

  LauncherSession* launcher() const {
    return static_cast<LauncherSession*>(config_.launcher.get());
  }

  void start_driver() {
    token_ = new_token();
    rt_->set_node_id("node0");  // (before a node can join and read it on another thread)
    const std::string bound = comm_->listen(config_.listen);
    job_dir_ = write_job_dir(config_.job_dir, bound, token_);
    if (LauncherSession* l = launcher()) {
      // Every rank learns where to join (rank 0 is this driver).
      l->publish("prism.address", bound);
      l->publish("prism.token", token_);
      l->fence();
    }
    PRISM_LOG(kInfo) << "cluster: driver listening on " << bound << ", job directory " << job_dir_;
    watchdog_ = std::thread([this] { watch_peers(); });
    if (config_.min_nodes > 0) {
      wait_for_nodes(config_.min_nodes,
                     internal::deadline_after(std::chrono::duration<double>(config_.join_timeout_s)));
    }
  }

  void start_node() {
    if (LauncherSession* l = launcher()) {
      l->fence();
      driver_address_ = l->lookup(0, "prism.address");
      token_ = l->lookup(0, "prism.token");
    } else {
      driver_address_ = config_.address;
      std::string token_file = config_.token_file;
      if (token_file.empty()) token_file = jobs_root() + "/latest/token";
      token_ = read_token_file(token_file);
    }
    // Forwarding starts before the handshake: the driver may send a task right after its
    // welcome, and the progress thread may hand it to a worker before this thread wakes (what
    // the task printed then stayed here). Until the welcome, lines stay here (send: false).
    start_forwarding_output();
    peer_address_ = listen_for_peers();
    try {
      join_driver();
    } catch (...) {
      output_.stop();
      throw;
    }
    reporter_ = std::thread([this] { report_stats(); });
    watchdog_ = std::thread([this] { watch_peers(); });
  }

  void join_driver() {
    {
      // Connected under mu_: the connection is made on the progress thread, which may take the
      // driver's hello (or the connection's failure) before connect() returns here; its
      // handler waits for mu_ and so finds driver_ set. (Set after the lock, a hello that came
      // first was dropped as a stranger's, and this node waited for the welcome until the
      // driver ended: seen once in CI under ASan. connect() takes only the comm's own lock and
      // waits for nothing; the comm calls no handler under its lock.)
      MutexLock lock(mu_);
      driver_ = comm_->connect(driver_address_);
      testing_pause("PRISM_TESTING_JOIN_PAUSE_MS");  // (keep it right after connect())
      Peer& p = peers_[driver_];
      p.name = "the driver at " + driver_address_;
    }
    // The driver speaks first (kHello); the handshake completes on the progress thread.
    const Deadline deadline =
        internal::deadline_after(std::chrono::duration<double>(config_.join_timeout_s));
    for (;;) {
      const uint32_t seen = changes_.load(std::memory_order_acquire);
      {
        MutexLock lock(mu_);
        if (joined_) break;
        if (!join_error_.empty()) throw Error(ErrorCode::kUnavailable, join_error_);
      }
      if (internal::Clock::now() >= deadline) {
        throw Error(ErrorCode::kUnavailable, "cluster: no answer from the driver at " +
                                                 driver_address_ + " within " +
                                                 std::to_string(config_.join_timeout_s) + " s");
      }
      internal::futex_wait(&changes_, seen, deadline);
    }
  }

  // Node: what its tasks print reaches the driver's terminal (PRISM_FORWARD_OUTPUT=0: stays
  // here).
  void start_forwarding_output() {
    const char* env = std::getenv("PRISM_FORWARD_OUTPUT");
    if (env != nullptr && std::string(env) == "0") return;
    const bool started = output_.start([this](int stream, const std::string& text) {
      PeerId driver = 0;
      {
        MutexLock lock(mu_);
        if (!joined_ || job_ended_ || driver_lost_ || shut_down_) return false;
        driver = driver_;
      }
      std::string frame;
      try {
        encode(OutputMsg{static_cast<uint8_t>(stream), text}, &frame);
      } catch (...) {
        return false;
      }
      return comm_->send(driver, std::move(frame));
    });
    if (!started) {
      PRISM_LOG(kWarning) << "cluster: cannot forward this node's output (no pipes)";
    }
  }

  void changed() {
    changes_.fetch_add(1, std::memory_order_acq_rel);
    internal::futex_wake_all(&changes_);
  }

  // ---- peers ----

  void on_accept(PeerId peer) {
    HelloMsg hello;
    try {
      new_challenge(hello.challenge);
    } catch (const std::exception& e) {
      PRISM_LOG(kError) << "cluster: " << e.what();
      comm_->close(peer);
      return;
    }
    PeerId evicted = 0;
    {
      MutexLock lock(mu_);
      // At most kMaxAwaitingAuth peers wait to prove the token; a new one evicts the oldest, so
      // a flood of connections holds no memory and cannot keep a real node out for longer
      // than that node's own handshake takes.
      size_t awaiting = 0;
      uint64_t oldest = UINT64_MAX;
      for (const auto& [id, p] : peers_) {
        // (only connections made to us: not ours to other nodes, not the one to our driver)
        if (p.state != Peer::State::kAwaitingAuth || p.outgoing || id == driver_) continue;
        ++awaiting;
        if (p.accepted < oldest) {
          oldest = p.accepted;
          evicted = id;
        }
      }
      if (awaiting >= kMaxAwaitingAuth) {
        peers_.erase(evicted);  // (close() below: no callback of it runs after)
      } else {
        evicted = 0;
      }
      Peer& p = peers_[peer];
      std::memcpy(p.challenge, hello.challenge, kChallengeBytes);
      p.name = "peer " + std::to_string(peer);
      p.accepted = ++accepted_;
    }
    if (evicted != 0) {
      evicted_.fetch_add(1, std::memory_order_relaxed);  // (counted before the peer can see it)
      comm_->close(evicted);
    }
    send(peer, hello);
  }

  void on_peer_error(PeerId peer, const std::string& why) {
    if (forget_direct(peer, why)) return;
    fail_span_queries(peer);
    std::vector<Pending> lost;
    std::vector<std::weak_ptr<ActorCore>> lost_actors;
    std::vector<Relay> lost_relays;
    std::vector<uint64_t> orphans;  // actors the lost node had created elsewhere: released
    std::map<ActorCore*, uint64_t> restarted;  // actors built again on another node: their keys
    std::vector<uint64_t> lost_rebuilds;       // objects it was computing again (lineage)
    std::vector<std::shared_ptr<ActorCore>> keep_alive;  // let go after mu_ (retry_relay_locked)
    std::vector<RefTable::Effects> restart_fx;  // of restarted actors' refs (restart_actor_locked)
    std::string name;
    bool was_node = false;
    bool expected = false;  // the job is over: peers going away is no news
    {
      MutexLock lock(mu_);
      auto it = peers_.find(peer);
      if (it == peers_.end()) return;
      Peer& p = it->second;
      name = p.name;
      expected = job_ended_ || shut_down_;
      was_node = p.state == Peer::State::kReady && p.role == PeerRole::kNode &&
                 config_.role == ClusterRole::kDriver;
      p.state = Peer::State::kDead;
      detector_.forget(peer);
      if (was_node) ++epoch_;  // (the membership changed: one epoch per node declared dead)
      for (auto c = pending_.begin(); c != pending_.end();) {
        if (c->second.peer == peer) {
          lost.push_back(c->second);
          c = pending_.erase(c);
        } else {
          ++c;
        }
      }
      for (auto r = relays_.begin(); r != relays_.end();) {
        if (r->second.holder == peer || r->second.origin == peer) {
          if (r->second.holder == peer) {
            lost_relays.push_back(r->second);
          } else if (auto h = peers_.find(r->second.holder); h != peers_.end()) {
            add(&h->second.used, r->second.request, -1);  // (its late result is dropped)
          }
          r = relays_.erase(r);
        } else {
          ++r;
        }
      }
      for (auto n = node_actors_.begin(); n != node_actors_.end();) {
        if (n->first.first == peer) {
          orphans.push_back(n->second);
          n = node_actors_.erase(n);
        } else {
          ++n;
        }
      }
      for (auto a = remote_actors_.begin(); a != remote_actors_.end();) {
        if (a->second.peer == peer) {
          if (!expected && restart_actor_locked(a->first, a->second, &restarted, &restart_fx)) {
            ++a;
            continue;
          }
          lost_actors.push_back(a->second.actor);
          a = forget_actor_locked(a);
        } else {
          ++a;
        }
      }
      // Calls of restarted actors that nodes made: sent again now, under mu_, so that they
      // follow the actor's creation and precede every call relayed there after this.
      if (!expected) {
        for (Relay& r : lost_relays) {
          if (!r.task) r.not_retried = retry_relay_locked(peer, &r, restarted, &keep_alive);
        }
      }
      for (const auto& [id, r] : rebuilds_) {
        if (r.peer == peer) lost_rebuilds.push_back(id);
      }
      if (config_.role == ClusterRole::kNode && peer == driver_) {
        if (joined_) {
          driver_lost_ = true;
        } else if (join_error_.empty()) {
          join_error_ = "cluster: cannot reach the driver at " + driver_address_ + ": " + why;
        }
      }
      peers_.erase(it);
    }
    if (was_node) ready_nodes_.fetch_sub(1, std::memory_order_acq_rel);
    objects_.lose_peer(peer);
    fail_pulls(peer, name + " was lost: " + why);
    {
      // What it borrowed is its no more; what it lent dies with it (OwnerDiedError).
      RefReadyMsg died;
      died.status = CallStatus::kSystemError;
      died.error_code = static_cast<int32_t>(ErrorCode::kUnavailable);
      died.error_type = "prism::OwnerDiedError";
      died.message = "its owner, " + node_name(name) + ", was lost (" + why + ")";
      apply(refs_.lose_peer(peer, died));
    }
    // (The refs of actors restarted elsewhere: announced to their new nodes, or taken back.)
    for (RefTable::Effects& fx : restart_fx) apply(std::move(fx));
    changed();
    // Tasks lost there run again (elsewhere, or here) under their max_retries, unless the job
    // is ending; the others fail naming the node.
    size_t retried = 0;
    std::vector<bool> again(lost.size(), false);
    std::vector<std::pair<TaskRecord*, uint64_t>> calls_again;  // (call, its actor's key)
    for (size_t i = 0; i < lost.size(); ++i) {
      // A call of an actor built again elsewhere: sent there again under max_task_retries.
      if (TaskRecord* t = lost[i].task; t != nullptr && t->actor() != nullptr && !expected) {
        auto r = restarted.find(t->actor());
        if (r != restarted.end() && take_actor_call_retry(t)) {
          calls_again.emplace_back(t, r->second);
          again[i] = true;
          ++retried;
        }
        continue;
      }
      // (an actor's creation has no task: the actor is killed below; an actor call is not run
      // again: its actor died)
      if (lost[i].task != nullptr && lost[i].task->actor() == nullptr && !expected &&
          rt_->take_retry(lost[i].task)) {
        again[i] = true;
        ++retried;
      }
    }
    if (!expected && (!lost.empty() || was_node || config_.role == ClusterRole::kNode)) {
      if (lost.empty()) {
        PRISM_LOG(kWarning) << "cluster: " << name << " was lost (" << why << ")";
      } else {
        PRISM_LOG(kWarning) << "cluster: " << name << " was lost (" << why << "); of "
                            << lost.size() << " call(s) in flight there, " << retried
                            << " run again and " << lost.size() - retried << " fail";
      }
    }
    lost_retried_.fetch_add(retried, std::memory_order_relaxed);
    for (auto& [call, key] : calls_again) forward_actor_call(call->actor(), key, call);
    for (uint64_t id : lost_rebuilds) rebuild_run_lost(id, peer, name + " was lost: " + why);
    for (size_t i = 0; i < lost.size(); ++i) {
      const Pending& p = lost[i];
      if (p.task == nullptr) continue;
      if (again[i]) {
        if (p.task->actor() == nullptr) rt_->run_again(p.task);
        continue;
      }
      std::string note;
      if (expected) {
      } else if (p.task->actor() == nullptr) {
        note = " (no retries left: max_retries)";
      } else if (restarted.count(p.task->actor()) != 0) {
        note = " (its actor restarts on another node; the call is not sent again: "
               "max_task_retries)";
      }
      rt_->fail_task(p.task, std::make_exception_ptr(Error(
                                 ErrorCode::kUnavailable, "task '" + p.task->function_name() +
                                                              "' was lost with " + p.peer_name +
                                                              ": " + why + note)));
    }
    for (auto& weak : lost_actors) {
      if (auto actor = weak.lock()) actor->kill("was lost with " + name + ": " + why);
    }
    for (uint64_t key : orphans) stop_node_actor(key, /*release=*/true);
    for (const Relay& r : lost_relays) {  // calls relayed there: their callers learn it
      if (!r.task && r.not_retried == nullptr) continue;  // sent again (retry_relay_locked)
      ResultMsg res;
      res.call_id = r.origin_call;
      res.status = CallStatus::kSystemError;
      res.error_code = static_cast<int32_t>(ErrorCode::kUnavailable);
      if (r.task) {  // the origin may run it again (kLostWithNode)
        res.error_type = kLostWithNode;
        res.message = "it was lost with " + name + ": " + why;
      } else {
        res.message = "the actor's node, " + name + ", was lost: " + why;
        if (r.not_retried != nullptr && *r.not_retried != '\0') {
          res.message += std::string(" (its actor restarts on another node; the call is not "
                                     "sent again: ") + r.not_retried + ")";
        }
      }
      send(r.origin, Message(std::move(res)));
    }
  }

  // Driver: a node's call of an actor, relayed to the actor's node (`dead`), which died. If the
  // actor was built again elsewhere (`restarted`: its creation already sent there) and the call
  // may be retried (Relay::call kept, retries left under max_task_retries, its caller alive),
  // it is relayed to the actor's new node under a new relay id, and null is returned; its caller
  // waits on. Else why not: "" when the actor was not restarted, else the reason (for its
  // caller's error). Actors looked at are kept in `keep_alive`, let go after mu_ (a last
  // handle's finalization takes mu_).
  const char* retry_relay_locked(PeerId dead, Relay* lost,
                                 const std::map<ActorCore*, uint64_t>& restarted,
                                 std::vector<std::shared_ptr<ActorCore>>* keep_alive)
      PRISM_REQUIRES(mu_) {
    if (std::none_of(restarted.begin(), restarted.end(),
                     [&](const auto& kv) { return kv.second == lost->actor; })) {
      return "";
    }
    auto it = remote_actors_.find(lost->actor);
    if (it == remote_actors_.end()) return "the actor is gone";
    std::shared_ptr<ActorCore> actor = it->second.actor.lock();
    if (!actor) return "the actor is gone";
    keep_alive->push_back(actor);
    const int limit = actor->options().max_task_retries;
    if (limit == 0 || (limit > 0 && lost->retries_used >= limit)) return "max_task_retries";
    if (!lost->call) return "its arguments pass ObjectRefs";
    auto origin = peers_.find(lost->origin);
    if (lost->origin == dead || origin == peers_.end() ||
        origin->second.state != Peer::State::kReady) {
      return "its caller's node is gone";
    }
    auto p = peers_.find(it->second.peer);
    if (p == peers_.end()) return "its new node is gone";
    ActorCallMsg msg = *lost->call;
    msg.call_id = next_call_++;
    std::string frame;
    try {
      encode(Message(msg), &frame);
    } catch (const std::exception& e) {
      PRISM_LOG(kWarning) << "cluster: cannot send a call of actor " << actor->type_name()
                          << " again: " << e.what();
      return "it could not be encoded again";
    }
    if (!comm_->send(p->first, std::move(frame))) return "its new node is gone";
    Relay relay = *lost;
    relay.holder = p->first;
    relay.holder_name = p->second.name;
    relay.request = {};  // (an actor call holds nothing of its node's)
    ++relay.retries_used;
    relay.call = std::make_shared<const ActorCallMsg>(std::move(msg));
    relay.not_retried = nullptr;
    relays_[relay.call->call_id] = std::move(relay);
    lost_retried_.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }

  // Driver: the actor `key` (`a`) lost its node. With restarts left, it is built again on a live
  // node that can hold it (the least loaded if none has room now): its creation is sent there
  // now, under mu_, so that it precedes every call forwarded there after `a.peer` changes
  // (sending only queues the frame). Its key stays: its handles keep working, and calls made
  // meanwhile wait on that node behind the constructor. False: it dies.
  // The refs its constructor's arguments pass (recipe_lends) are lent to the new node as the
  // creation is sent (RefTable::prepare, then announce once sent); `effects`: what that leaves
  // for the caller to apply with mu_ released.
  bool restart_actor_locked(uint64_t key, RemoteActor& a,
                            std::map<ActorCore*, uint64_t>* restarted,
                            std::vector<RefTable::Effects>* effects) PRISM_REQUIRES(mu_) {
    if (config_.role != ClusterRole::kDriver || !a.recipe || a.restarts_left == 0) return false;
    std::shared_ptr<ActorCore> actor = a.actor.lock();
    if (!actor) return false;
    const PeerId to = choose_node_locked(a.request, /*runs_here=*/false, {});
    auto p = peers_.find(to);
    if (to == 0 || p == peers_.end()) return false;  // no live node can hold it
    const std::vector<RefTable::Lend>* lends = a.recipe_lends.get();
    ActorCreateMsg msg = *a.recipe;
    msg.call_id = next_call_++;
    std::string frame;
    bool prepared = false;
    bool sent = false;
    try {
      if (lends != nullptr) msg.refs = refs_.prepare(*lends, to);
      prepared = true;
      encode(Message(msg), &frame);
      pending_.emplace(msg.call_id, Pending{nullptr, to, ResourceRequest{}, p->second.name,
                                            a.actor});
      sent = comm_->send(to, std::move(frame));
      if (!sent) pending_.erase(msg.call_id);
    } catch (...) {
      pending_.erase(msg.call_id);
    }
    if (lends != nullptr && prepared) {
      try {
        effects->push_back(sent ? refs_.announce(*lends, to) : refs_.unprepare(*lends, to));
      } catch (...) {
        // (Out of memory for the list: the objects stay lent, which loses nothing.)
      }
    }
    if (!sent) return false;
    add(&p->second.used, a.request, +1);
    a.peer = to;
    if (a.restarts_left > 0) --a.restarts_left;
    if (a.restarts_left == 0 && a.recipe_lends) {
      // (No restart left: the objects stay only as long as this node borrows them.)
      dropped_pins_.push_back(std::move(a.recipe_lends));
    }
    (*restarted)[actor.get()] = key;
    actor_restarts_.fetch_add(1, std::memory_order_relaxed);
    PRISM_LOG(kWarning) << "cluster: actor " << actor->type_name() << " restarts on "
                        << p->second.name << " (its constructor runs again)";
    return true;
  }

  // A call of a restarted actor, lost with its old node: true if it may be sent again (its
  // actor's max_task_retries; counted in the call's record).
  static bool take_actor_call_retry(TaskRecord* call) {
    if (call->cancel_requested()) return false;
    const int limit = call->actor()->options().max_task_retries;
    if (limit == 0 || (limit > 0 && call->default_retries_used >= limit)) return false;
    if (call->default_retries_used < 255) ++call->default_retries_used;
    return true;
  }

  // Among live nodes that can ever run `request` (not `exclude`): of those with room for it now,
  // the one that holds the most bytes of its arguments (`bytes_at`), then the one with the most
  // room; else null if this node can run it; else the least loaded one.
  PeerId choose_node_locked(const ResourceRequest& request, bool runs_here,
                            const std::map<PeerId, uint64_t>& bytes_at, PeerId exclude = 0)
      PRISM_REQUIRES(mu_) {
    PeerId best = 0, fallback = 0;
    double best_load = 0, fallback_load = 0;
    uint64_t best_bytes = 0;
    for (const auto& [id, p] : peers_) {
      if (p.state != Peer::State::kReady || p.role != PeerRole::kNode || id == exclude) continue;
      if (!fits(request, p.totals, WireResources{})) continue;
      const double l = load(p.totals, p.used);
      auto b = bytes_at.find(id);
      const uint64_t here = b == bytes_at.end() ? 0 : b->second;
      if (fits(request, p.totals, p.used) &&
          (best == 0 || here > best_bytes || (here == best_bytes && l < best_load))) {
        best = id;
        best_load = l;
        best_bytes = here;
      }
      if (fallback == 0 || l < fallback_load) {
        fallback = id;
        fallback_load = l;
      }
    }
    if (best != 0) return best;
    return runs_here ? 0 : fallback;
  }

  bool take_pending(uint64_t call_id, Pending* out) {
    MutexLock lock(mu_);
    auto it = pending_.find(call_id);
    if (it == pending_.end()) return false;
    *out = it->second;
    pending_.erase(it);
    auto p = peers_.find(out->peer);
    if (p != peers_.end()) add(&p->second.used, out->request, -1);
    return true;
  }

  // A call's answer. One that cannot be encoded (a result larger than one message: calls from
  // nodes answer inline) is answered with that error instead: the caller never waits for an
  // answer that is not coming.
  // True if `r` itself went (not an error saying why it could not be encoded).
  bool send_result(PeerId peer, ResultMsg r) {
    const uint64_t id = r.call_id;
    std::string frame;
    bool whole = true;
    try {
      encode(Message(std::move(r)), &frame);
    } catch (...) {
      whole = false;
      frame.clear();
      try {
        encode(Message(error_result(id, std::current_exception())), &frame);
      } catch (const std::exception& e) {
        PRISM_LOG(kWarning) << "cluster: cannot encode an answer: " << e.what();
        return false;
      }
    }
#if defined(PRISM_FAULT_INJECTION)
    damage_for_test(&frame);
#endif
    return comm_->send(peer, std::move(frame)) && whole;
  }

  // Sends a result whose payload's refs lend `lends` (prepared already).
  void send_result_lending(PeerId peer, ResultMsg r, const std::vector<RefTable::Lend>& lends) {
    const bool sent = send_result(peer, std::move(r));
    if (!lends.empty()) apply(sent ? refs_.announce(lends, peer) : refs_.unprepare(lends, peer));
  }

#if defined(PRISM_FAULT_INJECTION)
  // The fault tests' hook (builds with PRISM_FAULT_INJECTION only): PRISM_TEST_DAMAGE_RESULT =
  // "corrupt:N" or "truncate:N" damages the N-th result this process sends (counting from 1):
  // its frame's magic bytes are flipped, or it is cut to half its length.
  void damage_for_test(std::string* frame) {
    static const std::pair<std::string, uint64_t> what = [] {
      const char* v = std::getenv("PRISM_TEST_DAMAGE_RESULT");
      const std::string s = v != nullptr ? v : "";
      const size_t colon = s.find(':');
      if (colon == std::string::npos) return std::pair<std::string, uint64_t>{};
      return std::pair<std::string, uint64_t>{s.substr(0, colon),
                                              std::strtoull(s.c_str() + colon + 1, nullptr, 10)};
    }();
    static std::atomic<uint64_t> sent{0};
    if (what.second == 0 || sent.fetch_add(1) + 1 != what.second || frame->size() < 8) return;
    PRISM_LOG(kWarning) << "cluster: test hook: " << what.first << " result " << what.second;
    if (what.first == "truncate") {
      frame->resize(frame->size() / 2);
    } else {
      for (size_t i = 0; i < 4; ++i) (*frame)[i] = static_cast<char>(~(*frame)[i]);
    }
  }
#endif

  // Encodes and queues `msg` (takes no lock of the link's: may be called under mu_).
  void send(PeerId peer, Message msg) {
    std::string frame;
    try {
      encode(msg, &frame);
    } catch (const std::exception& e) {
      PRISM_LOG(kWarning) << "cluster: cannot encode a message: " << e.what();
      return;
    }
    comm_->send(peer, std::move(frame));
  }

  // ---- messages ----

  void on_message(PeerId peer, std::string_view data) {
    // (Its arrival was a sign of life: on_activity, called for every message as it arrives.)
    // A peer that has not proven the token gets no large buffer decoded (a handshake is small).
    if (data.size() > kMaxHandshakeBytes && !is_ready(peer)) {
      unauthenticated_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    bool broken = false;  // a frame that cannot be decoded: the stream cannot be trusted
    const DecodeError e = split_frames(data, [&](std::string_view frame) {
      DecodeError de = DecodeError::kNone;
      if (frame_type(frame) == MsgType::kObjectData) {  // (its value is not copied)
        std::optional<ObjectDataView> view = decode_object_data(frame, &de);
        if (!view) {
          malformed_.fetch_add(1, std::memory_order_relaxed);
          broken = true;
          return;
        }
        if (is_ready(peer) && (is_counterpart(peer) || is_direct(peer))) {
          on_object_data(peer, *view);
        } else {
          unauthenticated_.fetch_add(1, std::memory_order_relaxed);
        }
        return;
      }
      std::optional<Message> msg = decode(frame, &de);
      if (!msg) {
        malformed_.fetch_add(1, std::memory_order_relaxed);
        PRISM_LOG(kDebug) << "cluster: dropped a malformed message (" << to_string(de) << ")";
        broken = true;
        return;
      }
      handle(peer, std::move(*msg));
    });
    if (e != DecodeError::kNone) {
      malformed_.fetch_add(1, std::memory_order_relaxed);
      PRISM_LOG(kDebug) << "cluster: dropped malformed bytes (" << to_string(e) << ")";
      broken = true;
    }
    // From a peer that proved the token (the driver, or one of its nodes), a message that
    // cannot be read means the stream is damaged: what was lost with it (a result, a pull's
    // answer) would be waited for forever. Its connection is dropped instead, as if it had died:
    // its tasks run again elsewhere. (From anyone else it is only dropped and counted.)
    // (A direct connection between nodes is dropped too: its pulls go through the driver.)
    if (broken && (is_direct(peer) || is_outgoing(peer))) {
      close_direct(peer, "it sent a message that cannot be decoded");
    } else if (broken && is_ready(peer) && is_counterpart(peer)) {
      drop_peer(peer, std::string("it sent a message that cannot be decoded (") +
                          to_string(e != DecodeError::kNone ? e : DecodeError::kMalformedBody) +
                          "): its connection is dropped");
    }
  }

  PeerId driver_id() {
    MutexLock lock(mu_);
    return driver_;
  }
  bool is_node(PeerId peer) {
    MutexLock lock(mu_);
    auto it = peers_.find(peer);
    return it != peers_.end() && it->second.role == PeerRole::kNode;
  }

  // A node, for the driver; the driver, for a node (who may answer this process's calls and
  // pulls).
  bool is_counterpart(PeerId peer) {
    return config_.role == ClusterRole::kDriver ? is_node(peer)
                                                : config_.role == ClusterRole::kNode &&
                                                      peer == driver_id();
  }

  bool is_ready(PeerId peer) {
    MutexLock lock(mu_);
    auto it = peers_.find(peer);
    return it != peers_.end() && it->second.state == Peer::State::kReady;
  }

  // Node: a direct connection this node made to another (to pull from it), in any state.
  bool is_outgoing(PeerId peer) {
    MutexLock lock(mu_);
    auto it = peers_.find(peer);
    return it != peers_.end() && it->second.outgoing;
  }

  // Node: a direct connection with another node that proved the token (pulls only).
  bool is_direct(PeerId peer) {
    MutexLock lock(mu_);
    auto it = peers_.find(peer);
    return it != peers_.end() && it->second.direct && it->second.state == Peer::State::kReady;
  }

  void handle(PeerId peer, Message msg) {
    // Before a peer proved the token only the handshake is acted on.
    if (auto* hello = std::get_if<HelloMsg>(&msg)) return on_hello(peer, *hello);
    if (auto* auth = std::get_if<AuthMsg>(&msg)) return on_auth(peer, *auth);
    if (auto* welcome = std::get_if<WelcomeMsg>(&msg)) return on_welcome(peer, *welcome);
    if (auto* refused = std::get_if<RefusedMsg>(&msg)) return on_refused(peer, *refused);
    if (!is_ready(peer)) {
      unauthenticated_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    // The refs a message lends this process are recorded as it arrives (before any later
    // release of the same refs by that peer), and decoded under its Incoming (incoming()).
    const std::vector<uint64_t>* refs = nullptr;
    if (auto* c = std::get_if<CallMsg>(&msg)) {
      refs = &c->refs;
    } else if (auto* r = std::get_if<ResultMsg>(&msg)) {
      refs = &r->refs;
    } else if (auto* a = std::get_if<ActorCreateMsg>(&msg)) {
      refs = &a->refs;
    } else if (auto* m = std::get_if<ActorCallMsg>(&msg)) {
      refs = &m->refs;
    } else if (auto* ready = std::get_if<RefReadyMsg>(&msg)) {
      if (is_counterpart(peer) && plausible_ready(peer, *ready)) apply(refs_.ready(peer, *ready));
      return;
    } else if (auto* release = std::get_if<RefReleaseMsg>(&msg)) {
      if (is_counterpart(peer)) {
        RefTable::Effects fx = refs_.release(peer, *release);
        testing_pause("PRISM_TESTING_RELEASE_PAUSE_MS");  // (keep it between the two)
        apply(std::move(fx));
      }
      return;
    }
    std::shared_ptr<const RefTable::Incoming> in;
    if (refs != nullptr && !refs->empty() && is_counterpart(peer)) in = receive_refs(peer, *refs);
    IncomingScope scope(&in);
    // Calls come from the driver to a node, and from a node to the driver (a task only other
    // nodes can run: the driver runs or relays it); results go back the same way.
    if (auto* call = std::get_if<CallMsg>(&msg)) {
      if (config_.role == ClusterRole::kNode && peer == driver_id()) {
        return on_call(peer, std::move(*call));
      }
      if (config_.role == ClusterRole::kDriver && is_node(peer)) {
        return on_node_call(peer, std::move(*call));
      }
    } else if (auto* result = std::get_if<ResultMsg>(&msg)) {
      // Results of the driver's calls come from nodes; a node's calls of actors it was handed
      // are answered by the driver.
      if (is_counterpart(peer)) return on_result(peer, std::move(*result));
    }
    if (auto* create = std::get_if<ActorCreateMsg>(&msg)) {
      if (config_.role == ClusterRole::kNode && peer == driver_id()) {
        return on_actor_create(peer, std::move(*create));
      }
      if (config_.role == ClusterRole::kDriver && is_node(peer)) {
        return on_node_actor_create(peer, std::move(*create));
      }
    } else if (auto* call = std::get_if<ActorCallMsg>(&msg)) {
      if (config_.role == ClusterRole::kNode && peer == driver_id()) {
        return on_actor_call(peer, std::move(*call));
      }
      if (config_.role == ClusterRole::kDriver && is_node(peer)) {
        return on_node_actor_call(peer, std::move(*call));
      }
    } else if (auto* lookup = std::get_if<ActorLookupMsg>(&msg)) {
      if (config_.role == ClusterRole::kDriver && is_node(peer)) {
        return on_actor_lookup(peer, *lookup);
      }
    } else if (auto* kill = std::get_if<ActorKillMsg>(&msg)) {
      if (config_.role == ClusterRole::kNode && peer == driver_id()) return on_actor_kill(*kill);
      if (config_.role == ClusterRole::kDriver && is_node(peer)) {
        return on_node_actor_kill(peer, *kill);
      }
    }
    if (auto* pull = std::get_if<ObjectPullMsg>(&msg)) {
      if (config_.role == ClusterRole::kDriver && is_node(peer)) return on_driver_pull(peer, *pull);
      if (config_.role == ClusterRole::kNode && (peer == driver_id() || is_direct(peer))) {
        return on_node_pull(peer, *pull);
      }
    } else if (auto* where = std::get_if<ObjectWhereMsg>(&msg)) {
      if (config_.role == ClusterRole::kNode && peer == driver_id()) return on_object_where(*where);
    } else if (auto* held = std::get_if<ObjectHeldMsg>(&msg)) {
      if (config_.role == ClusterRole::kDriver && is_node(peer)) return on_object_held(peer, *held);
    } else if (auto* offer = std::get_if<DeviceOfferMsg>(&msg)) {
      if (config_.role == ClusterRole::kNode && is_direct(peer)) return on_device_offer(peer, *offer);
    } else if (auto* free = std::get_if<ObjectFreeMsg>(&msg)) {
      if (config_.role == ClusterRole::kNode && peer == driver_id()) {
        for (uint64_t id : free->objects) objects_.drop(id);
        return;
      }
    }
    if (auto* out = std::get_if<OutputMsg>(&msg)) {
      if (config_.role == ClusterRole::kDriver && is_node(peer)) return on_output(peer, *out);
    } else if (auto* ping = std::get_if<ClockPingMsg>(&msg)) {
      if (config_.role == ClusterRole::kNode && peer == driver_id()) {
        return send(peer, ClockPongMsg{ping->driver_ns, steady_ns() + test_clock_skew_ns()});
      }
    } else if (auto* pong = std::get_if<ClockPongMsg>(&msg)) {
      if (config_.role == ClusterRole::kDriver && is_node(peer)) return on_clock_pong(peer, *pong);
    } else if (auto* query = std::get_if<SpansQueryMsg>(&msg)) {
      if (config_.role == ClusterRole::kNode && peer == driver_id()) {
        return on_spans_query(peer, *query);
      }
    } else if (auto* reply = std::get_if<SpansReplyMsg>(&msg)) {
      if (config_.role == ClusterRole::kDriver && is_node(peer)) {
        return on_spans_reply(peer, std::move(*reply));
      }
    } else if (auto* report = std::get_if<NodeStatsMsg>(&msg)) {
      if (config_.role == ClusterRole::kDriver && is_node(peer)) {
        return on_node_stats(peer, *report);
      }
    }
    if (auto* beat = std::get_if<HeartbeatMsg>(&msg)) {
      // (heard() counted it in on_message) A node learns the driver's membership epoch.
      if (config_.role == ClusterRole::kNode && peer == driver_id()) {
        MutexLock lock(mu_);
        epoch_ = std::max(epoch_, beat->epoch);
        return;
      }
      if (config_.role == ClusterRole::kDriver && is_node(peer)) return;
      if (config_.role == ClusterRole::kNode && is_direct(peer)) return;
    }
    if (std::holds_alternative<ShutdownMsg>(msg)) return on_shutdown(peer);
    if (std::holds_alternative<StatusQueryMsg>(msg) && config_.role == ClusterRole::kDriver) {
      return on_status_query(peer);
    }
    unauthenticated_.fetch_add(1, std::memory_order_relaxed);  // nothing a peer should send us
  }

  // Node: the driver's challenge. Answer it with ours.
  void on_hello(PeerId peer, const HelloMsg& hello) {
    AuthMsg auth;
    bool out_of_order = false;  // a second hello on a direct connection of ours
    {
      MutexLock lock(mu_);
      auto it = peers_.find(peer);
      if (it != peers_.end() && it->second.outgoing) {
        if (it->second.sent_auth) {
          unauthenticated_.fetch_add(1, std::memory_order_relaxed);
          out_of_order = true;
        }
        it->second.sent_auth = true;
      } else if (config_.role != ClusterRole::kNode || peer != driver_ || sent_auth_) {
        unauthenticated_.fetch_add(1, std::memory_order_relaxed);
        return;
      } else {
        sent_auth_ = true;
      }
    }
    if (out_of_order) return close_direct(peer, "it broke the handshake (a second hello)");
    if (peer != driver_id()) return answer_peer_hello(peer, hello);
    compute_mac(token_, kJoinLabel, hello.challenge, auth.mac);
    try {
      new_challenge(auth.challenge);
    } catch (const std::exception& e) {
      fail_join(e.what());
      return;
    }
    {
      MutexLock lock(mu_);
      std::memcpy(peers_[peer].challenge, auth.challenge, kChallengeBytes);
    }
    auth.role = PeerRole::kNode;
    auth.hostname = hostname();
    auth.pid = static_cast<uint32_t>(getpid());
    auth.fingerprint = fingerprint_;
    auth.functions = signatures_;
    auth.resources = to_wire(internal::node_totals(rt_));
    auth.listen = peer_address_;
    send(peer, auth);
  }

  void fail_join(const std::string& why) {
    {
      MutexLock lock(mu_);
      if (join_error_.empty()) join_error_ = why;
    }
    changed();
  }

  // Queued under mu_, in the critical section that made `peer` ready: from then on another
  // thread may send it work (a task placed on the new node), and the peer drops whatever comes
  // before the welcome; queued here, the welcome goes first (the comm sends a peer's messages in
  // the order they were queued). (send() takes no lock of the link's, and comm_->send only the
  // comm's, waiting for nothing.)
  void send_welcome_locked(PeerId peer, const WelcomeMsg& welcome) PRISM_REQUIRES(mu_) {
    send(peer, Message(welcome));
  }

  // Driver: a joiner's proof and description.
  void on_auth(PeerId peer, const AuthMsg& auth) {
    if (config_.role == ClusterRole::kNode) return on_peer_auth(peer, auth);
    uint8_t challenge[kChallengeBytes];
    {
      MutexLock lock(mu_);
      auto it = peers_.find(peer);
      if (config_.role != ClusterRole::kDriver || it == peers_.end() ||
          it->second.state != Peer::State::kAwaitingAuth) {
        unauthenticated_.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      std::memcpy(challenge, it->second.challenge, kChallengeBytes);
    }
    std::string refusal;
    if (!verify_mac(token_, kJoinLabel, challenge, auth.mac)) {
      refusal = "authentication failed: the node does not know the job's token";
    } else if (auth.role == PeerRole::kPeer) {
      refusal = "the driver takes no direct connections (they are between nodes)";
    } else if (auth.listen.size() > 256) {
      refusal = "its address for direct pulls is longer than 256 bytes";
    } else if (auth.role == PeerRole::kNode &&
               (auth.fingerprint != fingerprint_ || auth.functions != signatures_)) {
      refusal = describe_difference(signatures_, auth.functions);
    }
    const std::string who = auth.hostname + " pid " + std::to_string(auth.pid);
    if (!refusal.empty()) {
      refused_joins_.fetch_add(1, std::memory_order_relaxed);
      PRISM_LOG(kWarning) << "cluster: refused " << who << ": " << refusal;
      {
        MutexLock lock(mu_);
        peers_.erase(peer);
      }
      send(peer, RefusedMsg{refusal});
      comm_->close(peer);
      return;
    }
    WelcomeMsg welcome;
    compute_mac(token_, kWelcomeLabel, auth.challenge, welcome.mac);
    {
      MutexLock lock(mu_);
      auto it = peers_.find(peer);
      if (it == peers_.end()) return;  // failed meanwhile
      Peer& p = it->second;
      p.role = auth.role;
      p.totals = auth.resources;
      p.state = Peer::State::kReady;
      if (auth.role == PeerRole::kNode) p.address = auth.listen;
      if (auth.role == PeerRole::kNode) {
        detector_.watch(peer);
        p.index = next_index_++;
        p.name = "node" + std::to_string(p.index) + " (" + who + ")";
      } else {
        p.name = "client (" + who + ")";
      }
      welcome.node_index = static_cast<uint32_t>(p.index);
      testing_pause("PRISM_TESTING_WELCOME_PAUSE_MS");  // (keep it right before the send)
      send_welcome_locked(peer, welcome);
    }
    if (auth.role == PeerRole::kNode) {
      ping_clock(peer, /*restart=*/false);  // (the first of a few: on_clock_pong)
      ready_nodes_.fetch_add(1, std::memory_order_acq_rel);
      PRISM_LOG(kInfo) << "cluster: node" << welcome.node_index << " joined (" << who << ")";
    }
    changed();
    if (auth.role == PeerRole::kNode) retry_waiting();
  }

  // Node: the driver proved the token too; we are in.
  void on_welcome(PeerId peer, const WelcomeMsg& welcome) {
    uint8_t challenge[kChallengeBytes];
    bool out_of_order = false;  // a welcome before our answer, or a second one
    std::string address;        // (an outgoing direct peer's: its proof names it)
    {
      MutexLock lock(mu_);
      if (auto it = peers_.find(peer); it != peers_.end() && it->second.outgoing) {
        out_of_order =
            !it->second.sent_auth || it->second.state != Peer::State::kAwaitingAuth;
        std::memcpy(challenge, it->second.challenge, kChallengeBytes);
        address = it->second.address;
      } else if (config_.role != ClusterRole::kNode || peer != driver_ || joined_) {
        unauthenticated_.fetch_add(1, std::memory_order_relaxed);
        return;
      } else {
        std::memcpy(challenge, peers_[peer].challenge, kChallengeBytes);
      }
    }
    if (out_of_order) {
      unauthenticated_.fetch_add(1, std::memory_order_relaxed);
      return close_direct(peer, "it broke the handshake (a welcome out of turn)");
    }
    if (peer != driver_id()) return on_peer_welcome(peer, welcome, challenge, address);
    if (!verify_mac(token_, kWelcomeLabel, challenge, welcome.mac)) {
      refused_joins_.fetch_add(1, std::memory_order_relaxed);
      fail_join("cluster: the peer at " + driver_address_ +
                " does not know the job's token (not our driver)");
      return;
    }
    rt_->set_node_id("node" + std::to_string(welcome.node_index));
    refs_.set_self(welcome.node_index);
    {
      MutexLock lock(mu_);
      self_index_ = welcome.node_index;
      Peer& p = peers_[peer];
      p.state = Peer::State::kReady;
      p.name = "the driver at " + driver_address_;
      joined_ = true;
      detector_.watch(peer);
    }
    changed();
  }

  void on_refused(PeerId peer, const RefusedMsg& refused) {
    if (config_.role == ClusterRole::kNode && peer != driver_id()) {
      bool outgoing = false;
      {
        MutexLock lock(mu_);
        auto it = peers_.find(peer);
        outgoing = it != peers_.end() && it->second.outgoing;
      }
      if (outgoing) close_direct(peer, "it refused this node's direct connection: " + refused.reason);
      return;
    }
    {
      MutexLock lock(mu_);
      if (config_.role != ClusterRole::kNode || peer != driver_ || joined_) return;
    }
    fail_join("cluster: the driver at " + driver_address_ + " refused this node: " +
              refused.reason);
  }

  // ---- output, clocks and spans ----

  static int64_t steady_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               internal::Timeline::Clock::now().time_since_epoch())
        .count();
  }

  // Driver: a node's printed lines, each prefixed with the node, for our stdout or stderr (one
  // write each, so lines from different nodes do not interleave within a line; written by the
  // printer's thread: this is the progress thread, which must not block on a slow terminal).
  void on_output(PeerId peer, const OutputMsg& out) {
    std::string prefix;
    {
      MutexLock lock(mu_);
      auto it = peers_.find(peer);
      if (it == peers_.end()) return;
      prefix = "(node" + std::to_string(it->second.index) + ") ";
    }
    std::string text;
    text.reserve(out.text.size() + 16 * prefix.size());
    size_t at = 0;
    while (at < out.text.size()) {
      size_t end = out.text.find('\n', at);
      end = end == std::string::npos ? out.text.size() : end + 1;
      text += prefix;
      text.append(out.text, at, end - at);
      at = end;
    }
    if (!text.empty() && text.back() != '\n') text.push_back('\n');
    printer_.print(out.stream, std::move(text));
  }

  // Driver: the node's clock offset (clock_offset.h), from eight pings sent one after another
  // (at join, and again before each gather_spans: clocks drift). A pong that does not answer the
  // ping in flight is ignored.
  static constexpr int kClockSamples = 8;
  void ping_clock(PeerId peer, bool restart) {
    ClockPingMsg ping;
    {
      MutexLock lock(mu_);
      auto it = peers_.find(peer);
      if (it == peers_.end()) return;
      if (restart) it->second.clock = ClockOffset{};
      ping.driver_ns = steady_ns();
      it->second.ping_sent_ns = ping.driver_ns;
    }
    send(peer, ping);
  }
  void on_clock_pong(PeerId peer, const ClockPongMsg& pong) {
    const int64_t now = steady_ns();
    bool again = false;
    {
      MutexLock lock(mu_);
      auto it = peers_.find(peer);
      if (it == peers_.end() || it->second.ping_sent_ns != pong.driver_ns) return;
      it->second.ping_sent_ns = -1;
      ClockOffset& c = it->second.clock;
      c.add(pong.driver_ns, pong.node_ns, now);
      again = c.samples() < kClockSamples;
    }
    if (again) ping_clock(peer, /*restart=*/false);
  }

  // Node: the spans this runtime kept that ended at or after the query's time (none if it
  // records no timeline), at most the query's count and kMaxSpanBytes of them (the newest;
  // `truncated` says when some were left out). Not on the progress thread: it waits (briefly)
  // for runs that just finished to record their spans (a run's result reaches the driver a
  // moment before its span exists here), then copies them; a task asking for nothing runs it.
  void on_spans_query(PeerId peer, const SpansQueryMsg& query) {
    run_served_call(
        rt_, ResourceRequest{}, "prism.timeline",
        [this, peer, query] { send(peer, Message(spans_reply(query))); },
        [this, peer, id = query.call_id](const std::exception_ptr&) {
          SpansReplyMsg empty;  // (the runtime is stopping): the driver is not left waiting
          empty.call_id = id;
          send(peer, Message(std::move(empty)));
        });
  }

  SpansReplyMsg spans_reply(const SpansQueryMsg& query) {
    static constexpr size_t kMaxSpanBytes = size_t{32} << 20;
    rt_->settle_timeline_from_task();  // (spans_reply runs as a task)
    SpansReplyMsg reply;
    reply.call_id = query.call_id;
    reply.recording = rt_->records_timeline() || rt_->keeps_recent_spans();
    const int64_t skew = test_clock_skew_ns();
    int64_t since_ns = INT64_MIN;
    if (query.since_ns != INT64_MIN && __builtin_sub_overflow(query.since_ns, skew, &since_ns)) {
      since_ns = INT64_MIN;
    }
    const auto since = internal::Timeline::Clock::time_point(std::chrono::nanoseconds(since_ns));
    const size_t cap = std::min<size_t>(query.max_spans, 1000000);
    std::vector<internal::Timeline::Span> spans = rt_->recent_spans(since, cap);
    reply.truncated = spans.size() == cap;
    size_t bytes = 0, first = spans.size();
    while (first > 0 && bytes + 40 + spans[first - 1].name.size() <= kMaxSpanBytes) {
      bytes += 40 + spans[--first].name.size();
    }
    if (first > 0) reply.truncated = true;
    for (size_t i = first; i < spans.size(); ++i) {
      const internal::Timeline::Span& s = spans[i];
      WireSpan w;
      w.name = s.name;
      w.task = s.task_sequence;
      w.thread = s.thread;
      w.start_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(s.start.time_since_epoch())
                       .count() + skew;
      w.end_ns =
          std::chrono::duration_cast<std::chrono::nanoseconds>(s.end.time_since_epoch()).count() +
          skew;
      w.gpu = s.gpus.empty() ? -1 : s.gpus.front();
      reply.spans.push_back(std::move(w));
    }
    return reply;
  }

  void on_spans_reply(PeerId peer, SpansReplyMsg reply) {
    std::shared_ptr<SpanQuery> q;
    {
      MutexLock lock(mu_);
      auto it = span_queries_.find(reply.call_id);
      if (it == span_queries_.end() || it->second->peer != peer) return;  // late, or not its
      q = it->second;
      span_queries_.erase(it);
    }
    q->reply = std::move(reply);
    q->done.set();
  }

  // Node: this runtime's own counts for the driver (its NodeStats of this node), sent once
  // joined and then each second while they change, until stop_reporter(). Its own thread: the
  // progress thread keeps no timers.
  void report_stats() {
    NodeStatsMsg last;
    bool sent = false;
    do {
      {
        MutexLock lock(mu_);
        if (job_ended_ || driver_lost_ || shut_down_) return;
      }
      // This runtime's entry of itself (stats() fills it), plus the values it keeps for other
      // nodes (results that stayed here), which are not in its store.
      const Stats s = rt_->stats();
      const NodeStats& own = s.nodes.front();
      const ObjectTable::Stats kept = objects_.stats();
      NodeStatsMsg m;
      m.tasks_waiting_for_arguments = own.tasks_waiting_for_arguments;
      m.tasks_queued = own.tasks_queued;
      m.tasks_running = own.tasks_running;
      m.tasks_done = own.tasks_done;
      m.tasks_failed = own.tasks_failed;
      m.objects = own.objects + kept.primary_objects;
      m.primary_bytes = own.primary_bytes + kept.primary_bytes;
      m.capacity_bytes = own.capacity_bytes;
      m.secondary_bytes = own.secondary_bytes;
      m.spilled_bytes = own.spilled_bytes;
      m.threads = static_cast<uint32_t>(std::max(0, own.threads));
      m.pulls = own.pulls;
      m.pulled_bytes = own.pulled_bytes;
      m.served = own.served;
      m.served_bytes = own.served_bytes;
      if (!sent || !(m == last)) {
        send(driver_id(), m);
        last = m;
        sent = true;
      }
    } while (!reporter_stop_.wait_until(internal::deadline_after(std::chrono::seconds(1))));
  }

  void stop_reporter() noexcept {
    reporter_stop_.set();
    if (reporter_.joinable() && reporter_.get_id() != std::this_thread::get_id()) {
      reporter_.join();
    }
  }

  // Driver: a node's report of its own counts.
  void on_node_stats(PeerId peer, const NodeStatsMsg& report) {
    MutexLock lock(mu_);
    auto it = peers_.find(peer);
    if (it == peers_.end()) return;
    it->second.reported = true;
    it->second.report = report;
    it->second.reported_at = std::chrono::steady_clock::now();
  }

  // Driver: the span queries waiting for `peer` (every one when peer == kHere) end unanswered.
  void fail_span_queries(PeerId peer) {
    std::vector<std::shared_ptr<SpanQuery>> failed;
    {
      MutexLock lock(mu_);
      for (auto it = span_queries_.begin(); it != span_queries_.end();) {
        if (peer == kHere || it->second->peer == peer) {
          failed.push_back(it->second);
          it = span_queries_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& q : failed) {
      q->lost = true;
      q->done.set();
    }
  }

  // Tests only: PRISM_TEST_CLOCK_SKEW_NS shifts this node's clock as the driver sees it (its
  // pongs and span times), as a node on another machine's clock would be.
  static int64_t test_clock_skew_ns() {
    static const int64_t skew = [] {
      const char* v = std::getenv("PRISM_TEST_CLOCK_SKEW_NS");
      return v != nullptr ? std::strtoll(v, nullptr, 10) : 0;
    }();
    return skew;
  }

  std::vector<NodeSpans> gather_spans(Deadline deadline, internal::Timeline::Clock::time_point since,
                                      size_t max, std::vector<std::string>* missing) override {
    struct Asked {
      PeerId peer;
      uint64_t call_id;
      std::string node;
      int64_t old_offset;  // for the query's time only
      std::shared_ptr<SpanQuery> query;
    };
    std::vector<Asked> asked;
    {
      MutexLock lock(mu_);
      if (config_.role != ClusterRole::kDriver || shut_down_) return {};
      for (auto& [id, p] : peers_) {
        if (p.state != Peer::State::kReady || p.role != PeerRole::kNode) continue;
        auto q = std::make_shared<SpanQuery>();
        q->peer = id;
        const uint64_t call_id = next_call_++;
        span_queries_.emplace(call_id, q);
        asked.push_back({id, call_id, "node" + std::to_string(p.index), p.clock.offset_ns(), q});
      }
    }
    const int64_t since_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(since.time_since_epoch()).count();
    for (const Asked& a : asked) {
      // A fresh offset first (clocks drift): the node answers the ping before the query, so at
      // least its first pong is in when the spans arrive.
      ping_clock(a.peer, /*restart=*/true);
      SpansQueryMsg q;
      q.call_id = a.call_id;
      q.since_ns = since == internal::Timeline::Clock::time_point::min()
                       ? INT64_MIN
                       : since_ns + a.old_offset;
      q.max_spans = static_cast<uint32_t>(std::min<size_t>(max, UINT32_MAX));
      send(a.peer, q);
    }
    std::vector<NodeSpans> out;
    for (Asked& a : asked) {
      if (!a.query->done.wait_until(deadline) || a.query->lost) {
        MutexLock lock(mu_);
        span_queries_.erase(a.call_id);
        if (missing != nullptr) missing->push_back(a.node);
        continue;
      }
      NodeSpans n;
      n.node = a.node;
      n.recording = a.query->reply.recording;
      n.truncated = a.query->reply.truncated;
      {
        MutexLock lock(mu_);
        auto it = peers_.find(a.peer);
        n.clock_known = it != peers_.end() && it->second.clock.samples() > 0;
        n.clock_offset_ns = n.clock_known ? it->second.clock.offset_ns() : 0;
      }
      for (const WireSpan& w : a.query->reply.spans) {
        internal::Timeline::Span s;
        s.name = w.name;
        s.task_sequence = w.task;
        s.thread = w.thread;
        // Node clock -> ours (saturating: a hostile time cannot overflow).
        auto ours = [&](int64_t t) {
          int64_t v = 0;
          if (__builtin_sub_overflow(t, n.clock_offset_ns, &v)) v = t < 0 ? INT64_MIN : INT64_MAX;
          return internal::Timeline::Clock::time_point(std::chrono::nanoseconds(v));
        };
        s.start = ours(w.start_ns);
        s.end = ours(w.end_ns);
        if (w.gpu >= 0) s.gpus.push_back(w.gpu);
        n.spans.push_back(std::move(s));
      }
      out.push_back(std::move(n));
    }
    return out;
  }

  void on_shutdown(PeerId peer) {
    {
      MutexLock lock(mu_);
      if (config_.role != ClusterRole::kNode || peer != driver_) return;
      job_ended_ = true;
    }
    changed();
  }

  // Driver: what a node said of itself (its last kNodeStats), for `prism status`.
  static std::string own_counts(const Peer& p) {
    if (!p.reported) return "its own counts: not reported yet";
    const NodeStatsMsg& r = p.report;
    const double age = std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                                     p.reported_at).count();
    char buf[384];
    std::snprintf(buf, sizeof buf,
                  "its own counts (%.1f s ago): %llu waiting for arguments, %llu queued, %llu "
                  "running, %llu done, %llu failed; objects %llu (%.1f MiB), copies from other "
                  "nodes %.1f MiB; threads %u",
                  age, static_cast<unsigned long long>(r.tasks_waiting_for_arguments),
                  static_cast<unsigned long long>(r.tasks_queued),
                  static_cast<unsigned long long>(r.tasks_running),
                  static_cast<unsigned long long>(r.tasks_done),
                  static_cast<unsigned long long>(r.tasks_failed),
                  static_cast<unsigned long long>(r.objects),
                  static_cast<double>(r.primary_bytes) / (1 << 20),
                  static_cast<double>(r.secondary_bytes) / (1 << 20), r.threads);
    return buf;
  }

  void on_status_query(PeerId peer) {
    StatusReplyMsg reply;
    reply.text = status_text();
    send(peer, reply);
  }

  std::string status_text() {
    const double u = internal::kUnitsPerResource;
    auto resources = [&](const std::map<std::string, double>& m) {
      std::string out;
      for (const auto& [k, v] : m) {
        if (k == "memory" || k == "gpu_memory" || k == "object_store_memory") continue;
        char buf[64];
        std::snprintf(buf, sizeof buf, "%s%g %s", out.empty() ? "" : ", ", v, k.c_str());
        out += buf;
      }
      return out;
    };
    // The job's counts (prism::stats(), errors()); taken before mu_, which stats() takes too.
    const Stats stats = rt_->stats();
    const std::vector<TaskFailure> failures = rt_->errors();
    auto here_total = rt_->scheduler().totals();
    auto here_free = rt_->scheduler().available();
    std::map<std::string, double> here_used;
    for (const auto& [k, v] : here_total) here_used[k] = v - here_free[k];
    // Objects of the driver's refs, by the node that holds a copy (the driver's view).
    const auto held = objects_.held_by_peer();
    auto objects = [&](PeerId p) {
      auto it = held.find(p);
      const uint64_t n = it == held.end() ? 0 : it->second.first;
      const uint64_t bytes = it == held.end() ? 0 : it->second.second;
      char buf[96];
      std::snprintf(buf, sizeof buf, "; objects held: %llu (%.1f MiB)",
                    static_cast<unsigned long long>(n), static_cast<double>(bytes) / (1 << 20));
      return std::string(buf);
    };
    std::string s = "nodes: " + std::to_string(node_count()) + "\n";
    s += "  node0 (driver, " + hostname() + " pid " + std::to_string(getpid()) + "): total " +
         resources(here_total) + "; in use " + resources(here_used) + objects(kHere) + "\n";
    MutexLock lock(mu_);
    std::map<PeerId, int> in_flight;
    for (const auto& [id, p] : pending_) ++in_flight[p.peer];
    for (const auto& [id, p] : peers_) {
      if (p.state != Peer::State::kReady || p.role != PeerRole::kNode) continue;
      std::map<std::string, double> total, used;
      total["CPU"] = p.totals.cpu / u;
      used["CPU"] = p.used.cpu / u;
      if (p.totals.gpu > 0) {
        total["GPU"] = p.totals.gpu / u;
        used["GPU"] = p.used.gpu / u;
      }
      for (const auto& [n, a] : p.totals.custom) {
        total[n] = a / u;
        used[n] = custom_amount(p.used, n) / u;
      }
      s += "  " + p.name + ": total " + resources(total) + "; in use by the driver's tasks " +
           resources(used) + "; tasks running or queued there: " +
           std::to_string(in_flight[id]) + objects(id) + "\n    " + own_counts(p) +
           "\n    direct pulls: " +
           (p.address.empty() ? "not taken (values reach it through the driver)"
                              : "at " + p.address) +
           "\n";
    }
    if (!waiting_.empty()) {
      s += "tasks waiting for a node that fits them: " + std::to_string(waiting_.size()) + "\n";
    }
    s += "dropped messages: " + std::to_string(malformed_.load()) + " malformed, " +
         std::to_string(unauthenticated_.load()) + " unauthenticated; refused joins: " +
         std::to_string(refused_joins_.load()) + "; pulls redirected to the holding node: " +
         std::to_string(redirected_.load()) + "\n";
    const TaskCounts& t = stats.tasks;
    s += "tasks: " + std::to_string(t.submitted) + " submitted; " +
         std::to_string(t.waiting_for_arguments) + " waiting for arguments, " +
         std::to_string(t.waiting_for_resources) + " waiting for resources, " +
         std::to_string(t.running) + " running on the driver, " +
         std::to_string(t.on_other_nodes) + " on other nodes, " + std::to_string(t.done) +
         " done, " + std::to_string(t.failed) + " failed\n";
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "objects on the driver: %llu (%.1f MiB); pulled here %llu (%.1f MiB), served "
                  "%llu (%.1f MiB); device copies %llu (%.1f MiB); threads %d\n",
                  static_cast<unsigned long long>(stats.objects.objects),
                  static_cast<double>(stats.objects.primary_bytes) / (1 << 20),
                  static_cast<unsigned long long>(stats.transfers.node_pulls),
                  static_cast<double>(stats.transfers.node_pulled_bytes) / (1 << 20),
                  static_cast<unsigned long long>(stats.transfers.node_served),
                  static_cast<double>(stats.transfers.node_served_bytes) / (1 << 20),
                  static_cast<unsigned long long>(stats.transfers.device_copies),
                  static_cast<double>(stats.transfers.device_copy_bytes) / (1 << 20),
                  stats.threads);
    s += buf;
    if (!failures.empty()) {
      s += "recent failures (" + std::to_string(failures.size()) + " kept; the last " +
           std::to_string(std::min<size_t>(failures.size(), 5)) + "):\n";
      for (size_t i = failures.size() > 5 ? failures.size() - 5 : 0; i < failures.size(); ++i) {
        const TaskFailure& f = failures[i];
        s += "  " + f.function + " on " + f.node + ": " + f.type + ": " + f.message + "\n";
      }
    }
    return s;
  }

  // Node: run a registered function for the driver.
  void on_call(PeerId peer, CallMsg call) {
    internal::FunctionKey key;
    internal::RemoteInvoker invoker = nullptr;
    const uint64_t id = call.call_id;
    if (!internal::find_registered(call.function, &key, &invoker) || invoker == nullptr) {
      ResultMsg r;
      r.call_id = id;
      r.status = CallStatus::kSystemError;
      r.error_code = static_cast<int32_t>(ErrorCode::kInvalidArgument);
      r.message = "function '" + call.function + "' cannot run on " + rt_->node_id() +
                  ": not registered there, or its types are not serializable";
      send(peer, r);
      return;
    }
    // A first placement by the driver, and this node has no room for it now because of work the
    // driver did not send here (nested tasks: more tasks run than the driver's calls here): back
    // to the driver, which places it elsewhere (no argument was pulled). Only then: a thread that
    // just ran the driver's last call may hold its CPU a moment longer, which is no reason.
    if (call.may_spill && config_.role == ClusterRole::kNode &&
        rt_->tasks_running() > served_.load(std::memory_order_acquire) &&
        !rt_->scheduler().fits_now(from_wire(call.request))) {
      ResultMsg r;
      r.call_id = id;
      r.status = CallStatus::kSpilled;
      send(peer, Message(std::move(r)));
      return;
    }
    auto served = std::make_shared<ServedCall>();
    served->peer = peer;
    served->key = key;
    served->invoker = invoker;
    served->remaining.store(call.objects.size() + 1, std::memory_order_relaxed);
    served->blobs.resize(call.objects.size());
    served->call = std::move(call);
    served->refs = incoming();
    // Arguments passed by reference: those held here are used as they are; the others are
    // pulled from the driver, once per object however many calls wait for it. A GPU call's
    // pulls name the GPU they should land on (reader_gpu), for a holder that can send there
    // directly (device channels).
    const int reader_gpu = pulls_land_on(served->call);
    for (size_t i = 0; i < served->call.objects.size(); ++i) {
      const uint64_t object = served->call.objects[i].object;
      if (Blob b = objects_.find(object)) {
        served->blobs[i] = std::move(b);
        served->remaining.fetch_sub(1, std::memory_order_acq_rel);
        continue;
      }
      const bool first = objects_.await(object, peer, [this, served, i](const Blob& b,
                                                                         const std::string& why) {
        if (!b) {
          if (!served->failed.exchange(true)) {
            send(served->peer, Message(error_result(
                                   served->call.call_id,
                                   std::make_exception_ptr(Error(
                                       ErrorCode::kUnavailable,
                                       "an argument of task '" + served->call.task_name +
                                           "' could not be fetched: " + why)))));
          }
          return;
        }
        served->blobs[i] = b;
        if (served->remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) run_served(served);
      }, served->call.objects[i].bytes);
      if (first && reader_gpu >= 0) {
        MutexLock lock(mu_);
        gpu_pulls_[object] = reader_gpu;
      }
      if (first) send(peer, Message(ObjectPullMsg{object, /*may_redirect=*/true}));
    }
    if (served->remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) run_served(served);
  }

  // The GPU of this node on which a GPU call's pulled arguments should land (-1: the host, for
  // a CPU call or without the GPU module): the one already keeping most of its other arguments,
  // else the next in turn. They come there on a device channel, or as bytes in parts uploaded as
  // they arrive (land_part); the scheduler then prefers that GPU for the call (live_device).
  int pulls_land_on(const CallMsg& call) {
    if (!channels_ || call.request.gpu <= 0 || call.objects.empty()) return -1;
    std::vector<Blob> held;
    for (const WireObjectRef& o : call.objects) {
      if (Blob b = objects_.find(o.object)) held.push_back(std::move(b));
    }
    int device = live_device(held);
    if (device < 0) {
      const int64_t gpus = internal::node_totals(rt_).gpu / internal::kUnitsPerResource;
      if (gpus <= 0) return -1;
      device = static_cast<int>(next_reader_gpu_.fetch_add(1, std::memory_order_relaxed) %
                                static_cast<uint64_t>(gpus));
    }
    return device;
  }

  // The GPU of this node on which the results kept live among `blobs` have the most bytes (-1:
  // none): a GPU call reading them runs there when it has room.
  static int live_device(const std::vector<Blob>& blobs) {
    std::map<int, uint64_t> bytes;
    for (const Blob& b : blobs) {
      if (b && b->live && b->live->device >= 0) bytes[b->live->device] += b->live->wire_bytes;
    }
    int best = -1;
    uint64_t most = 0;
    for (const auto& [device, n] : bytes) {
      if (n > most) {
        most = n;
        best = device;
      }
    }
    return best;
  }

  // Node: a call whose arguments are all here. Its large result stays here.
  void run_served(const std::shared_ptr<ServedCall>& served) {
    if (served->failed.load()) return;
    CallMsg& call = served->call;
    Blob args;
    std::vector<std::pair<const char*, Blob>> objects;  // (RefContext::objects)
    const int preferred_gpu = live_device(served->blobs);
    if (call.objects.empty()) {
      args = make_blob(std::move(call.args));
    } else if (call.objects.size() == 1 && call.args.empty()) {
      args = served->blobs.front();  // the one argument's bytes are the arguments: no copy
      if (args->size() != 0) objects.emplace_back(args->view.data(), args);
    } else {  // the inline bytes with each referenced object's bytes put back in its place
      size_t total = call.args.size();
      for (const Blob& b : served->blobs) total += b->size();
      auto buffer = std::make_shared<std::vector<char>>(internal::BufferPool::sized<char>(total));
      char* out = buffer->data();
      size_t pos = 0;
      for (size_t i = 0; i < call.objects.size(); ++i) {
        const size_t at = call.objects[i].at;
        std::memcpy(out, call.args.data() + pos, at - pos);
        out += at - pos;
        std::memcpy(out, served->blobs[i]->view.data(), served->blobs[i]->size());
        out += served->blobs[i]->size();
        // (An empty object starts where the next bytes do: it has nothing to share.)
        if (served->blobs[i]->size() != 0) {
          objects.emplace_back(out - served->blobs[i]->size(), std::move(served->blobs[i]));
        }
        pos = at;
      }
      std::memcpy(out, call.args.data() + pos, call.args.size() - pos);
      const std::string_view view(buffer->data(), total);
      args = make_blob(view, std::shared_ptr<const void>(std::move(buffer)));
      served->blobs.clear();
    }
    const PeerId peer = served->peer;
    const uint64_t id = call.call_id;
    const uint64_t result_object = call.result_object;
    // The answer is sent once the call's resources are free again (on_released): the caller
    // places more work here by what it knows runs here, and a spill check must not find this
    // call still holding its CPU after the caller heard it ended.
    // (The answer, and the objects its result's refs lend the caller.)
    struct Answer {
      ResultMsg result;
      std::vector<RefTable::Lend> lends;
    };
    auto answer = std::make_shared<Answer>();
    served_.fetch_add(1, std::memory_order_acq_rel);  // until its record is gone (on_released)
    try {
      internal::run_served_call(
          rt_, from_wire(call.request), call.task_name,
          [this, id, peer, key = served->key, invoker = served->invoker, args, result_object,
           num_returns = call.num_returns, only_element = call.only_element, answer,
           in = served->refs, objects = std::move(objects)] {
            ResultMsg& r = answer->result;
            r.call_id = id;
            const auto start = std::chrono::steady_clock::now();
            RefContext refs(this, in);  // (reads the arguments' refs, lends the result's)
            refs.objects = objects;
            std::vector<std::string> elements;  // a num_returns call's results, one by one
            internal::LiveResult live;  // a result kept here as it is (a GPU tensor)
            live.min_bytes = kInlineObjectBytes;
            {
              internal::RefScopeGuard scope(&refs);
              ElementsSink sink(num_returns != 0 ? &elements : nullptr);
              LiveSink live_sink(result_object != 0 && num_returns == 0 ? &live : nullptr);
              invoker(key, args->view, &r.payload);
            }
            r.run_ns = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                 std::chrono::steady_clock::now() - start)
                                                 .count());
            if (num_returns != 0 && elements.size() == num_returns && r.payload.empty()) {
              keep_elements(&r, &elements, result_object, only_element,
                            /*inline_only=*/!refs.lends.empty());
            }
            if (live.value != nullptr) {
              // Kept here as it is, its stub as the object's bytes: this node's tasks read the
              // value itself; a reader elsewhere pulls its serialized form (wire_form). (Such a
              // value holds no refs: a tensor.)
              r.object = result_object;
              r.object_bytes = live.wire_bytes;
              objects_.hold(result_object, make_live_blob(std::move(r.payload), std::move(live)),
                            /*primary=*/true);
              r.payload.clear();
            } else if (!refs.lends.empty()) {
              // (A result holding refs goes inline: its refs are lent to the caller with it.)
              r.refs = refs_.prepare(refs.lends, peer);
              answer->lends = std::move(refs.lends);
            } else if (result_object != 0 && num_returns == 0 &&
                       r.payload.size() >= kInlineObjectBytes) {
              r.object = result_object;
              r.object_bytes = r.payload.size();
              objects_.hold(result_object, make_blob(std::move(r.payload)), /*primary=*/true);
              r.payload.clear();
            }
          },
          [id, answer](const std::exception_ptr& error) {
            answer->result = error_result(id, error);
          },
          [this, peer, answer] {
            served_.fetch_sub(1, std::memory_order_acq_rel);
            send_result_lending(peer, std::move(answer->result), answer->lends);
          },
          preferred_gpu);
    } catch (...) {  // (no record was made: out of memory)
      served_.fetch_sub(1, std::memory_order_acq_rel);
      send(peer, Message(error_result(id, std::current_exception())));
    }
  }

  // Node: the results of a num_returns call, written one by one (`elements`), into `r`: each
  // large one stays here as an object of its own (result_object + its index), the others go
  // back in the payload one after another (all of them when `inline_only`: results holding
  // refs, lent with them). A rebuild of one result (`only_element` >= 0) keeps that one only,
  // and sends none of the others.
  void keep_elements(ResultMsg* r, std::vector<std::string>* elements, uint64_t result_object,
                     int32_t only_element, bool inline_only) {
    r->payload.clear();
    r->elements.reserve(elements->size());
    for (size_t i = 0; i < elements->size(); ++i) {
      std::string& e = (*elements)[i];
      WireElement w;
      w.bytes = e.size();
      if (only_element >= 0 && i != static_cast<size_t>(only_element)) {
        w.bytes = 0;  // (not wanted: neither kept nor sent)
      } else if (!inline_only && result_object != 0 && e.size() >= kInlineObjectBytes) {
        w.object = result_object + i;
        objects_.hold(w.object, make_blob(std::move(e)), /*primary=*/true);
      } else {
        r->payload.append(e);
      }
      r->elements.push_back(w);
    }
  }

  // Node: build an actor for the driver.
  void on_actor_create(PeerId peer, ActorCreateMsg msg) {
    ResultMsg r;
    r.call_id = msg.call_id;
    const internal::ActorCtorInvoker ctor = internal::find_actor_ctor(msg.constructor);
    if (ctor == nullptr) {
      r.status = CallStatus::kSystemError;
      r.error_code = static_cast<int32_t>(ErrorCode::kInvalidArgument);
      r.message = "actor " + msg.type_name + " cannot be built on " + rt_->node_id() +
                  ": no such constructor registered (a different binary?)";
      send(peer, Message(std::move(r)));
      return;
    }
    internal::ActorOptions options;
    const double u = internal::kUnitsPerResource;
    options.num_cpus = static_cast<double>(msg.request.cpu) / u;
    options.num_gpus = static_cast<double>(msg.request.gpu) / u;
    options.memory = msg.request.memory;
    options.gpu_memory = msg.request.gpu_memory;
    for (const auto& [name, amount] : msg.request.custom) {
      options.resources.emplace_back(name, static_cast<double>(amount) / u);
    }
    options.max_concurrency = static_cast<int>(std::max<uint32_t>(1, msg.max_concurrency));
    HeldActor held;
    try {
      RefContext refs(this, incoming());  // (its arguments' refs: borrowed from the sender)
      internal::RefScopeGuard scope(&refs);
      held.handle = ctor(rt_->ref(), options, msg.args, &held.kill, &held.drop);
    } catch (...) {
      send(peer, Message(error_result(msg.call_id, std::current_exception())));
      return;
    }
    {
      MutexLock lock(mu_);
      held_actors_[msg.actor] = held;
    }
    send(peer, Message(std::move(r)));
  }

  // Node: a call of an actor held here; its result goes back when the local call is done.
  void on_actor_call(PeerId peer, ActorCallMsg msg) {
    void* handle = nullptr;
    {
      MutexLock lock(mu_);
      auto it = held_actors_.find(msg.actor);
      if (it != held_actors_.end()) handle = it->second.handle;
    }
    const uint64_t id = msg.call_id;
    try {
      if (handle == nullptr) {
        throw ActorDiedError("the actor of call '" + msg.task_name + "' is no longer on " +
                             rt_->node_id() + " (killed)");
      }
      internal::FunctionKey key;
      internal::RemoteInvoker unused = nullptr;
      internal::ActorMethodInvoker method = nullptr;
      if (!internal::find_registered(msg.method, &key, &unused, &method) || method == nullptr) {
        throw Error(ErrorCode::kInvalidArgument,
                    "method '" + msg.method + "' is not registered on " + rt_->node_id());
      }
      internal::ActorValueWriter write = nullptr;
      internal::EntryPtr entry;
      {
        RefContext refs(this, incoming());  // (its arguments' refs: borrowed from the sender)
        internal::RefScopeGuard scope(&refs);
        entry = method(key, handle, msg.args, &write);
      }
      const uint64_t result_object = msg.result_object;
      const uint32_t num_returns = msg.num_returns;
      internal::when_done(std::move(entry), [this, peer, id, write, result_object,
                                             num_returns](internal::ObjectEntry* e) {
        if (e->state() == internal::ObjState::kFailed) {
          send(peer, Message(error_result(id, e->error())));
          return;
        }
        ResultMsg r;
        r.call_id = id;
        RefContext refs(this);  // (its result's refs: lent to the caller)
        std::vector<std::string> elements;  // a num_returns call's results, one by one
        try {
          internal::RefScopeGuard scope(&refs);
          ElementsSink sink(num_returns != 0 ? &elements : nullptr);
          write(e, &r.payload);
        } catch (...) {
          send(peer, Message(error_result(id, std::current_exception())));
          return;
        }
        // A large result stays here, as a task's does (the driver pulls it when it is read),
        // unless it holds refs (lent with it, inline); so does each large one of a num_returns
        // call's (no lineage: an actor's results are not computed again).
        if (num_returns != 0 && elements.size() == num_returns && r.payload.empty()) {
          keep_elements(&r, &elements, result_object, /*only_element=*/-1,
                        /*inline_only=*/!refs.lends.empty());
        } else if (refs.lends.empty() && result_object != 0 && num_returns == 0 &&
                   r.payload.size() >= kInlineObjectBytes) {
          r.object = result_object;
          r.object_bytes = r.payload.size();
          objects_.hold(result_object, make_blob(std::move(r.payload)), /*primary=*/true);
          r.payload.clear();
        }
        send_lending(peer, std::move(r), refs.lends);
      });
    } catch (...) {
      send(peer, Message(error_result(id, std::current_exception())));
    }
  }

  // Driver: a node's task that only other nodes can run (offer_to_driver): run it here if this
  // node can, else relay it to a node that can (the answer goes back under the node's call id),
  // else fail it naming the nodes' shapes. A busy node's task it could run itself (may_spill)
  // goes only where there is room now (here, or the node with room chosen as for the driver's
  // tasks), else back to the node (kSpilled). Its arguments are inline.
  void on_node_call(PeerId origin, CallMsg call) {
    // A spill stays one when relayed: a node busier than the driver knows (its own nested
    // tasks) sends it back, and the answer goes to the origin, which queues it.
    const bool spill = call.may_spill;
    if (!call.objects.empty() || call.result_object != 0) {
      send(origin, Message(error_result(
                       call.call_id, std::make_exception_ptr(Error(
                                         ErrorCode::kInvalidArgument,
                                         "a node's task must carry its arguments inline")))));
      return;
    }
    const ResourceRequest request = from_wire(call.request);
    const bool runs_here = rt_->scheduler().infeasible_reason(request).empty();
    const bool fits_here = runs_here && rt_->scheduler().fits_now(request);
    const std::string task_name = call.task_name;
    PeerId holder = 0;
    uint64_t relayed = 0;
    std::string shapes;
    {
      MutexLock lock(mu_);
      if (!fits_here) {
        holder = choose_node_locked(request, runs_here || spill, {}, /*exclude=*/origin);
      }
      if (holder != 0) {
        Peer& p = peers_[holder];
        add(&p.used, request, +1);
        relayed = next_call_++;
        relays_[relayed] = Relay{origin, call.call_id, holder, request, p.name, /*task=*/true};
      } else if (!runs_here && !spill) {
        shapes = shapes_locked();
      }
    }
    const uint64_t origin_call = call.call_id;
    if (holder == 0 && spill && !fits_here) {  // no room anywhere now: it queues on its node
      ResultMsg r;
      r.call_id = origin_call;
      r.status = CallStatus::kSpilled;
      nested_sent_back_.fetch_add(1, std::memory_order_relaxed);
      send(origin, Message(std::move(r)));
      return;
    }
    if (spill) nested_placed_.fetch_add(1, std::memory_order_relaxed);
    if (holder != 0) {
      call.call_id = relayed;
      const std::vector<RefTable::Lend> lends = relay_lends(incoming(), call.refs);
      if (send_lending(holder, std::move(call), lends)) return;
      bool mine = false;  // (else the holder's loss answered the caller already)
      {
        MutexLock lock(mu_);
        if (auto r = relays_.find(relayed); r != relays_.end()) {
          mine = true;
          relays_.erase(r);
          if (auto h = peers_.find(holder); h != peers_.end()) add(&h->second.used, request, -1);
        }
      }
      if (mine && spill) {  // (its node can run it: back there)
        ResultMsg r;
        r.call_id = origin_call;
        r.status = CallStatus::kSpilled;
        send(origin, Message(std::move(r)));
      } else if (mine) {
        send(origin, Message(error_result(origin_call, std::make_exception_ptr(Error(
                                                            ErrorCode::kUnavailable,
                                                            "the node chosen for task '" +
                                                                task_name + "' is gone")))));
      }
      return;
    }
    if (runs_here) return on_call(origin, std::move(call));
    ResultMsg r;
    r.call_id = origin_call;
    r.status = CallStatus::kSystemError;
    r.error_code = static_cast<int32_t>(ErrorCode::kInfeasible);
    r.message = "infeasible task '" + task_name + "' (from " + node_name_of(origin) +
                "): no node of the cluster can run it; the nodes: " + shapes;
    send(origin, Message(std::move(r)));
  }

  std::string node_name_of(PeerId peer) {
    MutexLock lock(mu_);
    auto it = peers_.find(peer);
    return it == peers_.end() ? std::string("a node") : node_name(it->second.name);
  }

  // Driver: a node has an actor created that it cannot hold (offer_actor_to_driver): built here
  // if this node can hold it now, else on a node with room (else the least loaded that can),
  // else it fails naming the nodes' shapes. The node calls it by its own number, which maps to
  // the driver's (node_actors_).
  void on_node_actor_create(PeerId origin, ActorCreateMsg msg) {
    const uint64_t origin_call = msg.call_id;
    const ResourceRequest request = from_wire(msg.request);
    const bool runs_here = rt_->scheduler().infeasible_reason(request).empty();
    const bool fits_here = runs_here && rt_->scheduler().fits_now(request);
    PeerId holder = 0;
    std::string refusal;
    {
      MutexLock lock(mu_);
      if ((msg.actor & kNodeActorBit) == 0 || node_actors_.count({origin, msg.actor}) != 0) {
        refusal = "a node's actor must have a new number of its own";
      } else {
        if (!fits_here) holder = choose_node_locked(request, runs_here, {}, /*exclude=*/origin);
        if (holder == 0 && !runs_here) {
          refusal = "infeasible actor " + msg.type_name + " (from " + node_name(peers_[origin].name) +
                    "): no node of the cluster can hold it; the nodes: " + shapes_locked();
        } else {
          const uint64_t key = next_actor_++;
          node_actors_[{origin, msg.actor}] = key;
          msg.actor = key;
          if (holder != 0) {
            Peer& p = peers_[holder];
            add(&p.used, request, +1);
            remote_actors_.emplace(key, RemoteActor{{}, holder, request});
            msg.call_id = next_call_++;  // its answer goes back to the node that asked
            relays_[msg.call_id] = Relay{origin, origin_call, holder, {}, p.name};
          }
        }
      }
    }
    if (!refusal.empty()) {
      ResultMsg r;
      r.call_id = origin_call;
      r.status = CallStatus::kSystemError;
      r.error_code = static_cast<int32_t>(ErrorCode::kInfeasible);
      r.message = refusal;
      send(origin, Message(std::move(r)));
      return;
    }
    if (holder == 0) return on_actor_create(origin, std::move(msg));  // held here
    const std::vector<RefTable::Lend> lends = relay_lends(incoming(), msg.refs);
    send_lending(holder, std::move(msg), lends);
  }

  // Driver: an actor a node had created (number `key`) is killed, or released (its calls sent
  // so far finish first), wherever it is; either way it holds nothing here any more (the node
  // sends no release after a kill).
  void stop_node_actor(uint64_t key, bool release) {
    PeerId holder = 0;
    {
      MutexLock lock(mu_);
      auto it = remote_actors_.find(key);
      if (it != remote_actors_.end()) {
        holder = it->second.peer;
        if (auto p = peers_.find(holder); p != peers_.end()) {
          add(&p->second.used, it->second.request, -1);
        }
        forget_actor_locked(it);
      }
    }
    if (holder != 0) return send(holder, ActorKillMsg{key, release});
    on_actor_kill(ActorKillMsg{key, release});  // held here (or gone)
  }

  // Driver: a node calls an actor whose handle it was given: run it here, or relay it to the
  // node that holds the actor (the answer goes back under the caller's call id).
  void on_node_actor_call(PeerId origin, ActorCallMsg msg) {
    msg.result_object = 0;  // (its result goes back to the node inline)
    msg.num_returns = 0;
    PeerId holder = 0;
    std::shared_ptr<ActorCore> actor;  // (let go after mu_: a last handle's finalization takes it)
    {
      MutexLock lock(mu_);
      if ((msg.actor & kNodeActorBit) != 0) {  // one that node had created: the driver's number
        auto n = node_actors_.find({origin, msg.actor});
        msg.actor = n != node_actors_.end() ? n->second : 0;
      }
      if (held_actors_.count(msg.actor) == 0) {
        auto it = remote_actors_.find(msg.actor);
        if (it != remote_actors_.end()) {
          holder = it->second.peer;
          const uint64_t relayed = next_call_++;
          Relay relay{origin, msg.call_id, holder, {}, peers_[holder].name};
          relay.actor = msg.actor;
          msg.call_id = relayed;
          actor = it->second.actor.lock();
          if (actor && it->second.recipe && it->second.restarts_left != 0 &&
              actor->options().max_task_retries != 0 && msg.refs.empty()) {
            relay.call = std::make_shared<const ActorCallMsg>(msg);  // kept for a retry
          }
          relays_[relayed] = std::move(relay);
        }
      }
    }
    if (holder == 0) return on_actor_call(origin, std::move(msg));  // held here (or gone)
    const std::vector<RefTable::Lend> lends = relay_lends(incoming(), msg.refs);
    send_lending(holder, std::move(msg), lends);
  }

  void on_node_actor_kill(PeerId origin, ActorKillMsg msg) {
    if ((msg.actor & kNodeActorBit) != 0) {  // one that node had created: killed or released
      uint64_t key = 0;
      {
        MutexLock lock(mu_);
        auto n = node_actors_.find({origin, msg.actor});
        if (n == node_actors_.end()) return;
        key = n->second;
        node_actors_.erase(n);  // later calls of that number answer "died"
      }
      return stop_node_actor(key, msg.release);
    }
    if (msg.release) return;  // (proxies on nodes do not release what the driver exported)
    std::shared_ptr<ActorCore> remote;
    {
      MutexLock lock(mu_);
      if (held_actors_.count(msg.actor) == 0) {
        auto it = remote_actors_.find(msg.actor);
        if (it != remote_actors_.end()) remote = it->second.actor.lock();
      }
    }
    if (remote) {
      remote->kill("was killed by a task on another node");
      return;
    }
    HeldActor held;
    {
      MutexLock lock(mu_);
      auto it = held_actors_.find(msg.actor);
      if (it == held_actors_.end()) return;
      held = it->second;  // stays exported (its calls then fail with ActorDiedError)
    }
    held.kill(held.handle);
  }

  void on_actor_kill(const ActorKillMsg& msg) {
    HeldActor held;
    {
      MutexLock lock(mu_);
      auto it = held_actors_.find(msg.actor);
      if (it == held_actors_.end()) return;
      held = it->second;
      held_actors_.erase(it);
    }
    if (!msg.release) held.kill(held.handle);
    held.drop(held.handle);
  }

  static ResultMsg error_result(uint64_t id, const std::exception_ptr& error) {
    ResultMsg r;
    r.call_id = id;
    r.status = CallStatus::kSystemError;
    r.error_code = static_cast<int32_t>(ErrorCode::kInternal);
    try {
      std::rethrow_exception(error);
    } catch (const TaskError& e) {
      r.status = CallStatus::kTaskError;
      r.error_type = e.type_name();
      r.message = e.message();
    } catch (const Error& e) {
      r.error_code = static_cast<int32_t>(e.code());
      r.error_type = internal::demangle(typeid(e).name());
      r.message = e.what();
    } catch (const std::exception& e) {
      r.message = e.what();
    } catch (...) {
      r.message = "unknown error";
    }
    return r;
  }

  // Driver: a call's outcome.
  void on_result(PeerId peer, ResultMsg result) {
    {
      MutexLock lock(mu_);
      if (auto l = lookups_.find(result.call_id); l != lookups_.end()) {
        std::shared_ptr<Lookup> wait = l->second;
        lookups_.erase(l);
        lock.unlock();
        if (result.status == CallStatus::kOk) {
          wait->payload = std::move(result.payload);
        } else {
          wait->error = result.message.empty() ? std::string("lookup failed") : result.message;
        }
        wait->done.set();
        return;
      }
      auto relay = relays_.find(result.call_id);
      if (relay != relays_.end() && relay->second.holder == peer) {
        const Relay r = relay->second;
        relays_.erase(relay);
        if (auto h = peers_.find(peer); h != peers_.end()) add(&h->second.used, r.request, -1);
        lock.unlock();
        result.call_id = r.origin_call;
        // The caller names the node it heard from (this one): say where it really ran.
        if (result.status == CallStatus::kTaskError && result.payload.empty()) {
          result.payload = node_name(r.holder_name);
        } else if (result.status == CallStatus::kSystemError) {
          result.message += " (on " + r.holder_name + ")";
        }
        const std::vector<RefTable::Lend> lends = relay_lends(incoming(), result.refs);
        if (!lends.empty()) result.refs = refs_.prepare(lends, r.origin);
        send_result_lending(r.origin, std::move(result), lends);
        return;
      }
    }
    if (config_.role == ClusterRole::kDriver && on_rebuild_result(peer, result)) return;
    Pending p{};
    if (!take_pending(result.call_id, &p) || p.peer != peer) {
      unknown_results_.fetch_add(1, std::memory_order_relaxed);
      if (p.task != nullptr && p.peer != peer) {  // answered by another node: never trust it
        rt_->fail_task(p.task, std::make_exception_ptr(Error(
                                   ErrorCode::kInternal, "a result came from the wrong node")));
      }
      return;
    }
    if (p.task == nullptr && result.status != CallStatus::kSystemError) {
      // An actor's creation: built (kOk) or its constructor threw (kTaskError).
      if (result.status == CallStatus::kTaskError) {
        if (auto actor = p.creating.lock()) {
          actor->creation_failed(std::make_exception_ptr(TaskError(
              actor->type_name() + "::" + actor->type_name(), result.error_type, result.message,
              node_name(p.peer_name))));
        }
      }
      return;
    }
    switch (result.status) {
      case CallStatus::kOk:
        if (!result.elements.empty()) return complete_elements(peer, p, result);
        if (result.object != 0) {
          if (result.object != p.result_object || !result.payload.empty() ||
              p.task->remote_materializer() == nullptr) {
            rt_->fail_task(p.task, std::make_exception_ptr(Error(
                                       ErrorCode::kInternal, "the result of task '" +
                                                                 p.task->function_name() +
                                                                 "' from " + p.peer_name +
                                                                 " names an object it was not "
                                                                 "given")));
            return;
          }
          objects_.locate(result.object, result.object_bytes, peer);
          keep_lineage(p.task, result.object);
          internal::remote_variant_ran(p.task, static_cast<double>(result.run_ns) * 1e-9);
          auto where = std::make_shared<RemoteObject>(service_, result.object,
                                                      result.object_bytes, p.peer_name);
          where->materialize = p.task->remote_materializer();
          p.task->complete_remote_value(std::move(where));  // (if cancelled: freed at once)
          rt_->remote_task_done();
          p.task->release_run();
          return;
        }
        internal::remote_variant_ran(p.task, static_cast<double>(result.run_ns) * 1e-9);
        try {
          RefContext refs(this, incoming());  // (the result's refs: borrowed from the node)
          internal::RefScopeGuard scope(&refs);
          p.task->complete_remote(result.payload);
        } catch (const std::exception& e) {
          rt_->fail_task(p.task, std::make_exception_ptr(Error(
                                     ErrorCode::kInternal, "the result of task '" +
                                                               p.task->function_name() + "' from " +
                                                               p.peer_name + " is malformed: " +
                                                               e.what())));
          return;
        }
        rt_->remote_task_done();
        p.task->release_run();
        return;
      case CallStatus::kSpilled:
        // The node had no room for it after all: placed again (once), elsewhere if possible.
        if (p.task == nullptr) return;  // (an actor's creation never spills)
        if (config_.role == ClusterRole::kNode && p.may_spill) {
          // The driver found no room elsewhere: it queues here, and this node stops asking
          // for a while.
          {
            MutexLock lock(mu_);
            if (spilled_back_.insert(p.task).second) {
              spilled_back_count_.fetch_add(1, std::memory_order_acq_rel);
            }
          }
          spill_backoff_until_.store(
              (internal::Clock::now() + kSpillBackoff).time_since_epoch().count(),
              std::memory_order_relaxed);
          nested_refused_.fetch_add(1, std::memory_order_relaxed);
          rt_->counters().add(internal::TaskCounters::kRequeued);
          rt_->dispatch(p.task);
          {
            // dispatch() may fail it (cancelled, shutting down) before offer() takes it out:
            // no stale entry (only this thread adds entries, and p.task is not dereferenced).
            MutexLock lock(mu_);
            if (spilled_back_.erase(p.task) != 0) {
              spilled_back_count_.fetch_sub(1, std::memory_order_acq_rel);
            }
          }
          return;
        }
        if (config_.role != ClusterRole::kDriver || !p.may_spill) {
          rt_->fail_task(p.task, std::make_exception_ptr(Error(
                                     ErrorCode::kInternal, p.peer_name + " sent back a call that "
                                                                         "could not spill")));
          return;
        }
        spilled_.fetch_add(1, std::memory_order_relaxed);
        if (!place(p.task, /*runs_here=*/false, /*spilled_from=*/peer)) {
          // That node is gone and no other takes it: dispatched afresh (it runs here, waits
          // for a node, or fails as infeasible here).
          rt_->counters().add(internal::TaskCounters::kRequeued);
          rt_->dispatch(p.task);
        }
        return;
      case CallStatus::kTaskError:
        internal::remote_variant_failed(p.task);  // (a variant call: it ran there and threw)
        // (A relayed call's payload names the node where it threw.)
        rt_->fail_task(p.task, std::make_exception_ptr(TaskError(
                                   p.task->function_name(), result.error_type, result.message,
                                   result.payload.empty() ? node_name(p.peer_name)
                                                          : result.payload)));
        return;
      case CallStatus::kSystemError: {
        if (p.task != nullptr && result.error_type == kLostWithNode && p.task->actor() == nullptr &&
            rt_->take_retry(p.task)) {
          // (the driver relayed it to a node that died) Run again, here or through the driver.
          lost_retried_.fetch_add(1, std::memory_order_relaxed);
          rt_->run_again(p.task);
          return;
        }
        ErrorCode code = static_cast<ErrorCode>(result.error_code);
        if (result.error_code < 0 || result.error_code > static_cast<int32_t>(ErrorCode::kInternal)) {
          code = ErrorCode::kInternal;
        }
        const std::string where = result.message + " (on " + p.peer_name + ")";
        std::exception_ptr error;
        if (code == ErrorCode::kInfeasible) {
          error = std::make_exception_ptr(InfeasibleError(result.message));
        } else if (result.error_type == "prism::ActorDiedError") {
          error = std::make_exception_ptr(ActorDiedError(where));
        } else if (result.error_type == "prism::TaskCancelledError") {
          error = std::make_exception_ptr(TaskCancelledError(where));
        } else {
          error = std::make_exception_ptr(Error(code, where));
        }
        if (p.task == nullptr) {  // an actor's constructor failed there: the actor dies
          if (auto actor = p.creating.lock()) actor->creation_failed(error);
          return;
        }
        rt_->fail_task(p.task, std::move(error));
        return;
      }
    }
  }

  // ---- failure detection (failure_detector.h) ----

  // The watchdog: each interval a heartbeat to every ready counterpart (driver: each node; a
  // node: its driver), then the detector's verdicts. A peer silent past the timeout is
  // declared dead as if its connection had failed (on_peer_error: its tasks run again
  // elsewhere, its actors die; a node whose driver is silent ends), and its connection is
  // closed: the peer is fenced, nothing it sends later is read, and when it wakes it finds its
  // connection gone (a node then exits). Its own thread: the progress thread keeps no timers.
  void watch_peers() {
    // (0: never; checked each interval, so closed within one interval after it is reached)
    // (At most a century: any longer is never, and would overflow the clock's duration.)
    const auto idle_close = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(std::min(config_.peer_idle_close_s, 3.2e9)));
    FailureDetector::Clock::duration interval{};
    {
      MutexLock lock(mu_);
      interval = detector_.interval();
    }
    do {
      std::vector<PeerId> to;
      std::vector<PeerId> silent;
      std::vector<PeerId> idle;  // node: outgoing direct connections unused for idle_close
      uint64_t epoch = 0;
      {
        MutexLock lock(mu_);
        if (shut_down_ || job_ended_ || driver_lost_) return;
        for (const auto& [id, p] : peers_) {
          if (p.state != Peer::State::kReady) continue;
          if (config_.role == ClusterRole::kDriver ? p.role == PeerRole::kNode
                                                   : id == driver_ || p.direct) {
            to.push_back(id);
          }
        }
        // (Time the network thread spent away from reading messages is not the peers' silence.)
        const uint64_t gaps = detector_.own_gaps();
        silent = detector_.check(comm_->take_longest_pass());
        const bool own_gap = detector_.own_gaps() != gaps;
        // Node: direct connections of ours whose handshake did not end in time (given a fresh
        // deadline instead when this process itself was held up, as the detector does).
        const auto now = std::chrono::steady_clock::now();
        for (auto& [id, p] : peers_) {
          if (p.outgoing && p.state == Peer::State::kReady && idle_close > idle_close.zero() &&
              now - p.last_used >= idle_close) {
            idle.push_back(id);
          }
          if (!p.outgoing || p.state != Peer::State::kAwaitingAuth) continue;
          if (own_gap) {
            p.connected = now;
          } else if (now - p.connected > detector_.timeout()) {
            silent.push_back(id);
          }
        }
        epoch = epoch_;
      }
      for (PeerId id : to) send(id, HeartbeatMsg{epoch});
      for (PeerId id : idle) close_if_idle(id, idle_close);
      for (PeerId id : silent) {
        if (config_.role == ClusterRole::kNode && id != driver_id()) {
          // (a direct connection: only its pulls move, to the driver; the driver judges nodes)
          close_direct(id, "its direct connection was silent, or its handshake unfinished, for "
                           "more than the heartbeat timeout");
        } else {
          declare_dead(id);
        }
      }
      drop_deferred();
    } while (!watchdog_stop_.wait_until(internal::deadline_after(interval)));
  }

  void declare_dead(PeerId peer) {
    char why[160];
    std::snprintf(why, sizeof why,
                  "declared dead: silent for more than %.3g s (PRISM_HEARTBEAT_TIMEOUT)",
                  config_.heartbeat_timeout_s);
    declared_dead_.fetch_add(1, std::memory_order_relaxed);
    drop_peer(peer, why);
  }

  // Treats `peer` as dead (its work fails over: on_peer_error) and closes its connection: it is
  // fenced, nothing it sends later is read (no callback of it runs after close()).
  void drop_peer(PeerId peer, const std::string& why) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    on_peer_error(peer, why);
    comm_->close(peer);
  }

  // Destroys the lineages of freed objects (release_object) and lets go of the objects pinned
  // for actors that are gone (forget_actor_locked), with no lock held.
  void drop_deferred() {
    for (;;) {
      std::vector<std::shared_ptr<Lineage>> dropped;
      std::vector<std::shared_ptr<const std::vector<RefTable::Lend>>> pins;
      {
        MutexLock lock(mu_);
        dropped.swap(dropped_lineages_);
        pins.swap(dropped_pins_);
      }
      if (dropped.empty() && pins.empty()) return;
      dropped.clear();  // (may free more: the loop takes those too)
      pins.clear();
    }
  }

  // The record of an actor on a node goes. The objects its recipe pins are let go later, on the
  // watchdog's thread (drop_deferred): this may run where freeing an entry must not (under mu_,
  // or in a keeper's destructor that holds ObjectService::mu, as an actor's last handle inside
  // a freed value goes).
  std::map<uint64_t, RemoteActor>::iterator forget_actor_locked(
      std::map<uint64_t, RemoteActor>::iterator it) PRISM_REQUIRES(mu_) {
    if (it->second.recipe_lends) dropped_pins_.push_back(std::move(it->second.recipe_lends));
    return remote_actors_.erase(it);
  }

  void stop_watchdog() noexcept {
    watchdog_stop_.set();
    if (watchdog_.joinable() && watchdog_.get_id() != std::this_thread::get_id()) {
      watchdog_.join();
    }
  }

  // ---- tasks that no node fits yet (a driver by address) ----

  struct Waiting {
    TaskRecord* task;
    Deadline deadline;
  };

  void start_waiting_timer_locked() PRISM_REQUIRES(mu_) {
    timer_word_.fetch_add(1, std::memory_order_release);
    internal::futex_wake_all(&timer_word_);
    if (!waiting_timer_.joinable()) {
      waiting_timer_ = std::thread([this] {
        prism::internal::use_default_thread_policy();
        wait_for_fit();
      });
    }
  }

  // The timer thread: fails the tasks whose wait ran out, naming the nodes' shapes.
  void wait_for_fit() {
    for (;;) {
      const uint32_t seen = timer_word_.load(std::memory_order_acquire);
      std::vector<TaskRecord*> expired;
      Deadline next = internal::kNoDeadline;
      std::string shapes;
      {
        MutexLock lock(mu_);
        if (stop_timer_) return;
        const Deadline now = internal::Clock::now();
        for (auto it = waiting_.begin(); it != waiting_.end();) {
          if (it->deadline <= now) {
            expired.push_back(it->task);
            it = waiting_.erase(it);
          } else {
            next = std::min(next, it->deadline);
            ++it;
          }
        }
        if (!expired.empty()) shapes = shapes_locked();
      }
      for (TaskRecord* t : expired) {
        rt_->fail_task(t, std::make_exception_ptr(InfeasibleError(
                              "infeasible task '" + t->function_name() + "': no node of the "
                              "cluster fits it, and none that does joined within " +
                              std::to_string(config_.infeasible_timeout_s) +
                              " s (PRISM_INFEASIBLE_TIMEOUT); the nodes: " + shapes)));
      }
      internal::futex_wait(&timer_word_, seen, next);
    }
  }

  // "node0: 1 CPU; node1: 2 CPU, 1 gadget" (the driver's own totals first).
  std::string shapes_locked() PRISM_REQUIRES(mu_) {
    auto describe = [](const std::map<std::string, double>& m) {
      std::string out;
      for (const auto& [k, v] : m) {
        if (v == 0 || k == "memory" || k == "object_store_memory" || k == "gpu_memory") continue;
        char buf[96];
        std::snprintf(buf, sizeof buf, "%s%g %s", out.empty() ? "" : ", ", v, k.c_str());
        out += buf;
      }
      return out.empty() ? std::string("nothing") : out;
    };
    std::string s = "node0: " + describe(rt_->scheduler().totals());
    const double u = internal::kUnitsPerResource;
    for (const auto& [id, p] : peers_) {
      if (p.state != Peer::State::kReady || p.role != PeerRole::kNode) continue;
      std::map<std::string, double> m;
      m["CPU"] = p.totals.cpu / u;
      m["GPU"] = p.totals.gpu / u;
      for (const auto& [n, a] : p.totals.custom) m[n] = a / u;
      s += "; " + node_name(p.name) + ": " + describe(m);
    }
    return s;
  }

  // A node joined: the waiting tasks that some node fits now are dispatched again.
  void retry_waiting() {
    std::vector<TaskRecord*> ready;
    {
      MutexLock lock(mu_);
      for (auto it = waiting_.begin(); it != waiting_.end();) {
        bool fits_somewhere = false;
        for (const auto& [id, p] : peers_) {
          if (p.state == Peer::State::kReady && p.role == PeerRole::kNode &&
              fits(it->task->request(), p.totals, WireResources{})) {
            fits_somewhere = true;
            break;
          }
        }
        if (fits_somewhere) {
          ready.push_back(it->task);
          it = waiting_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (TaskRecord* t : ready) {
      rt_->counters().add(internal::TaskCounters::kRequeued);
      rt_->dispatch(t);
    }
  }

  // The job ends: waiting tasks fail; the timer thread stops.
  void stop_waiting_tasks() {
    std::vector<Waiting> lost;
    {
      MutexLock lock(mu_);
      stop_timer_ = true;
      lost.swap(waiting_);
    }
    timer_word_.fetch_add(1, std::memory_order_release);
    internal::futex_wake_all(&timer_word_);
    if (waiting_timer_.joinable() && waiting_timer_.get_id() != std::this_thread::get_id()) {
      waiting_timer_.join();
    }
    for (Waiting& w : lost) {
      rt_->fail_task(w.task, rt_->lost_error("the job ended while the task waited for a node "
                                             "that fits it"));
    }
  }

  // ---- ObjectRefs lent to other processes and borrowed from them (ref_table.h) ----
 public:
  // The RefScope of one message being encoded for a peer (`lends`: the objects its refs lend)
  // or decoded from one (`in`: the refs it listed).
  class RefContext final : public internal::RefScope {
   public:
    explicit RefContext(Link* link, std::shared_ptr<const RefTable::Incoming> in = nullptr)
        : link_(link), in_(std::move(in)) {}
    uint64_t export_ref(internal::ObjectEntry* e, RefTable::ValueWriter write) override {
      RefTable::Lend l;
      // (An entry met twice in one message travels under one key: the table records a new
      // key only as the message is prepared.)
      auto [seen, first] = keys_.try_emplace(e, 0);
      if (first) seen->second = link_->refs_.key_of(e);
      l.key = seen->second;
      e->ref();
      l.entry = internal::EntryPtr(e);
      l.write = write;
      lends.push_back(std::move(l));
      return lends.back().key;
    }
    internal::EntryPtr import_ref(uint64_t key, internal::ObjectEntry* (*make)(ObjectId),
                                  internal::RemoteMaterializer materialize) override {
      return link_->import_ref(in_.get(), key, make, materialize);
    }
    internal::DecodedSlot* decoded_at(const void* at) noexcept override {
      for (const auto& [start, blob] : objects) {
        if (start == at) return &blob->decoded;
      }
      return nullptr;
    }
    std::vector<RefTable::Lend> lends;
    // The arguments that came by reference: where their bytes start in the arguments being read,
    // and the copy kept here (whose decoded values the node's readers share).
    std::vector<std::pair<const char*, Blob>> objects;

   private:
    Link* const link_;
    const std::shared_ptr<const RefTable::Incoming> in_;
    std::unordered_map<const internal::ObjectEntry*, uint64_t> keys_;  // of `lends`
  };

  // Carries out what the table decided (no lock held, except possibly RefService::mu, under
  // which the table never unpins an entry nor completes one: dropped, finish and done).
  void apply(RefTable::Effects fx) {
    if (fx.empty()) return;
    // (The driver passes borrowed values on to the nodes it lends them to: it records where
    // they are. Numbers of its own, a node's copy of the driver's object, it knows already.)
    // (Counted, not just recorded and forgotten: the end of one borrow of a number may be
    // carried out, on another thread, after the next borrow of it began. ObjectTable::
    // begin_borrow.)
    const bool driver = config_.role == ClusterRole::kDriver;
    if (driver) {
      for (const auto& [from, ready] : fx.located) {
        std::vector<PeerId> others;
        if (owned_by_node(ready.pull) &&
            objects_.begin_borrow(ready.pull, ready.bytes, from, &others)) {
          tell_freed(ready.pull, others, from);
        }
      }
    }
    for (RefTable::Completion& c : fx.completions) complete_borrowed(c);
    for (auto& [peer, msg] : fx.readies) send(peer, Message(std::move(msg)));
    for (auto& [peer, msg] : fx.releases) {
      if (is_ready(peer)) send(peer, Message(std::move(msg)));
    }
    for (uint64_t pull : fx.freed_pulls) free_pull(pull, kHere);
    for (auto& [from, pull] : fx.forgotten_pulls) {
      std::vector<PeerId> others;
      if (!driver || !owned_by_node(pull)) {
        free_pull(pull, from);  // (a node's copy: a stale free costs a transfer, loses nothing)
      } else if (objects_.end_borrow(pull, &others)) {
        tell_freed(pull, others, from);
      }
    }
    for (RefTable::Lend& w : fx.watch) watch_lent(std::move(w));
    // (fx.unpinned goes here)
  }

  bool on_network_thread() const { return comm_ != nullptr && comm_->on_progress_thread(); }

  // A keeper's entry is going (BorrowKeeper, under RefService::mu).
  void borrow_dropped(PeerId from, uint64_t key, const internal::ObjectEntry* entry) {
    apply(refs_.dropped(from, key, entry));
  }

  // The value of a borrowed object, lent by `from` as `pull`: from a copy here, or pulled (the
  // driver pulls from the node that lent it, a node from the driver, which passes it on).
  void pull_borrowed(PeerId from, uint64_t pull, uint64_t bytes, ObjectTable::Waiter waiter) {
    if (Blob b = objects_.find(pull)) {
      // (Decoded into an entry, away from the task that would find a live result's value.)
      std::string error;
      Blob wire = wire_form(b, &error);
      return waiter(wire, wire ? std::string() : "object " + std::to_string(pull) + ": " + error);
    }
    if (config_.role == ClusterRole::kDriver) return pull_here(pull, std::move(waiter));
    if (objects_.await(pull, from, std::move(waiter), bytes)) {
      send(from, Message(ObjectPullMsg{pull, /*may_redirect=*/true}));
    }
    fail_pull_if_lost(from);
  }

 private:
  // Driver: whether a node's RefReady names a value it can hold: one of its own numbers (a key's
  // or a pull's, made by its RefTable), or one of the driver's numbers (what it lends the driver it never borrowed from another process: that
  // would be a pass-back). Another would have the driver free copies that are not the node's.
  bool plausible_ready(PeerId peer, const RefReadyMsg& r) {
    if (config_.role != ClusterRole::kDriver || r.status != CallStatus::kOk) return true;
    if (!RefTable::is_key(r.pull)) return true;
    if (peer_of_index(RefTable::owner_index(r.pull)) == peer) return true;
    PRISM_LOG(kWarning) << "cluster: " << node_name_of(peer) << " said a lent object is "
                        << r.pull << ", which is not its own: ignored";
    return false;
  }

  // A number made by a node for a value it lent (RefTable keys and pull numbers: its index + 1
  // on top): nothing can compute it again once that node is gone.
  static bool owned_by_node(uint64_t id) noexcept { return (id >> 48) >= 2; }

  // The local entry for a ref of a message being decoded: the one this process has for it (its
  // own, passed back; or an earlier borrow of it), else a new one, borrowed from the sender.
  internal::EntryPtr import_ref(const RefTable::Incoming* in, uint64_t key,
                                internal::ObjectEntry* (*make)(ObjectId),
                                internal::RemoteMaterializer materialize) {
    if (in == nullptr || !in->lists(key)) {
      throw Error(ErrorCode::kInvalidArgument,
                  "a message from another node holds an ObjectRef it does not list (key " +
                      std::to_string(key) + ")");
    }
    if (internal::EntryPtr e = refs_.find(*in, key)) return e;
    const PeerId from = refs_.source_of(*in, key);
    internal::ObjectEntry* e = make(internal::next_object_id(rt_));
    internal::EntryPtr owner(e);
    // (Attached before anyone else can complete it: complete_remote keeps what was attached.)
    e->attach(std::make_shared<BorrowKeeper>(ref_service_, from, key, e));
    internal::EntryPtr existing;
    RefTable::Effects fx = refs_.adopt(*in, key, e, materialize, &existing);
    if (existing) return existing;  // (another reader made it first: `owner` goes unused)
    apply(std::move(fx));
    return owner;
  }

  // A message with refs arrived from `peer`: its Incoming, for decoding it now or later; when
  // the last holder drops it, the borrows it alone kept end.
  std::shared_ptr<const RefTable::Incoming> receive_refs(PeerId peer,
                                                         const std::vector<uint64_t>& refs) {
    if (refs.empty()) return nullptr;
    auto in = std::make_unique<RefTable::Incoming>(refs_.receive(peer, refs));
    std::weak_ptr<RefService> service = ref_service_;
    return std::shared_ptr<const RefTable::Incoming>(
        in.release(), [service](const RefTable::Incoming* p) {
          std::unique_ptr<const RefTable::Incoming> owned(p);  // (freed after the lock below)
          if (std::shared_ptr<RefService> s = service.lock()) {
            MutexLock lock(s->mu);
            if (s->link != nullptr) s->link->apply(s->link->refs_.finish(*p));
          }
        });
  }

  // Lends for a message received with `in` that the driver relays to another peer: the driver's
  // own objects passed back to it, and the others forwarded (RefTable::forward).
  std::vector<RefTable::Lend> relay_lends(const std::shared_ptr<const RefTable::Incoming>& in,
                                          const std::vector<uint64_t>& keys) {
    std::vector<RefTable::Lend> lends;
    if (!in) return lends;
    for (uint64_t key : keys) {
      auto own = in->own.find(key);
      if (own != in->own.end() && own->second) {
        RefTable::Lend l;
        l.key = key;
        l.entry = own->second;
        lends.push_back(std::move(l));
      } else {
        lends.push_back(RefTable::forward(own != in->own.end() ? refs_.source_of(*in, key)
                                                               : in->from,
                                          key));
      }
    }
    return lends;
  }

  // Sends `msg`, whose refs lend `lends` to `peer` (they are recorded first, and announced once
  // it went); false if it could not be sent (then nothing stays lent).
  // `why` (if given): set when the message was refused as too large, left empty when it could
  // not be sent otherwise (the peer is gone, out of memory).
  // `gone`: set when the transport refused the message because the peer's connection is
  // closed or failed (its failure handler runs, or ran: on_peer_error).
  template <typename M>
  bool send_lending(PeerId peer, M msg, const std::vector<RefTable::Lend>& lends,
                    std::string* why = nullptr, bool* gone = nullptr) {
    bool sent = false;
    bool prepared = false;
    if (!lends.empty()) testing_pause("PRISM_TESTING_LEND_PAUSE_MS");  // (keep it before prepare)
    try {
      // (Out of memory inside prepare() leaves what it recorded: the objects stay pinned, which
      // loses nothing.)
      if (!lends.empty()) msg.refs = refs_.prepare(lends, peer);
      prepared = true;
      std::string frame;
      encode(Message(std::move(msg)), &frame);
      sent = comm_->send(peer, std::move(frame));
      if (!sent && gone != nullptr) *gone = true;
    } catch (const Error& e) {
      // (The wire refuses a message larger than kMaxBodyBytes with kInvalidArgument.)
      if (why != nullptr && e.code() == ErrorCode::kInvalidArgument) {
        *why = e.what();
      } else {
        PRISM_LOG(kWarning) << "cluster: cannot send a message: " << e.what();
      }
    } catch (const std::exception& e) {
      PRISM_LOG(kWarning) << "cluster: cannot send a message: " << e.what();
    }
    if (!lends.empty() && prepared) {
      apply(sent ? refs_.announce(lends, peer) : refs_.unprepare(lends, peer));
    }
    return sent;
  }

  void complete_borrowed(RefTable::Completion& c) {
    if (c.ready.status == CallStatus::kOk) {
      auto v = std::make_shared<BorrowedValue>(service_, c.from, c.ready.pull, c.ready.bytes,
                                               node_name_of(c.from));
      v->materialize = c.materialize;
      c.entry->complete_remote(std::move(v));
    } else {
      c.entry->complete_error(ready_error(c.ready));
    }
  }

  // A lent entry still pending when first lent: its RefReady goes out once it is done.
  void watch_lent(RefTable::Lend w) {
    std::weak_ptr<RefService> service = ref_service_;
    const uint64_t key = w.key;
    const RefTable::ValueWriter write = w.write;
    internal::when_done(std::move(w.entry), [service, key, write](internal::ObjectEntry* e) {
      std::shared_ptr<RefService> s = service.lock();
      if (!s) return;
      MutexLock lock(s->mu);
      if (s->link != nullptr) s->link->lent_done(key, e, write);
    });
  }

  // The entry lent as `key` is done: where borrowers pull its value from (a value here is
  // serialized once, held under a pull number of its own: RefTable::new_pull), or its error.
  void lent_done(uint64_t key, internal::ObjectEntry* e, RefTable::ValueWriter write) {
    if (std::optional<RefReadyMsg> borrowed = refs_.borrowed_ready(e)) {
      // A borrowed entry lent on (read here or not): its lender's copy, under the same number.
      borrowed->key = key;
      apply(refs_.done(key, *borrowed, /*held_here=*/false));
      return;
    }
    RefReadyMsg r;
    r.key = key;
    bool local = true;
    if (e->state() == internal::ObjState::kFailed) {
      fill_error(&r, e->error());
      local = false;
    } else if (internal::RemoteValue* rv = e->remote_value()) {
      if (auto* ro = dynamic_cast<RemoteObject*>(rv)) {
        r.pull = ro->id();
        objects_.where(r.pull, nullptr, &r.bytes);
        local = false;
      } else if (auto* bv = dynamic_cast<BorrowedValue*>(rv)) {
        r.pull = bv->pull();
        r.bytes = bv->bytes();
        local = false;
      }  // (else spilled to a file here: read back and held like a value in memory)
    }
    // (The writer known now: a typed ref may have lent it after an AnyRef first did.)
    if (write == nullptr) write = refs_.writer_of(key);
    const bool held = local && hold_for_borrowers(&r, e, write);
    apply(refs_.done(key, r, held));
  }

  // Serializes `e`'s value for the borrowers' pulls (true: held here under r->pull, a number of
  // its own: RefTable::new_pull), or says in `r` why it cannot be read elsewhere.
  bool hold_for_borrowers(RefReadyMsg* r, internal::ObjectEntry* e, RefTable::ValueWriter write) {
    r->pull = r->key;
    if (write == nullptr) return false;  // an untyped ref: its borrowers wait, never read it
    r->pull = refs_.new_pull();
    std::string bytes;
    try {
      internal::RefScopeGuard none(nullptr);  // (refs inside a pulled value cannot be lent)
      write(e, &bytes);
    } catch (const std::exception& ex) {
      r->pull = 0;
      r->status = CallStatus::kSystemError;
      r->error_code = static_cast<int32_t>(ErrorCode::kInvalidArgument);
      r->error_type = "prism::Error";
      r->message = std::string("its value cannot be read on another node: ") + ex.what();
      return false;
    }
    r->bytes = bytes.size();
    objects_.hold(r->pull, make_blob(std::move(bytes)), /*primary=*/true);
    return true;
  }

  static void fill_error(RefReadyMsg* r, const std::exception_ptr& error) {
    const ResultMsg m = error_result(0, error);
    r->status = m.status;
    r->error_code = m.error_code;
    r->error_type = m.error_type;
    r->message = m.message;
    try {
      std::rethrow_exception(error);
    } catch (const TaskError& t) {
      r->where = t.function_name() + '\t' + t.node_id();
    } catch (...) {
    }
  }

  static std::exception_ptr ready_error(const RefReadyMsg& r) {
    if (r.status == CallStatus::kTaskError) {
      const size_t tab = r.where.find('\t');
      const std::string function = r.where.substr(0, tab);
      const std::string node = tab == std::string::npos ? std::string() : r.where.substr(tab + 1);
      return std::make_exception_ptr(TaskError(function, r.error_type, r.message, node));
    }
    ErrorCode code = static_cast<ErrorCode>(r.error_code);
    if (r.error_code < 0 || r.error_code > static_cast<int32_t>(ErrorCode::kInternal)) {
      code = ErrorCode::kInternal;
    }
    if (r.error_type == "prism::OwnerDiedError") {
      return std::make_exception_ptr(OwnerDiedError(r.message));
    }
    if (r.error_type == "prism::ObjectLostError") {
      return std::make_exception_ptr(ObjectLostError(code, r.message));
    }
    if (r.error_type == "prism::ActorDiedError") {
      return std::make_exception_ptr(ActorDiedError(r.message));
    }
    if (r.error_type == "prism::TaskCancelledError") {
      return std::make_exception_ptr(TaskCancelledError(r.message));
    }
    if (code == ErrorCode::kInfeasible) return std::make_exception_ptr(InfeasibleError(r.message));
    return std::make_exception_ptr(Error(code, r.message));
  }

  // Frees this process's copy of `id` and tells the other holders (not `except`) to free theirs.
  void free_pull(uint64_t id, PeerId except) { tell_freed(id, objects_.forget(id), except); }
  // `id` was forgotten here: its other holders (`others`, not `except`) free their copies.
  void tell_freed(uint64_t id, const std::vector<PeerId>& others, PeerId except) {
    for (PeerId p : others) {
      if (p != kHere && p != except && is_ready(p)) send(p, Message(ObjectFreeMsg{{id}}));
    }
  }

  // ---- objects that stay where they were produced ----
 public:
  ObjectTable::Stats object_stats() const {
    ObjectTable::Stats s = objects_.stats();
    s.lent_refs = refs_.lent_count();
    s.borrowed_refs = refs_.borrowed_count();
    return s;
  }

  // Driver: the last ref of object `id` here dropped: every copy, here and on nodes, is freed.
  void release_object(uint64_t id) {
    {
      // Its lineage goes later, on the watchdog's thread: it may hold the last refs of entries
      // whose keepers call this function, and this one may run under ObjectService::mu (a
      // keeper's destructor).
      MutexLock lock(mu_);
      if (auto it = lineages_.find(id); it != lineages_.end()) {
        dropped_lineages_.push_back(std::move(it->second));
        lineages_.erase(it);
      }
    }
    const std::vector<PeerId> holders = objects_.forget(id);
    for (PeerId p : holders) {
      if (is_ready(p)) send(p, Message(ObjectFreeMsg{{id}}));
    }
  }

  // Driver: the bytes of object `id` for a reader here; `waiter` gets them (or why not) on some
  // thread, maybe this one.
  void pull_here(uint64_t id, ObjectTable::Waiter waiter) {
    if (Blob b = objects_.find(id)) return waiter(b, {});
    const PeerId from = live_holder(id, kHere);
    if (from == 0 && owned_by_node(id)) {  // a borrowed value whose owner is gone
      return waiter(nullptr, std::string(kOwnerDied) + "the node that lent object " +
                                 std::to_string(id) + " is gone");
    }
    if (from == 0) {
      // Every copy is lost: computed again from its lineage, then pulled (once more).
      return rebuild(id, nullptr, [this, id, waiter = std::move(waiter)](const std::string& e) {
        if (!e.empty()) return waiter(nullptr, e);
        pull_here(id, waiter);
      });
    }
    // For the timeline: the pull from `from` to here, once it arrived. The reader that asked
    // for it (`first`, set before the pull is sent: its bytes cannot come sooner) also measures
    // the network's bandwidth, for placing variant calls.
    auto first = std::make_shared<std::atomic<bool>>(false);
    const auto start = internal::Timeline::Clock::now();
    auto timed = [this, id, from, start, first, waiter = std::move(waiter)](
                     const Blob& b, const std::string& why) {
      if (!b && !is_ready(from) && config_.role == ClusterRole::kDriver) {
        // The holder died while the pull was on its way: another holder, or the lineage.
        return pull_here(id, waiter);
      }
      if (!b && not_held(why) && config_.role == ClusterRole::kDriver) {
        // It had let its copy go: another holder, or the lineage.
        objects_.remove_holder(id, from);
        return pull_here(id, waiter);
      }
      if (b) {
        log_transfer(id, b->size(), from, kHere, start);
        if (first->load(std::memory_order_acquire)) {
          rt_->perf_model().record_transfer(
              internal::PerfModel::Link::kNetwork, static_cast<int64_t>(b->size()),
              std::chrono::duration<double>(internal::Timeline::Clock::now() - start).count());
        }
      }
      waiter(b, why);
    };
    if (objects_.await(id, from, std::move(timed))) {
      first->store(true, std::memory_order_release);
      send(from, Message(ObjectPullMsg{id}));
    }
    fail_pull_if_lost(from);
  }

  // After a pull was registered with `from`: if `from` was declared dead meanwhile (the watchdog
  // runs on its own thread), its failure handler may have failed the pulls before this one was
  // there, and nothing else would; fail it now (ObjectTable hands each waiter out once).
  void fail_pull_if_lost(PeerId from) {
    if (from == kHere || is_ready(from)) return;
    fail_pulls(from, "its holder was lost");
  }

  // The live node of index `index` (0: none).
  PeerId peer_of_index(uint32_t index) {
    MutexLock lock(mu_);
    for (const auto& [p, peer] : peers_) {
      if (peer.state == Peer::State::kReady && peer.index == static_cast<int>(index)) return p;
    }
    return 0;
  }

  // "node<i>" for a peer, this process's node id for kHere, "" for a peer that has gone.
  std::string peer_name_locked(PeerId p) PRISM_REQUIRES(mu_) {
    if (p == kHere) return rt_->node_id();
    auto it = peers_.find(p);
    return it == peers_.end() ? std::string() : "node" + std::to_string(it->second.index);
  }

  // Driver: an object moved from `from` to `to` (kHere: this process), asked for at `start` and
  // sent on or arrived now. The newest kTransfersKept are kept.
  void log_transfer(uint64_t id, uint64_t bytes, PeerId from, PeerId to,
                    internal::Timeline::Clock::time_point start) {
    internal::Timeline::Transfer t;
    t.object = id;
    t.bytes = bytes;
    t.start = start;
    t.end = internal::Timeline::Clock::now();
    {
      MutexLock lock(mu_);
      t.from = peer_name_locked(from);
      t.to = peer_name_locked(to);
    }
    keep_transfer(std::move(t));
  }

  // Driver: `t` joins the newest transfers (the timeline's).
  void keep_transfer(internal::Timeline::Transfer t) {
    static constexpr size_t kTransfersKept = 10000;
    MutexLock lock(transfers_mu_);
    if (transfers_.size() == kTransfersKept) transfers_.pop_front();
    transfers_.push_back(std::move(t));
  }

  std::vector<internal::Timeline::Transfer> recent_transfers() const override {
    MutexLock lock(transfers_mu_);
    return {transfers_.begin(), transfers_.end()};
  }

 private:
  // Driver: which arguments of a task being sent to a node travel by reference, and how many of
  // their bytes each node holds already (for placement).
  class Transfer final : public internal::ArgTransfer {
   public:
    explicit Transfer(Link* link) : link_(link) {}
    bool by_reference(internal::ObjectEntry* e, void (*write)(internal::ObjectEntry*, std::string*),
                      size_t estimate, size_t at) override {
      uint64_t id = 0;
      if (internal::RemoteValue* rv = e->remote_value()) {
        // A value of another node's (the link's RemoteObject), or one this process spilled to
        // a file (its store's SpilledValue): that one travels inline, read back by `write`.
        // A borrowed value goes by reference too: its lender's number, which the driver knows
        // where to pull from (never read here: this may be the network thread).
        if (auto* remote = dynamic_cast<RemoteObject*>(rv)) {
          id = remote->id();
        } else if (auto* borrowed = dynamic_cast<BorrowedValue*>(rv)) {
          id = borrowed->pull();
        } else {
          return false;
        }
      } else {
        id = link_->objects_.id_of(e->id());  // fetched here earlier, or registered below
      }
      if (id == 0) {
        if (estimate < kInlineObjectBytes) return false;
        // A large local value: serialized once, kept here for the nodes that pull it, freed
        // with its entry.
        MutexLock lock(link_->bind_mu_);
        id = link_->objects_.id_of(e->id());
        if (id == 0) {
          std::string bytes;
          try {
            // Into a pooled buffer, or memory asked for in huge pages (PLATFORM.md: first touch
            // costs more here); the buffer goes back to the pool with the copy (make_blob).
            const bool reserved = internal::BufferPool::reserve_large(&bytes, estimate);
            // (Kept for any node that pulls it: refs inside it cannot be lent to one node.)
            internal::RefScopeGuard none(nullptr);
            write(e, &bytes);
            if (reserved) internal::BufferPool::fit_reserved(&bytes);
          } catch (...) {
            return false;  // (it goes inline, where its refs are lent with the call)
          }
          Blob blob = make_blob(std::move(bytes));
          id = link_->objects_.new_id();
          link_->objects_.hold(id, blob, /*primary=*/true);
          link_->objects_.locate(id, blob->size(), kHere);
          link_->objects_.bind(e->id(), id);
          e->attach(std::make_shared<ObjectKeeper>(link_->service_, id));
        }
      }
      std::vector<PeerId> holders;
      uint64_t bytes = 0;
      if (!link_->objects_.where(id, &holders, &bytes)) return false;  // (freed meanwhile)
      for (PeerId p : holders) bytes_at[p] += bytes;
      refs.push_back(WireObjectRef{id, bytes, at});
      if (keep_entries) {
        e->ref();
        entries.emplace_back(e);
      }
      return true;
    }

    std::vector<WireObjectRef> refs;
    std::map<PeerId, uint64_t> bytes_at;
    // With keep_entries: each reference argument's entry (one reference each), as refs.
    bool keep_entries = false;
    std::vector<internal::EntryPtr> entries;

   private:
    Link* const link_;
  };

  // Driver: a num_returns task's answer, its results one by one: those that stayed on the node
  // become remote values of their entries (each pulled, freed and computed again on its own),
  // the others are decoded from the payload. Anything else the answer says (another count,
  // numbers it was not given, malformed bytes) fails the task.
  void complete_elements(PeerId peer, const Pending& p, const ResultMsg& result) {
    const size_t n = p.task->remote_elements();
    std::string wrong;
    if (n == 0 || result.elements.size() != n) {
      wrong = "gave " + std::to_string(result.elements.size()) + " results for a call of " +
              std::to_string(n);
    }
    for (size_t i = 0; wrong.empty() && i < n; ++i) {
      const uint64_t object = result.elements[i].object;
      if (object != 0 && (p.result_object == 0 || object != p.result_object + i)) {
        wrong = "names an object it was not given";
      }
    }
    auto fail = [&](const std::string& why) {
      rt_->fail_task(p.task, std::make_exception_ptr(Error(
                                 ErrorCode::kInternal, "the result of task '" +
                                                           p.task->function_name() + "' from " +
                                                           p.peer_name + " " + why)));
    };
    if (!wrong.empty()) {
      // (The numbers this call was given that the node says it kept are freed there.)
      std::vector<uint64_t> kept;
      for (size_t i = 0; i < result.elements.size(); ++i) {
        const uint64_t object = result.elements[i].object;
        if (object != 0 && p.result_object != 0 && object >= p.result_object &&
            object - p.result_object < n) {
          kept.push_back(object);
        }
      }
      if (!kept.empty() && is_ready(peer)) send(peer, Message(ObjectFreeMsg{std::move(kept)}));
      return fail(wrong);
    }
    std::vector<uint64_t> sizes(n);
    std::vector<std::shared_ptr<internal::RemoteValue>> where(n);
    for (size_t i = 0; i < n; ++i) {
      const WireElement& e = result.elements[i];
      sizes[i] = e.bytes;
      if (e.object == 0) continue;
      objects_.locate(e.object, e.bytes, peer);
      keep_lineage(p.task, e.object, static_cast<uint32_t>(i), static_cast<uint32_t>(n));
      auto remote = std::make_shared<RemoteObject>(service_, e.object, e.bytes, p.peer_name);
      remote->materialize = p.task->remote_element_materializer(i);
      where[i] = std::move(remote);
    }
    internal::remote_variant_ran(p.task, static_cast<double>(result.run_ns) * 1e-9);
    try {
      RefContext refs(this, incoming());  // (the results' refs: borrowed from the node)
      internal::RefScopeGuard scope(&refs);
      p.task->complete_remote_elements(result.payload, sizes.data(), where.data());
    } catch (const std::exception& e) {
      // (the results that stayed there are freed with `where`)
      return fail(std::string("is malformed: ") + e.what());
    }
    rt_->remote_task_done();
    p.task->release_run();
  }

  // ---- lineage: results computed again when every copy was lost (driver) ----

  // The lineage of `task`'s result, which stayed on a node as object `id`: its call (encoded
  // again from the task, which is still here) and its reference arguments' lineages. None for
  // an actor's call or a task without retries left: such a result is lost with its node.
  // A result of a num_returns call names which (`element`) of how many (`elements`).
  void keep_lineage(TaskRecord* task, uint64_t id, uint32_t element = 0,
                    uint32_t elements = 0) noexcept {
    if (config_.role != ClusterRole::kDriver || task->actor() != nullptr) return;
    const int runs = rt_->retries_left(task);
    if (runs <= 0) return;
    try {
      auto l = std::make_shared<Lineage>();
      Transfer transfer(this);
      transfer.keep_entries = true;
      if (!task->encode_remote(&l->call.function, &l->call.args, &transfer)) return;
      l->call.objects = std::move(transfer.refs);
      l->call.task_name = task->function_name();
      l->request = task->request();
      l->call.request = to_wire(l->request);
      l->task_name = l->call.task_name;
      l->runs_left = runs;
      l->element = element;
      l->elements = elements;
      MutexLock lock(mu_);
      for (size_t i = 0; i < l->call.objects.size(); ++i) {
        auto a = lineages_.find(l->call.objects[i].object);
        l->arg_lineage.push_back(a != lineages_.end() ? a->second : nullptr);
        // (an argument without lineage keeps its value: it could not be had again)
        if (a == lineages_.end()) l->pinned.push_back(std::move(transfer.entries[i]));
      }
      lineages_[id] = std::move(l);
    } catch (...) {
      // Out of memory, or an argument that cannot be encoded any more: no lineage (lost with
      // its node, as before).
    }
  }

  // Computes object `id` again from its lineage (`lineage`, or the one kept for it), on a node
  // that can run its task, after rebuilding (recursively) the reference arguments that were
  // lost too; `done` is called once, with "" when `id` has a live holder again, else with why
  // not. Readers of one object share one rebuild.
  void rebuild(uint64_t id, std::shared_ptr<Lineage> lineage,
               std::function<void(const std::string&)> done) {
    std::vector<std::pair<uint64_t, std::shared_ptr<Lineage>>> missing;
    std::string error;
    {
      MutexLock lock(mu_);
      if (auto r = rebuilds_.find(id); r != rebuilds_.end()) {
        r->second.done.push_back(std::move(done));
        return;
      }
      if (!lineage) {
        if (auto it = lineages_.find(id); it != lineages_.end()) lineage = it->second;
      }
      if (!lineage) {
        error = "object " + std::to_string(id) +
                " was lost with its node and cannot be computed again (a put value, an actor "
                "call's result, or a task that may not be retried: max_retries)";
      } else if (lineage->runs_left <= 0) {
        error = "object " + std::to_string(id) + " of task '" + lineage->task_name +
                "' was lost with its node, and the task has no retries left (max_retries)";
      } else {
        Rebuild& r = rebuilds_[id];
        r.lineage = lineage;
        r.done.push_back(std::move(done));
        r.args_missing = 1;  // (until the arguments were looked at, below)
      }
    }
    if (!error.empty()) return done(error);
    // (live_holder takes mu_) The arguments that have no copy left.
    std::vector<uint64_t> temporary;
    const auto& refs = lineage->call.objects;
    for (size_t i = 0; i < refs.size(); ++i) {
      if (objects_.holds(refs[i].object) || live_holder(refs[i].object, kHere) != 0) continue;
      missing.emplace_back(refs[i].object, lineage->arg_lineage[i]);
      if (!objects_.where(refs[i].object, nullptr, nullptr)) temporary.push_back(refs[i].object);
    }
    {
      MutexLock lock(mu_);
      auto r = rebuilds_.find(id);
      if (r == rebuilds_.end()) return;  // (not possible: nothing ends it before this)
      r->second.args_missing = missing.size();
      r->second.temporary = std::move(temporary);
    }
    if (missing.empty()) return run_rebuild(id);
    PRISM_LOG(kInfo) << "cluster: object " << id << " needs " << missing.size()
                     << " lost argument(s) computed again first";
    for (auto& [arg, arg_lineage] : missing) {
      if (!arg_lineage) {
        arg_rebuilt(id, "its argument, object " + std::to_string(arg) +
                            ", was lost too and cannot be computed again");
        continue;
      }
      rebuild(arg, arg_lineage, [this, id](const std::string& e) { arg_rebuilt(id, e); });
    }
  }

  void arg_rebuilt(uint64_t id, const std::string& error) {
    bool run = false, failed = false;
    std::string why;
    {
      MutexLock lock(mu_);
      auto r = rebuilds_.find(id);
      if (r == rebuilds_.end()) return;
      if (!error.empty() && r->second.arg_error.empty()) r->second.arg_error = error;
      if (--r->second.args_missing > 0) return;
      failed = !r->second.arg_error.empty();
      why = r->second.arg_error;
      run = !failed;
    }
    if (failed) return finish_rebuild(id, "object " + std::to_string(id) + ": " + why);
    if (run) run_rebuild(id);
  }

  // Sends the rebuild of `id` to a node that can run it (one run of its retries).
  void run_rebuild(uint64_t id) {
    std::string error;
    std::string frame;
    PeerId peer = 0;
    {
      MutexLock lock(mu_);
      auto r = rebuilds_.find(id);
      if (r == rebuilds_.end()) return;
      Lineage& l = *r->second.lineage;
      std::map<PeerId, uint64_t> bytes_at;
      for (const WireObjectRef& ref : l.call.objects) {
        std::vector<PeerId> holders;
        uint64_t bytes = 0;
        if (!objects_.where(ref.object, &holders, &bytes)) continue;
        for (PeerId h : holders) bytes_at[h] += bytes;
      }
      peer = shut_down_ ? 0 : choose_node_locked(l.request, /*runs_here=*/false, bytes_at);
      if (peer == 0) {
        error = "object " + std::to_string(id) + " of task '" + l.task_name +
                "' was lost with its node, and no node left can run the task";
      } else if (l.runs_left <= 0) {
        error = "object " + std::to_string(id) + " of task '" + l.task_name +
                "' was lost with its node, and the task has no retries left (max_retries)";
      } else {
        --l.runs_left;
        CallMsg call = l.call;
        call.call_id = next_call_++;
        call.result_object = id;
        call.may_spill = false;
        if (l.elements != 0) {  // (that one result only, under the numbers of the first run)
          call.num_returns = l.elements;
          call.only_element = static_cast<int32_t>(l.element);
          call.result_object = id - l.element;
        }
        try {
          encode(Message(std::move(call)), &frame);
        } catch (const std::exception& e) {
          error = std::string("object ") + std::to_string(id) + " cannot be computed again: " +
                  e.what();
        }
        if (error.empty()) {
          r->second.peer = peer;
          r->second.call_id = next_call_ - 1;
          rebuild_calls_[r->second.call_id] = id;
          add(&peers_[peer].used, l.request, +1);
        }
      }
    }
    if (!error.empty()) return finish_rebuild(id, error);
    rebuilt_.fetch_add(1, std::memory_order_relaxed);
    PRISM_LOG(kInfo) << "cluster: object " << id << " is computed again (lineage)";
    if (!comm_->send(peer, std::move(frame))) rebuild_run_lost(id, peer, "it could not be sent");
  }

  // The run of a rebuild on `peer` ended without the object (it failed, or the node went): run
  // again while retries last.
  void rebuild_run_lost(uint64_t id, PeerId peer, const std::string& why) {
    {
      MutexLock lock(mu_);
      auto r = rebuilds_.find(id);
      if (r == rebuilds_.end() || r->second.peer != peer) return;
      rebuild_calls_.erase(r->second.call_id);
      if (auto p = peers_.find(peer); p != peers_.end()) {
        add(&p->second.used, r->second.lineage->request, -1);
      }
      r->second.peer = 0;
      r->second.call_id = 0;
      if (r->second.lineage->runs_left <= 0) {
        lock.unlock();
        return finish_rebuild(id, "object " + std::to_string(id) + " could not be computed " +
                                      "again: " + why + " (no retries left: max_retries)");
      }
    }
    run_rebuild(id);
  }

  // A result for a rebuild's run (true: it was one).
  bool on_rebuild_result(PeerId peer, const ResultMsg& result) {
    uint64_t id = 0;
    uint64_t bytes = 0;
    {
      MutexLock lock(mu_);
      auto c = rebuild_calls_.find(result.call_id);
      if (c == rebuild_calls_.end()) return false;
      id = c->second;
      auto r = rebuilds_.find(id);
      if (r == rebuilds_.end() || r->second.peer != peer) {  // (not the run it waits for)
        rebuild_calls_.erase(c);
        if (auto p = peers_.find(peer); p != peers_.end() && r != rebuilds_.end()) {
          add(&p->second.used, r->second.lineage->request, -1);
        }
        return true;
      }
      const Lineage& l = *r->second.lineage;
      if (l.elements != 0 && result.status == CallStatus::kOk &&
          result.elements.size() == l.elements && result.elements[l.element].object == id) {
        bytes = result.elements[l.element].bytes;
      } else if (l.elements == 0 && result.status == CallStatus::kOk && result.object == id) {
        bytes = result.object_bytes;
      } else {
        lock.unlock();
        rebuild_run_lost(id, peer,
                         result.status == CallStatus::kOk ? std::string("it came back inline")
                                                          : result.message);
        return true;
      }
      rebuild_calls_.erase(c);
      if (auto p = peers_.find(peer); p != peers_.end()) {
        add(&p->second.used, r->second.lineage->request, -1);
      }
      // Its run is over: a death of that node from now on is no longer this rebuild's (its
      // readers find the copy gone and ask again).
      r->second.peer = 0;
      r->second.call_id = 0;
    }
    objects_.locate(id, bytes, peer);
    finish_rebuild(id, {});
    return true;
  }

  void finish_rebuild(uint64_t id, const std::string& error) {
    Rebuild r;
    {
      MutexLock lock(mu_);
      auto it = rebuilds_.find(id);
      if (it == rebuilds_.end()) return;
      r = std::move(it->second);
      rebuilds_.erase(it);
    }
    // Arguments rebuilt only for this run are freed now (nobody else holds a ref to them).
    for (uint64_t t : r.temporary) release_object(t);
    if (!error.empty()) PRISM_LOG(kWarning) << "cluster: " << error;
    for (auto& d : r.done) d(error);
  }

  // A live node holding a copy of `id`, other than `except`; 0 if none.
  PeerId live_holder(uint64_t id, PeerId except) {
    std::vector<PeerId> holders;
    uint64_t bytes = 0;
    if (!objects_.where(id, &holders, &bytes)) return 0;
    if (owned_by_node(id)) {
      // A value a node lent (under a pull number of its own): held by that node for as long as
      // it is lent (other copies come and go with their borrows).
      const PeerId lender = peer_of_index(RefTable::owner_index(id));
      const bool listed = std::find(holders.begin(), holders.end(), lender) != holders.end();
      return listed && lender != except && is_ready(lender) ? lender : 0;
    }
    for (PeerId p : holders) {
      if (p != kHere && p != except && is_ready(p)) return p;
    }
    return 0;
  }

  // Driver: a node asks for an object's bytes. Sent from here, or pulled from a node that has
  // them and passed on (not kept here).
  void on_driver_pull(PeerId peer, const ObjectPullMsg& pull) {
    const uint64_t id = pull.object;
    const auto start = internal::Timeline::Clock::now();
    // The answer, given where the bytes come from (here, or the holder they are pulled from).
    auto answer_from = [this, peer, id, start, pull](PeerId source) {
      return [this, peer, id, start, source, pull](const Blob& b, const std::string& why) {
        if (!b && source != kHere && !is_ready(source) && is_ready(peer)) {
          // The holder died while the pull was on its way: another holder, or the lineage.
          return on_driver_pull(peer, pull);
        }
        if (!b && source != kHere && not_held(why) && is_ready(peer)) {
          // It had let its copy go: another holder, or the lineage.
          objects_.remove_holder(id, source);
          return on_driver_pull(peer, pull);
        }
        // Named as a pending holder before the copy goes: if the object is freed between the
        // send and add_holder, the free reaches the asker too (else its copy would stay). (Not
        // when the bytes came from the asker itself, a rebuild's round trip: it holds them.)
        if (b && source != peer) objects_.add_pending_holder(id, peer);
        if (b && send_object(peer, id, b)) {
          // (Not if freed meanwhile: the copy there is a task's. A value a node lent (a pull
          // number of its own), the asker may drop with its borrow without a word: live_holder
          // reads those from their lender only.)
          objects_.add_holder(id, peer);
          log_transfer(id, b->size(), source, peer, start);
          return;
        }
        ObjectDataMsg data;
        data.object = id;
        data.error = b ? "it could not be sent" : why;
        send(peer, Message(std::move(data)));
      };
    };
    if (Blob b = objects_.find(id)) return answer_from(kHere)(b, {});
    const PeerId from = live_holder(id, peer);
    if (from == 0 && owned_by_node(id)) {  // lent by a node that is gone: nothing can rebuild it
      return answer_from(kHere)(nullptr, std::string(kOwnerDied) + "the node that lent object " +
                                             std::to_string(id) + " is gone");
    }
    if (from == 0) {
      // Lost with its node: computed again from its lineage (if it has one), then passed on
      // from where it was computed (which may be the asker itself: its bytes then make a round
      // trip, as the asker's pull waits for them from here).
      return rebuild(id, nullptr, [this, id, answer_from](const std::string& e) {
        if (!e.empty()) return answer_from(kHere)(nullptr, e);
        const PeerId at = live_holder(id, kHere);
        if (at == 0) return answer_from(kHere)(nullptr, "object " + std::to_string(id) +
                                                          " was lost again after it was rebuilt");
        if (objects_.await(id, at, answer_from(at))) send(at, Message(ObjectPullMsg{id}));
        fail_pull_if_lost(at);
      });
    }
    // A node that listens for direct pulls is named to the asker, which pulls from it: the bytes
    // travel once, not through here.
    if (pull.may_redirect && redirect_pull(peer, id, from)) return;
    if (objects_.await(id, from, answer_from(from))) send(from, Message(ObjectPullMsg{id}));
    fail_pull_if_lost(from);
  }

  // Driver: tells `peer` to pull `id` from `holder` (a node) directly. False when it cannot
  // (PRISM_DIRECT_PULLS=0 here, `holder` does not listen for direct pulls, or `id` went
  // meanwhile): then the bytes are relayed. `peer` is recorded as a pending holder now, so that
  // a free reaches its copy (even one sent before the bytes arrive: ObjectTable::drop), but no
  // reader is sent to it before it says it has them (ObjectHeldMsg: on_object_held).
  bool redirect_pull(PeerId peer, uint64_t id, PeerId holder) {
    if (!redirects_enabled_) return false;
    ObjectWhereMsg where;
    where.object = id;
    {
      MutexLock lock(mu_);
      auto it = peers_.find(holder);
      if (it == peers_.end() || it->second.state != Peer::State::kReady ||
          it->second.role != PeerRole::kNode || it->second.address.empty()) {
        return false;
      }
      where.address = it->second.address;
      where.holder_index = static_cast<uint32_t>(it->second.index);
    }
    if (!objects_.where(id, nullptr, &where.bytes) || !objects_.add_pending_holder(id, peer)) {
      return false;
    }
    redirected_.fetch_add(1, std::memory_order_relaxed);
    send(peer, Message(std::move(where)));
    return true;
  }

  // ---- direct pulls between nodes ----
  //
  // A node that needs an object asks the driver (ObjectPullMsg.may_redirect); the driver names a
  // node holding it (ObjectWhereMsg); the asker connects to that node once (kept for later pulls),
  // both prove the job's token (kPeerLabel), and the pull goes there (ObjectTable::redirect).
  // Every failure of that path (no connection, a refused or failed handshake, the holder
  // lacking the copy, a broken or silent connection) sends the pull to the driver instead, with
  // may_redirect false: the driver then relays the bytes or rebuilds them from the lineage, as
  // for any pull, and judges whether the holder died. So a direct pull never fails a reader by
  // itself, and a node never declares another dead.
  //
  // Invariants (under mu_): direct_ maps an address to the one outgoing peer made for it, live
  // until forget_direct() erases both; a peer's `queued` pulls are sent when its welcome comes,
  // or moved to the driver with every other pull sent there (forget_direct: the peer is erased
  // before its pulls are moved, so a redirect racing with it finds the peer gone and moves its
  // pull itself).

  // Node: listens for other nodes' direct pulls. PRISM_PEER_LISTEN: "host:port" to listen on,
  // "0" for none (every value then comes through the driver); by default the address this host
  // reaches the driver from, with a port from the OS. Returns the address to tell the driver
  // ("" if none).
  std::string listen_for_peers() {
    const char* env = std::getenv("PRISM_PEER_LISTEN");
    std::string where = env != nullptr ? env : "";
    if (where == "0") return "";
    try {
      if (where.empty()) where = local_address_toward(driver_address_) + ":0";
      std::string bound = comm_->listen(where);
      if (bound.rfind("0.0.0.0:", 0) == 0) {  // (all interfaces: named by the one toward the driver)
        bound = local_address_toward(driver_address_) + bound.substr(bound.find(':'));
      }
      // (Tests: an address where nobody listens, to drive the fall back to the driver.)
      if (const char* told = std::getenv("PRISM_TEST_PEER_ADDRESS_TOLD")) bound = told;
      return bound;
    } catch (const std::exception& e) {
      PRISM_LOG(kWarning) << "cluster: this node does not listen for direct pulls (" << e.what()
                          << "); values reach it through the driver";
      return "";
    }
  }

  // The IPv4 address of this host's interface toward "host:port" (a UDP socket connected there:
  // no packet is sent). Throws prism::Error if there is none.
  static std::string local_address_toward(const std::string& host_port) {
    const size_t colon = host_port.rfind(':');
    const std::string host = host_port.substr(0, colon);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(9);
    if (colon == std::string::npos || inet_pton(AF_INET, host.c_str(), &to.sin_addr) != 1) {
      throw Error(ErrorCode::kInvalidArgument, "the driver's address '" + host_port +
                                                   "' is not an IPv4 host:port");
    }
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw Error(ErrorCode::kUnavailable, "socket() failed");
    sockaddr_in local{};
    socklen_t len = sizeof local;
    const bool ok = ::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) == 0 &&
                    ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0;
    ::close(fd);
    char text[INET_ADDRSTRLEN] = {};
    if (!ok || inet_ntop(AF_INET, &local.sin_addr, text, sizeof text) == nullptr) {
      throw Error(ErrorCode::kUnavailable, "no route toward " + host_port);
    }
    return text;
  }

  // Node: the driver names the node to pull `where.object` from.
  void on_object_where(const ObjectWhereMsg& where) {
    const PeerId driver = driver_id();
    PeerId holder = 0;
    bool ready = false;
    {
      MutexLock lock(mu_);
      if (auto d = direct_.find(where.address); d != direct_.end()) holder = d->second;
    }
    if (holder == 0 && !where.address.empty() && where.address != peer_address_) {
      try {
        holder = comm_->connect(where.address);
      } catch (const std::exception& e) {
        PRISM_LOG(kDebug) << "cluster: cannot connect to node" << where.holder_index << " at "
                          << where.address << ": " << e.what();
      }
      if (holder != 0) {
        MutexLock lock(mu_);
        Peer& p = peers_[holder];
        p.direct = p.outgoing = true;
        p.role = PeerRole::kPeer;
        p.index = -1;  // (not a node of peer_of_index: the driver's node numbers are its own)
        p.address = where.address;
        p.name = "node" + std::to_string(where.holder_index) + " (direct, at " + where.address +
                 ")";
        direct_[where.address] = holder;
        p.connected = std::chrono::steady_clock::now();  // (handshake deadline: watch_peers)
        p.last_used = p.connected;
      }
    }
    if (holder == 0) {  // (the pull is still the driver's: asked again, to be relayed)
      direct_fallbacks_.fetch_add(1, std::memory_order_relaxed);
      send(driver, Message(ObjectPullMsg{where.object, /*may_redirect=*/false}));
      return;
    }
    if (!objects_.redirect(where.object, driver, holder, where.bytes)) return;  // not waited for
    {
      // (Looked up again after the redirect: forget_direct erases a peer before it moves its
      // pulls, so a peer still here now will move this pull too if it goes.)
      MutexLock lock(mu_);
      auto it = peers_.find(holder);
      if (it != peers_.end()) {
        direct_pulls_[where.object] = DirectPull{where.holder_index, steady_ns()};
        it->second.last_used = std::chrono::steady_clock::now();
      }
      if (it != peers_.end() && it->second.state == Peer::State::kAwaitingAuth) {
        it->second.queued.push_back(where.object);  // (sent on its welcome)
        return;
      }
      ready = it != peers_.end();
    }
    if (ready) {
      send(holder, Message(direct_pull(where.object)));
    } else {
      refetch_through_driver(where.object, holder, "its direct connection closed");
    }
  }

  // Node: the direct pull of `id` from `holder` failed (`why`): the driver is asked instead.
  void refetch_through_driver(uint64_t id, PeerId holder, const std::string& why) {
    PeerId driver = 0;
    {
      MutexLock lock(mu_);
      driver = driver_;
      direct_pulls_.erase(id);
      if (auto l = landings_.find(id); l != landings_.end() && l->second.from == holder) {
        landings_.erase(l);  // (its device memory goes now)
      }
    }
    if (!objects_.redirect(id, holder, driver)) return;  // (moved already, or not waited for)
    direct_fallbacks_.fetch_add(1, std::memory_order_relaxed);
    PRISM_LOG(kDebug) << "cluster: a direct pull of object " << id << " failed (" << why
                      << "); asking the driver";
    send(driver, Message(ObjectPullMsg{id, /*may_redirect=*/false}));
    fail_pull_if_lost(driver);
  }

  // Node: a direct connection closed or failed (`why`): forgotten, and the pulls sent on it go
  // to the driver. False if `peer` is not one (the driver, or on the driver any peer).
  bool forget_direct(PeerId peer, const std::string& why) {
    if (config_.role != ClusterRole::kNode) return false;
    PeerId driver = 0;
    {
      MutexLock lock(mu_);
      if (peer == driver_) return false;
      driver = driver_;
      auto it = peers_.find(peer);
      if (it == peers_.end()) return true;
      erase_direct_locked(it);
    }
    if (channels_) channels_->forget(peer);  // (a transfer on its way fails: pulled again)
    move_direct_pulls(peer, driver, why);
    return true;
  }

  // Node: forgets a direct peer (no pull is redirected to it once this returns).
  void erase_direct_locked(std::map<PeerId, Peer>::iterator it) PRISM_REQUIRES(mu_) {
    if (it->second.outgoing) {
      if (auto d = direct_.find(it->second.address); d != direct_.end() && d->second == it->first) {
        direct_.erase(d);
      }
    }
    detector_.forget(it->first);
    peers_.erase(it);
  }

  // Node: the pulls sent to the forgotten direct peer `peer` are asked of the driver.
  void move_direct_pulls(PeerId peer, PeerId driver, const std::string& why) {
    std::vector<uint64_t> moved = objects_.redirect_all(peer, driver);
    if (moved.empty()) return;
    {
      MutexLock lock(mu_);
      for (uint64_t id : moved) direct_pulls_.erase(id);
    }
    direct_fallbacks_.fetch_add(moved.size(), std::memory_order_relaxed);
    PRISM_LOG(kDebug) << "cluster: a direct connection ended (" << why << "); " << moved.size()
                      << " pull(s) on it go to the driver";
    for (uint64_t id : moved) send(driver, Message(ObjectPullMsg{id, /*may_redirect=*/false}));
    fail_pull_if_lost(driver);
  }

  // Node: closes the outgoing direct connection `peer` if no pull was sent there for
  // `idle` and none is in flight there; a pull in flight makes it busy again (last_used). The
  // check and the forgetting are one step under mu_, and a pull is redirected to a peer (in
  // on_object_where) before mu_ is taken to find it ready: a pull redirected just before this
  // step keeps the peer open, one redirected just after finds it gone and asks the driver.
  void close_if_idle(PeerId peer, std::chrono::steady_clock::duration idle) {
    PeerId driver = 0;
    std::string name;
    {
      MutexLock lock(mu_);
      auto it = peers_.find(peer);
      if (it == peers_.end() || !it->second.outgoing || it->second.state != Peer::State::kReady) {
        return;
      }
      const auto now = std::chrono::steady_clock::now();
      if (now - it->second.last_used < idle) return;
      if (objects_.pulls_from(peer) != 0) {  // (ObjectTable calls nothing of ours under its lock)
        it->second.last_used = now;
        return;
      }
      driver = driver_;
      name = it->second.name;
      erase_direct_locked(it);
    }
    PRISM_LOG(kDebug) << "cluster: closing " << name << ": unused for "
                      << config_.peer_idle_close_s << " s (PRISM_PEER_IDLE_CLOSE_S)";
    direct_closed_idle_.fetch_add(1, std::memory_order_relaxed);
    if (channels_) channels_->forget(peer);
    comm_->close(peer);
    move_direct_pulls(peer, driver, "closed when idle");  // (none: kept as a safeguard)
  }

  // Node: a pull that came from `id`'s holder directly completed (`bytes`): the driver learns it
  // (ObjectHeldMsg: it shows the transfer on its timeline, and, if this node kept the copy, it
  // may send readers here).
  void held_directly(uint64_t id, uint64_t bytes) {
    DirectPull d;
    PeerId driver = 0;
    {
      MutexLock lock(mu_);
      auto it = direct_pulls_.find(id);
      if (it == direct_pulls_.end()) return;  // (a pull from the driver)
      d = it->second;
      direct_pulls_.erase(it);
      driver = driver_;
    }
    const bool kept = objects_.holds(id);  // (else freed on its way: on the timeline all the same)
    const int64_t skew = test_clock_skew_ns();  // (as the node's clock is told: ClockPong)
    send(driver, Message(ObjectHeldMsg{id, bytes, d.from_index, d.start_ns + skew,
                                       steady_ns() + skew, kept}));
  }

  // Driver: a node we sent to pull `held.object` directly has it (or had it: freed on its way).
  void on_object_held(PeerId peer, const ObjectHeldMsg& held) {
    if (held.kept && !objects_.confirm_holder(held.object, peer)) return;  // (freed, or not sent)
    internal::Timeline::Transfer t;
    t.object = held.object;
    t.bytes = held.bytes;
    t.from = "node" + std::to_string(held.from_index);
    int64_t offset = 0;
    bool clock_known = false;
    {
      MutexLock lock(mu_);
      t.to = peer_name_locked(peer);
      if (auto it = peers_.find(peer); it != peers_.end() && it->second.clock.samples() > 0) {
        offset = it->second.clock.offset_ns();
        clock_known = true;
      }
    }
    // On this process's clock (without an estimate of the node's clock yet: ending now; never
    // later than now).
    const int64_t now = steady_ns();
    const int64_t took = held.end_ns >= held.start_ns ? held.end_ns - held.start_ns : 0;
    int64_t end_ns = now;
    if (!clock_known || __builtin_sub_overflow(held.end_ns, offset, &end_ns) || end_ns > now) {
      end_ns = now;
    }
    t.end = internal::Timeline::Clock::time_point(std::chrono::nanoseconds(end_ns));
    t.start = t.end - std::chrono::nanoseconds(took);
    keep_transfer(std::move(t));
  }

  // Node: closes a direct connection (its pulls go to the driver: forget_direct).
  void close_direct(PeerId peer, const std::string& why) {
    forget_direct(peer, why);
    comm_->close(peer);
  }

  // The label of a direct connection's proofs: they name the address the accepting node
  // listens on, so that a proof made for one node cannot be passed on to another (a process
  // in between, or one that took over a dead node's address, relaying challenges).
  static std::string peer_label(std::string_view label, const std::string& address) {
    return std::string(label) + "@" + address;
  }

  // Node: our answer to the hello of a node we connected to, to pull from it.
  void answer_peer_hello(PeerId peer, const HelloMsg& hello) {
    AuthMsg auth;
    try {
      new_challenge(auth.challenge);
    } catch (const std::exception& e) {
      return close_direct(peer, e.what());
    }
    {
      MutexLock lock(mu_);
      auto it = peers_.find(peer);
      if (it == peers_.end()) return;
      std::memcpy(it->second.challenge, auth.challenge, kChallengeBytes);
      compute_mac(token_, peer_label(kPeerLabel, it->second.address), hello.challenge, auth.mac);
    }
    auth.role = PeerRole::kPeer;
    auth.hostname = hostname();
    auth.pid = static_cast<uint32_t>(getpid());
    send(peer, auth);
  }

  // Node: another node of the job proves the token, to pull from this one.
  void on_peer_auth(PeerId peer, const AuthMsg& auth) {
    uint8_t challenge[kChallengeBytes];
    {
      MutexLock lock(mu_);
      auto it = peers_.find(peer);
      if (it == peers_.end() || peer == driver_ || it->second.outgoing || !joined_ ||
          it->second.state != Peer::State::kAwaitingAuth) {
        unauthenticated_.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      std::memcpy(challenge, it->second.challenge, kChallengeBytes);
    }
    const std::string who = auth.hostname + " pid " + std::to_string(auth.pid);
    if (auth.role != PeerRole::kPeer ||
        !verify_mac(token_, peer_label(kPeerLabel, peer_address_), challenge, auth.mac)) {
      refused_joins_.fetch_add(1, std::memory_order_relaxed);
      PRISM_LOG(kWarning) << "cluster: refused a direct connection from " << who
                          << ": it is not a node of this job";
      {
        MutexLock lock(mu_);
        peers_.erase(peer);
      }
      send(peer, RefusedMsg{"authentication failed: not a node of this job"});
      comm_->close(peer);
      return;
    }
    WelcomeMsg welcome;
    compute_mac(token_, peer_label(kPeerWelcomeLabel, peer_address_), auth.challenge, welcome.mac);
    {
      MutexLock lock(mu_);
      auto it = peers_.find(peer);
      if (it == peers_.end()) return;  // failed meanwhile
      Peer& p = it->second;
      p.role = PeerRole::kPeer;
      p.direct = true;
      p.state = Peer::State::kReady;
      p.index = -1;
      p.name = "a node pulling directly (" + who + ")";
      detector_.watch(peer);
      welcome.node_index = self_index_;
      send_welcome_locked(peer, welcome);
    }
  }

  // Node: the node we connected to proved the token too: the pulls waiting for it go.
  void on_peer_welcome(PeerId peer, const WelcomeMsg& welcome,
                       const uint8_t challenge[kChallengeBytes], const std::string& address) {
    if (!verify_mac(token_, peer_label(kPeerWelcomeLabel, address), challenge, welcome.mac)) {
      refused_joins_.fetch_add(1, std::memory_order_relaxed);
      return close_direct(peer, "the node it reached does not know the job's token");
    }
    std::vector<uint64_t> queued;
    {
      MutexLock lock(mu_);
      auto it = peers_.find(peer);
      if (it == peers_.end()) return;
      it->second.state = Peer::State::kReady;
      queued.swap(it->second.queued);
      detector_.watch(peer);
    }
    for (uint64_t id : queued) send(peer, Message(direct_pull(id)));
  }

  // Node: the direct pull of `id`, naming the GPU it should land on when a GPU call waits for it.
  ObjectPullMsg direct_pull(uint64_t id) {
    ObjectPullMsg pull{id};
    MutexLock lock(mu_);
    if (auto it = gpu_pulls_.find(id);
        it != gpu_pulls_.end() && channels_ && channels_->kind() != 0 &&
        channels_->usable(it->second)) {
      pull.reader_gpu = it->second;
      pull.channel = channels_->kind();
    }
    return pull;
  }

  // Node: the driver asks for an object held here.
  void on_node_pull(PeerId peer, const ObjectPullMsg& pull) {
    Blob b = objects_.find(pull.object);
    if (b && b->live) {
      if (offer_on_channel(peer, pull, b)) return;
      return queue_stage(StageJob{peer, pull.object, std::move(b)});
    }
    if (b && send_object(peer, pull.object, b)) return;
    ObjectDataMsg data;
    data.object = pull.object;
    data.error = b ? "it could not be sent"
                   : std::string(kNotHeld) + "object " + std::to_string(pull.object) +
                         " is not held on " + rt_->node_id();
    send(peer, Message(std::move(data)));
  }

  // ---- GPU values sent on device channels (node; prism/internal/device_channel.h) ----
  // A direct pull naming a GPU of the reader, for a value kept live on a GPU here, is answered
  // with a kDeviceOffer when this node has channels of the reader's kind: the transfer is queued
  // on the communicator for that pair of GPUs, and the reader receives it on its side. The held
  // Blob rides with the transfer, so the value stays (device memory pressure does not take it)
  // until the transfer ended. False: the pull is answered with the bytes (staged).
  bool offer_on_channel(PeerId peer, const ObjectPullMsg& pull, const Blob& b) {
    if (!channels_ || pull.reader_gpu < 0 || pull.channel != channels_->kind() ||
        !is_direct(peer)) {
      return false;
    }
    const internal::LiveResult& live = *b->live;
    if (live.device < 0 || !channels_->usable(live.device)) return false;
    const uint64_t id = pull.object;
    const internal::DeviceChannels::Offer offer = channels_->send(
        peer, live.value, live.tag, live.device, pull.reader_gpu,
        [this, id, held = b](const std::string& error) {
          if (error.empty()) {
            objects_.count_served(held->live->wire_bytes);
            device_sends_.fetch_add(1, std::memory_order_relaxed);
          } else {
            PRISM_LOG(kDebug) << "cluster: object " << id
                              << " did not go on a device channel: " << error;
          }
        });
    if (offer.comm == 0) return false;
    DeviceOfferMsg m;
    m.object = id;
    m.bytes = live.wire_bytes;
    m.comm = offer.comm;
    m.seq = offer.seq;
    m.id = offer.id;
    m.stub = std::string(b->view);
    send(peer, Message(std::move(m)));
    return true;
  }

  // Node: a holder's answer to a direct pull that named a GPU: the value comes on a device
  // channel. It lands live on that GPU (kept as the holder keeps it: stub and value); if the
  // channel fails, the value is pulled again from the driver, as bytes.
  void on_device_offer(PeerId peer, const DeviceOfferMsg& m) {
    int device = -1;
    {
      MutexLock lock(mu_);
      if (auto it = gpu_pulls_.find(m.object); it != gpu_pulls_.end()) device = it->second;
    }
    if (!channels_) {
      return refetch_through_driver(m.object, peer, "a device channel offer it did not ask for");
    }
    // (An offer not asked for is refused by receive() as for a GPU without channels: its
    // communicator takes no more.)
    const uint64_t id = m.object;
    const uint64_t bytes = m.bytes;
    channels_->receive(
        peer, internal::DeviceChannels::Offer{m.comm, m.seq, m.id}, m.stub, device,
        [this, peer, id, bytes](internal::LiveResult* live, std::string* stub,
                                const std::string& error) {
          if (live == nullptr) {
            return refetch_through_driver(id, peer, "its device channel failed: " + error);
          }
          if (live->wire_bytes != bytes) {
            return refetch_through_driver(id, peer, "it came on a device channel as " +
                                                        std::to_string(live->wire_bytes) +
                                                        " bytes, not the " +
                                                        std::to_string(bytes) + " offered");
          }
          device_receives_.fetch_add(1, std::memory_order_relaxed);
          finish_pull(peer, id, make_live_blob(std::move(*stub), std::move(*live)), {}, bytes);
        });
  }

  // ---- live results sent to pullers (node) ----
  // The stager thread serializes a live result (a GPU tensor kept on its GPU: downloaded) for
  // each pull of it, into a buffer of its own (not kept: the next pull downloads again), and
  // sends it in parts of kStagedPartBytes, each queued as soon as it is written: UCX sends a part
  // while the next one downloads, and no download runs on the network thread.
  // Invariants: jobs are queued and taken under stage_mu_; none is queued once stage_stop_ is
  // set (a pull then fails with the link, as every pull in flight does); the thread is joined
  // before comm_ goes (stop_stager), and a job it runs then still ends (its download is bounded
  // by the value's size; sending to a closed peer fails at once).
  struct StageJob {
    PeerId peer;
    uint64_t id;
    Blob held;
  };

  void queue_stage(StageJob job) {
    {
      MutexLock lock(stage_mu_);
      if (stage_stop_) return;
      stage_jobs_.push_back(std::move(job));
      if (!stager_.joinable()) {
        stager_ = std::thread([this] {
          prism::internal::use_default_thread_policy();
          run_stager();
        });
      }
    }
    stage_word_.fetch_add(1, std::memory_order_release);
    internal::futex_wake_all(&stage_word_);
  }

  void run_stager() {
    for (;;) {
      const uint32_t seen = stage_word_.load(std::memory_order_acquire);
      std::deque<StageJob> jobs;
      {
        MutexLock lock(stage_mu_);
        if (stage_stop_) return;
        jobs.swap(stage_jobs_);
      }
      while (!jobs.empty()) {
        StageJob job = std::move(jobs.front());
        jobs.pop_front();
        if (stage_stopping_.load(std::memory_order_acquire)) {
          refuse_stage(job);
        } else {
          send_live(job);
        }
      }
      internal::futex_wait(&stage_word_, seen, internal::kNoDeadline);
    }
  }

  // A pull the stager will not answer (the node is shutting down): told so, as a value not
  // held here (the driver then reads it elsewhere or computes it again).
  void refuse_stage(const StageJob& job) noexcept {
    try {
      ObjectDataMsg data;
      data.object = job.id;
      data.error = std::string(kNotHeld) + "object " + std::to_string(job.id) + " is on " +
                   rt_->node_id() + ", which is shutting down";
      send(job.peer, Message(std::move(data)));
    } catch (...) {  // (no memory: the puller hears of it when the connection closes)
    }
  }

  void stop_stager() noexcept {
    std::deque<StageJob> dropped;
    stage_stopping_.store(true, std::memory_order_release);  // (a job running stops early)
    {
      MutexLock lock(stage_mu_);
      stage_stop_ = true;
      dropped.swap(stage_jobs_);
    }
    stage_word_.fetch_add(1, std::memory_order_release);
    internal::futex_wake_all(&stage_word_);
    if (stager_.joinable() && stager_.get_id() != std::this_thread::get_id()) stager_.join();
    for (const StageJob& job : dropped) refuse_stage(job);
  }

  // Thrown out of a live result's write when its sending stops (the link stops, the peer is
  // gone): the download ends there (the staging buffers are given back as for any throw).
  struct StageStopped {};

  void send_live(const StageJob& job) noexcept {
    const internal::LiveResult& live = *job.held->live;
    const uint64_t total = live.wire_bytes;
    const size_t part = std::min(part_bytes_, kStagedPartBytes);
    uint64_t sent = 0;
    bool gone = false;  // the peer is closed: nothing more to send
    std::string error;
    try {
      // (Given back to the pool when the last part has been sent.)
      auto buffer = std::shared_ptr<std::vector<char>>(
          new std::vector<char>(internal::BufferPool::sized<char>(total)),
          [](std::vector<char>* v) {
            internal::BufferPool::offer(*v);
            delete v;
          });
      // Sends every whole part of the first `written` bytes not sent yet (all of them at the end).
      auto send_written = [&](uint64_t written) {
        if (written > total) throw Error(ErrorCode::kInternal, "it is larger than announced");
        while (!gone && sent < written && (written - sent >= part || written == total)) {
          const size_t n = static_cast<size_t>(std::min<uint64_t>(part, written - sent));
          std::string head = encode_object_data_head(job.id, sent, n, total);
          gone = !comm_->send(job.peer, std::move(head), buffer,
                              std::string_view(buffer->data() + sent, n));
          sent += n;
        }
        if (gone || stage_stopping_.load(std::memory_order_acquire)) throw StageStopped{};
      };
      live.write_into(live.value.get(), buffer->data(), send_written);
      if (sent != total) {
        error = "its serialized form ended after " + std::to_string(sent) + " of " +
                std::to_string(total) + " bytes";
      }
    } catch (const StageStopped&) {
      if (gone) return;
      if (sent == total) {
        objects_.count_served(total);
        return;
      }
      return refuse_stage(job);
    } catch (const std::exception& e) {
      error = std::string("it could not be serialized: ") + e.what();
    } catch (...) {
      error = "it could not be serialized";
    }
    if (error.empty()) {
      objects_.count_served(total);
      return;
    }
    try {
      PRISM_LOG(kWarning) << "cluster: object " << job.id << " cannot be sent: " << error;
      ObjectDataMsg data;  // (fails the pull, parts already sent or not)
      data.object = job.id;
      data.error = error;
      send(job.peer, Message(std::move(data)));
    } catch (...) {  // (no memory: the puller hears of it when the connection closes)
    }
  }

  // Sends object `id`'s bytes straight from where they are (no copy into the frame): in one
  // message, or in parts of part_bytes_ (the receiver gathers them: add_part).
  bool send_object(PeerId peer, uint64_t id, const Blob& b) {
    const uint64_t total = b->size();
    uint64_t offset = 0;
    do {
      const size_t part = static_cast<size_t>(std::min<uint64_t>(part_bytes_, total - offset));
      std::string head;
      try {
        head = encode_object_data_head(id, offset, part, total);
      } catch (const std::exception& e) {
        PRISM_LOG(kWarning) << "cluster: cannot send object " << id << ": " << e.what();
        return false;
      }
      // (The parts keep the value alive until each has been sent.)
      if (!comm_->send(peer, std::move(head), b, b->view.substr(offset, part))) return true;
      offset += part;
    } while (offset < total);
    objects_.count_served(total);
    return true;
  }

  // The answer to a pull this process sent. A node keeps the copy; the driver passes it on. The
  // bytes stay in the buffer they arrived in (UcxComm::message_owner), when there is one.
  void on_object_data(PeerId peer, const ObjectDataView& data) {
    Blob blob;
    std::string part_error;
    if (data.ok && !data.whole() && land_part(peer, data, &part_error)) return;
    if (!part_error.empty()) {
      // (a landing refused the part: the pull fails below)
    } else if (data.ok && !data.whole()) {  // a part of a value larger than one message
      blob = objects_.add_part(data.object, peer, data.offset, data.total, data.bytes, &part_error);
      if (!blob && part_error.empty()) return;  // more parts to come
    } else if (data.ok) {
      std::shared_ptr<const void> owner = UcxComm::message_owner();
      blob = owner ? make_blob(data.bytes, std::move(owner)) : make_blob(std::string(data.bytes));
    }
    if (!blob && config_.role == ClusterRole::kNode && peer != driver_id()) {
      // (a direct pull that failed: the driver is asked instead)
      return refetch_through_driver(data.object, peer,
                                    !part_error.empty() ? part_error : data.error);
    }
    const std::string why = !part_error.empty() ? part_error : data.ok ? std::string() : data.error;
    finish_pull(peer, data.object, blob, why, blob ? blob->size() : 0);
  }

  // Node: a part of a value a GPU call here waits for (gpu_pulls_), as it arrives: a whole
  // tensor's form lands on that GPU part by part (DeviceChannels::land: each part's upload runs
  // on the channels' thread while the next part arrives), and is kept there as a live value, as
  // one received on a device channel is. True if a landing took the part (the pull ends when the
  // last part's upload has); false: the part is gathered as any (`*error` set: refused).
  // Whether the value is a whole tensor is read from its first part (a tensor's header, and a
  // size that adds up): a value whose form is exactly a tensor's, such as a struct holding only
  // a tensor, lands as that tensor, which its reader finds at the value's start as it finds a
  // kept one.
  // Invariants: landings_ under mu_, written by the network thread (the parts' thread); a
  // landing's parts are written outside mu_, in order, by that thread; a landing dropped from
  // the map (its pull failed or moved, the link stops) is cancelled when its last handle goes.
  bool land_part(PeerId peer, const ObjectDataView& data, std::string* error) {
    if (config_.role != ClusterRole::kNode || !channels_) return false;
    std::shared_ptr<internal::DeviceChannels::Landing> landing;
    int device = -1;
    {
      MutexLock lock(mu_);
      auto it = landings_.find(data.object);
      if (data.offset == 0) {
        if (auto g = gpu_pulls_.find(data.object); g != gpu_pulls_.end()) device = g->second;
      } else if (it != landings_.end() && it->second.from == peer) {
        landing = it->second.landing;
        if (data.offset + data.bytes.size() >= data.total) landings_.erase(it);  // (the last)
      }
    }
    if (data.offset == 0) {
      if (!objects_.awaits(data.object, peer)) return false;  // (add_part refuses it)
      {
        MutexLock lock(mu_);
        landings_.erase(data.object);  // (a landing from where the pull was sent first)
      }
      if (device < 0) return false;
      landing = channels_->land(data.bytes, data.total, device);
      if (!landing) return false;
      MutexLock lock(mu_);
      landings_[data.object] = Landing{peer, landing};
    }
    if (!landing) return false;
    std::shared_ptr<const void> owner = UcxComm::message_owner();
    std::string_view bytes = data.bytes;
    if (!owner) {  // (the part's bytes are copied: the upload runs after this returns)
      auto copy = std::make_shared<std::string>(data.bytes);
      bytes = *copy;
      owner = std::move(copy);
    }
    try {
      landing->write(data.offset, bytes, std::move(owner));
    } catch (const std::exception& e) {
      MutexLock lock(mu_);
      landings_.erase(data.object);
      *error = e.what();
      return false;
    }
    if (data.offset + data.bytes.size() < data.total) return true;  // more parts to come
    const uint64_t id = data.object;
    const uint64_t total = data.total;
    // (Every byte is here: the sender going away now does not move the pull elsewhere, which
    // would drop the value landing.)
    objects_.arrived(id, peer);
    landing->finish([this, peer, id, total](internal::LiveResult* live, std::string* stub,
                                            const std::string& why) {
      if (live != nullptr) {
        device_landings_.fetch_add(1, std::memory_order_relaxed);
        return finish_pull(peer, id, make_live_blob(std::move(*stub), std::move(*live)), {},
                           total);
      }
      // Asked again of the driver, to be gathered in host memory this time.
      PRISM_LOG(kDebug) << "cluster: object " << id << " could not land on its GPU (" << why
                        << "); pulling it as bytes";
      {
        MutexLock lock(mu_);
        gpu_pulls_.erase(id);
      }
      if (peer != driver_id()) return refetch_through_driver(id, peer, why);
      if (objects_.redirect(id, peer, peer)) {
        send(peer, Message(ObjectPullMsg{id, /*may_redirect=*/false}));
      }
    });
    return true;
  }

  // The pull of `id` from `peer` ended: with `blob` (`bytes` long serialized; a node keeps it),
  // or why not.
  void finish_pull(PeerId peer, uint64_t id, const Blob& blob, const std::string& why,
                   uint64_t bytes) {
    const bool keep = config_.role == ClusterRole::kNode;
    auto waiters = objects_.finish(id, peer, blob, keep);
    if (keep && !waiters.empty()) {  // (the pull it was: what it left is let go)
      MutexLock lock(mu_);
      gpu_pulls_.erase(id);
      landings_.erase(id);  // (one from where the pull was sent first, if it moved)
    }
    if (waiters.empty()) unknown_results_.fetch_add(1, std::memory_order_relaxed);
    if (blob && !waiters.empty() && keep) held_directly(id, bytes);
    for (auto& w : waiters) w(blob, why);
  }

  // Pulls sent to `peer` (all pulls for kHere) fail.
  void fail_pulls(PeerId peer, const std::string& why) {
    for (auto& [id, waiters] : objects_.fail_from(peer)) {
      {
        MutexLock lock(mu_);
        gpu_pulls_.erase(id);
        landings_.erase(id);
      }
      for (auto& w : waiters) w(nullptr, why);
    }
  }

  // "node2 (host pid 7)" -> "node2"; "the driver at 127.0.0.1:4000" (a node's name for its
  // driver) -> "the driver".
  static std::string node_name(const std::string& peer_name) {
    static constexpr std::string_view kDriver = "the driver";
    if (std::string_view(peer_name).substr(0, kDriver.size()) == kDriver) {
      return std::string(kDriver);
    }
    return peer_name.substr(0, peer_name.find(' '));
  }

  RuntimeCore* const rt_;
  const ClusterConfig config_;
  const std::vector<std::string> signatures_;
  uint64_t fingerprint_ = 0;
  std::string token_;
  std::string job_dir_;
  // Values larger than this travel in parts of this size (PRISM_TRANSFER_PART_BYTES; default
  // and most: what one message carries).
  const size_t part_bytes_ = transfer_part_bytes();
  std::string driver_address_;  // node: where the driver listens (set before the handshake)
  std::string peer_address_;    // node: where it listens for direct pulls ("" if it does not)
  // Driver: whether pulls may be redirected to the node holding the value (PRISM_DIRECT_PULLS,
  // default 1).
  const bool redirects_enabled_ = [] {
    const char* v = std::getenv("PRISM_DIRECT_PULLS");
    return v == nullptr || std::string(v) != "0";
  }();

  mutable Mutex mu_;
  std::map<PeerId, Peer> peers_ PRISM_GUARDED_BY(mu_);
  std::map<uint64_t, Pending> pending_ PRISM_GUARDED_BY(mu_);
  uint64_t next_call_ PRISM_GUARDED_BY(mu_) = 1;
  uint64_t next_actor_ PRISM_GUARDED_BY(mu_) = 1;
  std::map<uint64_t, RemoteActor> remote_actors_ PRISM_GUARDED_BY(mu_);  // driver
  std::map<uint64_t, HeldActor> held_actors_ PRISM_GUARDED_BY(mu_);  // held here for others
  // Driver: the numbers of actors whose handles were sent (by id: an address may be reused).
  std::unordered_map<ActorId, uint64_t> exported_ PRISM_GUARDED_BY(mu_);
  std::map<uint64_t, Relay> relays_ PRISM_GUARDED_BY(mu_);  // driver: node calls relayed
  std::map<std::string, PeerId> direct_ PRISM_GUARDED_BY(mu_);  // node: outgoing, by address
  // Node: the direct pulls in flight, by object: the node asked, and when (steady_ns()).
  struct DirectPull {
    uint32_t from_index = 0;
    int64_t start_ns = 0;
  };
  std::unordered_map<uint64_t, DirectPull> direct_pulls_ PRISM_GUARDED_BY(mu_);
  // Node: the pulls a GPU call waits for, and the GPU each should land on (pulls_land_on).
  std::unordered_map<uint64_t, int> gpu_pulls_ PRISM_GUARDED_BY(mu_);
  // Node: the values landing on a GPU part by part (land_part), and where their parts come from.
  struct Landing {
    PeerId from = 0;
    std::shared_ptr<internal::DeviceChannels::Landing> landing;
  };
  std::unordered_map<uint64_t, Landing> landings_ PRISM_GUARDED_BY(mu_);
  uint32_t self_index_ PRISM_GUARDED_BY(mu_) = 0;                // node: its index (welcome)
  // Driver: the actors nodes had created, by (node, the node's number): the driver's number.
  std::map<std::pair<PeerId, uint64_t>, uint64_t> node_actors_ PRISM_GUARDED_BY(mu_);
  std::map<uint64_t, std::shared_ptr<Lookup>> lookups_ PRISM_GUARDED_BY(mu_);  // node
  std::map<uint64_t, std::shared_ptr<SpanQuery>> span_queries_ PRISM_GUARDED_BY(mu_);  // driver
  mutable Mutex transfers_mu_;  // never held with mu_ (log_transfer takes one, then the other)
  std::deque<internal::Timeline::Transfer> transfers_ PRISM_GUARDED_BY(transfers_mu_);  // driver
  int next_index_ PRISM_GUARDED_BY(mu_) = 1;
  std::vector<Waiting> waiting_ PRISM_GUARDED_BY(mu_);  // driver: tasks no node fits yet
  bool stop_timer_ PRISM_GUARDED_BY(mu_) = false;
  std::atomic<uint32_t> timer_word_{0};  // futex word: waiting_ changed or the timer must stop
  std::thread waiting_timer_;            // started with the first waiting task
  bool shut_down_ PRISM_GUARDED_BY(mu_) = false;
  // Node side.
  PeerId driver_ PRISM_GUARDED_BY(mu_) = 0;
  bool sent_auth_ PRISM_GUARDED_BY(mu_) = false;
  bool joined_ PRISM_GUARDED_BY(mu_) = false;
  bool job_ended_ PRISM_GUARDED_BY(mu_) = false;
  bool driver_lost_ PRISM_GUARDED_BY(mu_) = false;
  std::string join_error_ PRISM_GUARDED_BY(mu_);

  std::atomic<int> ready_nodes_{0};
  std::atomic<uint32_t> changes_{0};  // futex word: bumped on every membership change
  std::atomic<uint64_t> unauthenticated_{0};
  std::atomic<uint64_t> evicted_{0};  // unproven connections closed for newer ones
  std::atomic<uint64_t> spilled_{0};  // driver: tasks a node sent back for want of room
  std::atomic<uint64_t> served_{0};   // node: the driver's calls given to the scheduler, not gone
  // Node: nested tasks that asked the driver for room elsewhere and were sent back (they queue
  // here: offer() lets them through once), and no asking before spill_backoff_until_.
  // Invariant: spilled_back_count_ == spilled_back_.size() whenever mu_ is free (both change
  // together under mu_; the count lets offer() skip the lock while the set is empty).
  std::unordered_set<TaskRecord*> spilled_back_ PRISM_GUARDED_BY(mu_);
  std::atomic<size_t> spilled_back_count_{0};
  std::atomic<int64_t> spill_backoff_until_{0};  // internal::Clock ticks
  std::atomic<uint64_t> nested_refused_{0};  // node: ... how many were sent back
  // Driver: busy nodes' nested tasks placed here or on a node with room, and sent back.
  std::atomic<uint64_t> nested_placed_{0};
  std::atomic<uint64_t> nested_sent_back_{0};
  // Node: PRISM_NESTED_SPILL=0 keeps every task a node can run on that node.
  const bool nested_spill_ = nested_spill_enabled();
  uint64_t accepted_ PRISM_GUARDED_BY(mu_) = 0;
  std::atomic<uint64_t> malformed_{0};
  std::atomic<uint64_t> refused_joins_{0};
  std::atomic<uint64_t> unknown_results_{0};
  std::atomic<uint64_t> redirected_{0};        // driver: pulls answered with a holder to ask
  std::atomic<uint64_t> direct_fallbacks_{0};
  std::atomic<uint64_t> device_sends_{0};     // node: values sent on a device channel
  std::atomic<uint64_t> device_receives_{0};  // node: values received on one
  std::atomic<uint64_t> device_landings_{0};  // node: values landed part by part (land_part)
  std::atomic<uint64_t> next_reader_gpu_{0};  // node: pulls_land_on's turn
  std::atomic<uint64_t> direct_closed_idle_{0};  // node: direct connections closed when idle  // node: direct pulls asked of the driver after all
  // Objects that stay where they were produced (object_table.h), and what entries reach the
  // link through.
  ObjectTable objects_;
  Mutex bind_mu_;  // one registration per local entry (Transfer::by_reference)
  const std::shared_ptr<ObjectService> service_ = std::make_shared<ObjectService>();
  const std::shared_ptr<RefService> ref_service_ = std::make_shared<RefService>();
  RefTable refs_;  // ObjectRefs lent and borrowed
  OutputForwarder output_;  // node: stdout and stderr to the driver (stopped before comm_ goes)
  // Peers silent past config_.heartbeat_timeout_s (watch_peers). Every ready counterpart is
  // watched from the moment it is ready until it is lost.
  FailureDetector detector_ PRISM_GUARDED_BY(mu_);
  // The membership epoch: one more per node declared dead (driver); the driver's, as its
  // heartbeats bring it (node).
  uint64_t epoch_ PRISM_GUARDED_BY(mu_) = 0;
  std::atomic<uint64_t> declared_dead_{0};  // peers the watchdog declared dead
  std::atomic<uint64_t> dropped_{0};        // connections closed: silent or damaged peers
  std::atomic<uint64_t> lost_retried_{0};   // calls lost with a node and run again
  std::atomic<uint64_t> actor_restarts_{0};  // driver: actors built again after their node died
  // Driver: the lineage of each result that stayed on a node (while its entry lives), the
  // objects being computed again, and their runs' call ids.
  std::unordered_map<uint64_t, std::shared_ptr<Lineage>> lineages_ PRISM_GUARDED_BY(mu_);
  std::unordered_map<uint64_t, Rebuild> rebuilds_ PRISM_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<Lineage>> dropped_lineages_ PRISM_GUARDED_BY(mu_);
  // Objects the recipes of forgotten actors pinned, let go by drop_deferred.
  std::vector<std::shared_ptr<const std::vector<RefTable::Lend>>> dropped_pins_
      PRISM_GUARDED_BY(mu_);
  std::unordered_map<uint64_t, uint64_t> rebuild_calls_ PRISM_GUARDED_BY(mu_);
  std::atomic<uint64_t> rebuilt_{0};  // runs of rebuilds sent
  internal::Event watchdog_stop_;  // set by stop_watchdog()
  std::thread watchdog_;           // watch_peers() (joined before comm_ goes)
  internal::Event reporter_stop_;  // node: set by stop_reporter()
  std::thread reporter_;           // node: report_stats() (joined before comm_ goes)
  // Node: live results sent to pullers (queue_stage; the thread starts with the first).
  Mutex stage_mu_;
  std::deque<StageJob> stage_jobs_ PRISM_GUARDED_BY(stage_mu_);
  bool stage_stop_ PRISM_GUARDED_BY(stage_mu_) = false;
  std::atomic<bool> stage_stopping_{false};  // set first by stop_stager: a running job ends
  std::atomic<uint32_t> stage_word_{0};  // bumped for each job and for the stop
  std::thread stager_;                   // run_stager() (joined before comm_ goes)
  // Node: its device channels (null: none). Made in the constructor; closed (threads joined)
  // where the stager stops, before comm_ goes.
  std::unique_ptr<internal::DeviceChannels> channels_;
  OutputPrinter printer_;   // driver: what nodes printed, written off the progress thread
  // Last: destroyed first (see ~Link). Set once in the constructor, before any peer exists.
  std::unique_ptr<UcxComm> comm_;
};

BorrowKeeper::~BorrowKeeper() {
  std::shared_ptr<RefService> service = service_.lock();
  if (!service) return;
  MutexLock lock(service->mu);
  if (service->link != nullptr) service->link->borrow_dropped(from_, key_, entry_);
}

// A pull started through the link and waited for: the value's bytes, or null and why not.
struct PulledValue {
  Blob blob;
  std::string why;
};

// Starts a pull (`start`, with the link, under the service's lock; not on the network thread,
// which would deliver it) and waits for its answer until `deadline`. Every pull is answered, or
// failed when its peer or the link goes; a reader's deadline may come first (the pull goes on,
// its state living on in its waiter): then nullopt.
std::optional<PulledValue> pull_and_wait(const std::weak_ptr<ObjectService>& weak,
                                         Deadline deadline,
                                         const std::function<void(Link*, ObjectTable::Waiter)>& start) {
  struct Wait {
    internal::Event done;
    PulledValue value;
  };
  auto wait = std::make_shared<Wait>();
  ObjectTable::Waiter waiter = [wait](const Blob& b, const std::string& why) {
    wait->value.blob = b;
    wait->value.why = why;
    wait->done.set();
  };
  {
    std::shared_ptr<ObjectService> service = weak.lock();
    if (!service) {
      waiter(nullptr, "its cluster has shut down");
    } else {
      MutexLock l(service->mu);
      if (service->link == nullptr) {
        waiter(nullptr, "its cluster has shut down");
      } else if (service->link->on_network_thread()) {
        waiter(nullptr, kOnNetworkThread);
      } else {
        start(service->link, std::move(waiter));
      }
    }
  }
  if (!wait->done.wait_until(deadline)) return std::nullopt;
  return std::move(wait->value);
}

void BorrowedValue::fetch(internal::ObjectEntry* entry, Deadline deadline) {
  if (entry->state() != internal::ObjState::kRemote) return;  // fetched by another reader
  if (materialize == nullptr) {
    throw Error(ErrorCode::kInvalidArgument,
                "the value of a borrowed ObjectRef whose type is not serializable cannot be "
                "read on this node (pass the value itself, or read it where it was made)");
  }
  const std::optional<PulledValue> got =
      pull_and_wait(service_, deadline, [this](Link* link, ObjectTable::Waiter waiter) {
        link->pull_borrowed(from_, pull_, bytes_, std::move(waiter));
      });
  if (!got) {
    throw TimeoutError("the value of a borrowed object (lent by " + where_ +
                       ") did not arrive before the deadline");
  }
  if (!got->blob) {
    const std::string what = "the value of a borrowed object (lent by " + where_ + ")";
    if (got->why.rfind(kOwnerDied, 0) == 0) {
      throw OwnerDiedError(what + ": " + got->why.substr(std::strlen(kOwnerDied)));
    }
    throw ObjectLostError(ErrorCode::kUnavailable, what + " cannot be fetched: " + got->why);
  }
  MutexLock lock(materialize_mu_);
  if (entry->state() != internal::ObjState::kRemote) return;  // another reader built it
  materialize(entry, got->blob->view);
}

ObjectKeeper::~ObjectKeeper() {
  std::shared_ptr<ObjectService> service = service_.lock();
  if (!service) return;
  MutexLock lock(service->mu);
  if (service->link != nullptr) service->link->release_object(id_);
}

void RemoteObject::fetch(internal::ObjectEntry* entry, Deadline deadline) {
  if (entry->state() != internal::ObjState::kRemote) return;  // fetched by another reader
  const std::optional<PulledValue> got =
      pull_and_wait(service_, deadline, [this](Link* link, ObjectTable::Waiter waiter) {
        link->pull_here(id_, std::move(waiter));
      });
  if (!got) {
    throw TimeoutError("the value of object " + std::to_string(id_) + ", produced on " + where_ +
                       ", did not arrive before the deadline");
  }
  if (!got->blob) {
    throw ObjectLostError(ErrorCode::kUnavailable, "the value of object " + std::to_string(id_) +
                                                       ", produced on " + where_ +
                                                       ", cannot be fetched: " + got->why);
  }
  MutexLock lock(materialize_mu_);
  if (entry->state() != internal::ObjState::kRemote) return;  // another reader built it
  materialize(entry, got->blob->view);
}

std::unique_ptr<internal::ClusterLink> factory(RuntimeCore* rt, const ClusterConfig& config) {
  return std::make_unique<Link>(rt, config);
}

// Under a launcher: rank 0 drives and waits for every other rank; ranks sharing a machine split
// its hardware threads unless told how many CPUs to use, and its CUDA devices unless told how
// many GPUs.
void prepare(ClusterConfig* config, InitOptions* options) {
  if (config->role != ClusterRole::kLauncher) return;
  std::shared_ptr<LauncherSession> session = start_launcher_session();
  if (session->rank() == 0) {
    config->role = ClusterRole::kDriver;
    if (config->listen.empty()) config->listen = "127.0.0.1:0";
    config->min_nodes = std::max(config->min_nodes, session->size() - 1);
  } else {
    config->role = ClusterRole::kNode;
  }
  if (options->num_cpus < 0 && session->local_size() > 1) {
    const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
    options->num_cpus = std::max(1u, hw / static_cast<unsigned>(session->local_size()));
  }
  if (options->num_gpus < 0 && session->local_size() > 1 &&
      !internal::set_device_share({session->local_rank(), session->local_size()})) {
    PRISM_LOG(kWarning) << "cluster: the GPUs were enumerated before prism::init (a tensor made "
                           "before it?), so local rank "
                        << session->local_rank() << " of " << session->local_size()
                        << " uses every visible GPU instead of its share";
  }
  config->launcher = std::move(session);
}

const internal::ClusterModule kModule{&prepare, &factory};

// Registers the module with core when the program starts.
[[maybe_unused]] const bool g_registered = [] {
  internal::set_cluster_module(&kModule);
  return true;
}();

}  // namespace

std::unique_ptr<internal::ClusterLink> make_link(RuntimeCore* rt, const ClusterConfig& config) {
  return factory(rt, config);
}

ObjectTable::Stats object_stats() {
  Link* link = g_link.load(std::memory_order_acquire);
  return link == nullptr ? ObjectTable::Stats{} : link->object_stats();
}

LinkCounters link_counters() {
  Link* l = g_link.load(std::memory_order_acquire);
  return l != nullptr ? l->counters() : LinkCounters{};
}

}  // namespace prism::cluster
