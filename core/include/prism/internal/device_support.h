// prism/internal/device_support.h — how the GPU module plugs into the core runtime.
//
// core knows nothing of CUDA. The gpu module (when linked into the program) installs one
// DeviceSupport during static initialization; a runtime started afterwards asks it how many
// devices exist and how much memory each has, and brackets every task run with a GPU granted
// by enter()/leave() on the thread that runs it. Without it, GPUs are plain logical resources.
//
// Not for users. Thread-safe: implementations must allow calls from any thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace prism::internal {

class DeviceSupport {
 public:
  // Real devices found (0: none; declared GPUs are then logical, served by the host backend).
  virtual int device_count() = 0;
  // Memory of real device `device` in bytes (only called for device < device_count()).
  virtual int64_t device_memory(int device) = 0;
  // One line for the log: the backend and why it was chosen.
  virtual std::string describe() = 0;
  // The calling thread starts / stops running a task granted `devices` (`count` GPU indices;
  // the first is made current), or, with count == 0, a task without GPUs inside a GPU task's run
  // (a child task run inline by its blocked parent): its device is the host until leave().
  // `owner` names whose streams the task queues its work on: 0 for the thread's own, else an
  // actor's number (new_device_owner()), whose streams all its calls share so that one call's
  // raw kernels are ordered before the next call's. Calls nest: enter() writes what it replaced
  // into *saved, which the caller keeps and hands to the matching leave() (the thread keeps no
  // stack of its own). Returns false, with *why set, if a granted device has failed for good:
  // the task must not run (leave() is still called).
  // With saved->may_keep (set by the caller: the run is a lease's task, inside no other task's
  // run), if the thread runs with these devices and owner already (the lease's own enter() made
  // them so: JobRunner::lease_begin), enter() replaces nothing (saved->kept; leave() then
  // restores nothing: the lease's leave() does) and only checks them: failed devices, and on
  // CUDA that the first is still current (a task before may have made another one current).
  // A run inside another task's (a child run inline, a helper's) never keeps: what it changes,
  // the CUDA current device included, is restored for the task around it.
  struct Saved {
    bool may_keep = false;  // in: see above
    int device = -1;        // the thread's task device before (-1: the host)
    int cuda_device = -1;   // the backend's current device before, if enter() changed it
    uint64_t owner = 0;     // the stream owner before
    bool kept = false;      // nothing replaced (see above)
  };
  virtual bool enter(const int* devices, size_t count, uint64_t owner, Saved* saved,
                     std::string* why) noexcept = 0;
  virtual void leave(const Saved& saved) noexcept = 0;
  // A GPU task's run begins / ends on the calling thread (between enter() and leave()): the
  // backend names it for profilers (CUDA: an NVTX range, so Nsight Systems shows task names over
  // the device work they launched), and with `time_device` times the work it queues on its first
  // device's stream, for the timeline of runtime `owner` (collect_device_spans). Runs nest (a
  // child run inline); each begin has one end.
  virtual void task_begin(const char* name, uint64_t owner, bool time_device) noexcept = 0;
  // Whether task_begin() shows the name to a profiler (else it reads it only with
  // `time_device`, and the runtime passes "" instead of making the name for every run).
  virtual bool names_runs() const noexcept { return true; }
  virtual void task_end() noexcept = 0;
  // When timed runs' work ran on their device (host steady clock), once it has completed:
  // runtime `owner`'s, oldest first, each returned once.
  struct DeviceSpan {
    std::string name;
    int device = 0;
    std::chrono::steady_clock::time_point start;
    std::chrono::steady_clock::time_point end;
  };
  virtual void collect_device_spans(uint64_t owner, std::vector<DeviceSpan>* out) noexcept = 0;
  // Runtime `owner` stopped: its spans still pending are forgotten.
  virtual void drop_device_spans(uint64_t owner) noexcept = 0;
  // The actor numbered `owner` is gone: its streams may serve others.
  virtual void release_owner(uint64_t owner) noexcept = 0;
  // Waits until the work the running task queued on its device is done (nothing outside a GPU
  // task): a variant call's measured time then includes its kernels (prism/variants.h).
  virtual void synchronize_task() noexcept {}
  // Copies between the host and devices so far, and their bytes (for prism::stats()).
  virtual void copy_counts(uint64_t* copies, uint64_t* bytes) noexcept = 0;

 protected:
  ~DeviceSupport() = default;
};

// Installs the GPU module's support (the last call wins; null removes it). Runtimes read it
// when they start.
void install_device_support(DeviceSupport* support) noexcept;
DeviceSupport* device_support() noexcept;

// A number for an actor's device streams (DeviceSupport::enter's `owner`): never 0, unique in the
// process.
uint64_t new_device_owner() noexcept;

// Devices that failed for good (a sticky CUDA error such as an illegal address), as reported by
// the GPU module: schedulers stop granting them (ResourcePool::pick_gpus) wherever another device
// could serve the request. Bit d is device d (devices 64 and above are never marked).
void report_device_failure(int device) noexcept;
uint64_t failed_devices() noexcept;
// Clears the failure mask. For tests only.
void reset_device_failures_for_testing() noexcept;

// Ranks of a launcher that share a machine (DESIGN §2) split its GPUs: this process uses share
// `part` of `parts` of the CUDA devices it can see (those CUDA_VISIBLE_DEVICES leaves).
struct DeviceShare {
  int part = 0;
  int parts = 1;
};
// Set by the cluster module before the runtime starts. The GPU module takes the share once, when
// it first enumerates the devices; a share set after that cannot apply: returns false.
bool set_device_share(DeviceShare share) noexcept;
DeviceShare take_device_share() noexcept;
// Which of `visible` devices a share gets: [first, first + count). With at least as many devices
// as ranks, contiguous blocks, the first (visible % parts) ranks one device more (4 GPUs, 2
// ranks: 0-1 and 2-3; 3 GPUs, 2 ranks: 0-1 and 2); with fewer, device (part % visible) alone,
// shared with the ranks that get it too (2 GPUs, 4 ranks: 0, 1, 0, 1).
struct DeviceRange {
  int first = 0;
  int count = 0;
};
DeviceRange shared_devices(int visible, DeviceShare share) noexcept;

}  // namespace prism::internal
