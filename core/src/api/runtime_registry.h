// The process's registry of live runtimes, behind RuntimeRef / RuntimePin (runtime_hooks.h).
//
// Each live runtime occupies a RuntimeSlot: {generation, core}. Slots are never freed (a freed
// slot is reused by a later runtime with another generation), so a RuntimeRef can always read its
// slot. Pinning stores the slot in one of the calling thread's hazard cells, fences, then reads
// the slot's generation: a match means the runtime is alive and stays so until the pin is
// released, because retiring a runtime first clears its generation, fences, and then waits until
// no hazard cell holds its slot. Whichever of the two stores comes first, the other side's load
// sees it: the pin fails, or the retirer waits for it. (Shutdown does the same with its stopping
// flag, which a pinned call reads after pinning.) The fences are asymmetric: a compiler barrier on
// the pin's side, a process-wide membarrier on the rare side (see runtime_registry.cc).
//
// Thread-safe.
#pragma once

#include <cstdint>

#include "prism/internal/runtime_hooks.h"

namespace prism::internal {

// A slot for a new runtime with generation `generation` (nonzero, unique in the process).
RuntimeRef register_runtime(RuntimeCore* core, uint64_t generation);
// Waits until no thread pins `ref`'s runtime (pins taken meanwhile included).
void wait_unpinned(RuntimeRef ref) noexcept;
// Makes every RuntimeRef of this runtime fail, waits for its pins, frees its slot for reuse.
void retire_runtime(RuntimeRef ref) noexcept;
// The runtime that prism::init() started (empty: none).
void set_global_runtime(RuntimeRef ref) noexcept;
// Pins the live runtime whose generation (owner id) is `owner`; empty if there is none.
RuntimePin try_pin_owner(uint64_t owner) noexcept;
// A generation: unique in the process, random across processes, never 0.
uint64_t new_generation() noexcept;

}  // namespace prism::internal
