// prism/internal/remote_call.h — running a registered function on another node.
//
// A plain function `R f(P...)` registered with PRISM_REMOTE (or register_function) can run on
// any node of a cluster when every decayed parameter type and R are serializable
// (prism/serialize.h) and default-constructible. Both sides use one format: the caller
// serializes std::tuple<std::decay_t<P>...> built from the task's resolved arguments; the callee
// (RemoteInvoker, stored in the registry beside the function's name) reads that tuple, calls f
// and serializes its result. Everything else (lambdas, functors, member functions, actor calls,
// non-serializable types) runs on the node that submitted it.
//
// Not for users.
#pragma once

#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "prism/internal/call_diagnosis.h"
#include "prism/internal/placement.h"
#include "prism/internal/runtime_hooks.h"
#include "prism/serialize.h"

namespace prism::internal {

template <typename T>
inline constexpr bool kWireValue =
    is_serializable_v<T> && std::is_default_constructible_v<T> && std::is_move_assignable_v<T>;

template <typename F>
struct RemoteSignature {
  using Result = void;
  using Params = std::tuple<>;
  static constexpr bool kCapable = false;
};
template <typename R, typename... P>
struct RemoteSignature<R (*)(P...)> {
  using Result = std::decay_t<R>;
  using Params = std::tuple<std::decay_t<P>...>;
  static constexpr bool kCapable =
      (std::is_void_v<Result> || kWireValue<Result>) && (kWireValue<std::decay_t<P>> && ...);
};
template <typename R, typename... P>
struct RemoteSignature<R (*)(P...) noexcept> : RemoteSignature<R (*)(P...)> {};

// Methods of actors (the instance is the actor's; the same rules for parameters and result).
template <typename M>
struct RemoteMethodSignature {
  using Class = void;
  using Result = void;
  using Params = std::tuple<>;
  static constexpr bool kCapable = false;
};
template <typename R, typename C, typename... P>
struct RemoteMethodSignature<R (C::*)(P...)> {
  using Class = C;
  using Result = std::decay_t<R>;
  using Params = std::tuple<std::decay_t<P>...>;
  static constexpr bool kCapable =
      (std::is_void_v<Result> || kWireValue<Result>) && (kWireValue<std::decay_t<P>> && ...);
};
template <typename R, typename C, typename... P>
struct RemoteMethodSignature<R (C::*)(P...) const> : RemoteMethodSignature<R (C::*)(P...)> {};
template <typename R, typename C, typename... P>
struct RemoteMethodSignature<R (C::*)(P...) noexcept> : RemoteMethodSignature<R (C::*)(P...)> {};
template <typename R, typename C, typename... P>
struct RemoteMethodSignature<R (C::*)(P...) const noexcept>
    : RemoteMethodSignature<R (C::*)(P...)> {};

// Callee side (a RemoteInvoker, runtime_hooks.h): reads the arguments of the function whose key
// is `key`, calls it and writes its result. Throws what the function throws, or
// prism::Error(kInvalidArgument) for malformed bytes.

// Large buffers around a call on a node. The next call of the same kind then decodes and encodes
// into memory that is already faulted in: first touch costs more than the copy itself here
// (PLATFORM.md).
//
// The call's decoded arguments: large vectors of trivially copyable elements (a by-value
// parameter moved out of them leaves nothing) go back to the buffer pool (buffer_pool.h).
template <typename Params>
void recycle_params(Params& params) noexcept {
  std::apply(
      [](auto&... p) {
        [[maybe_unused]] auto one = [](auto& v) {
          if constexpr (PoolableVector<std::decay_t<decltype(v)>>::value) BufferPool::offer(v);
        };
        (one(p), ...);
      },
      params);
}

// Node side of a num_returns call (the cluster link sets it on the thread that runs the
// invoker, for the invoker only): where a tuple-like result is written, each element into its
// own string, so that each may stay on the node as an object of its own. Null: one string.
std::vector<std::string>*& result_elements_sink() noexcept;

// Node side of a call whose large result stays on the node (the cluster link sets it, as the
// sink above, for one call of one result): a result whose type keeps live (placement.h:
// KeepsLive, a GPU tensor) and whose serialized form would be at least `min_bytes` is kept as
// it is: encode_result writes its stub and fills in the rest. The node keeps the value with
// the stub as the object's bytes, its own tasks read the value itself (DecodedSlot), and
// `write` makes the serialized form only for a reader elsewhere (a pull).
struct LiveResult {
  uint64_t min_bytes = 0;       // (set by the caller)
  std::shared_ptr<void> value;  // the result, as the task returned it (null: not kept live)
  const void* tag = nullptr;    // what `value` is, for its reader (Placement<R>::live_tag())
  uint64_t wire_bytes = 0;      // the size of its serialized form
  int device = -1;              // the GPU it is kept on (Placement<R>::where)
  // Writes the serialized form of `value` into `out` (the bytes a reader elsewhere decodes).
  void (*write)(const void* value, std::string* out) = nullptr;
  // The same into `out` (wire_bytes long), calling `written(n)` each time its first n bytes are
  // complete (a GPU tensor: after each downloaded chunk): they may be sent while the rest is
  // written.
  void (*write_into)(const void* value, char* out,
                     const std::function<void(uint64_t)>& written) = nullptr;
};
LiveResult*& live_result_sink() noexcept;

template <typename R, size_t... I>
void encode_elements(const R& r, std::vector<std::string>* elements, std::index_sequence<I...>) {
  elements->clear();
  (
      [&] {
        using E = std::decay_t<std::tuple_element_t<I, R>>;
        const E& e = std::get<I>(r);
        std::string s;
        const bool reserved = BufferPool::reserve_large(&s, ObjectSize<E>::bytes(e));
        Writer w(&s);
        w.put(e);
        if (reserved) BufferPool::fit_reserved(&s);
        elements->push_back(std::move(s));
      }(),
      ...);
}

// Writes the call's result `r` into `out`, which is first given room for it when it is large (a
// pooled buffer, or memory asked for in huge pages: BufferPool::reserve_large); then `r`'s
// buffer goes back to the pool as above. With `elements` (result_elements_sink) a tuple-like
// result is written there, element by element, and `out` stays empty.
//
// With `live` (live_result_sink) a result that keeps live is moved there and `out` gets its stub.
// (`estimate`: the serialized size, when known better than the value's size in memory.)
template <typename R>
void encode_value(const R& r, std::string* out, size_t estimate = 0) {
  out->clear();
  const bool reserved =
      BufferPool::reserve_large(out, estimate != 0 ? estimate : ObjectSize<R>::bytes(r));
  Writer w(out);
  w.put(r);
  if (reserved) BufferPool::fit_reserved(out);
}
template <typename R>
void encode_result(R& r, std::string* out, std::vector<std::string>* elements = nullptr,
                   LiveResult* live = nullptr) {
  out->clear();
  if constexpr (is_tuple_like_v<R>) {
    if (elements != nullptr) {
      encode_elements(r, elements, std::make_index_sequence<std::tuple_size_v<R>>());
      return;
    }
  }
  if constexpr (KeepsLive<R>) {
    if (live != nullptr && Placement<R>::keep_live(r)) {
      const uint64_t wire_bytes = Placement<R>::wire_bytes(r);
      if (wire_bytes >= live->min_bytes) {
        Writer w(out);
        Placement<R>::write_stub(w, r);
        live->tag = Placement<R>::live_tag();
        live->wire_bytes = wire_bytes;
        live->device = Placement<R>::where(r).device;
        live->write = [](const void* value, std::string* bytes) {
          const R& v = *static_cast<const R*>(value);
          encode_value(v, bytes, Placement<R>::wire_bytes(v));
        };
        live->write_into = [](const void* value, char* bytes,
                              const std::function<void(uint64_t)>& written) {
          Placement<R>::write_into(*static_cast<const R*>(value), bytes, written);
        };
        live->value = std::make_shared<R>(std::move(r));
        return;
      }
    }
  }
  encode_value(static_cast<const R&>(r), out);
  if constexpr (PoolableVector<R>::value) BufferPool::offer(r);
}

template <typename F>
void invoke_remote(const FunctionKey& key, std::string_view args, std::string* result) {
  using Sig = RemoteSignature<F>;
  F f;
  static_assert(sizeof(F) <= sizeof(key.bytes));
  std::memcpy(&f, key.bytes, sizeof(F));
  // (Taken for this call's result only, before anything of the user's runs: the arguments'
  // deserializers and the body may run other calls on this thread.)
  std::vector<std::string>* const elements = std::exchange(result_elements_sink(), nullptr);
  LiveResult* const live = std::exchange(live_result_sink(), nullptr);
  // The caller's RefScope (object_entry.h), if any, reads the arguments and writes the result;
  // the body runs outside it (its own serialization is its own business).
  typename Sig::Params params = from_bytes<typename Sig::Params>(args);
  result->clear();
  if constexpr (std::is_void_v<typename Sig::Result>) {
    RefScopeGuard body(nullptr);
    std::apply(f, std::move(params));
    recycle_params(params);
  } else {
    auto r = [&]() -> typename Sig::Result {
      RefScopeGuard body(nullptr);
      return std::apply(f, std::move(params));
    }();
    // (Encoded before the arguments are recycled: a user's serializer may read them.)
    encode_result(r, result, elements, live);
    recycle_params(params);
  }
}

// The invoker to register for `f`, or null when f cannot run on another node.
template <typename F>
RemoteInvoker remote_invoker(const F&) noexcept {
  if constexpr (RemoteSignature<F>::kCapable) {
    return &invoke_remote<F>;
  } else {
    return nullptr;
  }
}

}  // namespace prism::internal
