// prism/actor.h — actors: stateful workers whose method calls run one at a time, in order.
//
//   struct Counter {
//     explicit Counter(int start) : n(start) {}
//     int increment() { return ++n; }
//     int n;
//   };
//   PRISM_ACTOR(Counter, &Counter::increment);
//
//   prism::ActorHandle<Counter> c = prism::actor<Counter>(0).name("counter").remote();
//   prism::ObjectRef<int> r = c.task(&Counter::increment).remote();
//   auto same = prism::get_actor<Counter>("counter");
//   prism::kill(c);
//
// The constructor runs once, as a task (its arguments may be refs). Calls run in submission
// order, one at a time (or up to max_concurrency at once, started in order). Handles are cheap
// to copy and may be passed to tasks and to other actors. The actor holds its resources
// (num_cpus, num_gpus, ... default none) for its whole life, and stops when killed, when the
// runtime shuts down, or — unless it is named — when its last handle is gone and its queued
// calls have run. Calls on a dead actor fail with ActorDiedError; a call that throws fails
// with TaskError and the actor lives on.
//
// Thread-safe: handles may be used from any thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>

#include "prism/internal/call_diagnosis.h"
#include "prism/internal/ids.h"
#include "prism/internal/resource_options.h"
#include "prism/internal/runtime_hooks.h"
#include "prism/internal/task_impl.h"
#include "prism/object_ref.h"
#include "prism/registry.h"
#include "prism/serialize.h"
#include "prism/options.h"

namespace prism {

namespace internal {

// One per ActorHandle family (copies share it); counts towards the actor's live handles.
class HandleToken {
 public:
  explicit HandleToken(std::shared_ptr<ActorCore> core) : core_(std::move(core)) {
    actor_handle_acquired(core_.get());
  }
  // Of an actor whose handle was already counted for it (find_named_actor, import_actor).
  HandleToken(std::shared_ptr<ActorCore> core, AdoptHandle) noexcept : core_(std::move(core)) {}
  ~HandleToken() { actor_handle_released(core_.get()); }
  HandleToken(const HandleToken&) = delete;
  HandleToken& operator=(const HandleToken&) = delete;
  const std::shared_ptr<ActorCore>& core() const noexcept { return core_; }

 private:
  std::shared_ptr<ActorCore> core_;
};

template <typename T, typename M>
struct MethodTarget {
  std::shared_ptr<ActorCore> actor;
  M method;
  template <typename... X>
  decltype(auto) invoke(X&&... x) {
    return std::invoke(method, *static_cast<T*>(actor_instance(actor.get())),
                       std::forward<X>(x)...);
  }
  std::string name() const {
    std::string n = registered_name(function_key(method));
    return n.empty() ? actor_type_name(actor.get()) + "::<method>" : n;
  }
};
template <typename T, typename M, typename... X>
struct TargetAccepts<MethodTarget<T, M>, X...>
    : std::bool_constant<std::is_invocable_v<M&, T&, X...>> {};

// Calls `new T(args...)` for the constructor task.
template <typename T>
struct Construct {
  template <typename... X, typename = std::enable_if_t<std::is_constructible_v<T, X&&...>>>
  T* operator()(X&&... x) const {
    return new T(std::forward<X>(x)...);
  }
};

template <typename T>
struct ConstructTarget {
  ActorCore* actor;
  template <typename... X>
  void invoke(X&&... x) {
    T* instance = Construct<T>{}(std::forward<X>(x)...);
    set_actor_instance(actor, instance, [](void* p) { delete static_cast<T*>(p); });
  }
  std::string name() const { return actor_type_name(actor) + "::" + actor_type_name(actor); }
};

void actor_creation_failed(ActorCore* actor, const std::exception_ptr& error) noexcept;

// The constructor task has no result object: its failure kills the actor.
struct CreationResult {
  using Value = void;  // (never runs on another node)
  using Refs = void;
  ActorCore* actor;
  template <typename Call>
  void run(Call&& call) {
    call();
  }
  void fail(const std::exception_ptr& e) noexcept { actor_creation_failed(actor, e); }
  bool cancel_requested() const noexcept { return false; }
  void set_producer(TaskRecord*) noexcept {}
};

}  // namespace internal

template <typename T>
class ActorHandle;

template <typename T, typename M, size_t NumReturns = 0>
class ActorMethodCaller {
 public:
  ActorMethodCaller(std::shared_ptr<internal::ActorCore> actor, M method, std::string name = {})
      : actor_(std::move(actor)), method_(method), name_(std::move(name)) {}

  ActorMethodCaller& name(std::string n) & { return name_ = std::move(n), *this; }
  ActorMethodCaller&& name(std::string n) && { return std::move(name(std::move(n))); }

  template <size_t N>
  ActorMethodCaller<T, M, N> num_returns() const {
    static_assert(N >= 1, "num_returns<N>() needs N >= 1");
    return ActorMethodCaller<T, M, N>(actor_, method_, name_);
  }

  // Enqueues the call; it runs after every call submitted on this actor before it.
  template <typename... A>
  auto remote(A&&... args) const {
    using Traits = internal::InvokeTraits<M, T, std::decay_t<A>...>;
    if constexpr (Traits::tier < 0) {
      // One message naming the likely cause, and nothing else instantiated after it.
      internal::CallDiagnosis<M, std::decay_t<A>...>::fail();
      return AnyRef();  // (what follows in the caller's code then compiles: no more errors)
    } else if constexpr (NumReturns > 0 && !internal::is_tuple_like_v<typename Traits::result>) {
      static_assert(internal::dependent_false<M>,
                    "num_returns<N>(): the method must return a std::tuple or std::pair (or a "
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
    using Traits = internal::InvokeTraits<M, T, std::decay_t<A>...>;
    using R = typename Traits::result;
    using Slots = std::conditional_t<NumReturns == 0, internal::SingleResult<R>,
                                     internal::MultiResult<R, NumReturns>>;
    using Target = internal::MethodTarget<T, M>;
    using Impl = internal::TaskImpl<Traits::tier, Target, Slots, std::decay_t<A>...>;
    internal::ActorCore* core = actor_.get();
    // Throws kUnavailable if the actor's runtime is gone; keeps it alive until submitted.
    const internal::RuntimePin pin = internal::pin_runtime(internal::actor_runtime(core));
    internal::RuntimeCore* rt = pin.get();
    internal::check_accepting(rt);
    internal::ExtrasPtr extras;
    if (!name_.empty()) {
      internal::TaskOptions o;
      o.name = name_;
      o.max_retries = 0;  // (an actor call is not run again: max_task_retries is not built yet)
      extras = internal::make_task_extras(rt, o, internal::LazyName(name_));
    }
    Slots slots(rt);
    auto refs = slots.refs();
    auto task = std::make_unique<Impl>(rt, internal::next_task_id(rt), core, std::move(extras),
                                       Target{actor_, method_}, std::move(slots),
                                       std::forward<A>(args)...);
    task->register_args();
    internal::submit_actor_call(core, task.release());
    return refs;
  }

  std::shared_ptr<internal::ActorCore> actor_;
  M method_;
  std::string name_;
};

template <typename T>
class ActorHandle {
 public:
  // An empty handle; calls on it throw prism::Error(kInvalidArgument).
  ActorHandle() = default;
  explicit ActorHandle(std::shared_ptr<internal::ActorCore> core)
      : token_(std::make_shared<internal::HandleToken>(std::move(core))) {}
  // Of an actor whose handle was counted for this one already (runtime_hooks.h).
  ActorHandle(std::shared_ptr<internal::ActorCore> core, internal::AdoptHandle adopt) {
    try {
      token_ = std::make_shared<internal::HandleToken>(core, adopt);
    } catch (...) {
      internal::actor_handle_released(core.get());  // the handle it was given goes with it
      throw;
    }
  }

  template <typename M>
  ActorMethodCaller<T, M> task(M method) const {
    static_assert(std::is_member_function_pointer_v<M>,
                  "handle.task() takes a member function pointer: &T::method");
    if (!token_) throw Error(ErrorCode::kInvalidArgument, "call on an empty ActorHandle");
    return ActorMethodCaller<T, M>(token_->core(), method);
  }

  bool valid() const noexcept { return static_cast<bool>(token_); }
  ActorId id() const noexcept {
    return token_ ? internal::actor_id(token_->core().get()) : ActorId{};
  }
  internal::ActorCore* core() const noexcept { return token_ ? token_->core().get() : nullptr; }

  friend bool operator==(const ActorHandle& a, const ActorHandle& b) noexcept {
    return a.core() == b.core();
  }

 private:
  std::shared_ptr<internal::HandleToken> token_;
};

template <typename T>
void kill(const ActorHandle<T>& handle);

template <typename T, typename... CtorArgs>
class ActorCreator : public internal::ResourceOptions<ActorCreator<T, CtorArgs...>> {
 public:
  // num_cpus(x), num_gpus(x), memory(bytes), resource(name, x): see ResourceOptions.
  template <typename... U>
  explicit ActorCreator(internal::RuntimeRef rt, U&&... args)
      : rt_(rt), args_(std::forward<U>(args)...) {}

  // A named actor: found later with prism::get_actor<T>(name); lives until killed or shutdown.
  ActorCreator& name(std::string n) & { return options_.name = std::move(n), *this; }
  ActorCreator&& name(std::string n) && { return std::move(name(std::move(n))); }
  // How many calls may run at once (default 1). Calls still start in submission order.
  ActorCreator& max_concurrency(int n) & { return options_.max_concurrency = n, *this; }
  ActorCreator&& max_concurrency(int n) && { return std::move(max_concurrency(n)); }
  // Cluster mode: how many times the actor is built again after its node died (its constructor
  // runs again with its original arguments on a node that can hold it; its handles and its name
  // keep working; calls made meanwhile wait for it). Default 0: it dies with its node, and its
  // calls fail with ActorDiedError. -1: no limit.
  ActorCreator& max_restarts(int n) & { return options_.max_restarts = n, *this; }
  ActorCreator&& max_restarts(int n) && { return std::move(max_restarts(n)); }
  // How many times a call in flight when the actor's node died is sent again to the restarted
  // actor (default 0: it fails with a kUnavailable error naming the node). -1: no limit.
  ActorCreator& max_task_retries(int n) & { return options_.max_task_retries = n, *this; }
  ActorCreator&& max_task_retries(int n) && { return std::move(max_task_retries(n)); }

  // Creates the actor; its constructor runs as a task. Returns the handle at once.
  ActorHandle<T> remote() {
    using Traits = internal::InvokeTraits<internal::Construct<T>, internal::NoInstance, CtorArgs...>;
    if constexpr (Traits::tier < 0) {
      static_assert(internal::dependent_false<T>,
                    "prism::actor<T>(args...).remote(): T cannot be constructed from these "
                    "arguments. They are stored and passed to the constructor as const A& (an "
                    "ObjectRef<U> argument as const U&): a constructor taking a non-const "
                    "reference or a move-only type by value cannot take them.");
      return ActorHandle<T>();
    } else {
      return create<Traits::tier>();
    }
  }

 private:
  template <int Tier>
  ActorHandle<T> create() {
    using Target = internal::ConstructTarget<T>;
    using Impl = internal::TaskImpl<Tier, Target, internal::CreationResult, CtorArgs...>;
    const internal::RuntimePin pin =
        rt_.empty() ? internal::pin_current_runtime() : internal::pin_runtime(rt_);
    internal::RuntimeCore* rt = pin.get();
    internal::check_accepting(rt);
    std::shared_ptr<internal::ActorCore> core =
        internal::new_actor(rt, options_, typeid(T), typeid(T).name());
    static constexpr internal::ActorHandleOps kOps{
        [](const std::shared_ptr<internal::ActorCore>& a) -> void* {
          return new ActorHandle<T>(a);
        },
        [](void* h) { prism::kill(*static_cast<ActorHandle<T>*>(h)); },
        [](void* h) { delete static_cast<ActorHandle<T>*>(h); }};
    internal::set_actor_handle_ops(core.get(), &kOps);
    ActorHandle<T> handle(core);
    auto task = std::apply(
        [&](auto&&... a) {
          return std::make_unique<Impl>(rt, internal::next_task_id(rt), core.get(), nullptr,
                                        Target{core.get()}, internal::CreationResult{core.get()},
                                        std::move(a)...);
        },
        std::move(args_));
    task->register_args();
    internal::submit_actor_creation(core.get(), task.release());
    return handle;
  }

  friend class internal::ResourceOptions<ActorCreator>;

  internal::RuntimeRef rt_;  // empty: the current runtime at remote() time
  std::tuple<CtorArgs...> args_;
  internal::ActorOptions options_;
};

// Starts building an actor of type T constructed from `args` (values or refs).
template <typename T, typename... A>
ActorCreator<T, std::decay_t<A>...> actor(A&&... args) {
  return ActorCreator<T, std::decay_t<A>...>(internal::RuntimeRef{}, std::forward<A>(args)...);
}

// The live actor named `name`; throws prism::Error(kInvalidArgument) if there is none or it is
// not a T.
template <typename T>
ActorHandle<T> get_actor(const std::string& name) {
  const internal::RuntimePin pin = internal::pin_current_runtime();
  return ActorHandle<T>(internal::find_named_actor(pin.get(), name, typeid(T)),
                        internal::AdoptHandle{});
}

// Stops the actor: queued calls fail with ActorDiedError, a running call finishes, then the
// instance is destroyed and its resources are released. Its name is free again when kill()
// returns. Killing a dead actor (or one whose runtime is gone) does nothing.
template <typename T>
void kill(const ActorHandle<T>& handle) {
  if (!handle.valid()) throw Error(ErrorCode::kInvalidArgument, "prism::kill: empty ActorHandle");
  internal::kill_actor(handle.core());
}

namespace internal {

// ---- actors on other nodes (cluster mode) ----
// On the node that holds an actor for the driver, the actor is an ordinary local actor reached
// through an ActorHandle<T> the cluster module keeps; these instantiate, for each constructor
// and each method registered with PRISM_ACTOR, what turns a message into a local call.

// The method's result, serialized into `out`; with result_elements_sink set (a num_returns
// call of the driver's), a tuple-like result is written there element by element instead, and
// `out` stays empty (remote_call.h). The sink is taken for this result only.
template <typename R>
void write_entry_value(ObjectEntry* entry, std::string* out) {
  [[maybe_unused]] std::vector<std::string>* const elements =
      std::exchange(result_elements_sink(), nullptr);
  if constexpr (std::is_void_v<R>) {
    out->clear();
  } else {
    if constexpr (is_tuple_like_v<R>) {
      if (elements != nullptr) {
        out->clear();
        encode_elements(value_of<R>(entry), elements,
                        std::make_index_sequence<std::tuple_size_v<R>>());
        return;
      }
    }
    serialize_entry_value<R>(entry, out);
  }
}

template <typename M>
EntryPtr invoke_actor_method(const FunctionKey& key, void* handle, std::string_view args,
                             ActorValueWriter* write) {
  using Sig = RemoteMethodSignature<M>;
  using T = typename Sig::Class;
  M method;
  std::memcpy(&method, key.bytes, sizeof(M));
  typename Sig::Params params = from_bytes<typename Sig::Params>(args);
  const ActorHandle<T>& h = *static_cast<const ActorHandle<T>*>(handle);
  auto ref = std::apply(
      [&](auto&... p) { return h.task(method).remote(std::move(p)...); }, params);
  *write = &write_entry_value<typename Sig::Result>;
  ObjectEntry* e = ref.entry();
  e->ref();
  return EntryPtr(e);
}

template <typename M>
ActorMethodInvoker actor_method_invoker(const M&) noexcept {
  if constexpr (RemoteMethodSignature<M>::kCapable) {
    return &invoke_actor_method<M>;
  } else {
    return nullptr;
  }
}

// PRISM_ACTOR(Type, &Type::m, ...): the methods, each with its invoker.
template <typename Type, typename... M>
bool register_actor(const char* names, M... methods) noexcept {
  if constexpr (sizeof...(M) == 0) {
    return true;
  } else {
    const FunctionKey keys[] = {function_key(methods)...};
    const RemoteInvoker invokers[] = {(static_cast<void>(methods), RemoteInvoker{nullptr})...};
    const char* const types[] = {typeid(M).name()...};
    const ActorMethodInvoker method_invokers[] = {actor_method_invoker(methods)...};
    return register_static(names, keys, invokers, types, sizeof...(M), method_invokers);
  }
}

}  // namespace internal

// An actor handle passed to a task that runs on another node (cluster mode): the receiving task
// gets a handle whose calls reach the actor wherever it lives. Embedded programs never use it.
template <typename T>
struct Serializer<ActorHandle<T>> {
  static void write(Writer& w, const ActorHandle<T>& h) {
    if (!h.valid()) throw Error(ErrorCode::kInvalidArgument, "an empty ActorHandle cannot travel");
    const uint64_t key = internal::export_actor(
        h.core(), new ActorHandle<T>(h),
        [](void* p) { prism::kill(*static_cast<ActorHandle<T>*>(p)); },
        [](void* p) { delete static_cast<ActorHandle<T>*>(p); });
    w.put(key);
  }
  static void read(Reader& r, ActorHandle<T>* h) {
    uint64_t key = 0;
    r.get(&key);
    *h = ActorHandle<T>(internal::import_actor(key, typeid(T), typeid(T).name()),
                        internal::AdoptHandle{});
  }
};

namespace internal {

template <typename T, typename Params>
void* construct_remote_actor(RuntimeRef rt, const ActorOptions& options, std::string_view args,
                             void (**kill)(void*), void (**drop)(void*)) {
  Params params = from_bytes<Params>(args);
  auto creator = std::apply(
      [rt](auto&... p) {
        return ActorCreator<T, std::decay_t<decltype(p)>...>(rt, std::move(p)...);
      },
      params);
  creator.num_cpus(options.num_cpus).num_gpus(options.num_gpus).memory(options.memory)
      .gpu_memory(options.gpu_memory).max_concurrency(options.max_concurrency);
  for (const auto& [name, amount] : options.resources) creator.resource(name, amount);
  auto* handle = new ActorHandle<T>(creator.remote());
  *kill = [](void* h) { prism::kill(*static_cast<ActorHandle<T>*>(h)); };
  *drop = [](void* h) { delete static_cast<ActorHandle<T>*>(h); };
  return handle;
}

}  // namespace internal

}  // namespace prism
