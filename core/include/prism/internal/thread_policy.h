// prism/internal/thread_policy.h — the scheduling policy of Prism's threads.
//
// Scheduler worker threads run under SCHED_BATCH (core/src/scheduler/scheduler.cc,
// enter_batch_policy): a woken worker does not preempt the thread running where it wakes. A
// service thread that the runtime starts from whatever thread first needs it (a spiller, a
// stager, a timer, a device channel) may be started by a worker and inherit that; it calls
// use_default_thread_policy() first and runs under SCHED_OTHER, as before.
//
// Not for users. Thread-safe: acts on the calling thread only.
#pragma once

#include <sched.h>

namespace prism::internal {

inline void use_default_thread_policy() noexcept {
#ifdef SCHED_BATCH
  if (sched_getscheduler(0) == SCHED_BATCH) {
    sched_param none{};
    (void)sched_setscheduler(0, SCHED_OTHER, &none);
  }
#endif
}

}  // namespace prism::internal
