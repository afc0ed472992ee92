// prism/registry.h — registering remote functions and actor methods by name.
//
//   int add(int a, int b) { return a + b; }
//   PRISM_REMOTE(add);                                // at namespace scope, once per program
//   PRISM_ACTOR(Counter, &Counter::increment, &Counter::read);
//
// Names identify functions across processes (cluster mode: the workers are the same executable
// and find the code by name) and make error messages readable. In embedded mode an unregistered
// callable works too. Two different callables under one name are an error: reported by init()
// for the macros (static registration cannot throw), at once by register_function().
//
// Thread-safe: registration may happen from any thread.
#pragma once

#include <cstddef>
#include <string>
#include <type_traits>

#include <typeinfo>

#include "prism/internal/remote_call.h"
#include "prism/internal/runtime_hooks.h"

namespace prism {

// Registers `f` (a function pointer or member function pointer) under `name`. Throws
// prism::Error(kInvalidArgument) if another callable already has that name.
template <typename F>
void register_function(const std::string& name, F f) {
  static_assert(std::is_pointer_v<F> || std::is_member_function_pointer_v<F>,
                "register_function takes a function or member function pointer");
  internal::register_function(name, internal::function_key(f), /*throw_on_conflict=*/true,
                              internal::remote_invoker(f), typeid(F).name());
}

namespace internal {

// Splits "a, b, &T::c" into names ("a", "b", "T::c") and registers keys[i] under name i, with
// its invoker (null: it runs only where it is submitted) and its type's mangled name.
bool register_static(const char* names, const FunctionKey* keys, const RemoteInvoker* invokers,
                     const char* const* types, size_t count,
                     const ActorMethodInvoker* method_invokers = nullptr) noexcept;

// PRISM_ACTOR's registration (defined in prism/actor.h, which a program using actors includes).
template <typename Type, typename... M>
bool register_actor(const char* names, M... methods) noexcept;

template <typename... F>
bool register_remote(const char* names, F... fs) noexcept {
  const FunctionKey keys[] = {function_key(fs)...};
  const RemoteInvoker invokers[] = {remote_invoker(fs)...};
  const char* const types[] = {typeid(F).name()...};
  return register_static(names, keys, invokers, types, sizeof...(F));
}

}  // namespace internal
}  // namespace prism

#define PRISM_INTERNAL_CAT2(a, b) a##b
#define PRISM_INTERNAL_CAT(a, b) PRISM_INTERNAL_CAT2(a, b)

// Registers functions under their own names.
#define PRISM_REMOTE(...)                                                     \
  [[maybe_unused]] static const bool PRISM_INTERNAL_CAT(prism_remote_, __LINE__) = \
      ::prism::internal::register_remote(#__VA_ARGS__, __VA_ARGS__)

// Registers an actor type's methods under "Type::method" (with what runs them for an actor on
// another node: prism/actor.h).
#define PRISM_ACTOR(Type, ...)                                                \
  [[maybe_unused]] static const bool PRISM_INTERNAL_CAT(prism_actor_, __LINE__) = \
      ::prism::internal::register_actor<Type>(#__VA_ARGS__ __VA_OPT__(, ) __VA_ARGS__)
