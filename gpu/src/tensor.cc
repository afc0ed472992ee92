#include "prism/gpu/tensor.h"

#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>

#include "backend.h"
#include "device_channels.h"
#include "device_context.h"
#include "prism/errors.h"
#include "storage.h"

namespace prism::gpu {

size_t dtype_size(DType t) noexcept {
  switch (t) {
    case DType::kUInt8: return 1;
    case DType::kInt32: return 4;
    case DType::kInt64: return 8;
    case DType::kFloat32: return 4;
    case DType::kFloat64: return 8;
  }
  return 0;
}

const char* dtype_name(DType t) noexcept {
  switch (t) {
    case DType::kUInt8: return "uint8";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
    case DType::kFloat32: return "float32";
    case DType::kFloat64: return "float64";
  }
  return "?";
}

namespace {

int64_t count_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw Error(ErrorCode::kInvalidArgument, "Tensor: negative dimension in shape");
    n *= d;
  }
  return n;
}

void check_device(Device device) {
  if (device.is_host()) return;
  internal::DeviceBackend& b = internal::backend_instance();
  if (b.kind() == Backend::kCuda && device.index >= b.device_count()) {
    throw Error(ErrorCode::kInvalidArgument,
                "Tensor: " + device.to_string() + " does not exist (this machine has " +
                    std::to_string(b.device_count()) + " CUDA device(s))");
  }
}

}  // namespace

Tensor Tensor::empty(DType dtype, std::vector<int64_t> shape, Device device) {
  check_device(device);
  Tensor t;
  const int64_t n = count_of(shape);
  t.dtype_ = dtype;
  const Stream s = internal::task_stream(device);
  // (The shape is the storage's: the handle's own stays null until a reshape.)
  t.storage_ = std::make_shared<internal::Storage>(
      device, static_cast<size_t>(n) * dtype_size(dtype), s,
      std::make_shared<const std::vector<int64_t>>(std::move(shape)));
  return t;
}

Tensor Tensor::zeros(DType dtype, std::vector<int64_t> shape, Device device) {
  Tensor t = empty(dtype, std::move(shape), device);
  const Stream s = internal::task_stream(device);
  internal::DeviceGuard on(device);
  internal::backend_instance().memset_zero(t.raw_data(), device, t.nbytes(), s.handle());
  t.record(s);
  return t;
}

Tensor Tensor::from_host_bytes(DType dtype, const void* data, size_t bytes,
                               std::vector<int64_t> shape, Device device) {
  const int64_t n = count_of(shape);
  if (static_cast<size_t>(n) * dtype_size(dtype) != bytes) {
    throw Error(ErrorCode::kInvalidArgument,
                "Tensor::from_host: " + std::to_string(bytes / dtype_size(dtype)) +
                    " elements do not fill a shape of " + std::to_string(n));
  }
  if (bytes > 0 && data == nullptr) {
    throw Error(ErrorCode::kInvalidArgument, "Tensor::from_host: null data");
  }
  Tensor t = empty(dtype, std::move(shape), device);
  const Stream s = internal::task_stream(device);
  internal::DeviceGuard on(device);
  internal::DeviceBackend& b = internal::backend_instance();
  b.copy(t.raw_data(), device, data, Device::host(), bytes, s.handle());
  if (!device.is_host()) {
    // The caller's buffer may be gone after we return: the upload must have read it.
    b.stream_synchronize(s.handle());
    internal::count_copy(Device::host(), device, bytes);
    t.record(s);
  }
  return t;
}

const std::vector<int64_t>& Tensor::no_shape() noexcept {
  static const std::vector<int64_t> none;
  return none;
}

int64_t Tensor::numel() const noexcept {
  if (!storage_) return 0;
  int64_t n = 1;
  for (int64_t d : shape()) n *= d;
  return n;
}

Device Tensor::device() const noexcept { return storage_ ? storage_->device() : Device::host(); }

const std::vector<int64_t>& Tensor::shape() const noexcept {
  if (shape_) return *shape_;
  if (storage_ && storage_->shape()) return *storage_->shape();
  return no_shape();
}

void* Tensor::raw_data() const noexcept { return storage_ ? storage_->data() : nullptr; }

void Tensor::check_type(DType t) const {
  if (t != dtype_) {
    throw Error(ErrorCode::kInvalidArgument, std::string("Tensor of ") + dtype_name(dtype_) +
                                                 " accessed as " + dtype_name(t));
  }
}

Tensor Tensor::reshape(std::vector<int64_t> shape) const {
  if (count_of(shape) != numel()) {
    throw Error(ErrorCode::kInvalidArgument, "Tensor::reshape: " + std::to_string(numel()) +
                                                 " elements do not fit the new shape");
  }
  Tensor t = *this;
  t.shape_ = std::make_shared<const std::vector<int64_t>>(std::move(shape));
  return t;
}

Tensor Tensor::to(Device device) const {
  if (!storage_) return *this;
  check_device(device);
  std::shared_ptr<internal::Storage> there = storage_->copy_to(device, storage_);
  // A reader on a GPU queues its work on its own stream for that device: order it after the
  // contents (the producer's event, or the copy's).
  if (!device.is_host()) there->wait_on(internal::task_stream(device));
  Tensor t;  // (built from `there`: the storage handle is copied once, not twice)
  t.storage_ = std::move(there);
  t.shape_ = shape_;
  t.dtype_ = dtype_;
  return t;
}

void Tensor::record(Stream stream) const {
  if (storage_) storage_->record(stream);
}

void Tensor::wait_on(Stream stream) const {
  if (storage_) storage_->wait_on(stream);
}

void Tensor::record_use(Stream stream) const {
  if (storage_) storage_->record_use(stream);
}

void Tensor::synchronize() const {
  if (storage_) storage_->synchronize();
}

std::string Tensor::to_string() const {
  std::ostringstream o;
  o << "Tensor(" << dtype_name(dtype_) << ", [";
  const std::vector<int64_t>& shape = this->shape();
  for (size_t i = 0; i < shape.size(); ++i) o << (i ? ", " : "") << shape[i];
  o << "], " << device().to_string() << ")";
  return o.str();
}

namespace internal {

void on_produced(const Tensor& t) {
  Storage* s = storage_of(t);
  if (s == nullptr || s->device().is_host()) return;
  // The task queued the tensor's work on this thread's stream for its device.
  const Stream stream = task_stream(s->device());
  if (!on_cuda_backend() && s->ordered_on(stream)) return;  // (record() would change nothing)
  s->record(stream);
}

Tensor for_reader(const Tensor& t) { return t.to(current_device()); }

bool reads_in_place(const Tensor& t) noexcept {
  Storage* s = storage_of(t);
  if (s == nullptr) return true;
  const Device d = tls_task_view.task.device;  // (current_device())
  if (s->device() != d) return false;  // to() would copy
  if (d.is_host()) return true;
  try {
    return s->ordered_on(task_stream(d));  // to()'s wait_on would do nothing
  } catch (...) {
    return false;  // (no stream yet, and none could be made: to() reports it)
  }
}

Storage* storage_of(const Tensor& t) noexcept { return t.storage_.get(); }

prism::internal::DataWhere where(const Tensor& t) noexcept {
  prism::internal::DataWhere w;
  w.bytes = static_cast<int64_t>(t.nbytes());
  Storage* s = storage_of(t);
  if (s == nullptr) return w;  // empty: nothing to move
  s->placed(&w.on_host, &w.on_device);
  if (!s->device().is_host()) w.device = s->device().index;
  return w;
}

// Format: a flag (0: an empty Tensor(), 1: defined), then dtype (1 byte), rank (u32), the
// dimensions (int64 each), the elements' byte count (u64) and the elements, row-major.
namespace {
void write_header(Writer& w, uint8_t flag, const Tensor& t) {
  w.put(flag);
  w.put(static_cast<uint8_t>(t.dtype()));
  w.u32(static_cast<uint32_t>(t.shape().size()));
  for (const int64_t d : t.shape()) w.put(d);
  w.put(static_cast<uint64_t>(t.nbytes()));
}
}  // namespace

void write_tensor(Writer& w, const Tensor& t) {
  if (!t.defined()) {
    w.put(uint8_t{0});
    return;
  }
  write_header(w, 1, t);
  const uint64_t bytes = t.nbytes();
  count_network(/*sent=*/true, bytes);
  if (bytes == 0) return;
  // A GPU tensor is downloaded after its contents are complete, in chunks through pinned
  // staging buffers straight into the message (Storage::read_chunks: no host copy of the whole
  // tensor is made or kept; one made earlier is read instead).
  storage_of(t)->read_chunks([&w](const char* p, size_t n) { w.bytes(p, n); });
}

// A tensor kept live on its node (Placement<Tensor>::kKeepsLive): its stub, in the bytes the
// node keeps for the object, is write_tensor's header with flag 2 and no elements; the node's
// readers find the tensor itself in the object's DecodedSlot, under this tag.
namespace {
constexpr uint8_t kStubFlag = 2;
const char kLiveTag = 0;
}  // namespace

bool keep_live(const Tensor& t) { return t.defined() && !t.device().is_host(); }

uint64_t wire_bytes(const Tensor& t) noexcept {
  if (!t.defined()) return 1;
  return 1 + 1 + sizeof(uint32_t) + sizeof(int64_t) * t.shape().size() + sizeof(uint64_t) +
         t.nbytes();
}

const void* live_tag() noexcept { return &kLiveTag; }

void write_stub(Writer& w, const Tensor& t) {
  on_produced(t);  // (its readers wait for the work that made it: its ready event)
  write_header(w, kStubFlag, t);
}

void write_into(const Tensor& t, char* out, const std::function<void(uint64_t)>& written) {
  std::string head;
  Writer w(&head);
  if (!t.defined()) {
    w.put(uint8_t{0});
  } else {
    write_header(w, 1, t);
  }
  std::memcpy(out, head.data(), head.size());
  uint64_t at = head.size();
  written(at);
  if (!t.defined()) return;
  count_network(/*sent=*/true, t.nbytes());
  if (t.nbytes() == 0) return;
  // (As write_tensor: after its contents, chunk by chunk through the staging buffers.)
  const uint64_t total = wire_bytes(t);
  storage_of(t)->read_chunks([&](const char* p, size_t n) {
    if (n > total - at) throw Error(ErrorCode::kInternal, "a tensor's storage outgrew its shape");
    std::memcpy(out + at, p, n);
    at += n;
    written(at);
  });
}

namespace {
// The header after a flag of 1 or 2 (write_header): checked whole, as read_tensor needs it.
struct Header {
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  uint64_t bytes = 0;
};
Header read_header(Reader& r) {
  uint8_t dtype = 0;
  r.get(&dtype);
  if (dtype > static_cast<uint8_t>(DType::kFloat64)) {
    prism::internal::throw_malformed("tensor: unknown dtype");
  }
  const uint32_t rank = r.count(sizeof(int64_t));
  std::vector<int64_t> shape(rank);
  // Tensors multiply their dimensions as int64 (numel()): the product of the nonzero ones must
  // fit there too, even when a zero dimension makes the tensor empty.
  uint64_t nonzero = 1;
  bool empty = false;
  for (int64_t& d : shape) {
    r.get(&d);
    if (d < 0) prism::internal::throw_malformed("tensor: negative dimension");
    if (d == 0) {
      empty = true;
      continue;
    }
    if (nonzero > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) /
                      static_cast<uint64_t>(d)) {
      prism::internal::throw_malformed("tensor: shape too large");
    }
    nonzero *= static_cast<uint64_t>(d);
  }
  const uint64_t numel = empty ? 0 : nonzero;
  uint64_t bytes = 0;
  r.get(&bytes);
  const size_t element = dtype_size(static_cast<DType>(dtype));
  if (numel > std::numeric_limits<uint64_t>::max() / element || numel * element != bytes) {
    prism::internal::throw_malformed("tensor: the elements do not fill the shape");
  }
  return Header{static_cast<DType>(dtype), std::move(shape), bytes};
}
}  // namespace

bool read_wire_header(std::string_view head, DType* dtype, std::vector<int64_t>* shape,
                      uint64_t* header_bytes, uint64_t* element_bytes) {
  try {
    Reader r(head);
    uint8_t flag = 0;
    r.get(&flag);
    if (flag != 1) return false;
    Header h = read_header(r);
    *dtype = h.dtype;
    *shape = std::move(h.shape);
    *header_bytes = head.size() - r.remaining();
    *element_bytes = h.bytes;
    return true;
  } catch (const Error&) {  // (malformed, or not all in `head`)
    return false;
  }
}

void read_stub(std::string_view stub, DType* dtype, std::vector<int64_t>* shape) {
  Reader r(stub);
  uint8_t flag = 0;
  r.get(&flag);
  if (flag != kStubFlag) prism::internal::throw_malformed("tensor: not the stub of a kept tensor");
  Header h = read_header(r);
  if (r.remaining() != 0) prism::internal::throw_malformed("tensor: bytes after a stub");
  *dtype = h.dtype;
  *shape = std::move(h.shape);
}

void read_tensor(Reader& r, Tensor* t) {
  const char* const object_start = r.position();
  uint8_t defined = 0;
  r.get(&defined);
  if (defined == 0) {
    *t = Tensor();
    return;
  }
  if (defined != 1 && defined != kStubFlag) prism::internal::throw_malformed("tensor: bad flag");
  Header header = read_header(r);
  const DType dtype = header.dtype;
  std::vector<int64_t>& shape = header.shape;
  const uint64_t bytes = header.bytes;
  // A task's argument lands where the task runs; a value stored in an entry stays on the host.
  const Device where =
      prism::internal::decoding_to_store() ? Device::host() : current_device();
  if (defined == kStubFlag) {
    // Only where the object was made, which keeps the tensor itself beside its bytes (and only
    // as the whole object: a stub is never written inside another value).
    prism::internal::DecodedSlot* slot = prism::internal::decoded_slot_at(object_start);
    Tensor kept;
    if (slot != nullptr) {
      prism::internal::MutexLock lock(slot->mu);
      if (slot->type == &kLiveTag) kept = *static_cast<const Tensor*>(slot->value.get());
    }
    if (!kept.defined() || kept.dtype() != dtype || kept.shape() != shape) {
      prism::internal::throw_malformed(
          "tensor: a stub of a tensor kept on another node (its elements are not here)");
    }
    *t = kept.to(where);
    return;
  }
  if (bytes > r.remaining()) prism::internal::throw_malformed("truncated value");
  // A new host tensor of the elements; for a GPU reader its copy there is made at the same
  // time, chunk by chunk (Storage::fill_and_copy_to: the host copies overlap the uploads).
  auto decode = [&] {
    Tensor h = Tensor::empty(dtype, std::move(shape), Device::host());
    if (where.is_host() || bytes == 0) {
      r.bytes(h.raw_data(), bytes);
    } else {
      storage_of(h)->fill_and_copy_to(r.position(), where);
      r.skip(bytes);
    }
    count_network(/*sent=*/false, bytes);
    return h;
  };
  Tensor host;
  if (prism::internal::DecodedSlot* slot = prism::internal::decoded_slot_at(object_start)) {
    // An object kept on this node for its tasks: they share one host tensor (and the copies made
    // from it, one per device), built by the first of them.
    static const char kTag = 0;
    prism::internal::MutexLock lock(slot->mu);
    const Tensor* cached =
        slot->type == &kTag ? static_cast<const Tensor*>(slot->value.get()) : nullptr;
    if (cached != nullptr && cached->dtype() == dtype &&
        cached->shape() == shape && cached->nbytes() == bytes) {
      host = *cached;
      r.skip(bytes);
    } else if (cached != nullptr) {  // (not the tensor at the object's start: decoded apart)
      host = decode();
    } else {
      host = decode();
      slot->value = std::make_shared<Tensor>(host);
      slot->type = &kTag;
    }
  } else {
    host = decode();
  }
  *t = where.is_host() ? std::move(host) : host.to(where);
}

}  // namespace internal
}  // namespace prism::gpu
