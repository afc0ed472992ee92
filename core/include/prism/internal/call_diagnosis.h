// prism/internal/call_diagnosis.h — compile errors that name the likely cause.
//
// When remote() cannot call the callable with the given arguments, fail() is instantiated instead
// of the call: one static_assert whose message says what is most likely wrong (in this order):
// a wrong number of arguments (default arguments do not apply through a function pointer), a
// parameter taken by non-const reference, a move-only parameter taken by value, else the general
// rule. The caller instantiates nothing else (if constexpr), so the message is not buried under
// a cascade of errors from the code that would have run the call.
//
// Not for users.
#pragma once

#include <cstddef>
#include <tuple>
#include <type_traits>

namespace prism::internal {

template <typename...>
inline constexpr bool dependent_false = false;

template <typename... P>
struct ParamList {
  static constexpr size_t size = sizeof...(P);
  // Some parameter is a non-const lvalue reference (Prism passes const A&: it cannot bind).
  static constexpr bool has_mutable_ref =
      (... || (std::is_lvalue_reference_v<P> && !std::is_const_v<std::remove_reference_t<P>>));
  // Some parameter taken by value has a type that cannot be copied (Prism passes const A&).
  static constexpr bool has_move_only_value =
      (... || (!std::is_reference_v<P> && std::is_move_constructible_v<P> &&
               !std::is_copy_constructible_v<P>));
};

// The parameters of a callable with one signature (functions, member functions, lambdas and
// functors with one non-template operator()); `known` is false for the rest.
template <typename F, typename = void>
struct Signature {
  static constexpr bool known = false;
  using params = ParamList<>;
};
template <typename R, typename... P>
struct Signature<R (*)(P...)> {
  static constexpr bool known = true;
  using params = ParamList<P...>;
};
template <typename R, typename... P>
struct Signature<R (*)(P...) noexcept> : Signature<R (*)(P...)> {};
template <typename R, typename C, typename... P>
struct Signature<R (C::*)(P...)> : Signature<R (*)(P...)> {};
template <typename R, typename C, typename... P>
struct Signature<R (C::*)(P...) const> : Signature<R (*)(P...)> {};
template <typename R, typename C, typename... P>
struct Signature<R (C::*)(P...) noexcept> : Signature<R (*)(P...)> {};
template <typename R, typename C, typename... P>
struct Signature<R (C::*)(P...) const noexcept> : Signature<R (*)(P...)> {};
template <typename F>
struct Signature<F, std::void_t<decltype(&F::operator())>> : Signature<decltype(&F::operator())> {};

// Instantiated only when the call is impossible: exactly one static_assert fires.
template <typename F, typename... A>
struct CallDiagnosis {
  using Sig = Signature<std::decay_t<F>>;
  using P = typename Sig::params;
  static void fail() {
    if constexpr (Sig::known && P::size != sizeof...(A)) {
      static_assert(dependent_false<F>,
                    "remote(args...): the callable takes a different number of arguments than "
                    "were given. Default arguments do not apply when a function is called through "
                    "a pointer, as Prism does: pass every argument.");
    } else if constexpr (Sig::known && P::has_mutable_ref) {
      static_assert(dependent_false<F>,
                    "remote(args...): a parameter is a non-const reference (T&). Prism stores the "
                    "arguments in the task and passes them as const T& (the caller's variable is "
                    "never written): take the parameter by value or by const T&, and return what "
                    "the task computes.");
    } else if constexpr (Sig::known && P::has_move_only_value) {
      static_assert(dependent_false<F>,
                    "remote(args...): a parameter of a move-only type (e.g. std::unique_ptr) is "
                    "taken by value. Prism stores the arguments in the task and passes them as "
                    "const T& (a retry must see them again): take it by const T&, or prism::put() "
                    "the value and pass the ObjectRef.");
    } else {
      static_assert(dependent_false<F>,
                    "remote(args...): the callable cannot be called with these arguments. An "
                    "ObjectRef<T> argument is passed as const T&; a std::vector<ObjectRef<T>> as "
                    "std::vector<T>, std::vector<const T*> or the refs; other arguments as const "
                    "A&. Check the argument types and their order. (An overloaded function name "
                    "does not reach here: the compiler reports an 'unresolved overloaded function "
                    "type'; pick one overload with static_cast<R (*)(Args...)>(f).)");
    }
  }
};

// True if T is a tuple-like type (std::tuple, std::pair, std::array): num_returns<N>() splits it.
template <typename T, typename = void>
inline constexpr bool is_tuple_like_v = false;
template <typename T>
inline constexpr bool is_tuple_like_v<T, std::void_t<decltype(std::tuple_size<T>::value)>> = true;

}  // namespace prism::internal
