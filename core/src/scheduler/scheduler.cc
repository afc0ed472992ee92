#include "scheduler/scheduler.h"

#include <algorithm>
#include <utility>

#include "common/log.h"
#include "common/spin.h"

namespace prism::internal {

struct Scheduler::Worker {
  Scheduler* sched = nullptr;
  std::thread thread;
  std::condition_variable cv;
  bool wake = false;             // guarded by sched->mu_
  bool woken_for_ready = false;  // guarded by sched->mu_
  bool woken_for_job = false;    // guarded by sched->mu_
  bool ran_job = false;          // guarded by sched->mu_: spin once before parking
  // Owned by the thread itself:
  bool holds_slot = false;
  int64_t lease_cpu = 0;   // CPU units of the job it runs
  int64_t lent_cpu = 0;    // CPU units lent while blocked
};

namespace {
thread_local Scheduler::Worker* tls_worker = nullptr;  // set on scheduler threads
constexpr std::chrono::microseconds kSpinBeforePark{20};
}  // namespace

Scheduler::Scheduler(JobRunner* runner, const NodeResources& totals, int max_threads)
    : runner_(runner),
      max_threads_(max_threads),
      hardware_threads_(std::max(1u, std::thread::hardware_concurrency())),
      pool_(totals) {
  cpu_slots_ = totals.cpu / kUnitsPerResource;
}

Scheduler::~Scheduler() {
  std::vector<TaskRecord*> tasks;
  std::vector<Job> jobs;
  stop(&tasks, &jobs);
  join();
  if (!tasks.empty() || !jobs.empty()) {
    // The runner normally collects these first (RuntimeCore::shutdown); nothing can fail them
    // any more, so say so rather than hide it.
    PRISM_LOG(kError) << tasks.size() + jobs.size() << " queued tasks dropped at destruction";
  }
}

std::string Scheduler::infeasible_reason(const ResourceRequest& request) const {
  MutexLock lock(mu_);
  return pool_.infeasible_reason(request);
}

bool Scheduler::is_own_thread() const noexcept {
  return tls_worker != nullptr && tls_worker->sched == this;
}

int Scheduler::thread_count() const {
  MutexLock lock(mu_);
  return static_cast<int>(workers_.size());
}

std::map<std::string, double> Scheduler::totals() const {
  MutexLock lock(mu_);
  return pool_.totals();
}

std::map<std::string, double> Scheduler::available() const {
  MutexLock lock(mu_);
  return pool_.available();
}

// ---- submission ----

void Scheduler::enqueue_ready(TaskRecord* task) noexcept {
  ready_.push(task);  // seq_cst on the queue's size: pairs with the holder's re-check
  // Every slot is busy, or an idle holder is spinning and will take it: no wake-up needed.
  // (A holder that stops spinning or gives its slot back re-checks the queue afterwards.)
  if (holders_.load(std::memory_order_seq_cst) >= cpu_slots_) return;
  if (spinners_.load(std::memory_order_seq_cst) > 0) return;
  MutexLock lock(mu_);
  wake_for_ready_locked();
}

void Scheduler::enqueue_with_resources(Job job, const ResourceRequest* request) noexcept {
  MutexLock lock(mu_);
  if (waiting_.empty() && pool_.try_acquire(*request, &job.alloc)) {
    jobs_.push_back(std::move(job));
    wake_for_job_locked();
    return;
  }
  waiting_.push_back(Waiting{std::move(job), request});
  schedule_waiting_locked();
}

void Scheduler::enqueue_job(Job job) noexcept {
  MutexLock lock(mu_);
  jobs_.push_back(std::move(job));
  wake_for_job_locked();
}

void Scheduler::release(const Allocation& allocation) noexcept {
  if (allocation.empty()) return;
  MutexLock lock(mu_);
  pool_.release(allocation);
  schedule_waiting_locked();
  if (ready_.maybe_nonempty()) wake_for_ready_locked();
}

// ---- waking ----

void Scheduler::schedule_waiting_locked() {
  constexpr int kLookahead = 32;  // bounded scan: a release costs O(1), not O(waiting)
  bool cpu_short = false;
  int misses = 0;
  for (auto it = waiting_.begin(); it != waiting_.end() && misses < kLookahead;) {
    if (pool_.try_acquire(*it->request, &it->job.alloc)) {
      jobs_.push_back(std::move(it->job));
      it = waiting_.erase(it);
      wake_for_job_locked();
    } else {
      if (!cpu_short && pool_.fits_except_cpu(*it->request)) cpu_short = true;
      ++misses;
      ++it;
    }
  }
  cpu_wanted_.store(cpu_short, std::memory_order_relaxed);
}

void Scheduler::wake_for_ready_locked() {
  if (stopping_.load(std::memory_order_relaxed)) return;
  const int64_t free_slots = pool_.cpu_available() / kUnitsPerResource;
  if (free_slots <= waking_for_ready_) return;  // enough threads are already on their way
  wake_one_locked(/*for_ready=*/true);
}

void Scheduler::wake_for_job_locked() {
  jobs_count_.store(static_cast<int64_t>(jobs_.size()), std::memory_order_relaxed);
  if (static_cast<int64_t>(jobs_.size()) <= waking_for_jobs_ + job_spinners_) return;
  wake_one_locked(/*for_ready=*/false);
}

void Scheduler::wake_one_locked(bool for_ready) {
  if (parked_.empty()) {
    spawn_locked(for_ready);
    return;
  }
  Worker* w = parked_.back();
  parked_.pop_back();
  w->wake = true;
  (for_ready ? w->woken_for_ready : w->woken_for_job) = true;
  ++(for_ready ? waking_for_ready_ : waking_for_jobs_);
  w->cv.notify_one();
}

void Scheduler::spawn_locked(bool for_ready) {
  // Once stopping, the threads that exist finish what is in flight; join() must see them all.
  if (stopping_.load()) return;
  if (static_cast<int>(workers_.size()) >= max_threads_) {
    if (!warned_thread_cap_) {
      warned_thread_cap_ = true;
      PRISM_LOG(kWarning) << "worker thread cap (" << max_threads_
                          << ") reached; work waits for a free thread";
    }
    return;
  }
  auto w = std::make_unique<Worker>();
  w->sched = this;
  if (for_ready) {
    w->woken_for_ready = true;
    ++waking_for_ready_;
  } else {
    w->woken_for_job = true;
    ++waking_for_jobs_;
  }
  Worker* raw = w.get();
  workers_.push_back(std::move(w));
  raw->thread = std::thread([this, raw] { thread_main(raw); });
}

// ---- worker threads ----

void Scheduler::run_slot_loop() noexcept {
  for (;;) {
    TaskRecord* t = ready_.pop();
    if (t == nullptr) {
      // Stay awake a few microseconds before giving the slot back: a submitter that waits for
      // each result (a synchronous round trip) then finds this thread awake instead of paying
      // for a wake-up.
      // One spinner is enough to catch the next task; more would only take CPU from the
      // threads producing it.
      if (spinners_.fetch_add(1, std::memory_order_seq_cst) == 0) {
        spin_for(kSpinBeforePark, [this] { return ready_.maybe_nonempty(); });
      }
      spinners_.fetch_sub(1, std::memory_order_seq_cst);
      t = ready_.pop();
      if (t == nullptr) return;
      // Submitters skipped waking anyone while this thread spun: if more work came in than it
      // can take, pass the wake-up on so that a burst still runs on every free slot.
      if (ready_.maybe_nonempty() && holders_.load(std::memory_order_seq_cst) < cpu_slots_) {
        MutexLock lock(mu_);
        wake_for_ready_locked();
      }
    }
    runner_->run_task(t);
    // A job waits for CPU that this slot holds: give it back so the job can have it.
    if (cpu_wanted_.load(std::memory_order_relaxed)) return;
  }
}

void Scheduler::thread_main(Worker* w) {
  tls_worker = w;
  MutexLock lock(mu_);
  for (;;) {
    if (w->woken_for_job) {
      w->woken_for_job = false;
      --waking_for_jobs_;
    }
    if (!jobs_.empty()) {
      Job job = std::move(jobs_.front());
      jobs_.pop_front();
      jobs_count_.store(static_cast<int64_t>(jobs_.size()), std::memory_order_relaxed);
      w->lease_cpu = job.alloc.cpu;
      w->ran_job = true;
      lock.unlock();
      runner_->run_job(job);
      lock.lock();
      w->lease_cpu = 0;
      if (!job.alloc.empty()) {
        pool_.release(job.alloc);
        schedule_waiting_locked();
        if (ready_.maybe_nonempty()) wake_for_ready_locked();
      }
      continue;
    }
    if (w->woken_for_ready) {
      w->woken_for_ready = false;
      --waking_for_ready_;
    }
    // Take a CPU slot if there is ready work (or drain what is left when stopping: the runner
    // fails it).
    if (ready_.maybe_nonempty() &&
        (pool_.cpu_available() >= kUnitsPerResource || stopping_.load())) {
      pool_.add_cpu(-kUnitsPerResource);
      holders_.fetch_add(1, std::memory_order_seq_cst);
      w->holds_slot = true;
      lock.unlock();
      run_slot_loop();
      lock.lock();
      w->holds_slot = false;
      holders_.fetch_sub(1, std::memory_order_seq_cst);
      pool_.add_cpu(kUnitsPerResource);
      schedule_waiting_locked();
      continue;  // re-check the queue under the lock: no lost wake-ups
    }
    if (stopping_.load()) break;
    if (w->ran_job && job_spinners_ == 0) {
      // Like the CPU workers: stay awake a few microseconds after a job (an actor's caller that
      // waits for each result then finds this thread awake). Submitters count this thread as
      // on its way while it spins; it re-checks everything under the lock afterwards.
      w->ran_job = false;
      ++job_spinners_;
      lock.unlock();
      spin_for(kSpinBeforePark, [this] {
        return jobs_count_.load(std::memory_order_relaxed) > 0 || ready_.maybe_nonempty();
      });
      lock.lock();
      --job_spinners_;
      continue;
    }
    w->ran_job = false;
    w->wake = false;
    parked_.push_back(w);
    while (!w->wake) w->cv.wait(lock.native());
  }
  tls_worker = nullptr;
}

bool Scheduler::lend_current() noexcept {
  Worker* w = tls_worker;
  if (w == nullptr || w->sched != this) return false;
  MutexLock lock(mu_);
  w->lent_cpu = w->holds_slot ? kUnitsPerResource : w->lease_cpu;
  if (w->holds_slot) holders_.fetch_sub(1, std::memory_order_seq_cst);
  if (w->lent_cpu > 0) {
    pool_.add_cpu(w->lent_cpu);
    schedule_waiting_locked();
    if (ready_.maybe_nonempty()) wake_for_ready_locked();
  }
  // This thread blocks: queued jobs need another one.
  if (!jobs_.empty()) wake_for_job_locked();
  return true;
}

void Scheduler::reclaim_current() noexcept {
  Worker* w = tls_worker;
  if (w == nullptr || w->sched != this) return;
  MutexLock lock(mu_);
  pool_.add_cpu(-w->lent_cpu);  // may over-subscribe briefly; nothing new starts until it clears
  w->lent_cpu = 0;
  if (w->holds_slot) holders_.fetch_add(1, std::memory_order_seq_cst);
}

// ---- stopping ----

void Scheduler::stop(std::vector<TaskRecord*>* tasks, std::vector<Job>* jobs) {
  MutexLock lock(mu_);
  stopping_.store(true);
  while (TaskRecord* t = ready_.pop()) tasks->push_back(t);
  for (auto& wt : waiting_) jobs->push_back(std::move(wt.job));
  waiting_.clear();
  std::deque<Job> keep;
  for (auto& j : jobs_) {
    if (j.kind == Job::Kind::kActorDrain) {
      keep.push_back(std::move(j));  // drains of dead actors only finalize them
    } else {
      pool_.release(j.alloc);
      j.alloc = Allocation{};
      jobs->push_back(std::move(j));
    }
  }
  jobs_ = std::move(keep);
  for (Worker* w : parked_) {
    w->wake = true;
    w->cv.notify_one();
  }
  parked_.clear();
}

void Scheduler::join() {
  std::vector<std::unique_ptr<Worker>> workers;
  {
    MutexLock lock(mu_);
    stopping_.store(true);
    for (Worker* w : parked_) {
      w->wake = true;
      w->cv.notify_one();
    }
    parked_.clear();
    workers.swap(workers_);
  }
  for (auto& w : workers) {
    if (w->thread.joinable()) w->thread.join();
  }
}

}  // namespace prism::internal
