// The process-wide function registry behind PRISM_REMOTE / PRISM_ACTOR / register_function.
//
// Thread-safe.
#pragma once

namespace prism::internal {

// Throws prism::Error(kInvalidArgument) listing names that static registration found taken by
// two different callables.
void check_registry_conflicts();

}  // namespace prism::internal
