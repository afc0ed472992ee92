// The global runtime behind prism::init() / prism::shutdown().
//
// Thread-safe.
#pragma once

namespace prism::internal {

class RuntimeCore;

// The global runtime's core, or null when prism::init() has not been called.
RuntimeCore* global_core() noexcept;

}  // namespace prism::internal
