// prism/internal/device_support.h — how the GPU module plugs into the core runtime.
//
// core knows nothing of CUDA. The gpu module (when linked into the program) installs one
// DeviceSupport during static initialization; a runtime started afterwards asks it how many
// devices exist and how much memory each has, and brackets every task run with a GPU granted
// by enter()/leave() on the thread that runs it. Without it, GPUs are plain logical resources.
//
// Not for users. Thread-safe: implementations must allow calls from any thread.
#pragma once

#include <cstdint>
#include <string>

namespace prism::internal {

class DeviceSupport {
 public:
  // Real devices found (0: none; declared GPUs are then logical, served by the host backend).
  virtual int device_count() = 0;
  // Memory of real device `device` in bytes (only called for device < device_count()).
  virtual int64_t device_memory(int device) = 0;
  // One line for the log: the backend and why it was chosen.
  virtual std::string describe() = 0;
  // The calling thread starts / stops running a task granted `device` (first granted GPU), or,
  // with device < 0, a task without GPUs inside a GPU task's run (a child task run inline by its
  // blocked parent): its device is the host until leave(). Calls nest; leave() restores what was
  // current before.
  virtual void enter(int device) noexcept = 0;
  virtual void leave() noexcept = 0;

 protected:
  ~DeviceSupport() = default;
};

// Installs the GPU module's support (the last call wins; null removes it). Runtimes read it
// when they start.
void install_device_support(DeviceSupport* support) noexcept;
DeviceSupport* device_support() noexcept;

}  // namespace prism::internal
