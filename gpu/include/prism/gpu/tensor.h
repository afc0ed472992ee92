// prism/gpu/tensor.h — a typed, shaped buffer on the host or on one GPU: a first-class task
// argument and result.
//
//   prism::gpu::Tensor make(int n) {                       // task with .num_gpus(1)
//     auto t = prism::gpu::Tensor::empty(prism::gpu::DType::kFloat32, {n, n});   // on its GPU
//     fill_kernel(t, prism::gpu::current_stream());
//     return t;                                            // stays on that GPU
//   }
//   auto a = prism::task(make).num_gpus(1).remote(1024);
//   auto b = prism::task(step).num_gpus(1).remote(a);      // same GPU: handed over, no copy
//   std::vector<float> v = prism::get(a).to_vector<float>();  // host copy, made once
//
// A Tensor is a handle (like a shared_ptr) to immutable-once-shared storage: copying it never
// copies data. Elements are contiguous in row-major (C) order.
//
// Stream order: a tensor written by a GPU task is complete when the work its task queued on its
// stream is done. Prism records an event there when the task returns the tensor, and every
// reader orders itself after that event: a GPU task on the same device makes its own stream
// wait for the event (no host blocking, no device-wide synchronization); another device gets a
// peer copy; the host (a CPU task, or get() outside tasks) gets a host copy. Copies are made
// once per destination and cached with the storage, and counted in copy_stats().
//
// What a task receives for a Tensor argument (an ObjectRef<Tensor>, or a Tensor passed by value)
// depends on where it runs:
// a task granted GPU k gets the tensor on device k, any other task gets it on the host. Code
// that needs another placement calls to(device) itself.
//
// Thread-safe: handles may be copied and read from any thread; writing through data() is for
// the task that created the tensor, before it returns or shares it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "prism/gpu/device.h"
#include "prism/gpu/stream.h"
#include "prism/internal/object_entry.h"
#include "prism/internal/placement.h"
#include "prism/serialize.h"

namespace prism::gpu {

enum class DType : uint8_t { kUInt8, kInt32, kInt64, kFloat32, kFloat64 };

size_t dtype_size(DType t) noexcept;
const char* dtype_name(DType t) noexcept;

template <typename T>
constexpr DType dtype_of() noexcept {
  if constexpr (std::is_same_v<T, uint8_t>) return DType::kUInt8;
  else if constexpr (std::is_same_v<T, int32_t>) return DType::kInt32;
  else if constexpr (std::is_same_v<T, int64_t>) return DType::kInt64;
  else if constexpr (std::is_same_v<T, float>) return DType::kFloat32;
  else if constexpr (std::is_same_v<T, double>) return DType::kFloat64;
  else static_assert(sizeof(T) == 0, "Tensor elements are uint8_t, int32_t, int64_t, float or double");
}

class Tensor;
namespace internal {
class Storage;
// The storage behind a tensor (null if undefined). Not for users: tests of the free order.
Storage* storage_of(const Tensor& t) noexcept;
}

// Process-wide copy counters (every Prism runtime of the process), for tests and the stats.
// Device copies (uploads, downloads, peer copies) and, apart from them, the tensors that crossed
// between this process and another node (cluster mode). A tensor read on another node's GPU
// counts there as a network receive and an upload; its sender counts a network send (and a
// download if the tensor was on one of its GPUs and had no host copy yet).
struct CopyStats {
  uint64_t host_to_device = 0;
  uint64_t device_to_host = 0;
  uint64_t device_to_device = 0;  // between two GPUs of the node (peer copies)
  uint64_t bytes = 0;             // of those device copies
  // Tensors serialized for other nodes (a tensor sent again, e.g. with a retried call, counts
  // again; so does one written to a spill file, or one a node keeps on a GPU made host bytes
  // under that GPU's memory pressure) and tensors built from bytes that came from
  // another node (or a spill file); the tasks of a node that read one object share one.
  uint64_t network_sends = 0;
  uint64_t network_receives = 0;
  uint64_t network_bytes = 0;     // their elements, both ways
  uint64_t total() const noexcept { return host_to_device + device_to_host + device_to_device; }
  // The counts since `before` (an earlier copy_stats()).
  CopyStats operator-(const CopyStats& before) const noexcept {
    return {host_to_device - before.host_to_device,     device_to_host - before.device_to_host,
            device_to_device - before.device_to_device, bytes - before.bytes,
            network_sends - before.network_sends,       network_receives - before.network_receives,
            network_bytes - before.network_bytes};
  }
};
CopyStats copy_stats() noexcept;

class Tensor {
 public:
  Tensor() = default;  // empty: numel() == 0, no storage

  // Uninitialized contents on `device` (default: the running task's GPU, else the host).
  // Device memory comes from the device's pool, stream-ordered on current_stream().
  static Tensor empty(DType dtype, std::vector<int64_t> shape, Device device = current_device());
  static Tensor zeros(DType dtype, std::vector<int64_t> shape, Device device = current_device());
  // A copy of `count` host elements at `data`, shaped `shape` (numel must equal count).
  template <typename T>
  static Tensor from_host(const T* data, size_t count, std::vector<int64_t> shape,
                          Device device = current_device()) {
    return from_host_bytes(dtype_of<T>(), data, count * sizeof(T), std::move(shape), device);
  }
  template <typename T>
  static Tensor from_vector(const std::vector<T>& v, std::vector<int64_t> shape,
                            Device device = current_device()) {
    return from_host(v.data(), v.size(), std::move(shape), device);
  }
  static Tensor from_host_bytes(DType dtype, const void* data, size_t bytes,
                                std::vector<int64_t> shape, Device device);

  bool defined() const noexcept { return static_cast<bool>(storage_); }
  DType dtype() const noexcept { return dtype_; }
  const std::vector<int64_t>& shape() const noexcept;
  int64_t dim(size_t i) const { return shape().at(i); }
  int64_t numel() const noexcept;
  size_t nbytes() const noexcept { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  Device device() const noexcept;

  // The elements: a device pointer for a GPU tensor (use it on a stream of that device), a host
  // pointer for a host tensor. Throws prism::Error if T is not the element type.
  template <typename T>
  T* data() const {
    check_type(dtype_of<T>());
    return static_cast<T*>(raw_data());
  }
  void* raw_data() const noexcept;

  // The same tensor with another shape of the same number of elements (no copy).
  Tensor reshape(std::vector<int64_t> shape) const;

  // This tensor on `device`: itself if it is there (the caller's stream then waits for it),
  // else a copy (upload, peer copy or download), made once and cached.
  Tensor to(Device device) const;
  Tensor to_host() const { return to(Device::host()); }
  // The elements on the host, in order (through the cached host copy for GPU tensors).
  template <typename T>
  std::vector<T> to_vector() const {
    check_type(dtype_of<T>());
    Tensor h = to_host();
    const T* p = static_cast<const T*>(h.raw_data());
    return std::vector<T>(p, p + numel());
  }

  // Stream order, for code that writes tensors with its own kernels:
  // the contents are complete once the work queued on `stream` so far is done.
  void record(Stream stream) const;
  // Makes `stream` wait until the contents are complete (does not block the host).
  void wait_on(Stream stream) const;
  // Blocks the calling thread until the contents are complete.
  void synchronize() const;
  // The work queued on `stream` so far uses this tensor's memory: Prism does not free and reuse
  // it before that work has run. Needed only for streams of your own (Prism's streams are
  // tracked when they wait_on() the tensor); call it after queuing the last such work.
  void record_use(Stream stream) const;

  // Two handles of one storage (same memory).
  bool shares_storage(const Tensor& other) const noexcept { return storage_ == other.storage_; }
  std::string to_string() const;  // "Tensor(float32, [2, 3], gpu:0)"

 private:
  void check_type(DType t) const;
  static const std::vector<int64_t>& no_shape() noexcept;
  friend internal::Storage* internal::storage_of(const Tensor& t) noexcept;

  std::shared_ptr<internal::Storage> storage_;
  // The shape given by reshape(); null: the shape the storage was made for (kept with it, and
  // with its copies on other devices), so that a copy of a tensor handle is one reference count
  // and handing a tensor from task to task allocates nothing. Never changed once made.
  std::shared_ptr<const std::vector<int64_t>> shape_;
  DType dtype_ = DType::kFloat32;
};

namespace internal {
// Called by Prism when a task returns `t` (records its ready event) and when a task or get()
// reads it (places it where the reader runs). Not for users.
void on_produced(const Tensor& t);
Tensor for_reader(const Tensor& t);
// Whether a reader here may use `t` itself, as for_reader would give it (the same storage,
// nothing to order): on the reader's device, and on a GPU written last on the reader's stream.
bool reads_in_place(const Tensor& t) noexcept;
prism::internal::DataWhere where(const Tensor& t) noexcept;
// Makes sure this program's runtimes use the GPU module (see prism/internal/placement.h).
bool link_gpu_module() noexcept;
// Cluster mode (prism::Serializer<Tensor> below): a tensor's dtype, shape and elements, read
// from device memory through one host copy.
void write_tensor(Writer& w, const Tensor& t);
void read_tensor(Reader& r, Tensor* t);
// A large result kept on its node's GPU (prism/internal/placement.h, KeepsLive): only a tensor
// on a GPU is; its stub is the header of write_tensor's form (flag 2, no elements).
bool keep_live(const Tensor& t);
uint64_t wire_bytes(const Tensor& t) noexcept;
void write_stub(Writer& w, const Tensor& t);
const void* live_tag() noexcept;
// write_tensor's form into `out` (wire_bytes(t) long), reporting each prefix written (after
// the header, then after each downloaded chunk).
void write_into(const Tensor& t, char* out, const std::function<void(uint64_t)>& written);
inline const bool kGpuModuleLinked = link_gpu_module();
}  // namespace internal

}  // namespace prism::gpu

// Object store accounting: a host tensor's bytes count against the node's store; device memory
// is the GPU's (reserve it with .gpu_memory(bytes)).
template <>
struct prism::ObjectSize<prism::gpu::Tensor> {
  static size_t bytes(const prism::gpu::Tensor& t) {
    return sizeof(t) + (t.device().is_host() ? t.nbytes() : 0);
  }
};

template <>
struct prism::internal::Placement<prism::gpu::Tensor> {
  static constexpr bool kCustom = true;
  static void on_produced(const prism::gpu::Tensor& t) { prism::gpu::internal::on_produced(t); }
  static prism::gpu::Tensor for_reader(const prism::gpu::Tensor& t) {
    return prism::gpu::internal::for_reader(t);
  }
  static bool reads_in_place(const prism::gpu::Tensor& t) noexcept {
    return prism::gpu::internal::reads_in_place(t);
  }
  // Where its elements are (a heterogeneous task's planner counts what a variant would copy).
  static prism::internal::DataWhere where(const prism::gpu::Tensor& t) {
    return prism::gpu::internal::where(t);
  }
  // Cluster mode: a GPU task's large tensor result stays on its node's GPU, as it is; the
  // node's tasks read it there, and it is serialized (downloaded) only for a reader elsewhere.
  static constexpr bool kKeepsLive = true;
  static bool keep_live(const prism::gpu::Tensor& t) { return prism::gpu::internal::keep_live(t); }
  static uint64_t wire_bytes(const prism::gpu::Tensor& t) {
    return prism::gpu::internal::wire_bytes(t);
  }
  static void write_stub(prism::Writer& w, const prism::gpu::Tensor& t) {
    prism::gpu::internal::write_stub(w, t);
  }
  static void write_into(const prism::gpu::Tensor& t, char* out,
                         const std::function<void(uint64_t)>& written) {
    prism::gpu::internal::write_into(t, out, written);
  }
  static const void* live_tag() { return prism::gpu::internal::live_tag(); }
};

// Cluster mode: a tensor crosses nodes through host memory (for now: no GPU-to-GPU transport).
// The sender's elements are downloaded in chunks through pinned staging buffers into the
// message (a host copy made earlier is read instead); the reader's tensor lands where it is
// read, as for any reader (see above): on the GPU granted to the task that reads it (uploaded
// chunk by chunk as the host copy is written), else on the host (get() on the driver, a CPU
// task). PRISM_STAGE_CHUNK_BYTES sets the chunk (default 4 MiB; 0: whole). Malformed bytes (an unknown dtype, a
// negative dimension, a shape the elements do not fill, the stub of a tensor kept on another
// node's GPU) throw prism::Error (kInvalidArgument).
template <>
struct prism::Serializer<prism::gpu::Tensor> {
  static void write(prism::Writer& w, const prism::gpu::Tensor& t) {
    prism::gpu::internal::write_tensor(w, t);
  }
  static void read(prism::Reader& r, prism::gpu::Tensor* t) {
    prism::gpu::internal::read_tensor(r, t);
  }
};
