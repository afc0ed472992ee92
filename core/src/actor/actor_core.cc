#include "actor/actor_core.h"

#include <atomic>
#include <chrono>
#include <utility>
#include <vector>

#include "api/cluster_link.h"
#include "api/runtime_core.h"
#include "common/spin.h"
#include "prism/errors.h"
#include "prism/internal/device_support.h"
#include "scheduler/scheduler.h"
#include "worker/exec_context.h"

namespace prism::internal {

ActorCore::ActorCore(RuntimeCore* rt, ActorId id, std::string type_name,
                     const std::type_info& type, ActorOptions options, ResourceRequest request)
    : rt_(rt),
      rt_ref_(rt->ref()),
      id_(id),
      type_name_(std::move(type_name)),
      type_(&type),
      options_(std::move(options)),
      request_(std::move(request)) {
  lease_.cpu = request_.cpu;
}

ActorCore::~ActorCore() {
  // Normally finalize() ran; if not (a runtime torn down abruptly), free the instance here.
  if (instance_ != nullptr && deleter_ != nullptr) deleter_(instance_);
}

void ActorCore::submit_call(TaskRecord* call) noexcept {
  rt_->counters().add(TaskCounters::kSubmitted);
  if (options_.max_concurrency == 1 && call->only_guard_left() &&
      !dead_.load(std::memory_order_relaxed)) {
    // Ready at once (the usual case): through the inbox, without mu_ while a drain is counted.
    call->release_guard();  // (true: nothing else holds the call back)
    rt_->counters().add(TaskCounters::kReady);
    call->in_mailbox = true;
    call->actor_ready = true;
    ready_calls_.fetch_add(1, std::memory_order_relaxed);  // (counted before it can be taken)
    TaskRecord* head = inbox_.load(std::memory_order_relaxed);
    do {
      call->next_in_queue = head;
    } while (!inbox_.compare_exchange_weak(head, call, std::memory_order_seq_cst,
                                           std::memory_order_relaxed));
    // (`call` may have run and be gone by now: not touched again.)
    if (dead_.load(std::memory_order_seq_cst)) {
      fail_inbox();  // died meanwhile: die_locked may have taken the inbox before the push
      return;
    }
    if (drains_seen_.load(std::memory_order_seq_cst) > 0) return;  // that drain will look
    MutexLock lock(mu_);
    if (state_ == State::kDead) {
      // Finalized meanwhile: its last handle went (a caller may outlive the handles; it holds
      // the core), and should_finalize_locked found the inbox empty before the push.
      lock.unlock();
      fail_inbox();
      return;
    }
    const bool start = claim_drain_locked();  // (absorbs the inbox)
    lock.unlock();
    if (start) start_drain();
    return;
  }
  MutexLock lock(mu_);
  if (state_ != State::kDead) {
    take_inbox_locked();  // calls submitted before this one go first
    call->in_mailbox = true;
    mailbox_.push_back(call);
    if (!call->release_guard()) return;  // waits for arguments: on_call_ready comes later
    // Its last argument came meanwhile: made ready under the same lock (RuntimeCore::dispatch).
    rt_->counters().add(TaskCounters::kReady);
    const bool start = mark_ready_locked(call);
    lock.unlock();
    if (start) start_drain();
    return;
  }
  lock.unlock();
  if (call->release_guard()) rt_->dispatch(call);  // on_call_ready fails it
}

bool ActorCore::mark_ready_locked(TaskRecord* call) {
  call->actor_ready = true;
  ready_calls_.fetch_add(1, std::memory_order_relaxed);  // for a lingering drain
  return claim_drain_locked();
}

void ActorCore::on_call_ready(TaskRecord* call) noexcept {
  MutexLock lock(mu_);
  if (!call->in_mailbox) {
    std::exception_ptr why = death_;
    lock.unlock();
    rt_->fail_task(call, why ? why : rt_->lost_error("the actor is dead"));
    return;
  }
  const bool start = mark_ready_locked(call);
  lock.unlock();
  if (start) start_drain();
}

void ActorCore::take_inbox_locked() {
  // (A seq_cst load: it is the look that pairs with a submitter's push, see the file comment.)
  if (inbox_.load(std::memory_order_seq_cst) == nullptr) return;
  TaskRecord* list = inbox_.exchange(nullptr, std::memory_order_seq_cst);
  if (list == nullptr) return;
  TaskRecord* oldest_first = nullptr;  // (the stack holds the newest first)
  while (list != nullptr) {
    TaskRecord* next = list->next_in_queue;
    list->next_in_queue = oldest_first;
    oldest_first = list;
    list = next;
  }
  while (oldest_first != nullptr) {
    TaskRecord* next = oldest_first->next_in_queue;
    oldest_first->next_in_queue = nullptr;
    mailbox_.push_back(oldest_first);
    oldest_first = next;
  }
}

void ActorCore::absorb_locked() {
  // Whatever the inbox holds came after everything in the mailbox (a call put in the mailbox
  // under mu_ takes the inbox first): needed only once the mailbox is empty.
  if (state_ != State::kDead && mailbox_.empty()) take_inbox_locked();
}

void ActorCore::fail_inbox() noexcept {
  std::vector<TaskRecord*> to_fail;
  std::exception_ptr why;
  {
    MutexLock lock(mu_);
    take_inbox_locked();  // (dead: the mailbox held nothing before)
    for (TaskRecord* call : mailbox_) {
      call->in_mailbox = false;
      to_fail.push_back(call);  // (every call of the inbox is ready)
      taken_calls_.fetch_add(1, std::memory_order_relaxed);
    }
    mailbox_.clear();
    why = death_;
  }
  for (TaskRecord* call : to_fail) rt_->fail_task(call, why);
}

bool ActorCore::claim_drain_locked() {
  absorb_locked();
  if (state_ != State::kAlive || mailbox_.empty() || !mailbox_.front()->actor_ready) return false;
  if (drains_ >= options_.max_concurrency || drains_ > running_) return false;  // one is on its way
  set_drains_locked(drains_ + 1);
  return true;
}

void ActorCore::start_drain() noexcept {
  // Outside mu_: the thread that takes the job runs drain(), which locks it at once.
  Job job;
  job.kind = Job::Kind::kActorDrain;
  job.actor = shared_from_this();
  job.lease = &lease_;
  rt_->scheduler().enqueue_job(std::move(job));
}

void ActorCore::refuse_creation(TaskRecord* create, std::exception_ptr error) noexcept {
  rt_->fail_task(create, std::move(error));  // CreationResult::fail -> creation_failed
  MutexLock lock(mu_);
  creating_ = false;
  const bool fin = should_finalize_locked();
  lock.unlock();
  if (fin) finalize();
}

void ActorCore::on_create_ready(TaskRecord* create) noexcept {
  if (ObjectEntry* dep = create->failed_dep()) {
    // The constructor will never run: the actor dies with the argument's error.
    refuse_creation(create, dep->error());
    return;
  }
  {
    MutexLock lock(mu_);
    if (state_ == State::kDead) {  // killed before it was built
      creating_ = false;
      const bool fin = should_finalize_locked();
      lock.unlock();
      rt_->counters().add(TaskCounters::kFailedOther);  // never built (for the stats)
      create->release_run();
      if (fin) finalize();
      return;
    }
  }
  // In a cluster the link may place it on another node (then it releases `create`).
  if (ClusterLink* link = rt_->link(); link != nullptr && link->offer_actor(this, create)) return;
  Job job;
  job.kind = Job::Kind::kActorCreate;
  job.task = create;
  job.actor = shared_from_this();
  job.lease = &lease_;
  if (request_.empty()) {
    rt_->scheduler().enqueue_job(std::move(job));
  } else {
    rt_->scheduler().enqueue_with_resources(std::move(job), request_);
  }
}

void ActorCore::run_creation(Job& job) noexcept {
  TaskRecord* create = job.task;
  {
    MutexLock lock(mu_);
    if (state_ == State::kDead) {
      creating_ = false;
      const bool fin = should_finalize_locked();
      lock.unlock();
      rt_->counters().add(TaskCounters::kFailedOther);  // never built (for the stats)
      create->release_run();  // the job's allocation is released by the scheduler
      if (fin) finalize();
      return;
    }
    alloc_ = std::move(job.alloc);  // held for life from now on
    job.alloc = Allocation{};
    // Its calls share streams of their own on its GPUs, whichever thread runs them.
    if (!alloc_.gpus.empty()) alloc_.device_owner = new_device_owner();
  }
  rt_->execute(create, &alloc_);  // calls set_instance or creation_failed
  MutexLock lock(mu_);
  creating_ = false;
  const bool start = claim_drain_locked();
  const bool fin = should_finalize_locked();  // never with a drain claimed
  lock.unlock();
  if (start) start_drain();
  if (fin) finalize();
}

void ActorCore::become_remote(uint64_t key) noexcept {
  MutexLock lock(mu_);
  remote_key_ = key;
  creating_ = false;
  if (state_ == State::kCreating) state_ = State::kAlive;
  const bool start = claim_drain_locked();
  const bool fin = should_finalize_locked();
  lock.unlock();
  if (start) start_drain();
  if (fin) finalize();
}

void ActorCore::set_instance(void* instance, void (*deleter)(void*)) noexcept {
  MutexLock lock(mu_);
  instance_ = instance;
  deleter_ = deleter;
  if (state_ == State::kCreating) state_ = State::kAlive;
}

void ActorCore::creation_failed(const std::exception_ptr& error) noexcept {
  std::string what = "unknown error";
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    what = e.what();
  } catch (...) {
  }
  std::vector<TaskRecord*> to_fail;
  {
    MutexLock lock(mu_);
    die_locked(std::make_exception_ptr(ActorDiedError(
                   "actor " + type_name_ + " died: its constructor failed: " + what)),
               &to_fail);
  }
  // Free the name before anyone can see the failure, so a new actor may take it at once.
  rt_->actors().release_name(this);
  fail_all(to_fail);
}

void ActorCore::die_locked(std::exception_ptr error, std::vector<TaskRecord*>* to_fail) {
  if (state_ == State::kDead) return;
  // Before the inbox is taken: a call pushed after this finds dead_ and fails itself.
  dead_.store(true, std::memory_order_seq_cst);
  take_inbox_locked();
  state_ = State::kDead;
  death_ = std::move(error);
  for (TaskRecord* call : mailbox_) {
    call->in_mailbox = false;
    if (call->actor_ready) {
      to_fail->push_back(call);  // others fail when their args are ready
      taken_calls_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  mailbox_.clear();
}

void ActorCore::fail_all(const std::vector<TaskRecord*>& calls) noexcept {
  std::exception_ptr why;
  {
    MutexLock lock(mu_);
    why = death_;
  }
  for (TaskRecord* call : calls) rt_->fail_task(call, why);
}

namespace {
// Drains staying awake for their actor's next call, in this process (at most one at a time).
std::atomic<int> g_drain_spinners{0};
constexpr std::chrono::microseconds kDrainSpin{5};
// How long a lingering drain leaves a new call to a caller that has been running calls itself,
// and how many such calls it waits through before it gives its thread back (a new drain then
// starts for the next call).
constexpr std::chrono::microseconds kCallerGrace{2};
constexpr int kMaxCallsLeftToCallers = 256;
}  // namespace

bool ActorCore::linger_for_next_call() {
  // A caller that waits for each result (synchronous calls) sends the next call a few
  // microseconds after the last one finished: waiting for it here, with this drain still counted,
  // runs it without a new drain job (a queue, a lock and often a thread wake-up). Only with a
  // core to spare, and one drain at a time.
  if (options_.max_concurrency != 1 || !Scheduler::has_idle_core()) return false;
  if (g_drain_spinners.fetch_add(1, std::memory_order_relaxed) != 0) {
    g_drain_spinners.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  mu_.unlock();
  const auto waiting = [this] {
    return ready_calls_.load(std::memory_order_relaxed) !=
           taken_calls_.load(std::memory_order_relaxed);
  };
  for (int left = 0;;) {
    if (!spin_for(kDrainSpin, waiting)) break;  // lingered out: look once more
    if (!caller_runs_.load(std::memory_order_relaxed)) break;
    // Its caller is probably about to wait for it and run it itself (run_here): leave it a
    // moment, and linger on for the next one if it does (while a core is still to spare).
    if (spin_for(kCallerGrace, [&waiting] { return !waiting(); })) {
      if (++left < kMaxCallsLeftToCallers && Scheduler::has_idle_core()) continue;
      break;
    }
    // It did not: this actor's callers do not wait for each call now. Take it, and the next ones
    // at once.
    caller_runs_.store(false, std::memory_order_relaxed);
    break;
  }
  g_drain_spinners.fetch_sub(1, std::memory_order_relaxed);
  mu_.lock();
  return true;
}

bool ActorCore::run_producer_here(ObjectEntry* result) noexcept {
  struct Found {
    std::shared_ptr<ActorCore> actor;
    const TaskRecord* call = nullptr;
  } found;
  const bool is_call = result->look_at_producer(
      [](TaskRecord& t, void* p) {
        ActorCore* a = t.actor();
        if (a == nullptr || t.actor_creation || !a->runs_on_callers_) return false;
        auto& f = *static_cast<Found*>(p);
        f.actor = a->weak_from_this().lock();  // (null while it is being destroyed)
        f.call = &t;
        return f.actor != nullptr;
      },
      &found);
  return is_call && found.actor->run_here(found.call);
}

bool ActorCore::run_here(const TaskRecord* call) noexcept {
  // Not inside a task of another runtime (its waits would go through that runtime's scheduler).
  if (RuntimeCore* in = exec_context().runtime; in != nullptr && in != rt_) return false;
  // A caller's thread is not one the runtime waits for at shutdown: the pin makes it wait for
  // this call (and refuses it once the runtime stops).
  const RuntimePin pin = try_pin_runtime(rt_ref_);
  if (!pin || !rt_->accepting()) return false;
  MutexLock lock(mu_);
  absorb_locked();  // (the call itself may still be in the inbox)
  // (The record may be gone by now: it is compared, and read only once it is the front.)
  if (state_ != State::kAlive || remote_key_ != 0 || running_ > 0 || mailbox_.empty() ||
      mailbox_.front() != call || !mailbox_.front()->actor_ready) {
    return false;
  }
  TaskRecord* next = mailbox_.front();
  mailbox_.pop_front();
  next->in_mailbox = false;
  taken_calls_.fetch_add(1, std::memory_order_relaxed);
  caller_runs_.store(true, std::memory_order_relaxed);
  // Counted as a drain, so that no drain job starts for the next call meanwhile.
  set_drains_locked(drains_ + 1);
  ++running_;
  lock.unlock();
  rt_->execute(next, &alloc_);
  lock.lock();
  --running_;
  set_drains_locked(drains_ - 1);
  const bool start = claim_drain_locked();  // (absorbs what came meanwhile)
  const bool fin = should_finalize_locked();  // never with a drain claimed
  lock.unlock();
  if (start) start_drain();
  if (fin) finalize();
  return true;
}

void ActorCore::drain() noexcept {
  MutexLock lock(mu_);
  bool lingered = false;
  for (;;) {
    absorb_locked();
    if (state_ != State::kAlive || mailbox_.empty() || !mailbox_.front()->actor_ready ||
        running_ >= options_.max_concurrency) {
      // Linger only for what will come: a next call, or the end of one a caller runs (that
      // caller starts no drain while this one is counted, and this one looks again after).
      const bool coming = state_ == State::kAlive && (mailbox_.empty() || running_ > 0);
      if (!lingered && coming) {
        lingered = true;
        if (linger_for_next_call()) continue;
      }
      // Stop being counted, then look once more: a call pushed to the inbox while this drain was
      // counted was left to it by its submitter (claim_drain_locked absorbs it, after the change
      // is published). Counted again: go on as that drain.
      set_drains_locked(drains_ - 1);
      if (claim_drain_locked()) continue;
      break;
    }
    lingered = false;
    TaskRecord* call = mailbox_.front();
    mailbox_.pop_front();
    call->in_mailbox = false;
    taken_calls_.fetch_add(1, std::memory_order_relaxed);
    ++running_;
    const bool start = claim_drain_locked();  // with max_concurrency > 1 the next may start now
    const uint64_t remote = remote_key_;
    lock.unlock();
    if (start) start_drain();
    if (remote == 0) {
      rt_->execute(call, &alloc_);
    } else if (ClusterLink* link = rt_->link()) {
      rt_->counters().add(TaskCounters::kRemote);
      link->forward_actor_call(this, remote, call);  // in order; its result comes back later
    } else {
      rt_->fail_task(call, rt_->lost_error("the cluster link is gone (the runtime shut down)"));
    }
    lock.lock();
    --running_;
  }
  const bool fin = should_finalize_locked();
  lock.unlock();
  if (fin) finalize();
}

bool ActorCore::should_finalize_locked() {
  if (finalized_ || creating_ || drains_ > 0 || running_ > 0) return false;
  if (state_ != State::kDead) {
    if (handles_ > 0 || !options_.name.empty() || !mailbox_.empty() ||
        inbox_.load(std::memory_order_seq_cst) != nullptr) {
      return false;
    }
    dead_.store(true, std::memory_order_seq_cst);
    state_ = State::kDead;  // no handle can reach it any more
    death_ = std::make_exception_ptr(ActorDiedError("actor " + type_name_ + " has no handles left"));
  }
  finalized_ = true;
  return true;
}

void ActorCore::finalize() noexcept {
  uint64_t remote;
  {
    MutexLock lock(mu_);
    remote = std::exchange(remote_key_, 0);
  }
  if (remote != 0) {
    if (ClusterLink* link = rt_->link()) link->drop_remote_actor(this, remote, /*kill=*/false);
  }
  void* instance = std::exchange(instance_, nullptr);
  if (instance != nullptr && deleter_ != nullptr) deleter_(instance);
  Allocation alloc = std::move(alloc_);
  alloc_ = Allocation{};
  if (alloc.device_owner != 0) {
    if (DeviceSupport* support = device_support()) support->release_owner(alloc.device_owner);
  }
  rt_->scheduler().release(alloc);
  rt_->actors().remove(this);  // may drop the last reference: touch nothing after this
}

void ActorCore::handle_acquired() noexcept {
  MutexLock lock(mu_);
  ++handles_;
}

bool ActorCore::try_acquire_handle() noexcept {
  MutexLock lock(mu_);
  if (finalized_) return false;
  ++handles_;
  return true;
}

void ActorCore::handle_released() noexcept {
  MutexLock lock(mu_);
  --handles_;
  const bool fin = should_finalize_locked();
  lock.unlock();
  if (fin) finalize();
}

void ActorCore::kill(const std::string& why) noexcept {
  std::vector<TaskRecord*> to_fail;
  bool fin;
  uint64_t remote;
  {
    MutexLock lock(mu_);
    die_locked(std::make_exception_ptr(ActorDiedError("actor " + type_name_ + " " + why)),
               &to_fail);
    remote = std::exchange(remote_key_, 0);  // (calls already forwarded fail there)
    fin = should_finalize_locked();
  }
  if (remote != 0) {
    if (ClusterLink* link = rt_->link()) link->drop_remote_actor(this, remote, /*kill=*/true);
  }
  // The name is free as soon as kill() returns, even while a running call finishes.
  rt_->actors().release_name(this);
  fail_all(to_fail);
  if (fin) finalize();
}

void ActorCore::finalize_now() noexcept {
  std::vector<TaskRecord*> to_fail;
  {
    MutexLock lock(mu_);
    die_locked(std::make_exception_ptr(ActorDiedError("actor " + type_name_ +
                                                      " stopped: the runtime shut down")),
               &to_fail);
    if (finalized_) return;
    finalized_ = true;
  }
  fail_all(to_fail);
  finalize();
}

}  // namespace prism::internal
