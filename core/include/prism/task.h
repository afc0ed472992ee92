// prism/task.h — remote functions: prism::task(f).options(...).remote(args...).
//
//   int add(int a, int b) { return a + b; }
//   auto a = prism::task(add).remote(1, 2);                 // ObjectRef<int>, returns at once
//   auto b = prism::task(add).remote(a, 3);                 // waits for a, receives its int
//   auto g = prism::task(step).num_gpus(0.25).memory(1 << 30).name("step").remote(x);
//   auto [q, r] = prism::task(divmod).num_returns<2>().remote(7, 2);   // tuple -> two refs
//
// Arguments are stored by value in the task. An ObjectRef<T> argument is resolved before the
// task runs: the callable receives the value as const T& (no copy) unless it takes the ref
// itself; a std::vector<ObjectRef<T>> becomes a std::vector<T> when the callable takes one.
// The task waits for its arguments without holding resources, then for its resources.
//
// Thread-safe: a TaskCaller may be shared; remote() may be called from any thread, including
// from inside tasks (nested tasks).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "prism/internal/call_diagnosis.h"
#include "prism/internal/resource_options.h"
#include "prism/internal/runtime_hooks.h"
#include "prism/internal/task_impl.h"
#include "prism/object_ref.h"
#include "prism/options.h"

namespace prism {

template <typename F, size_t NumReturns = 0>
class TaskCaller : public internal::ResourceOptions<TaskCaller<F, NumReturns>> {
 public:
  // num_cpus(x), num_gpus(x), memory(bytes), resource(name, x): see ResourceOptions.
  TaskCaller(internal::RuntimeRef rt, F f, internal::TaskOptions options = {})
      : rt_(rt), f_(std::move(f)), options_(std::move(options)) {}

  // How many times the task is run again after a system failure (its node died, it ran out of
  // device memory) or, with retry_exceptions(true), after it threw. Default
  // prism::kDefaultMaxRetries (3); -1: no limit; 0: never.
  TaskCaller& max_retries(int n) & { return options_.max_retries = n, *this; }
  TaskCaller&& max_retries(int n) && { return std::move(max_retries(n)); }
  TaskCaller& retry_exceptions(bool on = true) & { return options_.retry_exceptions = on, *this; }
  TaskCaller&& retry_exceptions(bool on = true) && { return std::move(retry_exceptions(on)); }
  // The name shown in errors and the timeline (default: the registered name).
  TaskCaller& name(std::string n) & { return options_.name = std::move(n), *this; }
  TaskCaller&& name(std::string n) && { return std::move(name(std::move(n))); }

  // The callable returns a tuple (or pair) of N values: remote() returns a tuple of N refs.
  template <size_t N>
  TaskCaller<F, N> num_returns() const {
    static_assert(N >= 1, "num_returns<N>() needs N >= 1");
    return TaskCaller<F, N>(rt_, f_, options_);
  }

  // Submits the call and returns its ref(s) at once. Throws prism::Error for wrong use (empty
  // ref argument, invalid option) and InfeasibleError for requests the node can never meet.
  template <typename... A>
  auto remote(A&&... args) const {
    using Traits = internal::InvokeTraits<F, internal::NoInstance, std::decay_t<A>...>;
    if constexpr (Traits::tier < 0) {
      // One message naming the likely cause, and nothing else instantiated after it.
      internal::CallDiagnosis<F, std::decay_t<A>...>::fail();
      return AnyRef();  // (what follows in the caller's code then compiles: no more errors)
    } else if constexpr (NumReturns > 0 && !internal::is_tuple_like_v<typename Traits::result>) {
      static_assert(internal::dependent_false<F>,
                    "num_returns<N>(): the callable must return a std::tuple or std::pair (or a "
                    "std::array) of N values, one per ref; this one returns a single value: "
                    "drop num_returns, or return std::make_tuple(...)");
      return std::array<AnyRef, NumReturns>();  // (structured bindings of the result compile)
    } else {
      return submit(std::forward<A>(args)...);
    }
  }

 private:
  template <typename... A>
  auto submit(A&&... args) const {
    using Traits = internal::InvokeTraits<F, internal::NoInstance, std::decay_t<A>...>;
    using R = typename Traits::result;
    using Slots = std::conditional_t<NumReturns == 0, internal::SingleResult<R>,
                                     internal::MultiResult<R, NumReturns>>;
    using Impl = internal::TaskImpl<Traits::tier, internal::FunctionTarget<F>, Slots,
                                    std::decay_t<A>...>;
    // The runtime stays alive until the call is submitted (a weak ref fails if it is gone).
    const internal::RuntimePin pin =
        rt_.empty() ? internal::pin_current_runtime() : internal::pin_runtime(rt_);
    internal::RuntimeCore* rt = pin.get();
    internal::check_accepting(rt);
    internal::ExtrasPtr extras;
    if (is_plain()) {
      if (!internal::default_feasible(rt)) {
        internal::check_default_feasible(rt, internal::callable_name(f_));
      }
    } else {
      extras = internal::make_task_extras(
          rt, options_, internal::LazyName(&internal::callable_name_of<F>, &f_));
    }
    Slots slots(rt);
    auto refs = slots.refs();
    auto task = std::make_unique<Impl>(rt, internal::next_task_id(rt), nullptr, std::move(extras),
                                       internal::FunctionTarget<F>{f_}, std::move(slots),
                                       std::forward<A>(args)...);
    task->register_args();
    internal::submit(task.release());
    return refs;
  }

  bool is_plain() const {
    return options_.is_default_request() && options_.name.empty() &&
           options_.max_retries == kDefaultMaxRetries &&
           !options_.retry_exceptions;
  }

  friend class internal::ResourceOptions<TaskCaller>;

  internal::RuntimeRef rt_;  // empty: the current runtime at remote() time
  F f_;
  internal::TaskOptions options_;
};

namespace internal {
// True for a prism::variants(...) set (prism/variants.h), which prism::task takes separately.
template <typename T>
struct IsVariantSet : std::false_type {};
}  // namespace internal

// A remote function: any callable (function, lambda, functor). Register functions by name with
// PRISM_REMOTE for cluster mode and for readable error messages.
template <typename F>
  requires(!internal::IsVariantSet<std::decay_t<F>>::value)
TaskCaller<std::decay_t<F>> task(F&& f) {
  return TaskCaller<std::decay_t<F>>(internal::RuntimeRef{}, std::forward<F>(f));
}

}  // namespace prism
