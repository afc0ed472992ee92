// The process-wide function registry behind PRISM_REMOTE / PRISM_ACTOR / register_function.
//
// Thread-safe.
#pragma once

#include <string>
#include <vector>

#include "prism/internal/runtime_hooks.h"

namespace prism::internal {

// The function registered under `name`: its key and invoker (null if it cannot run on another
// node). False if no function has that name.
bool find_registered(const std::string& name, FunctionKey* key, RemoteInvoker* invoker,
                     ActorMethodInvoker* method_invoker = nullptr);
// The constructor invoker registered under `key` (prism/actor.h), or null.
ActorCtorInvoker find_actor_ctor(const std::string& key);
// "name mangled-type" of every registered function, sorted by name: what a cluster's nodes
// compare at join (the same executable registers the same functions with the same types).
std::vector<std::string> registered_signatures();

// Throws prism::Error(kInvalidArgument) listing names that static registration found taken by
// two different callables.
void check_registry_conflicts();

}  // namespace prism::internal
