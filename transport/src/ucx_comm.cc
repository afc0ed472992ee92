// ucx_comm.cc — UcxComm: UCP active messages driven by one event-driven progress thread.
//
// Layout: the public methods (any thread) only touch the state under `mu_` (per-peer send
// queues, the command queue, the stop flag) and wake the progress thread. Everything that
// touches UCX — the worker, listener, endpoints, requests — and the maps from endpoints to
// peers live on the progress thread alone (UCS_THREAD_MODE_SINGLE): the constructor creates the
// context and worker before the thread starts, the destructor destroys them after joining it.
//
// Wire protocol inside UcxComm (invisible to users): one active-message id. A data AM has no
// AM header; its payload is one message or several queued messages back to back. A control AM
// carries a 4-byte AM header ("BYE!") and no payload: the sender is closing the connection
// and sent everything it meant to before it (see "Closing" below). Every AM is sent with
// UCP_AM_SEND_FLAG_REPLY so the receiver learns its endpoint: `param->reply_ep` is the very
// ucp_ep_h this side created for the connection (from the conn_request on the listener side,
// from ucp_ep_create(sockaddr) on the connecting side) — UCX looks it up by the endpoint id
// that wireup exchanged (checked by the tests: an accepted peer's messages arrive under the
// PeerId on_accept gave, a connected peer's under the PeerId connect() returned).
#include "ucx_comm.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <ucp/api/ucp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <future>
#include <new>
#include <optional>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/log.h"
#include "prism/errors.h"
#include "prism/internal/buffer_pool.h"
#include "prism/internal/thread_annotations.h"

namespace prism::cluster {
namespace {

using Clock = std::chrono::steady_clock;
using internal::Mutex;
using internal::MutexLock;

constexpr uint16_t kAmId = 0x5052;  // "PR"
// The control AM's header. Static storage: in UCX 1.13 the AM header must stay valid until the
// send completes.
constexpr char kByeHeader[4] = {'B', 'Y', 'E', '!'};
// A message sent as head + tail (a frame header and a large value sent without a copy) goes as
// one AM whose UCX header is this tag followed by the head, and whose data is the tail alone:
// contiguous, so that UCX's rendezvous sends it straight from the value's memory. (Sent as a
// two-piece I/O vector, UCX 1.13 packs a rendezvous in 8 KiB copies: a quarter of the speed
// over TCP.) The receiver puts the head back in front of the tail in one buffer.
constexpr char kHeadTag[4] = {'H', 'E', 'A', 'D'};
// A tail at least this big travels as the AM's data with its head in the AM header (smaller
// messages go eagerly, where an I/O vector costs nothing and the receiver needs no copy).
constexpr size_t kSplitHeadMinTail = 64 * 1024;
// A queued message at least this big is posted on its own (no copy into a batch).
constexpr size_t kAloneBytes = 64 * 1024;
// Smaller queued messages are concatenated into batches of at most this many bytes.
constexpr size_t kMaxBatchBytes = 1024 * 1024;
// How long close(), and the destructor for all peers together, wait for a peer to confirm the
// close (its end of the connection going away) before force-closing the endpoint.
constexpr auto kCloseTimeout = std::chrono::seconds(1);
// After every endpoint is closed at teardown: how long UCX may take to finish cancelled requests.
constexpr auto kTeardownDrainTimeout = std::chrono::milliseconds(200);
// How long the progress thread keeps polling after its last busy pass before it arms the worker
// and sleeps (PRISM_PROGRESS_SPIN_US sets it). An answer that comes within it costs no wake-up,
// but the spinning thread takes a core from the tasks. On this 2-vCPU VM it does not pay:
// bench/cluster's remote task round trip p50, 8 interleaved rounds of 3 runs (2026-12-03), was
// 64-66 us without a spin (one round 181 us) and 106-159 us with 50 us. So 0 by default; a node
// with cores to spare may set it.
constexpr std::chrono::microseconds kSpinBeforeSleep{0};

std::chrono::microseconds spin_before_sleep() {
  const char* v = std::getenv("PRISM_PROGRESS_SPIN_US");
  if (v == nullptr || *v == '\0') return kSpinBeforeSleep;
  char* end = nullptr;
  const long us = std::strtol(v, &end, 10);
  if (end == v || *end != '\0' || us < 0 || us > 1000000) {
    PRISM_LOG(kWarning) << "UcxComm: PRISM_PROGRESS_SPIN_US=" << v << " is not 0..1000000 us; using "
                        << kSpinBeforeSleep.count();
    return kSpinBeforeSleep;
  }
  return std::chrono::microseconds(us);
}

// How long a caller waits for the progress thread to run its command (listen, close).
constexpr auto kCommandTimeout = std::chrono::seconds(10);

std::string status_text(ucs_status_t status) { return ucs_status_string(status); }

[[noreturn]] void throw_ucx(const char* call, ucs_status_t status) {
  throw Error(ErrorCode::kUnavailable,
              std::string("UcxComm: ") + call + " failed: " + status_text(status));
}

struct Address {
  sockaddr_in sin{};
  std::string host;  // as given (127.0.0.1 when the host part was empty)
};

// "a.b.c.d:port" (IPv4 only; empty host: 127.0.0.1). Throws kInvalidArgument.
Address parse_host_port(const std::string& text, bool allow_port_zero) {
  auto bad = [&](const char* why) {
    return Error(ErrorCode::kInvalidArgument,
                 "UcxComm: malformed address '" + text + "' (" + why + "; want IPv4 host:port)");
  };
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos) throw bad("no ':'");
  Address a;
  a.host = text.substr(0, colon);
  const std::string port_text = text.substr(colon + 1);
  if (a.host.empty()) a.host = "127.0.0.1";
  if (port_text.empty() || port_text.size() > 5 ||
      !std::all_of(port_text.begin(), port_text.end(),
                   [](char c) { return c >= '0' && c <= '9'; })) {
    throw bad("port is not a number");
  }
  const unsigned long port = std::stoul(port_text);
  if (port > 65535) throw bad("port out of range");
  if (port == 0 && !allow_port_zero) throw bad("port 0");
  a.sin.sin_family = AF_INET;
  a.sin.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, a.host.c_str(), &a.sin.sin_addr) != 1)
    throw bad("host is not an IPv4 address");
  return a;
}

struct ContextDeleter {
  void operator()(ucp_context_h c) const noexcept { ucp_cleanup(c); }
};
struct WorkerDeleter {
  void operator()(ucp_worker_h w) const noexcept { ucp_worker_destroy(w); }
};
using ContextPtr = std::unique_ptr<std::remove_pointer_t<ucp_context_h>, ContextDeleter>;
using WorkerPtr = std::unique_ptr<std::remove_pointer_t<ucp_worker_h>, WorkerDeleter>;

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd& operator=(Fd&& other) noexcept {
    std::swap(fd_, other.fd_);
    return *this;
  }
  int get() const { return fd_; }

 private:
  int fd_ = -1;
};

}  // namespace

class UcxComm::Impl {
 public:
  explicit Impl(Callbacks callbacks);
  ~Impl();

  std::string listen(const std::string& host_port);
  PeerId connect(const std::string& host_port);
  bool send(PeerId peer, std::string data, std::shared_ptr<const void> owner,
            std::string_view tail);
  void close(PeerId peer);
  Stats stats() const;
  std::chrono::nanoseconds take_longest_pass();

 private:
  // ---------------------------------------------------------------------------------------
  // Waking the progress thread (a hard room).
  //
  // The problem: send() runs on any thread and must never sleep on UCX, yet the progress
  // thread sleeps in epoll when it has nothing to do; a message queued just as it goes to
  // sleep must not wait for some unrelated event. Writing the eventfd on every send() would
  // cost a syscall per message; instead `wake_pending_` says "an eventfd write is already on
  // its way since the progress thread last looked at the queues".
  //
  // Invariant: after the progress thread clears `wake_pending_` (exchange(false), at the top
  // of every pass, before it takes commands and queues under `mu_`), the first waker to set
  // it again (exchange(true) returning false) writes the eventfd. A waker that finds it set
  // queued its item (under `mu_`) before its exchange, and that exchange precedes the
  // progress thread's next clear in the flag's modification order, so the next pass (which the
  // earlier setter's eventfd write guarantees, epoll being level-triggered until the fd is
  // read) sees the item. Hence no lost wake-up, and at most one eventfd write per pass.
  // The progress thread never sleeps with work it knows of: it sleeps only after a pass that
  // did nothing, after ucp_worker_arm said UCX has no pending events (UCS_ERR_BUSY: loop).
  // ---------------------------------------------------------------------------------------
  void wake();

  // Runs `fn` on the progress thread and returns its result (inline when already there). An
  // error it throws is rethrown here, rebuilt from its code and text: no exception object
  // crosses threads.
  std::string call_on_progress(std::function<std::string()> fn);
  void post(std::function<void()> fn) PRISM_EXCLUDES(mu_);

  // --- progress thread ---
  void run();
  bool pass();       // pass_once(), timed (take_longest_pass)
  bool pass_once();  // one round of UCX progress, accepts, failures, commands, sends, closes
  void wait_for_events();
  std::optional<Clock::time_point> next_deadline() const;
  bool run_commands() PRISM_EXCLUDES(mu_);
  bool accept_pending();
  bool handle_failures();
  bool drain_sends() PRISM_EXCLUDES(mu_);
  bool advance_closes() PRISM_EXCLUDES(mu_);
  void reap_close_requests();
  void teardown();

  std::string do_listen(const Address& a);
  void do_connect(PeerId id, const Address& a);
  void begin_close(PeerId id) PRISM_EXCLUDES(mu_);
  void begin_stop() PRISM_EXCLUDES(mu_);
  void finish_peer(PeerId id) PRISM_EXCLUDES(mu_);
  void fail(PeerId id, std::string why) { failures_.emplace_back(id, std::move(why)); }
  bool post_am(PeerId id, std::string buffer, uint64_t messages, bool bye,
               std::shared_ptr<const void> owner = nullptr, std::string_view tail = {});
  void force_close(ucp_ep_h ep);

  struct RecvOp;
  struct SendOp;
  ucs_status_t on_am(const void* header, size_t header_length, void* data, size_t length,
                     const ucp_am_recv_param_t* param);
  void deliver_ready(PeerId id);
  void on_send_done(SendOp* op, ucs_status_t status);
  void on_recv_done(RecvOp* op, ucs_status_t status);
  void on_ep_error(ucp_ep_h ep, ucs_status_t status);

  static ucs_status_t am_recv_cb(void* arg, const void* header, size_t header_length, void* data,
                                 size_t length, const ucp_am_recv_param_t* param);
  static void send_cb(void* request, ucs_status_t status, void* user_data);
  static void recv_cb(void* request, ucs_status_t status, size_t length, void* user_data);
  static void ep_err_cb(void* arg, ucp_ep_h ep, ucs_status_t status);
  static void conn_cb(ucp_conn_request_h request, void* arg);

  bool on_progress_thread() const;
  template <typename Fn, typename... Args>
  void invoke_user(const char* what, const Fn& fn, Args&&... args);

  const Callbacks callbacks_;

  // UCX handles: created by the constructor, used by the progress thread only, destroyed by
  // the destructor after the join. Declared in creation order.
  ContextPtr context_;
  WorkerPtr worker_;
  Fd event_fd_;
  Fd epoll_fd_;
  int worker_fd_ = -1;  // owned by the worker
  size_t max_am_header_ = 0;  // the largest AM header the worker sends (ucp_worker_query)

  // State below is shared with the callers' threads and protected by mu_.
  enum class SharedState { kOpen, kClosing };
  // A message: its bytes, and maybe a tail sent from the caller's memory without a copy.
  struct Outgoing {
    std::string head;
    std::shared_ptr<const void> owner;  // keeps `tail` alive
    std::string_view tail;
    size_t size() const { return head.size() + tail.size(); }
  };
  struct SharedPeer {
    SharedState state = SharedState::kOpen;
    std::deque<Outgoing> queue;  // messages not yet handed to UCX, in send() order
    bool dirty = false;             // listed in dirty_
  };
  mutable Mutex mu_;
  std::unordered_map<PeerId, SharedPeer> peers_ PRISM_GUARDED_BY(mu_);
  std::vector<PeerId> dirty_ PRISM_GUARDED_BY(mu_);  // peers whose queue may be non-empty
  std::deque<std::function<void()>> commands_ PRISM_GUARDED_BY(mu_);
  bool stop_requested_ PRISM_GUARDED_BY(mu_) = false;

  std::atomic<bool> wake_pending_{false};
  std::atomic<PeerId> next_peer_{1};

  std::atomic<uint64_t> messages_sent_{0};
  std::atomic<uint64_t> messages_received_{0};
  std::atomic<uint64_t> bytes_sent_{0};
  std::atomic<uint64_t> bytes_received_{0};
  std::atomic<uint64_t> sends_posted_{0};
  // When the progress thread's current pass began (steady clock, ns; 0: between passes), and
  // the longest pass since take_longest_pass() last looked (written by the progress thread).
  std::atomic<int64_t> pass_began_ns_{0};
  std::atomic<int64_t> longest_pass_ns_{0};

  // State below belongs to the progress thread (UCX callbacks run there too, from inside
  // ucp_worker_progress or the UCX call that completed a request): no lock.
  //
  // A peer's life on this thread: kOpen -> (close() or stop) kClosing -> finish_peer, or
  // kOpen -> (endpoint error, send/receive failure, the peer's BYE) a queued failure ->
  // finish_peer + on_peer_error. finish_peer erases the peer everywhere (send() then returns
  // false), force-closes its endpoint and orphans its pending receives. User callbacks for a
  // peer run only while it is kOpen and teardown has not begun; on_peer_error only for a peer
  // that was still kOpen when its failure was handled, so at most once.
  enum class LocalState { kOpen, kClosing };
  struct LocalPeer {
    ucp_ep_h ep = nullptr;
    LocalState state = LocalState::kOpen;
    bool send_busy = false;    // one AM in flight per peer: the next batch waits for it
    bool close_begun = false;  // listed in closing_ with close_deadline
    bool bye_posted = false;   // closing: our BYE is posted (nothing is sent after it)
    bool bye_done = false;     // ... and completed locally
    bool remote_bye = false;   // the peer sent its BYE (it is closing too)
    bool remote_gone = false;  // nothing more is delivered from it
    Clock::time_point close_deadline{};
    std::deque<RecvOp*> recv_order;  // receptions not yet delivered, in arrival order
    uint64_t arriving = 0;  // bytes of its rendezvous messages being received (RecvOp::arriving)
  };
  std::unordered_map<PeerId, LocalPeer> local_;
  std::unordered_map<ucp_ep_h, PeerId> by_ep_;
  std::unordered_set<PeerId> closing_;
  std::unordered_set<SendOp*> sends_in_ucx_;
  std::unordered_set<RecvOp*> recvs_in_ucx_;
  std::vector<void*> close_requests_;
  std::vector<ucp_conn_request_h> conn_requests_;
  std::vector<std::pair<PeerId, std::string>> failures_;
  ucp_listener_h listener_ = nullptr;
  bool stopping_ = false;  // teardown begun: no user callbacks, no new connections
  // Until then the thread never sleeps longer than kWireupPollMs (see wait_for_events).
  Clock::time_point wireup_until_{};
  static constexpr auto kWireupWindow = std::chrono::seconds(10);
  static constexpr int kWireupPollMs = 20;
  Clock::time_point stop_deadline_{};

  std::thread thread_;
};

// One AM handed to UCX: owns the bytes until the request completes.
struct UcxComm::Impl::SendOp {
  Impl* impl;
  PeerId peer;
  std::string buffer;
  uint64_t messages;
  bool bye;
  std::shared_ptr<const void> owner;  // a tail sent without a copy (after `buffer`)
  std::string_view tail;
  ucp_dt_iov_t iov[2] = {};
};

// One received AM not yet delivered: a rendezvous receive under way (in_ucx), or a message
// (eager copy or completed rendezvous) waiting behind an earlier one so that a peer's
// messages reach on_message in the order it sent them. Freed when neither UCX nor the
// peer's recv_order holds it.
struct UcxComm::Impl::RecvOp {
  Impl* impl;
  PeerId peer;
  bool bye = false;
  std::unique_ptr<char[]> data{};
  std::shared_ptr<std::vector<char>> pooled{};  // a rendezvous message's buffer (data is null)
  size_t offset = 0;  // where the message starts in `pooled`
  size_t size = 0;
  bool done = false;
  bool ok = true;
  bool in_queue = false;
  bool in_ucx = false;
  bool arriving = false;  // its size is counted in its peer's LocalPeer::arriving
};

namespace {
thread_local const void* tls_progress_owner = nullptr;  // the Impl whose progress thread this is
thread_local std::shared_ptr<const void> tls_message_owner;  // during on_message (rendezvous)

// A buffer of `n` bytes from the pool (buffer_pool.h), given back to it when the last owner
// lets go.
std::shared_ptr<std::vector<char>> pooled_buffer(size_t n) {
  auto* v = new std::vector<char>(internal::BufferPool::sized<char>(n));
  return std::shared_ptr<std::vector<char>>(v, [](std::vector<char>* p) {
    internal::BufferPool::offer(*p);
    delete p;
  });
}
}  // namespace

bool UcxComm::Impl::on_progress_thread() const { return tls_progress_owner == this; }

template <typename Fn, typename... Args>
void UcxComm::Impl::invoke_user(const char* what, const Fn& fn, Args&&... args) {
  if (!fn || stopping_) return;
  // A user's exception must not unwind through UCX's C frames.
  try {
    fn(std::forward<Args>(args)...);
  } catch (const std::exception& e) {
    PRISM_LOG(kError) << "UcxComm: the " << what << " callback threw: " << e.what();
  } catch (...) {
    PRISM_LOG(kError) << "UcxComm: the " << what << " callback threw a non-std exception";
  }
}

// ------------------------------------------------------------------------------------------
// Construction and destruction
// ------------------------------------------------------------------------------------------

UcxComm::Impl::Impl(Callbacks callbacks) : callbacks_(std::move(callbacks)) {
  ucp_config_t* config = nullptr;
  ucs_status_t status = ucp_config_read(nullptr, nullptr, &config);  // honours UCX_* env
  if (status != UCS_OK) throw_ucx("ucp_config_read", status);
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
  ucp_context_h context = nullptr;
  status = ucp_init(&params, config, &context);
  ucp_config_release(config);
  if (status != UCS_OK) throw_ucx("ucp_init", status);
  context_.reset(context);

  ucp_worker_params_t worker_params{};
  worker_params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  worker_params.thread_mode = UCS_THREAD_MODE_SINGLE;
  ucp_worker_h worker = nullptr;
  status = ucp_worker_create(context_.get(), &worker_params, &worker);
  if (status != UCS_OK) throw_ucx("ucp_worker_create", status);
  worker_.reset(worker);

  ucp_worker_attr_t worker_attr{};
  worker_attr.field_mask = UCP_WORKER_ATTR_FIELD_MAX_AM_HEADER;
  if (ucp_worker_query(worker_.get(), &worker_attr) == UCS_OK) {
    max_am_header_ = worker_attr.max_am_header;
  }

  status = ucp_worker_get_efd(worker_.get(), &worker_fd_);
  if (status != UCS_OK) throw_ucx("ucp_worker_get_efd", status);

  ucp_am_handler_param_t am{};
  am.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_FLAGS |
                  UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG;
  am.id = kAmId;
  am.flags = UCP_AM_FLAG_WHOLE_MSG;
  am.cb = &Impl::am_recv_cb;
  am.arg = this;
  status = ucp_worker_set_am_recv_handler(worker_.get(), &am);
  if (status != UCS_OK) throw_ucx("ucp_worker_set_am_recv_handler", status);

  auto sys_error = [](const char* call) {
    return Error(ErrorCode::kUnavailable,
                 std::string("UcxComm: ") + call + " failed: " + std::strerror(errno));
  };
  event_fd_ = Fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (event_fd_.get() < 0) throw sys_error("eventfd");
  epoll_fd_ = Fd(::epoll_create1(EPOLL_CLOEXEC));
  if (epoll_fd_.get() < 0) throw sys_error("epoll_create1");
  for (int fd : {worker_fd_, event_fd_.get()}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) throw sys_error("epoll_ctl");
  }
  thread_ = std::thread([this] { run(); });
}

UcxComm::Impl::~Impl() {
  {
    MutexLock lock(mu_);
    stop_requested_ = true;
  }
  wake();
  thread_.join();  // the loop's teardown is bounded by kCloseTimeout + kTeardownDrainTimeout
  // This thread now owns the worker (UCX may complete leftover requests while destroying it).
  const void* const previous_owner = tls_progress_owner;
  tls_progress_owner = this;
  if (listener_ != nullptr) ucp_listener_destroy(listener_);
  worker_.reset();
  context_.reset();
  tls_progress_owner = previous_owner;
  // UCX is gone: nothing can complete these any more.
  for (SendOp* op : sends_in_ucx_) delete op;
  for (RecvOp* op : recvs_in_ucx_) delete op;
}

// ------------------------------------------------------------------------------------------
// Public methods (any thread)
// ------------------------------------------------------------------------------------------

void UcxComm::Impl::wake() {
  if (!wake_pending_.exchange(true, std::memory_order_acq_rel)) {
    const uint64_t one = 1;
    ssize_t n;
    do {
      n = ::write(event_fd_.get(), &one, sizeof one);
    } while (n < 0 && errno == EINTR);
    // EAGAIN means the counter is saturated: the fd is readable anyway.
  }
}

void UcxComm::Impl::post(std::function<void()> fn) {
  {
    MutexLock lock(mu_);
    commands_.push_back(std::move(fn));
  }
  wake();
}

std::string UcxComm::Impl::call_on_progress(std::function<std::string()> fn) {
  if (on_progress_thread()) return fn();
  struct Outcome {
    std::string value;
    std::optional<ErrorCode> code;
    std::string message;
  };
  auto promise = std::make_shared<std::promise<Outcome>>();
  std::future<Outcome> result = promise->get_future();
  post([promise, fn = std::move(fn)] {
    Outcome outcome;
    try {
      outcome.value = fn();
    } catch (const Error& e) {
      outcome.code = e.code();
      outcome.message = e.what();
    } catch (const std::exception& e) {
      outcome.code = ErrorCode::kInternal;
      outcome.message = e.what();
    }
    promise->set_value(std::move(outcome));
  });
  if (result.wait_for(kCommandTimeout) != std::future_status::ready) {
    throw Error(ErrorCode::kUnavailable, "UcxComm: the progress thread did not answer in time");
  }
  Outcome outcome = result.get();
  if (outcome.code) throw Error(*outcome.code, outcome.message);
  return std::move(outcome.value);
}

std::string UcxComm::Impl::listen(const std::string& host_port) {
  const Address a = parse_host_port(host_port, /*allow_port_zero=*/true);
  return call_on_progress([this, a] { return do_listen(a); });
}

PeerId UcxComm::Impl::connect(const std::string& host_port) {
  const Address a = parse_host_port(host_port, /*allow_port_zero=*/false);
  const PeerId id = next_peer_.fetch_add(1, std::memory_order_relaxed);
  {
    MutexLock lock(mu_);
    peers_.emplace(id, SharedPeer{});  // send() may queue at once; posted once the ep exists
    commands_.push_back([this, id, a] { do_connect(id, a); });
  }
  wake();
  return id;
}

bool UcxComm::Impl::send(PeerId peer, std::string data, std::shared_ptr<const void> owner,
                         std::string_view tail) {
  {
    MutexLock lock(mu_);
    auto it = peers_.find(peer);
    if (it == peers_.end() || it->second.state != SharedState::kOpen) return false;
    SharedPeer& p = it->second;
    p.queue.push_back(Outgoing{std::move(data), std::move(owner), tail});
    if (!p.dirty) {
      p.dirty = true;
      dirty_.push_back(peer);
    }
  }
  wake();
  return true;
}

void UcxComm::Impl::close(PeerId peer) {
  const bool here = on_progress_thread();
  std::shared_ptr<std::promise<void>> done;
  std::future<void> done_future;
  if (!here) {
    done = std::make_shared<std::promise<void>>();
    done_future = done->get_future();
  }
  {
    MutexLock lock(mu_);
    auto it = peers_.find(peer);
    if (it == peers_.end() || it->second.state != SharedState::kOpen) return;
    it->second.state = SharedState::kClosing;  // send() refuses from now on
    commands_.push_back([this, peer, done] {
      begin_close(peer);
      if (done) done->set_value();
    });
  }
  wake();
  if (here) {
    // From a callback: stop this peer's callbacks now; the command does the rest.
    auto it = local_.find(peer);
    if (it != local_.end()) it->second.state = LocalState::kClosing;
    return;
  }
  // Once the command ran on the progress thread no callback for `peer` can start.
  if (done_future.wait_for(kCommandTimeout) != std::future_status::ready) {
    PRISM_LOG(kWarning) << "UcxComm: close(" << peer << ") was not acknowledged in time";
  }
}

UcxComm::Stats UcxComm::Impl::stats() const {
  Stats s;
  s.messages_sent = messages_sent_.load(std::memory_order_relaxed);
  s.messages_received = messages_received_.load(std::memory_order_relaxed);
  s.bytes_sent = bytes_sent_.load(std::memory_order_relaxed);
  s.bytes_received = bytes_received_.load(std::memory_order_relaxed);
  s.sends_posted = sends_posted_.load(std::memory_order_relaxed);
  return s;
}

// ------------------------------------------------------------------------------------------
// The progress loop (a hard room)
//
// One thread owns the worker. A pass: clear wake_pending_, progress the worker once, accept
// queued connection requests, handle queued failures, run commands, post what the send queues
// hold (one AM in flight per peer, the rest batched), and move closing peers along. UCX
// callbacks only record (failures_, conn_requests_) or deliver messages; anything that
// creates or closes endpoints runs in the pass, outside UCX's callbacks. When passes did
// nothing for kSpinBeforeSleep (0 unless PRISM_PROGRESS_SPIN_US says), the thread arms the
// worker; UCS_ERR_BUSY means UCX has events: pass again;
// otherwise it sleeps in epoll on the worker fd and the eventfd, with a timeout only when a
// close or stop deadline is pending or an endpoint was made in the last kWireupWindow (then at
// most kWireupPollMs). Every wait during close and stop has a deadline, after
// which endpoints are force-closed, so teardown never hangs on an unresponsive peer.
// ------------------------------------------------------------------------------------------

void UcxComm::Impl::run() {
  tls_progress_owner = this;
  const std::chrono::microseconds spin = spin_before_sleep();
  Clock::time_point last_busy = Clock::now();
  for (;;) {
    const bool busy = pass();
    if (stopping_ && (local_.empty() || Clock::now() >= stop_deadline_)) break;
    if (busy || !failures_.empty() || !conn_requests_.empty()) {
      last_busy = Clock::now();
      continue;
    }
    if (spin.count() > 0 && Clock::now() - last_busy < spin) continue;
    wait_for_events();
  }
  teardown();
  tls_progress_owner = nullptr;
}

namespace {
int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

bool UcxComm::Impl::pass() {
  const int64_t began = steady_ns();
  pass_began_ns_.store(began, std::memory_order_relaxed);
  const bool busy = pass_once();
  const int64_t took = steady_ns() - began;
  // Recorded before the pass is marked over, so that a reader always sees it one way or the
  // other. (A take_longest_pass() between this load and store may lose a shorter pass's mark: it
  // only excuses.)
  if (took > longest_pass_ns_.load(std::memory_order_relaxed)) {
    longest_pass_ns_.store(took, std::memory_order_relaxed);
  }
  pass_began_ns_.store(0, std::memory_order_release);
  return busy;
}

std::chrono::nanoseconds UcxComm::Impl::take_longest_pass() {
  const int64_t began = pass_began_ns_.load(std::memory_order_acquire);
  int64_t longest = longest_pass_ns_.exchange(0, std::memory_order_relaxed);
  if (began != 0) longest = std::max(longest, steady_ns() - began);
  return std::chrono::nanoseconds(longest);
}

bool UcxComm::Impl::pass_once() {
  wake_pending_.exchange(false, std::memory_order_acq_rel);
  bool busy = ucp_worker_progress(worker_.get()) != 0;
  busy |= accept_pending();
  busy |= handle_failures();
  busy |= run_commands();
  busy |= drain_sends();
  busy |= handle_failures();
  busy |= advance_closes();
  reap_close_requests();
  return busy;
}

std::optional<Clock::time_point> UcxComm::Impl::next_deadline() const {
  std::optional<Clock::time_point> next;
  if (stopping_) next = stop_deadline_;
  for (PeerId id : closing_) {
    auto it = local_.find(id);
    if (it != local_.end() && (!next || it->second.close_deadline < *next)) {
      next = it->second.close_deadline;
    }
  }
  return next;
}

void UcxComm::Impl::wait_for_events() {
  int timeout_ms = -1;
  const ucs_status_t status = ucp_worker_arm(worker_.get());
  if (status == UCS_ERR_BUSY) return;  // events pending: progress again
  if (status != UCS_OK) {
    PRISM_LOG(kError) << "UcxComm: ucp_worker_arm failed: " << status_text(status);
    timeout_ms = 1;  // cannot sleep on the fd: poll
  }
  if (const auto deadline = next_deadline()) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline - Clock::now());
    const int ms = static_cast<int>(std::max<int64_t>(0, left.count()));
    timeout_ms = timeout_ms < 0 ? ms : std::min(timeout_ms, ms);
  }
  // While an endpoint is new, progress at least every kWireupPollMs: UCX's TCP connection
  // manager exchanges its wire-up messages without async progress, and an armed worker may
  // sleep through them (a join once stalled for the whole 60 s of a test under load).
  if (Clock::now() < wireup_until_) {
    timeout_ms = timeout_ms < 0 ? kWireupPollMs : std::min(timeout_ms, kWireupPollMs);
  }
  epoll_event events[2];
  const int n = ::epoll_wait(epoll_fd_.get(), events, 2, timeout_ms);
  for (int i = 0; i < n; ++i) {
    if (events[i].data.fd == event_fd_.get()) {
      uint64_t count;
      while (::read(event_fd_.get(), &count, sizeof count) < 0 && errno == EINTR) {
      }
    }
  }
}

bool UcxComm::Impl::run_commands() {
  std::deque<std::function<void()>> commands;
  bool stop = false;
  {
    MutexLock lock(mu_);
    commands.swap(commands_);
    stop = stop_requested_;
  }
  for (auto& command : commands) {
    try {
      command();
    } catch (const std::exception& e) {
      PRISM_LOG(kError) << "UcxComm: command failed: " << e.what();
    }
  }
  if (stop && !stopping_) {
    begin_stop();
    return true;
  }
  return !commands.empty();
}

bool UcxComm::Impl::accept_pending() {
  if (conn_requests_.empty()) return false;
  std::vector<ucp_conn_request_h> requests;
  requests.swap(conn_requests_);
  for (ucp_conn_request_h request : requests) {
    if (stopping_) {
      ucp_listener_reject(listener_, request);
      continue;
    }
    ucp_ep_params_t params{};
    params.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                        UCP_EP_PARAM_FIELD_ERR_HANDLER;
    params.conn_request = request;
    params.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    params.err_handler.cb = &Impl::ep_err_cb;
    params.err_handler.arg = this;
    ucp_ep_h ep = nullptr;
    const ucs_status_t status = ucp_ep_create(worker_.get(), &params, &ep);
    if (status != UCS_OK) {
      PRISM_LOG(kWarning) << "UcxComm: accepting a connection failed: " << status_text(status);
      continue;
    }
    const PeerId id = next_peer_.fetch_add(1, std::memory_order_relaxed);
    {
      MutexLock lock(mu_);
      peers_.emplace(id, SharedPeer{});
    }
    local_[id].ep = ep;
    by_ep_[ep] = id;
    wireup_until_ = Clock::now() + kWireupWindow;
    // Before the next ucp_worker_progress, so before any of its messages is delivered.
    invoke_user("on_accept", callbacks_.on_accept, id);
  }
  return true;
}

bool UcxComm::Impl::handle_failures() {
  if (failures_.empty()) return false;
  std::vector<std::pair<PeerId, std::string>> failures;
  failures.swap(failures_);
  for (auto& [id, why] : failures) {
    auto it = local_.find(id);
    if (it == local_.end()) continue;  // already finished (a second report of the same end)
    const bool report = it->second.state == LocalState::kOpen;
    finish_peer(id);
    if (report) invoke_user("on_peer_error", callbacks_.on_peer_error, id, why);
  }
  return true;
}

bool UcxComm::Impl::drain_sends() {
  struct Ready {
    PeerId id;
    std::vector<Outgoing> messages;
  };
  std::vector<Ready> ready;
  {
    MutexLock lock(mu_);
    size_t keep = 0;
    for (const PeerId id : dirty_) {
      auto it = peers_.find(id);
      if (it == peers_.end()) continue;  // finished: its queue is gone
      SharedPeer& p = it->second;
      auto lit = local_.find(id);
      const bool postable = lit != local_.end() && lit->second.ep != nullptr &&
                            !lit->second.send_busy && !lit->second.bye_posted;
      if (postable && !p.queue.empty()) {
        Ready r{id, {}};
        if (p.queue.front().size() >= kAloneBytes || !p.queue.front().tail.empty()) {
          r.messages.push_back(std::move(p.queue.front()));
          p.queue.pop_front();
        } else {
          size_t bytes = 0;
          while (!p.queue.empty() && p.queue.front().size() < kAloneBytes &&
                 p.queue.front().tail.empty() &&
                 bytes + p.queue.front().size() <= kMaxBatchBytes) {
            bytes += p.queue.front().size();
            r.messages.push_back(std::move(p.queue.front()));
            p.queue.pop_front();
          }
        }
        ready.push_back(std::move(r));
      }
      if (p.queue.empty()) {
        p.dirty = false;
        continue;
      }
      dirty_[keep++] = id;  // waits for its AM in flight (or its endpoint)
    }
    dirty_.resize(keep);
  }
  for (Ready& r : ready) {
    if (r.messages.size() == 1) {
      Outgoing& m = r.messages.front();
      post_am(r.id, std::move(m.head), 1, /*bye=*/false, std::move(m.owner), m.tail);
      continue;
    }
    std::string buffer;
    size_t total = 0;
    for (const Outgoing& m : r.messages) total += m.head.size();
    buffer.reserve(total);
    for (const Outgoing& m : r.messages) buffer += m.head;
    post_am(r.id, std::move(buffer), r.messages.size(), /*bye=*/false);
  }
  return !ready.empty();
}

bool UcxComm::Impl::post_am(PeerId id, std::string buffer, uint64_t messages, bool bye,
                            std::shared_ptr<const void> owner, std::string_view tail) {
  LocalPeer& lp = local_.at(id);
  auto* op = new SendOp{this, id, std::move(buffer), messages, bye, std::move(owner), tail};
  ucp_request_param_t param{};
  param.op_attr_mask =
      UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
  const void* payload = op->buffer.data();
  size_t payload_count = op->buffer.size();
  const void* header = bye ? kByeHeader : nullptr;
  size_t header_length = bye ? sizeof kByeHeader : 0;
  const bool split = op->tail.size() >= kSplitHeadMinTail &&
                     sizeof kHeadTag + op->buffer.size() <= max_am_header_;
  if (split) {
    // The head in the AM header (it lives in op->buffer until the send completes), the tail as
    // contiguous data.
    op->buffer.insert(0, kHeadTag, sizeof kHeadTag);
    header = op->buffer.data();
    header_length = op->buffer.size();
    payload = op->tail.data();
    payload_count = op->tail.size();
  } else if (!op->tail.empty()) {  // two pieces, one message: an I/O vector
    op->iov[0].buffer = op->buffer.data();
    op->iov[0].length = op->buffer.size();
    op->iov[1].buffer = const_cast<char*>(op->tail.data());  // (UCX only reads it)
    op->iov[1].length = op->tail.size();
    param.op_attr_mask |= UCP_OP_ATTR_FIELD_DATATYPE;
    param.datatype = ucp_dt_make_iov();
    payload = op->iov;
    payload_count = 2;
  }
  param.flags = UCP_AM_SEND_FLAG_REPLY;
  param.cb.send = &Impl::send_cb;
  param.user_data = op;
  // Counted before posting (and taken back if posting fails): a receiver in this process may
  // see the message before ucp_am_send_nbx returns. Only users' messages count, not BYEs.
  const uint64_t posts = bye ? 0 : 1;
  const uint64_t bytes = op->buffer.size() + op->tail.size() - (split ? sizeof kHeadTag : 0);
  sends_posted_.fetch_add(posts, std::memory_order_relaxed);
  messages_sent_.fetch_add(messages, std::memory_order_relaxed);
  bytes_sent_.fetch_add(bytes, std::memory_order_relaxed);
  const ucs_status_ptr_t r =
      ucp_am_send_nbx(lp.ep, kAmId, header, header_length, payload, payload_count, &param);
  if (UCS_PTR_IS_ERR(r)) {
    sends_posted_.fetch_sub(posts, std::memory_order_relaxed);
    messages_sent_.fetch_sub(messages, std::memory_order_relaxed);
    bytes_sent_.fetch_sub(bytes, std::memory_order_relaxed);
    fail(id, "UCX: sending failed: " + status_text(UCS_PTR_STATUS(r)));
    delete op;
    return false;
  }
  if (r == nullptr) {  // completed in place; no callback
    if (bye) lp.bye_done = true;
    delete op;
    return true;
  }
  lp.send_busy = true;
  sends_in_ucx_.insert(op);
  return true;
}

void UcxComm::Impl::send_cb(void* request, ucs_status_t status, void* user_data) {
  auto* op = static_cast<SendOp*>(user_data);
  op->impl->on_send_done(op, status);
  ucp_request_free(request);
}

void UcxComm::Impl::on_send_done(SendOp* op, ucs_status_t status) {
  std::unique_ptr<SendOp> owned(op);
  sends_in_ucx_.erase(op);
  auto it = local_.find(op->peer);
  if (it == local_.end()) return;  // finished (force close cancels its requests)
  it->second.send_busy = false;
  if (op->bye) it->second.bye_done = true;
  if (status != UCS_OK) fail(op->peer, "UCX: sending failed: " + status_text(status));
}

// --- Closing (a hard room) ---
//
// Flushing an endpoint is not enough for a clean close: with shared-memory lanes the data sits
// in the peer's FIFO while the disconnect travels on the connection manager's socket, so the
// peer may see the endpoint fail before it has read what was flushed, and drop it. So a
// closing side first posts what is queued (send() already refuses new messages), then a BYE
// control AM after its last message. The receiver delivers everything before the BYE (same
// order machinery as rendezvous), reports the peer closed, and force-closes its endpoint; that
// failure arriving here (or the peer's own BYE, when both close at once) ends the close, and
// kCloseTimeout bounds it when the peer does not answer. Only then is the endpoint
// force-closed (FORCE: PEER error mode is set on both sides).

void UcxComm::Impl::begin_close(PeerId id) {
  auto it = local_.find(id);
  if (it == local_.end()) {  // no endpoint (its creation failed and is being reported)
    MutexLock lock(mu_);
    peers_.erase(id);
    return;
  }
  LocalPeer& lp = it->second;
  lp.state = LocalState::kClosing;
  if (lp.close_begun) return;
  {
    MutexLock lock(mu_);
    auto sit = peers_.find(id);
    if (sit != peers_.end()) sit->second.state = SharedState::kClosing;
  }
  lp.close_begun = true;
  lp.close_deadline = Clock::now() + kCloseTimeout;
  if (stopping_) lp.close_deadline = std::min(lp.close_deadline, stop_deadline_);
  closing_.insert(id);
}

bool UcxComm::Impl::advance_closes() {
  if (closing_.empty()) return false;
  bool changed = false;
  const auto now = Clock::now();
  const std::vector<PeerId> ids(closing_.begin(), closing_.end());
  for (const PeerId id : ids) {
    auto it = local_.find(id);
    if (it == local_.end()) {
      closing_.erase(id);
      continue;
    }
    LocalPeer& lp = it->second;
    if (lp.ep == nullptr || now >= lp.close_deadline || (lp.bye_done && lp.remote_bye)) {
      finish_peer(id);
      changed = true;
      continue;
    }
    if (lp.send_busy || lp.bye_posted) continue;
    bool queued;
    {
      MutexLock lock(mu_);
      auto sit = peers_.find(id);
      queued = sit != peers_.end() && !sit->second.queue.empty();
    }
    if (queued) continue;  // drain_sends posts it first
    lp.bye_posted = true;
    post_am(id, std::string(), 0, /*bye=*/true);
    changed = true;
  }
  return changed;
}

void UcxComm::Impl::finish_peer(PeerId id) {
  auto it = local_.find(id);
  if (it == local_.end()) return;
  LocalPeer lp = std::move(it->second);
  local_.erase(it);
  closing_.erase(id);
  {
    MutexLock lock(mu_);
    peers_.erase(id);  // drops what was still queued; send() returns false from now on
  }
  for (RecvOp* op : lp.recv_order) {
    op->in_queue = false;
    if (!op->in_ucx) delete op;
  }
  if (lp.ep != nullptr) {
    by_ep_.erase(lp.ep);
    force_close(lp.ep);  // completes its requests with UCS_ERR_CANCELED (callbacks see no peer)
  }
}

void UcxComm::Impl::force_close(ucp_ep_h ep) {
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  param.flags = UCP_EP_CLOSE_FLAG_FORCE;
  const ucs_status_ptr_t r = ucp_ep_close_nbx(ep, &param);
  if (r != nullptr && !UCS_PTR_IS_ERR(r)) close_requests_.push_back(r);
}

void UcxComm::Impl::reap_close_requests() {
  size_t keep = 0;
  for (void* r : close_requests_) {
    if (ucp_request_check_status(r) == UCS_INPROGRESS) {
      close_requests_[keep++] = r;
    } else {
      ucp_request_free(r);
    }
  }
  close_requests_.resize(keep);
}

void UcxComm::Impl::begin_stop() {
  stopping_ = true;  // from here on: no user callbacks, connection requests are rejected
  stop_deadline_ = Clock::now() + kCloseTimeout;
  std::vector<PeerId> ids;
  ids.reserve(local_.size());
  for (const auto& [id, lp] : local_) ids.push_back(id);
  for (const PeerId id : ids) begin_close(id);
}

void UcxComm::Impl::teardown() {
  std::vector<PeerId> ids;
  for (const auto& [id, lp] : local_) ids.push_back(id);
  for (const PeerId id : ids) finish_peer(id);
  {
    MutexLock lock(mu_);
    peers_.clear();
    dirty_.clear();
  }
  for (ucp_conn_request_h request : conn_requests_) ucp_listener_reject(listener_, request);
  conn_requests_.clear();
  // Let UCX finish what the force closes cancelled, briefly; leftovers are freed after the
  // worker is destroyed.
  const auto deadline = Clock::now() + kTeardownDrainTimeout;
  while ((!close_requests_.empty() || !sends_in_ucx_.empty() || !recvs_in_ucx_.empty()) &&
         Clock::now() < deadline) {
    if (ucp_worker_progress(worker_.get()) != 0) {
      reap_close_requests();
      continue;
    }
    reap_close_requests();
    if (ucp_worker_arm(worker_.get()) == UCS_OK) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
      epoll_event events[2];
      ::epoll_wait(epoll_fd_.get(), events, 2,
                   static_cast<int>(std::max<int64_t>(0, left.count())));
    }
  }
  for (void* r : close_requests_) ucp_request_free(r);
  close_requests_.clear();
}

// ------------------------------------------------------------------------------------------
// Listener and endpoints
// ------------------------------------------------------------------------------------------

std::string UcxComm::Impl::do_listen(const Address& a) {
  if (listener_ != nullptr) {
    throw Error(ErrorCode::kInvalidArgument, "UcxComm: listen() was already called");
  }
  ucp_listener_params_t params{};
  params.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
  params.sockaddr.addr = reinterpret_cast<const sockaddr*>(&a.sin);
  params.sockaddr.addrlen = sizeof a.sin;
  params.conn_handler.cb = &Impl::conn_cb;
  params.conn_handler.arg = this;
  ucp_listener_h listener = nullptr;
  ucs_status_t status = ucp_listener_create(worker_.get(), &params, &listener);
  if (status != UCS_OK) {
    throw Error(ErrorCode::kUnavailable, "UcxComm: ucp_listener_create(" + a.host + ":" +
                                             std::to_string(ntohs(a.sin.sin_port)) +
                                             ") failed: " + status_text(status));
  }
  ucp_listener_attr_t attr{};
  attr.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
  status = ucp_listener_query(listener, &attr);
  if (status != UCS_OK) {
    ucp_listener_destroy(listener);
    throw_ucx("ucp_listener_query", status);
  }
  listener_ = listener;
  uint16_t port = ntohs(a.sin.sin_port);
  if (attr.sockaddr.ss_family == AF_INET) {
    port = ntohs(reinterpret_cast<const sockaddr_in*>(&attr.sockaddr)->sin_port);
  }
  return a.host + ":" + std::to_string(port);
}

void UcxComm::Impl::conn_cb(ucp_conn_request_h request, void* arg) {
  auto* impl = static_cast<Impl*>(arg);
  PRISM_CHECK(impl->on_progress_thread());
  impl->conn_requests_.push_back(request);  // the endpoint is made in the next pass
}

void UcxComm::Impl::do_connect(PeerId id, const Address& a) {
  ucp_ep_params_t params{};
  params.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR |
                      UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
  params.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
  params.sockaddr.addr = reinterpret_cast<const sockaddr*>(&a.sin);
  params.sockaddr.addrlen = sizeof a.sin;
  params.err_mode = UCP_ERR_HANDLING_MODE_PEER;
  params.err_handler.cb = &Impl::ep_err_cb;
  params.err_handler.arg = this;
  ucp_ep_h ep = nullptr;
  const ucs_status_t status = ucp_ep_create(worker_.get(), &params, &ep);
  LocalPeer& lp = local_[id];
  if (status != UCS_OK) {
    fail(id, "UCX: connecting to " + a.host + ":" + std::to_string(ntohs(a.sin.sin_port)) +
                 " failed: " + status_text(status));
    return;
  }
  // Returns before the connection exists: sends wait inside UCX until it does, and a failed
  // connection comes back through ep_err_cb.
  lp.ep = ep;
  by_ep_[ep] = id;
  wireup_until_ = Clock::now() + kWireupWindow;
}

void UcxComm::Impl::ep_err_cb(void* arg, ucp_ep_h ep, ucs_status_t status) {
  auto* impl = static_cast<Impl*>(arg);
  PRISM_CHECK(impl->on_progress_thread());
  impl->on_ep_error(ep, status);
}

void UcxComm::Impl::on_ep_error(ucp_ep_h ep, ucs_status_t status) {
  auto it = by_ep_.find(ep);
  if (it == by_ep_.end()) return;
  // The endpoint must be closed, but not from inside UCX's callback: the next pass does it.
  fail(it->second, "UCX: " + status_text(status));
}

// ------------------------------------------------------------------------------------------
// Receiving
// ------------------------------------------------------------------------------------------

ucs_status_t UcxComm::Impl::am_recv_cb(void* arg, const void* header, size_t header_length,
                                       void* data, size_t length,
                                       const ucp_am_recv_param_t* param) {
  return static_cast<Impl*>(arg)->on_am(header, header_length, data, length, param);
}

ucs_status_t UcxComm::Impl::on_am(const void* header, size_t header_length, void* data,
                                  size_t length, const ucp_am_recv_param_t* param) {
  const bool rndv = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
  // Returning an error for a rendezvous descriptor drops it and fails the sender's request.
  const ucs_status_t drop = rndv ? UCS_ERR_REJECTED : UCS_OK;
  if ((param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) == 0) return drop;
  auto pit = by_ep_.find(param->reply_ep);
  if (pit == by_ep_.end()) {
    PRISM_LOG(kDebug) << "UcxComm: dropped a message from an unknown endpoint";
    return drop;
  }
  const PeerId id = pit->second;
  LocalPeer& lp = local_.at(id);
  if (callbacks_.on_activity) invoke_user("on_activity", callbacks_.on_activity, id, lp.arriving);
  // A head sent in the AM header (kHeadTag): the message is the head followed by the data.
  std::string_view head;
  if (header_length >= sizeof kHeadTag && std::memcmp(header, kHeadTag, sizeof kHeadTag) == 0) {
    head = std::string_view(static_cast<const char*>(header) + sizeof kHeadTag,
                            header_length - sizeof kHeadTag);
  } else if (header_length != 0) {
    if (header_length != sizeof kByeHeader || std::memcmp(header, kByeHeader, header_length) != 0) {
      PRISM_LOG(kWarning) << "UcxComm: dropped a control message of an unknown kind";
      return drop;
    }
    // Also while we are closing: the peer's BYE lets our close end early.
    auto* op = new RecvOp{this, id};
    op->bye = true;
    op->done = true;
    op->in_queue = true;
    lp.recv_order.push_back(op);
    deliver_ready(id);
    return drop;
  }
  if (lp.state != LocalState::kOpen || lp.remote_gone || stopping_) return drop;

  const size_t total = head.size() + length;
  if (!rndv) {
    if (lp.recv_order.empty() && head.empty()) {
      messages_received_.fetch_add(1, std::memory_order_relaxed);
      bytes_received_.fetch_add(length, std::memory_order_relaxed);
      invoke_user("on_message", callbacks_.on_message, id,
                  std::string_view(static_cast<const char*>(data), length));
      return UCS_OK;
    }
    // Behind a rendezvous message still arriving, or in two pieces: a copy, delivered in turn.
    std::unique_ptr<char[]> copy(new (std::nothrow) char[total]);
    if (copy == nullptr) {
      lp.remote_gone = true;  // a gap in its stream: deliver nothing more
      fail(id, "out of memory for a received message");
      return UCS_OK;
    }
    if (!head.empty()) std::memcpy(copy.get(), head.data(), head.size());
    if (length != 0) std::memcpy(copy.get() + head.size(), data, length);
    auto* op = new RecvOp{this, id};
    op->data = std::move(copy);
    op->size = total;
    op->done = true;
    op->in_queue = true;
    lp.recv_order.push_back(op);
    deliver_ready(id);
    return UCS_OK;
  }

  // Rendezvous: receive into a pooled buffer of about the message's size (already faulted in when
  // the pool had one; the receiver may keep it: message_owner), after the head if it came in
  // the AM header. No exception may unwind through UCX.
  std::shared_ptr<std::vector<char>> buffer;
  try {
    buffer = pooled_buffer(total + 64);  // (room to align the bytes after the head: below)
  } catch (...) {
    lp.remote_gone = true;
    fail(id, "out of memory for a " + std::to_string(total) + "-byte message");
    return UCS_ERR_NO_MEMORY;  // drops the descriptor; the sender's request fails
  }
  // The bytes after the head land at a 64-byte boundary, as a page-aligned buffer's would: the
  // kernel's receive copy into an odd address ran ~10% slower here (bench/cluster, 64 MiB get).
  const size_t pad =
      (64 - (reinterpret_cast<uintptr_t>(buffer->data()) + head.size()) % 64) % 64;
  if (!head.empty()) std::memcpy(buffer->data() + pad, head.data(), head.size());
  auto* op = new RecvOp{this, id};
  op->pooled = std::move(buffer);
  op->offset = pad;
  op->size = total;
  op->in_queue = true;
  lp.recv_order.push_back(op);
  ucp_request_param_t rparam{};
  rparam.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  rparam.cb.recv_am = &Impl::recv_cb;
  rparam.user_data = op;
  // Marked as UCX's before the call: UCX may complete a rendezvous (and call recv_cb, which may
  // free `op`) inside it even when it returns a request, e.g. as the peer's endpoint fails. So
  // `op` is touched after the call only when no callback comes (done in place, or refused).
  op->in_ucx = true;
  recvs_in_ucx_.insert(op);
  // Until it has arrived, what the peer sent after it waits behind it (failure detection gives
  // the peer the time it may take).
  op->arriving = true;
  lp.arriving += total;
  if (callbacks_.on_activity) invoke_user("on_activity", callbacks_.on_activity, id, lp.arriving);
  char* const into = op->pooled->data() + op->offset + head.size();
  const ucs_status_ptr_t r = ucp_am_recv_data_nbx(worker_.get(), data, into, length, &rparam);
  if (r == nullptr || UCS_PTR_IS_ERR(r)) {  // done in place (no callback) or failed
    recvs_in_ucx_.erase(op);
    op->in_ucx = false;
    on_recv_done(op, UCS_PTR_STATUS(r));
  }
  return UCS_INPROGRESS;  // UCX owns the descriptor once ucp_am_recv_data_nbx was called
}

void UcxComm::Impl::recv_cb(void* request, ucs_status_t status, size_t /*length*/,
                            void* user_data) {
  auto* op = static_cast<RecvOp*>(user_data);
  Impl* impl = op->impl;
  impl->recvs_in_ucx_.erase(op);
  op->in_ucx = false;
  ucp_request_free(request);
  impl->on_recv_done(op, status);
}

void UcxComm::Impl::on_recv_done(RecvOp* op, ucs_status_t status) {
  if (op->arriving) {
    op->arriving = false;
    auto it = local_.find(op->peer);
    if (it != local_.end()) {
      it->second.arriving -= op->size;
      if (callbacks_.on_activity && status == UCS_OK && it->second.state == LocalState::kOpen) {
        invoke_user("on_activity", callbacks_.on_activity, op->peer, it->second.arriving);
      }
    }
  }
  if (!op->in_queue) {  // its peer was finished meanwhile
    delete op;
    return;
  }
  op->done = true;
  op->ok = status == UCS_OK;
  if (!op->ok) op->data.reset();
  deliver_ready(op->peer);
}

// Delivers the peer's completed receptions from the front of its recv_order.
void UcxComm::Impl::deliver_ready(PeerId id) {
  for (;;) {
    auto it = local_.find(id);
    if (it == local_.end()) return;
    LocalPeer& lp = it->second;
    if (lp.recv_order.empty() || !lp.recv_order.front()->done) return;
    std::unique_ptr<RecvOp> op(lp.recv_order.front());
    lp.recv_order.pop_front();
    op->in_queue = false;
    if (op->bye) {  // it sent everything it will send
      lp.remote_bye = true;
      if (lp.state == LocalState::kOpen && !lp.remote_gone) fail(id, "closed by peer");
      lp.remote_gone = true;
      continue;
    }
    if (lp.state != LocalState::kOpen || lp.remote_gone || stopping_) continue;
    if (!op->ok) {
      lp.remote_gone = true;  // a gap in its stream: do not deliver what follows
      fail(id, "UCX: receiving a rendezvous message failed");
      continue;
    }
    messages_received_.fetch_add(1, std::memory_order_relaxed);
    bytes_received_.fetch_add(op->size, std::memory_order_relaxed);
    if (op->pooled) {
      tls_message_owner = op->pooled;
      invoke_user("on_message", callbacks_.on_message, id,
                  std::string_view(op->pooled->data() + op->offset, op->size));
      tls_message_owner = nullptr;
    } else {
      invoke_user("on_message", callbacks_.on_message, id,
                  std::string_view(op->data.get(), op->size));
    }
  }
}

// ------------------------------------------------------------------------------------------
// UcxComm
// ------------------------------------------------------------------------------------------

UcxComm::UcxComm(Callbacks callbacks) : impl_(std::make_unique<Impl>(std::move(callbacks))) {}
UcxComm::~UcxComm() = default;
std::string UcxComm::listen(const std::string& host_port) { return impl_->listen(host_port); }
PeerId UcxComm::connect(const std::string& host_port) { return impl_->connect(host_port); }
bool UcxComm::send(PeerId peer, std::string data) {
  return impl_->send(peer, std::move(data), nullptr, {});
}
bool UcxComm::on_progress_thread() const { return tls_progress_owner == impl_.get(); }
bool UcxComm::send(PeerId peer, std::string head, std::shared_ptr<const void> owner,
                   std::string_view tail) {
  return impl_->send(peer, std::move(head), std::move(owner), tail);
}
std::shared_ptr<const void> UcxComm::message_owner() { return tls_message_owner; }
void UcxComm::close(PeerId peer) { impl_->close(peer); }
UcxComm::Stats UcxComm::stats() const { return impl_->stats(); }
std::chrono::nanoseconds UcxComm::take_longest_pass() { return impl_->take_longest_pass(); }

}  // namespace prism::cluster
