// The public kernels of prism/gpu/kernels.h: validate the tensors, order the work on the calling
// thread's stream of their device, and run the backend's raw kernel (kernels/kernels.h).
//
// Every function follows the same steps:
//   1. validate (prism::Error kInvalidArgument with the function, argument and tensor named);
//   2. make the device current, take the thread's stream for it, and make that stream wait for
//      each input's ready event;
//   3. allocate the outputs on the device and run kernels::cuda::f (CUDA backend) or
//      kernels::host::f (host backend) on the stream;
//   4. record each output's ready event on the stream.
// Failures inside a kernel (Thrust, cuBLAS, CUDA) come out as prism::Error as well.
//
// Thread-safe: each call works on its own outputs and on the calling thread's stream.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend.h"
#include "device_context.h"
#include "kernels/kernels.h"
#include "prism/errors.h"
#include "prism/gpu/device.h"
#include "prism/gpu/kernels.h"
#include "prism/gpu/stream.h"
#include "prism/gpu/tensor.h"
#include "prism/internal/thread_annotations.h"

namespace prism::gpu {
namespace {

// --- validation ---------------------------------------------------------------------------------

[[noreturn]] void invalid(const char* fn, const std::string& what) {
  throw Error(ErrorCode::kInvalidArgument, std::string("prism::gpu::") + fn + ": " + what);
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// A defined tensor on a GPU.
void check_on_gpu(const char* fn, const char* name, const Tensor& t) {
  if (!t.defined()) invalid(fn, std::string(name) + " is an empty (undefined) tensor");
  if (t.device().is_host()) {
    invalid(fn, std::string(name) + " is on the host (" + t.to_string() +
                    "): kernels run on a GPU; call it in a task granted a GPU or move the "
                    "tensor with to(Device::gpu(k))");
  }
}

void check_float(const char* fn, const char* name, const Tensor& t) {
  if (t.dtype() != DType::kFloat32 && t.dtype() != DType::kFloat64) {
    invalid(fn, std::string(name) + " must be float32 or float64, not " + dtype_name(t.dtype()));
  }
}

void check_same_device(const char* fn, const Tensor& a, const Tensor& b) {
  if (!(a.device() == b.device())) {
    invalid(fn, "the tensors are on different devices (" + a.device().to_string() + " and " +
                    b.device().to_string() + "): move one with to(device)");
  }
}

// Two GPU tensors of one float dtype and shape on one device (element-wise operands).
void check_elementwise(const char* fn, const Tensor& a, const char* a_name, const Tensor& b,
                       const char* b_name) {
  check_on_gpu(fn, a_name, a);
  check_on_gpu(fn, b_name, b);
  check_float(fn, a_name, a);
  check_same_device(fn, a, b);
  if (a.dtype() != b.dtype()) {
    invalid(fn, std::string("dtypes differ: ") + a_name + " is " + dtype_name(a.dtype()) + ", " +
                    b_name + " is " + dtype_name(b.dtype()));
  }
  if (a.shape() != b.shape()) {
    invalid(fn, std::string("shapes differ: ") + a_name + " is " + shape_string(a.shape()) + ", " +
                    b_name + " is " + shape_string(b.shape()));
  }
}

// The pixels crop `c` reads lie in its batch slot (the checks of flip_crop() in
// examples/image/transforms.h, done once per crop instead of once per pixel).
void check_crop(size_t i, const ImageCrop& c, int64_t slot_height, int64_t slot_width, int64_t size,
                int64_t padding) {
  const char* fn = "flip_crop_normalize";
  const std::string which = "crops[" + std::to_string(i) + "]";
  if (c.full_width < 0 || c.full_height < 0) {
    invalid(fn, which + " has a negative image size " + std::to_string(c.full_width) + "x" +
                    std::to_string(c.full_height));
  }
  if (c.src_width < 0 || c.src_height < 0 || c.src_width > slot_width ||
      c.src_height > slot_height) {
    invalid(fn, which + ": its source rectangle " + std::to_string(c.src_width) + "x" +
                    std::to_string(c.src_height) + " does not fit a batch slot of " +
                    std::to_string(slot_width) + "x" + std::to_string(slot_height));
  }
  const int64_t top = c.top, left = c.left;
  const int64_t full_w = c.full_width, full_h = c.full_height;
  if (top < 0 || left < 0 || top + size > full_h + 2 * padding ||
      left + size > full_w + 2 * padding) {
    invalid(fn, which + ": crop window " + std::to_string(size) + "x" + std::to_string(size) +
                    " at (top " + std::to_string(top) + ", left " + std::to_string(left) +
                    ") is outside the padded image " + std::to_string(full_w + 2 * padding) + "x" +
                    std::to_string(full_h + 2 * padding));
  }
  // The rectangle of the original image the crop reads (empty if it lies in the padding only).
  const int64_t y0 = std::max<int64_t>(top - padding, 0);
  const int64_t y1 = std::min<int64_t>(top - padding + size, full_h);
  int64_t x0 = left - padding, x1 = left - padding + size;  // in flipped coordinates
  if (c.flip) {
    const int64_t fx0 = full_w - x1, fx1 = full_w - x0;
    x0 = fx0;
    x1 = fx1;
  }
  x0 = std::max<int64_t>(x0, 0);
  x1 = std::min<int64_t>(x1, full_w);
  if (x0 >= x1 || y0 >= y1) return;
  const int64_t sx0 = c.src_x, sy0 = c.src_y;
  if (x0 < sx0 || y0 < sy0 || x1 > sx0 + c.src_width || y1 > sy0 + c.src_height) {
    invalid(fn, which + ": the batch slot holds columns [" + std::to_string(sx0) + ", " +
                    std::to_string(sx0 + c.src_width) + ") and rows [" + std::to_string(sy0) +
                    ", " + std::to_string(sy0 + c.src_height) +
                    ") of the image but the crop reads columns [" + std::to_string(x0) + ", " +
                    std::to_string(x1) + ") and rows [" + std::to_string(y0) + ", " +
                    std::to_string(y1) + ")");
  }
}

// --- running ------------------------------------------------------------------------------------

bool use_cuda() {
#ifdef PRISM_GPU_CUDA
  return internal::backend_instance().kind() == Backend::kCuda;
#else
  return false;
#endif
}

// The device current and the calling thread's stream for it, for one kernel call.
// Thread contract: lives on the stack of one call.
class Launch {
 public:
  explicit Launch(Device device)
      : device_(device), guard_(device), stream_(internal::task_stream(device)) {}

  Device device() const noexcept { return device_; }
  Stream stream() const noexcept { return stream_; }
  void* handle() const noexcept { return stream_.handle(); }

  // The stream waits for the input's ready event.
  void input(const Tensor& t) const { t.wait_on(stream_); }
  // The output's contents are complete once the stream's work so far is done.
  void output(const Tensor& t) const { t.record(stream_); }

 private:
  Device device_;
  internal::DeviceGuard guard_;
  Stream stream_;
};

// Runs a kernel on `launch`'s stream, converting what it throws into prism::Error. After a
// failure on the CUDA backend the device's health is checked: a sticky error marks it failed.
template <typename F>
void run_kernel(const char* kernel, const Launch& launch, F&& f) {
  const auto check_device = [&launch] {
    if (internal::backend_instance().kind() == Backend::kCuda) {
      internal::backend_instance().check_health(launch.device().index, launch.handle());
    }
  };
  try {
    f();
  } catch (const Error&) {
    check_device();
    throw;
  } catch (const std::bad_alloc& e) {  // includes Thrust's device allocation failures
    throw OutOfMemoryError(std::string("prism::gpu::") + kernel + ": out of memory: " + e.what());
  } catch (const std::exception& e) {
    check_device();
    throw Error(ErrorCode::kInternal, std::string("prism::gpu::") + kernel + ": " + e.what());
  }
}

#ifdef PRISM_GPU_CUDA
#define PRISM_GPU_IF_CUDA(...) __VA_ARGS__
#else
#define PRISM_GPU_IF_CUDA(...)
#endif
#define PRISM_GPU_RUN(kernel, assign, ...)                  \
  run_kernel(kernel, launch, [&] {                          \
    if (use_cuda()) {                                       \
      PRISM_GPU_IF_CUDA(assign kernels::cuda::__VA_ARGS__;) \
    } else {                                                \
      assign kernels::host::__VA_ARGS__;                    \
    }                                                       \
  })

// A kernel's small parameter arrays in device memory, uploaded from pinned host memory. Each
// stream keeps its own pair of buffers (device and pinned host), grown as needed and reused by
// the next call on that stream: the upload and the kernel are queued on the stream, so the next
// call's upload into the device buffer is ordered after this call's kernel; the host buffer is
// rewritten only once the previous upload from it has run (its event). Streams are never
// destroyed (device_context.h), so neither are these buffers.
// Thread contract: a ParamUpload lives on the stack of one call and holds its stream's buffers
// (their lock) until the kernel is queued; calls on one stream from two threads (an actor with
// max_concurrency > 1) take turns.
class ParamUpload {
 public:
  ParamUpload(const Launch& launch, const void* host_data, size_t bytes)
      : buffers_(buffers_for(launch.handle())), lock_(buffers_->mu) {
    internal::DeviceBackend& b = internal::backend_instance();
    const Device device = launch.device();
    Buffers& x = *buffers_;
    if (x.event != nullptr) b.event_synchronize(x.event);  // the last upload read the host buffer
    if (x.capacity < bytes) {
      const size_t capacity = std::max<size_t>(bytes, 2 * x.capacity);
      if (x.device_ptr != nullptr) {
        b.free(device.index, x.device_ptr, launch.handle(), {}, {});
        x.device_ptr = nullptr;
      }
      if (x.host_ptr != nullptr) {
        b.host_free(x.host_ptr);
        x.host_ptr = nullptr;
      }
      x.capacity = 0;
      x.device_ptr = b.allocate(device.index, capacity, launch.handle());
      x.host_ptr = b.host_allocate(capacity);
      x.capacity = capacity;
    }
    if (x.event == nullptr) x.event = b.event_create(device.index);
    std::memcpy(x.host_ptr, host_data, bytes);
    b.copy(x.device_ptr, device, x.host_ptr, Device::host(), bytes, launch.handle());
    if (x.event != nullptr) b.event_record(x.event, launch.handle());
  }
  ParamUpload(const ParamUpload&) = delete;
  ParamUpload& operator=(const ParamUpload&) = delete;

  void* get() const noexcept { return buffers_->device_ptr; }

 private:
  struct Buffers {
    prism::internal::Mutex mu;
    void* device_ptr = nullptr;
    void* host_ptr = nullptr;
    size_t capacity = 0;
    void* event = nullptr;  // recorded after the last upload (null on the host backend)
  };
  static Buffers* buffers_for(void* stream) {
    static prism::internal::Mutex mu;
    // Never destroyed, like the streams.
    static auto* const table = new std::unordered_map<void*, std::unique_ptr<Buffers>>;
    prism::internal::MutexLock lock(mu);
    std::unique_ptr<Buffers>& b = (*table)[stream];
    if (!b) b = std::make_unique<Buffers>();
    return b.get();
  }

  Buffers* buffers_;
  prism::internal::MutexLock lock_;
};

}  // namespace

// --- element-wise -------------------------------------------------------------------------------

Tensor add(const Tensor& a, const Tensor& b) {
  check_elementwise("add", a, "a", b, "b");
  Launch launch(a.device());
  launch.input(a);
  launch.input(b);
  Tensor out = Tensor::empty(a.dtype(), a.shape(), a.device());
  const size_t n = static_cast<size_t>(a.numel());
  void* s = launch.handle();
  if (a.dtype() == DType::kFloat32) {
    PRISM_GPU_RUN("add", , add(a.data<float>(), b.data<float>(), out.data<float>(), n, s));
  } else {
    PRISM_GPU_RUN("add", , add(a.data<double>(), b.data<double>(), out.data<double>(), n, s));
  }
  launch.output(out);
  return out;
}

Tensor axpy(double alpha, const Tensor& x, const Tensor& y) {
  check_elementwise("axpy", x, "x", y, "y");
  Launch launch(x.device());
  launch.input(x);
  launch.input(y);
  Tensor out = Tensor::empty(x.dtype(), x.shape(), x.device());
  const size_t n = static_cast<size_t>(x.numel());
  void* s = launch.handle();
  if (x.dtype() == DType::kFloat32) {
    PRISM_GPU_RUN("axpy", , axpy(alpha, x.data<float>(), y.data<float>(), out.data<float>(), n, s));
  } else {
    PRISM_GPU_RUN("axpy", ,
                  axpy(alpha, x.data<double>(), y.data<double>(), out.data<double>(), n, s));
  }
  launch.output(out);
  return out;
}

// --- reductions ---------------------------------------------------------------------------------

// A reduction over every element of a float32 or float64 tensor on a GPU: checks `a` and calls
// run(launch, elements, count) with its typed elements, after its ready event.
template <typename Run>
double reduce_elements(const char* kernel, const Tensor& a, Run&& run) {
  check_on_gpu(kernel, "a", a);
  check_float(kernel, "a", a);
  Launch launch(a.device());
  launch.input(a);
  const size_t n = static_cast<size_t>(a.numel());
  if (a.dtype() == DType::kFloat32) return run(launch, a.data<float>(), n);
  return run(launch, a.data<double>(), n);
}

double sum(const Tensor& a) {
  return reduce_elements("sum", a, [](Launch& launch, const auto* x, size_t n) {
    void* s = launch.handle();
    double result = 0.0;
    PRISM_GPU_RUN("sum", result =, sum(x, n, s));
    return result;
  });
}

double sum_exp_sinh(const Tensor& a) {
  return reduce_elements("sum_exp_sinh", a, [](Launch& launch, const auto* x, size_t n) {
    void* s = launch.handle();
    double result = 0.0;
    PRISM_GPU_RUN("sum_exp_sinh", result =, sum_exp_sinh(x, n, s));
    return result;
  });
}

double trace(const Tensor& a) {
  check_on_gpu("trace", "a", a);
  check_float("trace", "a", a);
  if (a.shape().size() != 2 || a.dim(0) != a.dim(1)) {
    invalid("trace", "a must be a square 2-D tensor, not " + shape_string(a.shape()));
  }
  Launch launch(a.device());
  launch.input(a);
  const size_t rows = static_cast<size_t>(a.dim(0));
  void* s = launch.handle();
  double result = 0.0;
  if (a.dtype() == DType::kFloat32) {
    PRISM_GPU_RUN("trace", result =, trace(a.data<float>(), rows, s));
  } else {
    PRISM_GPU_RUN("trace", result =, trace(a.data<double>(), rows, s));
  }
  return result;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  check_elementwise("max_abs_diff", a, "a", b, "b");
  Launch launch(a.device());
  launch.input(a);
  launch.input(b);
  const size_t n = static_cast<size_t>(a.numel());
  void* s = launch.handle();
  double result = 0.0;
  if (a.dtype() == DType::kFloat32) {
    PRISM_GPU_RUN("max_abs_diff", result =, max_abs_diff(a.data<float>(), b.data<float>(), n, s));
  } else {
    PRISM_GPU_RUN("max_abs_diff", result =, max_abs_diff(a.data<double>(), b.data<double>(), n, s));
  }
  return result;
}

// --- matmul -------------------------------------------------------------------------------------

Tensor matmul(const Tensor& a, const Tensor& b) {
  const char* fn = "matmul";
  check_on_gpu(fn, "a", a);
  check_on_gpu(fn, "b", b);
  check_float(fn, "a", a);
  check_same_device(fn, a, b);
  if (a.dtype() != b.dtype()) {
    invalid(fn, std::string("dtypes differ: a is ") + dtype_name(a.dtype()) + ", b is " +
                    dtype_name(b.dtype()));
  }
  if (a.shape().size() != 2 || b.shape().size() != 2) {
    invalid(fn, "a and b must be 2-D, not " + shape_string(a.shape()) + " and " +
                    shape_string(b.shape()));
  }
  if (a.dim(1) != b.dim(0)) {
    invalid(fn, "inner dimensions differ: a is " + shape_string(a.shape()) + ", b is " +
                    shape_string(b.shape()));
  }
  const int64_t m = a.dim(0), k = a.dim(1), n = b.dim(1);
  if (k == 0) return Tensor::zeros(a.dtype(), {m, n}, a.device());  // an empty sum

  Launch launch(a.device());
  launch.input(a);
  launch.input(b);
  Tensor out = Tensor::empty(a.dtype(), {m, n}, a.device());
  if (m > 0 && n > 0) {
    const int d = a.device().index;
    void* s = launch.handle();
    if (a.dtype() == DType::kFloat32) {
      PRISM_GPU_RUN("matmul", ,
                    gemm(a.data<float>(), b.data<float>(), out.data<float>(), m, n, k, d, s));
    } else {
      PRISM_GPU_RUN("matmul", ,
                    gemm(a.data<double>(), b.data<double>(), out.data<double>(), m, n, k, d, s));
    }
  }
  launch.output(out);
  return out;
}

// --- images -------------------------------------------------------------------------------------

Tensor flip_crop_normalize(const Tensor& images, const std::vector<ImageCrop>& crops, int size,
                           int padding, const Normalization& norm) {
  const char* fn = "flip_crop_normalize";
  check_on_gpu(fn, "images", images);
  if (images.dtype() != DType::kUInt8 || images.shape().size() != 4 || images.dim(3) != 3) {
    invalid(fn, "images must be a uint8 tensor [N, H, W, 3], not " +
                    std::string(dtype_name(images.dtype())) + " " + shape_string(images.shape()));
  }
  const int64_t count = images.dim(0), height = images.dim(1), width = images.dim(2);
  if (static_cast<int64_t>(crops.size()) != count) {
    invalid(fn, std::to_string(crops.size()) + " crops for a batch of " + std::to_string(count) +
                    " images");
  }
  if (size <= 0) invalid(fn, "size must be positive, not " + std::to_string(size));
  if (padding < 0) invalid(fn, "padding must not be negative, not " + std::to_string(padding));
  std::vector<kernels::CropParams> params(crops.size());
  for (size_t i = 0; i < crops.size(); ++i) {
    const ImageCrop& c = crops[i];
    check_crop(i, c, height, width, size, padding);
    params[i] =
        kernels::CropParams{c.src_x,       c.src_y,        c.src_width, c.src_height, c.full_width,
                            c.full_height, c.flip ? 1 : 0, c.top,       c.left};
  }
  kernels::NormParams np{};
  for (int c = 0; c < 3; ++c) {
    np.mean[c] = norm.mean[c];
    np.std[c] = norm.std[c];
  }
  const kernels::ImageBatch batch{count, height, width, size, padding};

  Launch launch(images.device());
  launch.input(images);
  Tensor out = Tensor::empty(DType::kFloat32, {count, 3, size, size}, images.device());
  if (count > 0) {
    ParamUpload device_crops(launch, params.data(), params.size() * sizeof(params[0]));
    const auto* dc = static_cast<const kernels::CropParams*>(device_crops.get());
    void* s = launch.handle();
    PRISM_GPU_RUN(fn, ,
                  flip_crop_normalize(images.data<uint8_t>(), dc, batch, np, out.data<float>(), s));
  }
  launch.output(out);
  return out;
}

}  // namespace prism::gpu
