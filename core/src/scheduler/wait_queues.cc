#include "scheduler/wait_queues.h"

#include <algorithm>
#include <tuple>

namespace prism::internal {

bool WaitQueues::Key::operator<(const Key& o) const {
  return std::tie(cpu, gpu, memory, gpu_memory, long_lived, custom) <
         std::tie(o.cpu, o.gpu, o.memory, o.gpu_memory, o.long_lived, o.custom);
}

WaitQueues::Key WaitQueues::key_of(const ResourceRequest& r, bool long_lived) {
  Key k{r.cpu, r.gpu, r.memory, r.gpu_memory, long_lived, r.custom};
  std::sort(k.custom.begin(), k.custom.end());
  return k;
}

void WaitQueues::push(Job job, const ResourceRequest& request) {
  const bool long_lived = job.kind == Job::Kind::kActorCreate;
  Key key = key_of(request, long_lived);
  auto it = shapes_.find(key);
  if (it == shapes_.end()) {
    auto shape = std::make_unique<Shape>();
    shape->request = request;
    shape->long_lived = long_lived;
    it = shapes_.emplace(std::move(key), std::move(shape)).first;
  }
  Shape* s = it->second.get();
  if (s->queue.empty()) active_.push_back(s);
  s->queue.push_back(Entry{std::move(job), next_seq_++});
  ++waiting_;
}

bool WaitQueues::settle_head(Shape* s) {
  while (!s->queue.empty()) {
    Job& head = s->queue.front().job;
    if (head.kind != Job::Kind::kTask || head.task == nullptr || !head.task->is_claimed()) {
      return true;
    }
    TaskRecord* t = head.task;
    s->queue.pop_front();
    --waiting_;
    t->take_from_queue();  // a parent runs it; this drops the queue's hold
  }
  return false;
}

void WaitQueues::remove_if_empty(Shape* s) {
  if (!s->queue.empty() || s == reserved_) return;
  auto pos = std::find(active_.begin(), active_.end(), s);
  if (pos != active_.end()) {
    *pos = active_.back();
    active_.pop_back();
  }
  if (watched_ == s) {
    watched_ = nullptr;
    watched_seq_ = UINT64_MAX;
    bypassed_ = 0;
  }
  shapes_.erase(key_of(s->request, s->long_lived));  // destroys s
}

void WaitQueues::start_reservation(ResourcePool& pool, Shape* oldest) {
  reserved_ = oldest;
  reserved_seq_ = oldest->queue.front().seq;
  partial_ = PartialAllocation{};
  pool.reserve_step(oldest->request, oldest->long_lived, &partial_);
  if (partial_.cpu < oldest->request.cpu) wants_cpu_ = true;
}

void WaitQueues::end_reservation() {
  reserved_ = nullptr;
  partial_ = PartialAllocation{};
  bypassed_ = 0;
}

void WaitQueues::suspend_reservation(ResourcePool& pool) {
  if (reserved_ == nullptr) return;
  Shape* s = reserved_;
  pool.release(partial_, s->request);
  const int bypassed = bypassed_;
  end_reservation();
  bypassed_ = bypassed;  // taken again as soon as it may be
  remove_if_empty(s);
}

void WaitQueues::grant(ResourcePool& pool, std::deque<Job>* out, bool may_reserve) {
  if (waiting_ == 0 && reserved_ == nullptr) {  // the common case: nothing waits
    wants_cpu_ = false;
    return;
  }
  if (!may_reserve) suspend_reservation(pool);
  for (;;) {
    wants_cpu_ = false;
    if (reserved_ != nullptr) {
      Shape* s = reserved_;
      if (!settle_head(s) || s->queue.front().seq != reserved_seq_) {
        // Its job was claimed by a parent and dropped: give back what was set aside.
        pool.release(partial_, s->request);
        end_reservation();
        remove_if_empty(s);
        continue;
      }
      pool.reserve_step(s->request, s->long_lived, &partial_);
      if (pool.complete(s->request, partial_)) {
        Entry e = std::move(s->queue.front());
        s->queue.pop_front();
        --waiting_;
        e.job.alloc = pool.to_allocation(s->request, std::move(partial_), s->long_lived);
        out->push_back(std::move(e.job));
        end_reservation();
        remove_if_empty(s);
        continue;
      }
    }
    Shape* best = nullptr;
    Shape* oldest = nullptr;
    for (size_t i = 0; i < active_.size();) {
      Shape* s = active_[i];
      if (!settle_head(s)) {
        remove_if_empty(s);  // swaps another shape into position i
        continue;
      }
      ++i;
      if (s == reserved_) continue;
      const uint64_t seq = s->queue.front().seq;
      if (oldest == nullptr || seq < oldest->queue.front().seq) oldest = s;
      s->lacking = pool.lacking(s->request, s->long_lived);
      if (s->lacking == 0) {
        if (best == nullptr || seq < best->queue.front().seq) best = s;
      } else if (s->lacking == kKindCpu) {
        wants_cpu_ = true;
      }
    }
    if (reserved_ != nullptr) {
      oldest = reserved_;
      // It waits for everything it asks for that is not set aside yet: holders of any of it
      // make way (coarse, and only while a reservation exists).
      reserved_->lacking = kinds_of(reserved_->request);
      if (partial_.cpu < reserved_->request.cpu) wants_cpu_ = true;
    }
    if (oldest == nullptr) {
      watched_ = nullptr;
      watched_seq_ = UINT64_MAX;
      bypassed_ = 0;
    } else if (oldest->queue.front().seq != watched_seq_) {
      watched_ = oldest;
      watched_seq_ = oldest->queue.front().seq;
      bypassed_ = 0;
    }
    if (best == nullptr) {
      // A reservation that was suspended, or whose bound was reached by slots, starts now.
      if (may_reserve && reserved_ == nullptr && oldest != nullptr &&
          bypassed_ >= starvation_bound_) {
        start_reservation(pool, oldest);
        continue;
      }
      return;
    }
    Entry e = std::move(best->queue.front());
    best->queue.pop_front();
    --waiting_;
    pool.try_acquire(best->request, best->long_lived, &e.job.alloc);
    out->push_back(std::move(e.job));
    if (best != oldest && reserved_ == nullptr && oldest != nullptr &&
        ++bypassed_ >= starvation_bound_ && may_reserve) {
      start_reservation(pool, oldest);
    }
    remove_if_empty(best);
  }
}

uint32_t WaitQueues::lacking_except(const ResourceShape* own) const noexcept {
  uint32_t out = 0;
  for (const Shape* s : active_) {
    if (s->queue.empty()) continue;
    const Job& head = s->queue.front().job;
    if (head.kind == Job::Kind::kLease && head.shape == own) continue;
    out |= s->lacking;
  }
  return out;
}

void WaitQueues::note_bypass(ResourcePool& pool, bool may_reserve) {
  if (reserved_ != nullptr || watched_ == nullptr || watched_->queue.empty() ||
      watched_->queue.front().seq != watched_seq_) {
    return;
  }
  if (pool.cpu_free() >= watched_->request.cpu) return;  // not short of CPU: nothing was taken
  if (++bypassed_ >= starvation_bound_ && may_reserve) start_reservation(pool, watched_);
}

void WaitQueues::drain(ResourcePool& pool, std::vector<Job>* out) {
  if (reserved_ != nullptr) {
    pool.release(partial_, reserved_->request);
    end_reservation();
  }
  for (Shape* s : active_) {
    for (Entry& e : s->queue) {
      if (e.job.kind == Job::Kind::kTask && e.job.task != nullptr &&
          !e.job.task->take_from_queue()) {
        continue;  // claimed: its parent runs it
      }
      out->push_back(std::move(e.job));
    }
    s->queue.clear();
  }
  active_.clear();
  shapes_.clear();
  watched_ = nullptr;
  watched_seq_ = UINT64_MAX;
  waiting_ = 0;
  wants_cpu_ = false;
}

}  // namespace prism::internal
