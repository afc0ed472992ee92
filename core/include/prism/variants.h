// prism/variants.h — one remote function with several implementations (a CPU one, a GPU one,
// ...), the runtime choosing per call the one expected to finish first (DESIGN §4,
// "Heterogeneous tasks"; StarPU's codelets and dmda scheduler).
//
//   Tensor blur_cpu(const Tensor& img);   // img arrives in host memory
//   Tensor blur_gpu(const Tensor& img);   // img arrives on the task's GPU
//   auto blur = prism::variants(blur_cpu, blur_gpu).gpu(0.25);   // CPU first, then GPU
//   auto r = prism::task(blur).remote(img);                       // the runtime picks
//   prism::get(r); prism::variant_of(r);                          // "cpu" or "gpu"
//   prism::task(blur).variant("cpu").remote(img);                 // forced
//
//   auto op = prism::variants(prism::cpu_variant("scalar", loop),
//                             prism::cpu_variant("eigen", vectorised),
//                             prism::gpu_variant("thrust", on_gpu).num_gpus(1))
//                 .name("complex_operation");
//
// Every variant takes the same arguments and returns the same type. A variant's request is its
// own: a CPU variant asks for one CPU, a GPU variant for one GPU and no CPU (its thread is the
// GPU's, as a StarPU CUDA worker has a core of its own), unless set otherwise with the usual
// num_cpus / num_gpus / memory / gpu_memory / resource setters on the variant. Variants the
// node can never run (a GPU variant without GPUs) are left out; if none is left, remote()
// throws InfeasibleError.
//
// The choice (VariantPlanner, core/src/scheduler/variant_planner.h) is made when the call's
// arguments are ready. For each variant it adds the expected wait behind the work already sent
// to its processor, the copy of its tensor arguments to where it runs (bytes not there / the
// measured host<->device bandwidth), and its mean run time for inputs of that size. Sizes
// within a factor of two share one history; the size is the arguments' bytes, or what
// .size(fn) returns (fn gets the arguments as stored, a ref's value where it is, through a
// const reference). Each variant of a new function or size first runs 3 times (calibration); a
// variant whose times are noisy does not make the choice flap (hysteresis). Run times are
// measured around the variant's body, device work included (a GPU variant's stream is
// synchronized after it: the measurement's price). With PRISM_PERF_MODEL_DIR set, the history
// is read when the runtime starts and written when it shuts down (<dir>/<host>.prism-perf), so
// later runs start calibrated.
//
// A GPU variant that throws OutOfMemoryError (device memory) is run again as the CPU variant
// expected to finish first: the call goes back to the scheduler with that variant's request (a
// call a blocked parent claimed runs it at once, within the parent's holdings), its arguments
// in host memory; if that fails too, the error names both. A forced variant does not fall back.
// A variant that throws counts as a calibration run without a time; one that only ever failed
// is chosen only when no other variant can run. Which variant ran: variant_of(ref), the
// timeline (each span's "variant", "predicted_us" and "actual_us"), and stats().variants.
//
// Cluster mode: a set registered with PRISM_VARIANTS(set) is placed by the driver over every
// (variant, node) that can run it, each with its own queue and history (another node's runs are
// measured there and reported back); an unregistered set, or a call made by a task on a node,
// runs on the node that submitted it. Limits: one result per call (no num_returns).
//
// Thread-safe: as prism::task.
#pragma once

#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "prism/internal/call_diagnosis.h"
#include "prism/internal/remote_call.h"
#include "prism/internal/resource_options.h"
#include "prism/internal/runtime_hooks.h"
#include "prism/internal/task_impl.h"
#include "prism/internal/variant_run.h"
#include "prism/object_ref.h"
#include "prism/options.h"
#include "prism/registry.h"
#include "prism/task.h"

namespace prism {

// One implementation: a name (shown in variant_of, the timeline and stats), whether it runs on
// a GPU, the callable and its request.
template <typename F>
class Variant : public internal::ResourceOptions<Variant<F>> {
 public:
  Variant(std::string name, bool gpu, F f) : name_(std::move(name)), gpu_(gpu), f_(std::move(f)) {
    if (gpu) {
      options_.num_cpus = 0;
      options_.num_gpus = 1;
    }
  }
  const std::string& name() const noexcept { return name_; }
  bool gpu() const noexcept { return gpu_; }
  const F& callable() const noexcept { return f_; }
  internal::VariantSpec spec() const { return internal::VariantSpec{name_, gpu_, options_}; }

 private:
  friend class internal::ResourceOptions<Variant>;
  std::string name_;
  bool gpu_;
  F f_;
  internal::TaskOptions options_;  // its request (ResourceOptions writes it)
};

template <typename F>
Variant<std::decay_t<F>> cpu_variant(std::string name, F&& f) {
  return Variant<std::decay_t<F>>(std::move(name), false, std::forward<F>(f));
}
template <typename F>
Variant<std::decay_t<F>> gpu_variant(std::string name, F&& f) {
  return Variant<std::decay_t<F>>(std::move(name), true, std::forward<F>(f));
}

namespace internal {

struct NoSizeFunction {};

template <typename T>
struct IsVariant : std::false_type {};
template <typename F>
struct IsVariant<Variant<F>> : std::true_type {};

// An argument as the size function sees it: a ref's stored value (not moved anywhere), else the
// argument itself.
template <typename X>
const X& peek_arg(const X& a) {
  return a;
}
template <typename T>
  requires(!std::is_void_v<T>)
const T& peek_arg(const ObjectRef<T>& r) {
  return value_of<T>(r.entry());
}

template <typename T>
void add_value_footprint(const T& v, ArgFootprint* fp) {
  if constexpr (requires { Placement<T>::where(v); }) {
    const DataWhere w = Placement<T>::where(v);
    fp->bytes += w.bytes;
    if (!w.on_host) fp->not_on_host += w.bytes;
    if (!w.on_device) fp->not_on_device += w.bytes;
  } else {
    // A plain value is on the host; a GPU variant that uploads it does so in its own body, which
    // its measured time includes.
    fp->bytes += static_cast<int64_t>(ObjectSize<T>::bytes(v));
  }
}
template <typename X>
void add_arg_footprint(const X& a, ArgFootprint* fp) {
  if constexpr (is_object_ref_v<X>) {
    using T = typename RefValue<X>::type;
    fp->refs.push_back(a.entry());
    if constexpr (!std::is_void_v<T>) {
      if (a.entry()->state() == ObjState::kReady) {
        add_value_footprint<T>(value_of<T>(a.entry()), fp);
      } else if (const RemoteValue* elsewhere = a.entry()->remote_value()) {
        // On another node (or spilled): sized by its serialized bytes, which count toward the
        // call's size bucket. It is fetched into host memory: a GPU variant then uploads it.
        const auto bytes = static_cast<int64_t>(elsewhere->size());
        fp->bytes += bytes;
        fp->not_on_device += bytes;
      }
    }
  } else if constexpr (IsVectorOfRefs<X>::value) {
    for (const auto& r : a) add_arg_footprint(r, fp);
  } else {
    add_value_footprint<X>(a, fp);
  }
}

// The callable of a variant call: runs variant run->chosen and measures it.
template <typename R, typename S, typename... Fs>
struct VariantTarget {
  std::tuple<Fs...> fs;
  S size;
  VariantRun* run;

  template <typename... X>
  R invoke(X&&... x) {
    return invoke_at<0>(std::forward<X>(x)...);
  }
  std::string name() const { return run->function->name; }

 private:
  template <size_t I, typename... X>
  R invoke_at(X&&... x) {
    if constexpr (I + 1 < sizeof...(Fs)) {
      if (run->chosen != static_cast<int>(I)) return invoke_at<I + 1>(std::forward<X>(x)...);
    }
    const bool gpu = run->function->variants[I].gpu;
    const auto start = std::chrono::steady_clock::now();
    if (run->run_started != std::chrono::steady_clock::time_point{}) {
      run->resolve_seconds = std::chrono::duration<double>(start - run->run_started).count();
    }
    auto done = [&] {
      if (gpu) finish_device_work();
      run->body_seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      variant_body_returned(run);
    };
    if constexpr (std::is_void_v<R>) {
      std::invoke(std::get<I>(fs), std::forward<X>(x)...);
      done();
    } else {
      R result = std::invoke(std::get<I>(fs), std::forward<X>(x)...);
      done();
      return result;
    }
  }
};

// Fills an ArgFootprint for a variant call of record type `Impl`.
template <typename Impl, typename S>
void describe_variant_args(const TaskRecord* task, ArgFootprint* fp) {
  const Impl* impl = static_cast<const Impl*>(task);
  std::apply([&](const auto&... a) { (add_arg_footprint(a, fp), ...); }, impl->args());
  if constexpr (!std::is_same_v<S, NoSizeFunction>) {
    const bool ready = std::apply(
        [](const auto&... a) {
          return ([&] {
            if constexpr (is_object_ref_v<std::decay_t<decltype(a)>>) {
              return a.entry()->state() == ObjState::kReady;
            } else {
              return true;
            }
          }() && ...);
        },
        impl->args());
    if (ready) {
      fp->size = static_cast<int64_t>(std::apply(
          [&](const auto&... a) { return impl->target().size(peek_arg(a)...); }, impl->args()));
    }
  }
}

// ---- cluster mode: a variant run on another node (PRISM_VARIANTS) ----

// The parameters and result a variant call crosses nodes with: the first variant's, a function
// pointer's or a lambda's or functor's (one operator(), not a template).
template <typename F, typename = void>
struct CallableSignature : RemoteSignature<F> {};
template <typename F>
struct CallableSignature<F, std::enable_if_t<std::is_class_v<F>, std::void_t<decltype(&F::operator())>>> {
  using M = RemoteMethodSignature<decltype(&F::operator())>;
  using Result = typename M::Result;
  using Params = typename M::Params;
  static constexpr bool kCapable = M::kCapable;
};

template <typename R, typename S, typename... Fs, typename Value, typename... Resolved>
struct RemoteTask<VariantTarget<R, S, Fs...>, Value, Resolved...>
    : RemoteBySignature<CallableSignature<std::tuple_element_t<0, std::tuple<Fs...>>>, Value,
                        Resolved...> {
  // The chosen variant's registered name, when the call was placed on another node.
  static std::string name(const VariantTarget<R, S, Fs...>& t) {
    const VariantRun& run = *t.run;
    if (!run.remote || run.chosen < 0 || run.peer == 0) return {};
    return remote_variant_name(run.function->name,
                               run.function->variants[static_cast<size_t>(run.chosen)].name);
  }
};

// The RemoteInvoker of variant I of the set at the address in the key's first bytes: reads the
// parameters, runs the variant (and its device work, for a GPU variant), writes the result.
template <typename Set, size_t I>
void invoke_remote_variant(const FunctionKey& key, std::string_view args, std::string* result) {
  const Set* set = nullptr;
  std::memcpy(&set, key.bytes, sizeof set);
  using Sig = typename Set::Signature;
  // (Taken for this call's result only, before anything of the user's runs: the arguments'
  // deserializers and the body may run other calls on this thread.)
  std::vector<std::string>* const elements = std::exchange(result_elements_sink(), nullptr);
  LiveResult* const live = std::exchange(live_result_sink(), nullptr);
  typename Sig::Params params = from_bytes<typename Sig::Params>(args);
  const auto& v = std::get<I>(set->variants());
  auto f = v.callable();  // (a copy: its operator() may be non-const)
  result->clear();
  if constexpr (std::is_void_v<typename Sig::Result>) {
    std::apply(f, std::move(params));
    if (v.gpu()) finish_device_work();
    recycle_params(params);
  } else {
    typename Sig::Result r = std::apply(f, std::move(params));
    if (v.gpu()) finish_device_work();
    encode_result(r, result, elements, live);  // (before: a user's serializer may read the arguments)
    recycle_params(params);
  }
}

template <typename Set, size_t... I>
bool register_variant_set(const Set& set, std::index_sequence<I...>) noexcept {
  try {
    using Sig = typename Set::Signature;
    static_assert(Sig::kCapable,
                  "PRISM_VARIANTS: the first variant must be a function pointer, or a lambda or "
                  "functor with one (non-template) operator(), whose parameters and result are "
                  "serializable (prism/serialize.h) and default-constructible");
    std::vector<std::string> names;
    FunctionKey keys[sizeof...(I)];
    const RemoteInvoker invokers[] = {&invoke_remote_variant<Set, I>...};
    std::apply([&](const auto&... v) { (names.push_back(v.name()), ...); }, set.variants());
    // A copy for the program's life (the registry's keys point at it): `set` may be a temporary.
    const Set* address = new Set(set);
    for (size_t i = 0; i < sizeof...(I); ++i) {
      std::memcpy(keys[i].bytes, &address, sizeof address);
      const uint64_t index = i;
      std::memcpy(keys[i].bytes + sizeof address, &index, sizeof index);
      keys[i].size = sizeof address + sizeof index;
    }
    return register_variants(set.name(), names, keys, invokers, typeid(Set).name());
  } catch (...) {
    return false;
  }
}

}  // namespace internal

// Several implementations of one function; give it to prism::task. `S` is the size function's
// type (NoSizeFunction: the arguments' bytes).
template <typename S, typename... Fs>
class VariantSet {
 public:
  static_assert(sizeof...(Fs) >= 1, "prism::variants needs at least one variant");

  VariantSet(std::tuple<Variant<Fs>...> variants, S size, std::string name)
      : variants_(std::move(variants)), size_(std::move(size)), name_(std::move(name)) {}

  // Every GPU variant asks for `gpus` GPUs (fractions share one device).
  VariantSet& gpu(double gpus) & {
    std::apply([&](auto&... v) { ((v.gpu() ? (void)v.num_gpus(gpus) : (void)0), ...); },
               variants_);
    return *this;
  }
  VariantSet&& gpu(double gpus) && { return std::move(gpu(gpus)); }
  // Every GPU variant reserves `bytes` of its GPU's memory.
  VariantSet& gpu_memory(int64_t bytes) & {
    std::apply([&](auto&... v) { ((v.gpu() ? (void)v.gpu_memory(bytes) : (void)0), ...); },
               variants_);
    return *this;
  }
  VariantSet&& gpu_memory(int64_t bytes) && { return std::move(gpu_memory(bytes)); }
  // The name in the performance model, errors and the timeline. Default: the first variant's
  // registered name (PRISM_REMOTE) or, for a lambda or functor, its type; an unregistered
  // function has none, and remote() throws prism::Error (kInvalidArgument) until it is named.
  VariantSet& name(std::string n) & { return name_ = std::move(n), *this; }
  VariantSet&& name(std::string n) && { return std::move(name(std::move(n))); }
  // The input size the model buckets calls by: fn(args...) -> an integer, called with the
  // arguments as stored (a ref's value where it is, not moved) when the call is ready.
  template <typename G>
  VariantSet<std::decay_t<G>, Fs...> size(G&& fn) const {
    return VariantSet<std::decay_t<G>, Fs...>(variants_, std::forward<G>(fn), name_);
  }

  const std::tuple<Variant<Fs>...>& variants() const noexcept { return variants_; }
  const S& size_function() const noexcept { return size_; }
  // What a call crosses nodes with (PRISM_VARIANTS): the first variant's parameters and result.
  using Signature = internal::CallableSignature<std::tuple_element_t<0, std::tuple<Fs...>>>;
  const std::string& name() const noexcept { return name_; }

 private:
  std::tuple<Variant<Fs>...> variants_;
  S size_;
  std::string name_;
};

namespace internal {
template <typename S, typename... Fs>
struct IsVariantSet<VariantSet<S, Fs...>> : std::true_type {};

// The performance model's default key for a set whose first variant is `f`: a function's
// registered name (PRISM_REMOTE), else "" (functions of one signature cannot be told apart: the
// set must be named); a lambda's or functor's type, which is its own.
template <typename F>
std::string default_variants_name(const F& f) {
  if constexpr (std::is_pointer_v<F> || std::is_member_function_pointer_v<F>) {
    return registered_name(function_key(f));
  } else {
    return demangle_type_name(typeid(F).name());
  }
}
}  // namespace internal

// variants(cpu_fn, gpu_fn): a CPU variant "cpu" and a GPU variant "gpu".
template <typename C, typename G>
  requires(!internal::IsVariant<std::decay_t<C>>::value &&
           !internal::IsVariant<std::decay_t<G>>::value)
auto variants(C&& cpu, G&& gpu) {
  using VC = Variant<std::decay_t<C>>;
  using VG = Variant<std::decay_t<G>>;
  VC c("cpu", false, std::forward<C>(cpu));
  std::string name = internal::default_variants_name(c.callable());
  return VariantSet<internal::NoSizeFunction, std::decay_t<C>, std::decay_t<G>>(
      std::tuple<VC, VG>(std::move(c), VG("gpu", true, std::forward<G>(gpu))),
      internal::NoSizeFunction{}, std::move(name));
}
// variants(cpu_variant("a", f), gpu_variant("b", g), ...): named variants, in any number.
template <typename... Fs>
auto variants(Variant<Fs>... vs) {
  std::string name = internal::default_variants_name(std::get<0>(std::tie(vs...)).callable());
  return VariantSet<internal::NoSizeFunction, Fs...>(std::tuple<Variant<Fs>...>(std::move(vs)...),
                                                     internal::NoSizeFunction{}, std::move(name));
}

template <typename S, typename... Fs>
class VariantCaller {
 public:
  explicit VariantCaller(VariantSet<S, Fs...> set, internal::RuntimeRef rt = {})
      : rt_(rt), set_(std::move(set)) {
    auto f = std::make_shared<internal::VariantFunction>();
    f->name = set_.name();
    std::apply([&](const auto&... v) { (f->variants.push_back(v.spec()), ...); },
               set_.variants());
    std::vector<std::string> names;
    for (const auto& v : f->variants) names.push_back(v.name);
    f->registered = !f->name.empty() && internal::variants_registered(f->name, names);
    function_ = std::move(f);
  }

  // Forces the variant named `name` for calls made through this caller (remote() throws
  // prism::Error(kInvalidArgument) if there is none of that name).
  VariantCaller& variant(std::string name) & { return forced_ = std::move(name), *this; }
  VariantCaller&& variant(std::string name) && { return std::move(variant(std::move(name))); }

  // Submits the call and returns its ref at once (as TaskCaller::remote).
  template <typename... A>
  auto remote(A&&... args) const {
    using F0 = std::tuple_element_t<0, std::tuple<Fs...>>;
    using Traits = internal::InvokeTraits<F0, internal::NoInstance, std::decay_t<A>...>;
    constexpr int kTier = Traits::tier < 0 ? 0 : Traits::tier;
    using R = typename Traits::result;
    constexpr bool kAllAccept =
        (std::is_invocable_v<Fs&, typename internal::Arg<kTier, std::decay_t<A>>::type...> && ...);
    constexpr bool kSameResult =
        (std::is_same_v<
             typename internal::LazyResult<
                 std::is_invocable_v<Fs&, typename internal::Arg<kTier, std::decay_t<A>>::type...>,
                 Fs&, typename internal::Arg<kTier, std::decay_t<A>>::type...>::type,
             R> &&
         ...);
    // One message naming the cause, and nothing else instantiated after it.
    if constexpr (Traits::tier < 0) {
      static_assert(internal::dependent_false<F0>,
                    "prism::variants: the first variant cannot be called with these arguments");
      return AnyRef();
    } else if constexpr (!kAllAccept) {
      static_assert(internal::dependent_false<F0>,
                    "prism::variants: every variant must accept the arguments the first one "
                    "accepts");
      return AnyRef();
    } else if constexpr (!kSameResult) {
      static_assert(internal::dependent_false<F0>,
                    "prism::variants: every variant must return the same type");
      return AnyRef();
    } else {
      return submit<kTier, R>(std::forward<A>(args)...);
    }
  }

 private:
  template <int kTier, typename R, typename... A>
  ObjectRef<R> submit(A&&... args) const {
    using Slots = internal::SingleResult<R>;
    using Target = internal::VariantTarget<R, S, Fs...>;
    using Impl = internal::TaskImpl<kTier, Target, Slots, std::decay_t<A>...>;

    const internal::RuntimePin pin =
        rt_.empty() ? internal::pin_current_runtime() : internal::pin_runtime(rt_);
    internal::RuntimeCore* rt = pin.get();
    internal::check_accepting(rt);
    if (function_->name.empty()) {
      throw Error(ErrorCode::kInvalidArgument,
                  "prism::variants: name the function with .name(\"...\"), or register its "
                  "first variant with PRISM_REMOTE: the performance model keeps its history by "
                  "that name, and functions of one signature cannot be told apart otherwise");
    }
    auto run = std::make_shared<internal::VariantRun>();
    run->function = function_;
    if (!forced_.empty()) {
      for (size_t i = 0; i < function_->variants.size(); ++i) {
        if (function_->variants[i].name == forced_) run->forced = static_cast<int>(i);
      }
      if (run->forced < 0) {
        throw Error(ErrorCode::kInvalidArgument, "prism::task(" + function_->name +
                                                     ").variant(\"" + forced_ +
                                                     "\"): no variant has that name");
      }
    }
    run->describe = &internal::describe_variant_args<Impl, S>;
    run->remote = function_->registered && Impl::can_run_elsewhere();
    internal::VariantRun* raw = run.get();
    internal::ExtrasPtr extras = internal::make_variant_extras(rt, std::move(run));
    Slots slots(rt);
    raw->result = slots.entry->id();
    auto refs = slots.refs();
    auto task = std::make_unique<Impl>(
        rt, internal::next_task_id(rt), nullptr, std::move(extras),
        Target{std::apply([](const auto&... v) { return std::tuple<Fs...>(v.callable()...); },
                          set_.variants()),
               set_.size_function(), raw},
        std::move(slots), std::forward<A>(args)...);
    task->register_args();
    internal::submit(task.release());
    return refs;
  }

  internal::RuntimeRef rt_;  // empty: the current runtime at remote() time
  VariantSet<S, Fs...> set_;
  std::shared_ptr<const internal::VariantFunction> function_;
  std::string forced_;
};

template <typename S, typename... Fs>
VariantCaller<S, Fs...> task(VariantSet<S, Fs...> set) {
  return VariantCaller<S, Fs...>(std::move(set));
}

// The name of the variant that computed `ref` once it is done; "" while it is pending, for a
// ref that no variant call made, or after the runtime forgot it (it keeps the newest 65,536).
template <typename T>
std::string variant_of(const ObjectRef<T>& ref) {
  return internal::variant_of(ref.id());
}

}  // namespace prism

// Registers the variant set `set` (named with .name(); the macro keeps a copy) so that a
// driver's calls of it may run on any node of a cluster: each variant becomes the function
// "<name>/<variant>" on every process of the program. Its calls cross nodes with the first
// variant's parameters and result (serializable, prism/serialize.h), as PRISM_REMOTE functions.
#define PRISM_VARIANTS(set)                                                          \
  [[maybe_unused]] static const bool PRISM_INTERNAL_CAT(prism_variants_, __LINE__) = \
      ::prism::internal::register_variant_set(                                       \
          set, std::make_index_sequence<std::tuple_size_v<                             \
                   std::decay_t<decltype((set).variants())>>>())
