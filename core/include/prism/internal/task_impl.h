// prism/internal/task_impl.h — the typed task record: callable, arguments and result slots.
//
// How arguments reach the callable (the "tier", chosen at compile time, most resolved first):
//   3: ObjectRef<T> arguments become const T&, std::vector<ObjectRef<T>> become std::vector<T>
//      (copies of the values);
//   2: ObjectRef<T> arguments become const T&, std::vector<ObjectRef<T>> become
//      std::vector<const T*> (pointers to the stored values: no copies; a callable may also take
//      std::span<const T* const>). Not for types with a place (GPU tensors), which must be placed;
//   1: ObjectRef<T> arguments become const T&, vectors of refs are passed as they are (not
//      waited for: the callable gets them itself);
//   0: everything is passed as it is (the callable takes refs and may get() them itself).
// Resolved arguments are dependencies: the task runs once they are ready, and fails without
// running if one of them failed. ObjectRef<void> is a dependency that is passed as the ref.
//
// Not for users.
#pragma once

#include <algorithm>
#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "prism/internal/call_diagnosis.h"
#include "prism/internal/device_affinity.h"
#include "prism/internal/object_entry.h"
#include "prism/internal/remote_call.h"
#include "prism/internal/runtime_hooks.h"
#include "prism/internal/task_record.h"
#include "prism/object_ref.h"

namespace prism::internal {

// ---- argument resolution ----

// Each form says how many dependencies it adds at most (kMaxDeps; -1: as many as it holds), so
// that a call whose count is bounded keeps its DepNodes in its record.
template <int Tier, typename A, typename = void>
struct Arg {
  static constexpr int kMaxDeps = 0;
  using type = const A&;
  static const A& resolve(const A& a) noexcept { return a; }
  static size_t count(const A&, RuntimeCore*) { return 0; }
  static void add(TaskRecord*, const A&) noexcept {}
};

// A value with a place (Placement<A>::kCustom, e.g. a GPU tensor) passed directly is placed
// where the task runs, as a ref to it would be.
template <int Tier, typename A>
struct Arg<Tier, A, std::enable_if_t<Placement<A>::kCustom>> {
  static constexpr int kMaxDeps = 0;
  using type = A;
  static A resolve(const A& a) { return Placement<A>::for_reader(a); }
  static size_t count(const A&, RuntimeCore*) { return 0; }
  static void add(TaskRecord*, const A&) noexcept {}
};

// Values with a place (Placement<T>::kCustom, e.g. GPU tensors) reach the task by value, placed
// where the task runs; others as a reference to the stored value.
template <int Tier, typename T>
struct Arg<Tier, ObjectRef<T>, std::enable_if_t<(Tier >= 1) && !std::is_void_v<T>>> {
  static constexpr int kMaxDeps = 1;
  using type = std::conditional_t<Placement<T>::kCustom, T, const T&>;
  static type resolve(const ObjectRef<T>& r) { return read_value<T>(r.entry()); }
  static size_t count(const ObjectRef<T>& r, RuntimeCore* rt) {
    check_arg_ref(r.entry(), rt);
    return 1;
  }
  static void add(TaskRecord* t, const ObjectRef<T>& r) noexcept { t->add_dep(r.entry()); }
};

template <int Tier>
struct Arg<Tier, ObjectRef<void>, std::enable_if_t<(Tier >= 1)>> {
  static constexpr int kMaxDeps = 1;
  using type = const ObjectRef<void>&;
  static const ObjectRef<void>& resolve(const ObjectRef<void>& r) noexcept { return r; }
  static size_t count(const ObjectRef<void>& r, RuntimeCore* rt) {
    check_arg_ref(r.entry(), rt);
    return 1;
  }
  static void add(TaskRecord* t, const ObjectRef<void>& r) noexcept { t->add_dep(r.entry()); }
};

// A vector of refs resolved to its values: every ref is a dependency.
template <typename T>
struct VectorOfRefsArg {
  static constexpr int kMaxDeps = -1;
  static size_t count(const std::vector<ObjectRef<T>>& v, RuntimeCore* rt) {
    for (const auto& r : v) check_arg_ref(r.entry(), rt);
    return v.size();
  }
  static void add(TaskRecord* t, const std::vector<ObjectRef<T>>& v) noexcept {
    for (const auto& r : v) t->add_dep(r.entry());
  }
};

// ... as copies of the values,
template <typename T>
struct Arg<3, std::vector<ObjectRef<T>>, std::enable_if_t<!std::is_void_v<T>>>
    : VectorOfRefsArg<T> {
  using type = std::vector<T>;
  static std::vector<T> resolve(const std::vector<ObjectRef<T>>& v) {
    std::vector<T> out;
    out.reserve(v.size());
    for (const auto& r : v) out.push_back(read_value<T>(r.entry()));
    return out;
  }
};

// ... or as pointers to the stored values (no copies; not for values with a place).
template <typename T>
struct Arg<2, std::vector<ObjectRef<T>>,
           std::enable_if_t<!std::is_void_v<T> && !Placement<T>::kCustom>>
    : VectorOfRefsArg<T> {
  using type = std::vector<const T*>;
  static std::vector<const T*> resolve(const std::vector<ObjectRef<T>>& v) {
    std::vector<const T*> out;
    out.reserve(v.size());
    for (const auto& r : v) out.push_back(&value_of<T>(r.entry()));
    return out;
  }
};

// The most resolved tier at which `Fn` accepts the arguments (called on an `Inst&` first, unless
// Inst is NoInstance); -1 if none.
struct NoInstance {};

template <bool Ok, typename Fn, typename... X>
struct LazyResult {
  using type = void;
};
template <typename Fn, typename... X>
struct LazyResult<true, Fn, X...> {
  using type = std::decay_t<std::invoke_result_t<Fn, X...>>;
};

template <typename Fn, typename Inst, typename... A>
struct InvokeTraits {
  static constexpr int tier = [] {
    if constexpr (std::is_invocable_v<Fn&, Inst&, typename Arg<3, A>::type...>) return 3;
    else if constexpr (std::is_invocable_v<Fn&, Inst&, typename Arg<2, A>::type...>) return 2;
    else if constexpr (std::is_invocable_v<Fn&, Inst&, typename Arg<1, A>::type...>) return 1;
    else if constexpr (std::is_invocable_v<Fn&, Inst&, const A&...>) return 0;
    else return -1;
  }();
  using result = typename LazyResult<(tier >= 0), Fn&, Inst&,
                                     typename Arg<(tier < 0 ? 0 : tier), A>::type...>::type;
};

template <typename Fn, typename... A>
struct InvokeTraits<Fn, NoInstance, A...> {
  static constexpr int tier = [] {
    if constexpr (std::is_invocable_v<Fn&, typename Arg<3, A>::type...>) return 3;
    else if constexpr (std::is_invocable_v<Fn&, typename Arg<2, A>::type...>) return 2;
    else if constexpr (std::is_invocable_v<Fn&, typename Arg<1, A>::type...>) return 1;
    else if constexpr (std::is_invocable_v<Fn&, const A&...>) return 0;
    else return -1;
  }();
  using result = typename LazyResult<(tier >= 0), Fn&,
                                     typename Arg<(tier < 0 ? 0 : tier), A>::type...>::type;
};

// ---- names ----

template <typename F>
std::string callable_name(const F& f) {
  if constexpr (std::is_pointer_v<F> || std::is_member_function_pointer_v<F>) {
    std::string n = registered_name(function_key(f));
    if (!n.empty()) return n;
  }
  return demangle_type_name(typeid(F).name());
}
// callable_name of the F at `f`, for a LazyName.
template <typename F>
std::string callable_name_of(const void* f) {
  return callable_name(*static_cast<const F*>(f));
}

// ---- result slots ----

// One result: ObjectRef<R>.
template <typename R>
struct SingleResult {
  using Value = R;
  using Refs = ObjectRef<R>;
  EntryPtr entry;

  explicit SingleResult(RuntimeCore* rt) : entry(new TypedEntry<R>(next_object_id(rt))) {}
  Refs refs() const { return Refs::adopt(entry); }
  void set_producer(TaskRecord* t) noexcept { entry->set_producer(t, t->actor() != nullptr); }
  TypedEntry<R>* typed() const noexcept { return static_cast<TypedEntry<R>*>(entry.get()); }
  template <typename Call>
  void run(Call&& call) {
    if constexpr (std::is_void_v<R>) {
      call();
      run_returned();
      typed()->set_value();
    } else {
      R value = call();
      if constexpr (Placement<R>::kCustom) Placement<R>::on_produced(value);
      run_returned();
      typed()->set_value(std::move(value));
    }
  }
  void fail(const std::exception_ptr& e) noexcept { entry->complete_error(e); }
  bool cancel_requested() const noexcept { return entry->cancel_requested(); }
};

// N results from a returned tuple (or pair): std::tuple<ObjectRef<E0>, ObjectRef<E1>, ...>.
template <typename R, size_t N>
struct MultiResult {
  static_assert(std::tuple_size<R>::value == N,
                "num_returns<N>() needs a function returning a tuple or pair of N values");
  template <size_t... I>
  static auto refs_type(std::index_sequence<I...>)
      -> std::tuple<ObjectRef<std::decay_t<std::tuple_element_t<I, R>>>...>;
  using Value = R;
  using Refs = decltype(refs_type(std::make_index_sequence<N>()));
  template <size_t I>
  using Elem = std::decay_t<std::tuple_element_t<I, R>>;

  EntryPtr entries[N];

  explicit MultiResult(RuntimeCore* rt) {
    init(rt, std::make_index_sequence<N>());
  }
  Refs refs() const { return make_refs(std::make_index_sequence<N>()); }
  void set_producer(TaskRecord* t) noexcept {
    for (auto& x : entries) x->set_producer(t, t->actor() != nullptr);
  }
  template <typename Call>
  void run(Call&& call) {
    R result = call();
    run_returned();
    store(std::move(result), std::make_index_sequence<N>());
  }
  void fail(const std::exception_ptr& e) noexcept {
    for (auto& x : entries) x->complete_error(e);
  }
  bool cancel_requested() const noexcept {
    for (auto& x : entries) {
      if (x->cancel_requested()) return true;
    }
    return false;
  }

  // ---- a remote run that wrote its results one by one (TaskRecord::complete_remote_elements) ----
  static RemoteMaterializer materializer(size_t i) noexcept {
    return materializer_at(i, std::make_index_sequence<N>());
  }
  // Every result kept inline is decoded before any is set (a malformed one throws first).
  void complete_elements(std::string_view bytes, const uint64_t* sizes,
                         std::shared_ptr<RemoteValue>* where) {
    complete_elements_at(bytes, sizes, where, std::make_index_sequence<N>());
  }

 private:
  template <size_t... I>
  static RemoteMaterializer materializer_at(size_t i, std::index_sequence<I...>) noexcept {
    RemoteMaterializer m = nullptr;
    ((m = i == I ? &TypedEntry<Elem<I>>::materialize : m), ...);
    return m;
  }
  template <size_t... I>
  void complete_elements_at(std::string_view bytes, const uint64_t* sizes,
                            std::shared_ptr<RemoteValue>* where, std::index_sequence<I...>) {
    std::tuple<std::optional<Elem<I>>...> decoded;
    size_t at = 0;
    (
        [&] {
          if (where[I] != nullptr) return;
          if (sizes[I] > bytes.size() - at) throw_malformed("a result's bytes are truncated");
          std::get<I>(decoded).emplace(
              from_bytes<Elem<I>>(bytes.substr(at, static_cast<size_t>(sizes[I]))));
          at += static_cast<size_t>(sizes[I]);
        }(),
        ...);
    if (at != bytes.size()) throw_malformed("bytes left over after the results");
    run_returned();
    (
        [&] {
          if (where[I] != nullptr) {
            entries[I]->complete_remote(std::move(where[I]));  // (if cancelled: freed at once)
            return;
          }
          if constexpr (Placement<Elem<I>>::kCustom) {
            Placement<Elem<I>>::on_produced(*std::get<I>(decoded));
          }
          static_cast<TypedEntry<Elem<I>>*>(entries[I].get())
              ->set_value(std::move(*std::get<I>(decoded)));
        }(),
        ...);
  }
  template <size_t... I>
  void init(RuntimeCore* rt, std::index_sequence<I...>) {
    ((entries[I] = EntryPtr(new TypedEntry<Elem<I>>(next_object_id(rt)))), ...);
  }
  template <size_t... I>
  Refs make_refs(std::index_sequence<I...>) const {
    return Refs{ObjectRef<Elem<I>>::adopt(EntryPtr(entries[I]))...};
  }
  template <size_t... I>
  void store(R&& r, std::index_sequence<I...>) {
    (
        [&] {
          if constexpr (Placement<Elem<I>>::kCustom) {
            Placement<Elem<I>>::on_produced(std::get<I>(r));
          }
        }(),
        ...);
    (static_cast<TypedEntry<Elem<I>>*>(entries[I].get())->set_value(std::get<I>(std::move(r))),
     ...);
  }
};

// ---- running on another node (cluster mode) ----

struct CreationResult;
template <typename F>
struct FunctionTarget;
template <typename T, typename M>
struct MethodTarget;
template <typename T>
struct ConstructTarget;

// ---- values with a place, read where they are ----

// A call that accepts its values with a place (Placement<T>::kCustom: a GPU tensor, passed as
// such or as a ref) as const T& is handed the value itself where Placement<T>::reads_in_place
// says a reader here may use it as it is (a tensor already on the task's device, its contents
// ordered for the task's stream): no copy of the handle, which for_reader would make. Otherwise
// the placed copy, held in the run's frame (`Holder`). Other arguments resolve as Arg does.
template <typename T>
const T& placed_for_reader(const T& stored, std::optional<T>& holder) {
  if constexpr (requires { Placement<T>::reads_in_place(stored); }) {
    if (Placement<T>::reads_in_place(stored)) return stored;
  }
  return holder.emplace(Placement<T>::for_reader(stored));
}

template <int Tier, typename A, typename = void>
struct Borrow {
  static constexpr bool kPlaced = false;
  using type = typename Arg<Tier, A>::type;
  struct Holder {};
  static type resolve(const A& a, Holder&) { return Arg<Tier, A>::resolve(a); }
};

template <int Tier, typename A>
struct Borrow<Tier, A, std::enable_if_t<Placement<A>::kCustom>> {
  static constexpr bool kPlaced = true;
  using type = const A&;
  using Holder = std::optional<A>;
  static const A& resolve(const A& a, Holder& h) { return placed_for_reader(a, h); }
};

template <int Tier, typename T>
struct Borrow<Tier, ObjectRef<T>,
              std::enable_if_t<(Tier >= 1) && !std::is_void_v<T> && Placement<T>::kCustom>> {
  static constexpr bool kPlaced = true;
  using type = const T&;
  using Holder = std::optional<T>;
  static const T& resolve(const ObjectRef<T>& r, Holder& h) {
    return placed_for_reader(value_of<T>(r.entry()), h);
  }
};

// Whether a task's `Target` (FunctionTarget, MethodTarget) can be called with arguments `X...`;
// false for targets that do not say (they are called as Arg resolves). Asked only of callables
// with one signature (a function, a member function, a lambda or functor whose operator() is
// neither a template nor overloaded): asking a generic lambda would compile its body for those
// arguments, a hard error where that body cannot take them (e.g. assigns to a const T&).
template <typename F>
concept HasOneSignature = std::is_pointer_v<F> || std::is_member_function_pointer_v<F> ||
                          requires { &F::operator(); };
template <typename Target, typename... X>
struct TargetAccepts : std::false_type {};
template <typename F, typename... X>
  requires HasOneSignature<F>
struct TargetAccepts<FunctionTarget<F>, X...>
    : std::bool_constant<std::is_invocable_v<F&, X...>> {};

// Creates an actor of type T on this node from serialized constructor arguments `Params`
// (defined in prism/actor.h; an ActorCtorInvoker).
template <typename T, typename Params>
void* construct_remote_actor(RuntimeRef rt, const ActorOptions& options, std::string_view args,
                             void (**kill)(void*), void (**drop)(void*));
// The registration of that constructor under a key every node of one binary agrees on (the
// static member is initialized at start in every process: the same executable).
template <typename T, typename Params>
struct RemoteCtor {
  static const char* key() noexcept { return typeid(RemoteCtor).name(); }
  static inline const bool registered =
      register_actor_ctor(key(), &construct_remote_actor<T, Params>);
};

// Whether a task of `Target` whose resolved arguments have types `Resolved...` and whose result
// slots hold `Value` can run on another node (remote_call.h), and the registered name it is
// found by there.
template <typename Target, typename Value, typename... Resolved>
struct RemoteTask {
  static constexpr bool value = false;
  using Params = std::tuple<>;
  static std::string name(const Target&) { return {}; }
};
// A call of a callable with signature `Sig` (Result, Params, kCapable) crosses nodes when the
// signature can and the call's result and resolved arguments match it.
template <typename Sig, typename Value, typename... Resolved>
struct RemoteBySignature {
  using Params = typename Sig::Params;
  static constexpr bool value = [] {
    if constexpr (!Sig::kCapable) {
      return false;
    } else {
      return std::is_same_v<typename Sig::Result, Value> &&
             std::is_constructible_v<typename Sig::Params, Resolved...>;
    }
  }();
};
template <typename F, typename Value, typename... Resolved>
struct RemoteTask<FunctionTarget<F>, Value, Resolved...>
    : RemoteBySignature<RemoteSignature<F>, Value, Resolved...> {
  static std::string name(const FunctionTarget<F>& t) { return registered_name(function_key(t.f)); }
};
template <typename T, typename M, typename Value, typename... Resolved>
struct RemoteTask<MethodTarget<T, M>, Value, Resolved...>
    : RemoteBySignature<RemoteMethodSignature<M>, Value, Resolved...> {
  static std::string name(const MethodTarget<T, M>& t) {
    return registered_name(function_key(t.method));
  }
};
template <typename T, typename... Resolved>
struct RemoteTask<ConstructTarget<T>, void, Resolved...> {
  using Params = std::tuple<std::decay_t<Resolved>...>;
  static constexpr bool value =
      (kWireValue<std::decay_t<Resolved>> && ...) && std::is_constructible_v<T, Resolved...>;
  static std::string name(const ConstructTarget<T>&) {
    if constexpr (value) {
      (void)RemoteCtor<T, Params>::registered;  // (odr-use: registered in every process)
      return RemoteCtor<T, Params>::key();
    } else {
      return {};
    }
  }
};

// ---- values that live on other nodes (cluster mode) ----

template <typename X>
struct RefValue {
  using type = void;
};
template <typename T>
struct RefValue<ObjectRef<T>> {
  using type = T;
};


// ---- the record ----

// `Target` supplies the callable and the instance it is called on (NoInstance for functions);
// `Slots` holds the results.
template <int Tier, typename Target, typename Slots, typename... A>
class TaskImpl final : public TaskRecord {
 public:
  template <typename... U>
  TaskImpl(RuntimeCore* rt, TaskId id, ActorCore* actor, ExtrasPtr extras,
           Target target, Slots slots, U&&... args)
      : TaskRecord(rt, id, actor, std::move(extras)),
        target_(std::move(target)),
        slots_(std::move(slots)),
        args_(std::forward<U>(args)...) {
    slots_.set_producer(this);
  }

  // Registers every resolved argument as a dependency.
  void register_args() {
    size_t n = 0;
    std::apply([&](const auto&... a) { ((n += Arg<Tier, A>::count(a, runtime())), ...); }, args_);
    if (n == 0) return;
    if constexpr (kInlineDeps > 0) {
      use_deps(inline_deps_.data(), kInlineDeps + 1);  // (n <= kMaxDeps = kInlineDeps + 1)
    } else {
      reserve_deps(n);
    }
    std::apply([&](const auto&... a) { (Arg<Tier, A>::add(this, a), ...); }, args_);
  }

  std::exception_ptr run() noexcept override {
    try {
      // Results are returned by value: a callable that returns a reference to one of its
      // (resolved, possibly temporary) arguments must not leave a dangling reference.
      if constexpr (kBorrows) {
        slots_.run([&]() -> auto { return call_borrowing(std::index_sequence_for<A...>()); });
      } else {
        slots_.run([&]() -> auto {
          return std::apply(
              [&](const auto&... a) -> auto {
                // Resolved arguments live in this frame until the call returns.
                std::tuple<typename Arg<Tier, A>::type...> resolved{Arg<Tier, A>::resolve(a)...};
                return std::apply(
                    [&](auto&&... r) -> auto {
                      return target_.invoke(std::forward<decltype(r)>(r)...);
                    },
                    std::move(resolved));
              },
              args_);
        });
      }
      return nullptr;
    } catch (...) {
      return std::current_exception();
    }
  }
  void fail(const std::exception_ptr& error) noexcept override { slots_.fail(error); }
  bool cancel_requested() const noexcept override { return slots_.cancel_requested(); }
  std::string function_name() const override {
    if (extras() && !extras()->name.empty()) return extras()->name;
    return target_.name();
  }
  int preferred_gpu() const noexcept override {
    return std::apply([](const A&... a) { return preferred_gpu_of(a...); }, args_);
  }
  // The call as stored (for code that knows the record's type, e.g. a variant call's planner).
  const std::tuple<A...>& args() const noexcept { return args_; }
  // Whether calls of this type can be encoded for another node (encode_remote may still say no:
  // the function is not registered).
  static constexpr bool can_run_elsewhere() noexcept { return kRemote; }
  const Target& target() const noexcept { return target_; }

  bool encode_remote(std::string* function, std::string* args,
                     ArgTransfer* transfer) const override {
    if constexpr (kRemote) {
      *function = Remote::name(target_);
      if (function->empty()) return false;  // not registered: runs here
      // The parameter tuple, field by field (as Serializer<std::tuple> writes it), so that an
      // argument may be left out for the transfer to carry.
      encode_args(args, transfer, std::index_sequence_for<A...>());
      return true;
    } else {
      return false;
    }
  }
  void complete_remote(std::string_view payload) override {
    if constexpr (kRemote && !std::is_same_v<Slots, CreationResult>) {
      using Value = typename Slots::Value;
      if constexpr (std::is_void_v<Value>) {
        if (!payload.empty()) throw_malformed("a void result carried bytes");
        slots_.run([] {});
      } else {
        slots_.run([&] { return from_bytes<Value>(payload); });
      }
    }
  }
  RemoteMaterializer remote_materializer() const noexcept override {
    if constexpr (kRemoteValue) {
      return &TypedEntry<typename Slots::Value>::materialize;
    } else {
      return nullptr;
    }
  }
  bool complete_remote_value(std::shared_ptr<RemoteValue> where) noexcept override {
    if constexpr (kRemoteValue) {
      return slots_.entry->complete_remote(std::move(where));
    } else {
      return false;
    }
  }
  size_t remote_elements() const noexcept override {
    if constexpr (kRemoteElements) {
      return std::tuple_size_v<typename Slots::Value>;
    } else {
      return 0;
    }
  }
  RemoteMaterializer remote_element_materializer(size_t i) const noexcept override {
    if constexpr (kRemoteElements) {
      return Slots::materializer(i);
    } else {
      return nullptr;
    }
  }
  void complete_remote_elements(std::string_view inline_bytes, const uint64_t* sizes,
                                std::shared_ptr<RemoteValue>* where) override {
    if constexpr (kRemoteElements) slots_.complete_elements(inline_bytes, sizes, where);
  }

 private:
  using Remote = RemoteTask<Target, typename Slots::Value, typename Arg<Tier, A>::type...>;
  static constexpr bool kRemote = Remote::value;
  // A result that may stay on the node that computed it: one value (a GPU tensor too: it is
  // downloaded there once, and its bytes stay there until a reader elsewhere pulls them).
  static constexpr bool kRemoteValue = [] {
    if constexpr (kRemote && !std::is_same_v<Slots, CreationResult>) {
      using Value = typename Slots::Value;
      if constexpr (std::is_void_v<Value>) {
        return false;
      } else {
        return std::is_same_v<Slots, SingleResult<Value>>;
      }
    } else {
      return false;
    }
  }();
  // num_returns results, each of which may stay on the node that computed it.
  static constexpr bool kRemoteElements = [] {
    if constexpr (kRemote && !std::is_same_v<Slots, CreationResult>) {
      using Value = typename Slots::Value;
      if constexpr (std::is_void_v<Value>) {
        return false;
      } else if constexpr (is_tuple_like_v<Value>) {
        return std::is_same_v<Slots, MultiResult<Value, std::tuple_size_v<Value>>>;
      } else {
        return false;
      }
    } else {
      return false;
    }
  }();

  // About how many bytes a done entry's value takes on the wire (0 when it is not here): its
  // ObjectSize, or for a value with a place (a GPU tensor, whose store accounting leaves device
  // memory out) the bytes of its elements wherever they are.
  template <typename T>
  static size_t wire_estimate(ObjectEntry* e) {
    if (e->state() != ObjState::kReady) return 0;
    const T& v = value_of<T>(e);
    size_t bytes = ObjectSize<T>::bytes(v);
    if constexpr (requires { Placement<T>::where(v); }) {
      bytes = std::max(bytes, static_cast<size_t>(Placement<T>::where(v).bytes));
    }
    return bytes;
  }

  // std::vector<ObjectRef<T>> passed for a std::vector<T> parameter whose elements are written
  // one by one (not as one raw block).
  template <typename X, typename P>
  struct is_ref_vector_of : std::false_type {};
  template <typename T>
  struct is_ref_vector_of<std::vector<ObjectRef<T>>, std::vector<T>>
      : std::bool_constant<!Serializer<std::vector<T>>::kRaw> {};

  template <size_t... I>
  void encode_args(std::string* args, ArgTransfer* transfer, std::index_sequence<I...>) const {
    using Params = typename Remote::Params;
    Writer w(args);
    (void)w;
    (void)transfer;  // (unused when there are no arguments)
    (encode_arg<std::tuple_element_t<I, Params>, A>(w, args, transfer, std::get<I>(args_)), ...);
  }
  template <typename P, typename X>
  static void encode_arg(Writer& w, std::string* args, ArgTransfer* transfer, const X& a) {
    if constexpr (is_object_ref_v<X>) {
      using T = typename RefValue<X>::type;
      // (A value with a place, e.g. a GPU tensor, too: its bytes are its host image, and the
      // node that reads them places it where its task runs.)
      if constexpr (std::is_same_v<T, P>) {
        ObjectEntry* e = a.entry();
        if (transfer != nullptr &&
            transfer->by_reference(e, &serialize_entry_value<T>, wire_estimate<T>(e),
                                   args->size())) {
          return;
        }
      }
    }
    if constexpr (is_ref_vector_of<X, P>::value) {
      // A vector of refs read as the vector of their values: each element the transfer takes
      // travels by reference like a lone ref (a value on another node is never fetched here,
      // which may be the network thread), the others inline. Element by element, as
      // Serializer<std::vector<T>> writes a vector of non-raw elements.
      using T = typename P::value_type;
      if (transfer != nullptr) {
        w.u32(static_cast<uint32_t>(a.size()));
        for (const auto& r : a) {
          ObjectEntry* e = r.entry();
          if (transfer->by_reference(e, &serialize_entry_value<T>, wire_estimate<T>(e),
                                     args->size())) {
            continue;
          }
          w.put(static_cast<const T&>(read_value<T>(e)));
        }
        return;
      }
    }
    decltype(auto) resolved = Arg<Tier, X>::resolve(a);
    if constexpr (std::is_same_v<std::decay_t<decltype(resolved)>, P>) {
      w.put(resolved);  // (no copy of the value)
    } else {
      const P p(resolved);
      w.put(p);
    }
  }

  // Whether the call takes its values with a place as const references (Borrow, above).
  static constexpr bool kBorrows = (Borrow<Tier, A>::kPlaced || ...) &&
                                   TargetAccepts<Target, typename Borrow<Tier, A>::type...>::value;

  template <size_t... I>
  auto call_borrowing(std::index_sequence<I...>) {
    // Placed copies, where one is needed, live in this frame until the call returns.
    std::tuple<typename Borrow<Tier, A>::Holder...> holders;
    std::tuple<typename Borrow<Tier, A>::type...> resolved{
        Borrow<Tier, A>::resolve(std::get<I>(args_), std::get<I>(holders))...};
    return std::apply(
        [&](auto&&... r) -> auto { return target_.invoke(std::forward<decltype(r)>(r)...); },
        std::move(resolved));
  }

  // At most how many dependencies the arguments add (-1: unbounded, a vector of refs), and the
  // DepNodes kept here beyond the record's own one (none when unbounded or above 8: those are
  // allocated when registered).
  static constexpr int kMaxDeps = [] {
    int n = 0;
    bool bounded = true;
    ((Arg<Tier, A>::kMaxDeps < 0 ? (bounded = false) : (n += Arg<Tier, A>::kMaxDeps, true)), ...);
    return bounded ? n : -1;
  }();
  static constexpr size_t kInlineDeps =
      kMaxDeps > 1 && kMaxDeps <= 8 ? static_cast<size_t>(kMaxDeps - 1) : 0;
  struct NoDeps {
    DepNode* data() noexcept { return nullptr; }
  };

  Target target_;
  Slots slots_;
  std::tuple<A...> args_;
  [[no_unique_address]] std::conditional_t<(kInlineDeps > 0), std::array<DepNode, kInlineDeps>,
                                           NoDeps> inline_deps_;
};

// A plain callable.
template <typename F>
struct FunctionTarget {
  F f;
  template <typename... X>
  decltype(auto) invoke(X&&... x) {
    return std::invoke(f, std::forward<X>(x)...);
  }
  std::string name() const { return callable_name(f); }
};

}  // namespace prism::internal
