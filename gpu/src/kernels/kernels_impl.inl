// The kernels of kernels.h, written once with Thrust and compiled twice: by the host compiler
// for the host backend (kernels_host.cc, Thrust's CPP system) and by nvcc for CUDA
// (kernels_cuda.cu). Not a header: include it once per backend, after
//
//   #define PRISM_GPU_KERNELS_NS host                // or cuda: the namespace to define
//   namespace prism::gpu::kernels::host::detail {
//   struct Policies {
//     static auto launch(void* stream);              // policy for work queued without a wait
//     static auto value(void* stream);               // policy for reductions (they wait)
//     static void after_launch(const char* kernel);  // throws if the launch failed
//   };
//   }
//
// and the Thrust execution-policy header of that system.
//
// Arithmetic is plain IEEE: nvcc compiles with --fmad=false, so results equal a C++ loop bit for
// bit where the expression allows no contraction (the image kernel: a division and a subtraction).
//
// Thread-safe: pure functions of their arguments.

#ifndef PRISM_GPU_KERNELS_NS
#error "define PRISM_GPU_KERNELS_NS (host or cuda) before including kernels_impl.inl"
#endif

#include <thrust/iterator/counting_iterator.h>
#include <thrust/transform.h>
#include <thrust/transform_reduce.h>

#include <math.h>

#include <cstddef>
#include <cstdint>

#include "kernels/kernels.h"

// Functions that run on the device under nvcc and on the CPU otherwise.
#ifndef PRISM_HD
#if defined(__CUDACC__)
#define PRISM_HD __host__ __device__
#else
#define PRISM_HD
#endif
#endif

namespace prism::gpu::kernels::PRISM_GPU_KERNELS_NS {
namespace detail {

// --- functors -----------------------------------------------------------------------------------

template <typename T>
struct AddOp {
  PRISM_HD T operator()(T a, T b) const { return a + b; }
};

template <typename T>
struct AxpyOp {
  T alpha;
  PRISM_HD T operator()(T x, T y) const { return alpha * x + y; }
};

template <typename T>
struct ToDoubleOp {
  PRISM_HD double operator()(T v) const { return static_cast<double>(v); }
};

// a[i * stride] as a double: the diagonal of a row-major square matrix with stride rows + 1.
template <typename T>
struct StridedOp {
  const T* a;
  size_t stride;
  PRISM_HD double operator()(size_t i) const { return static_cast<double>(a[i * stride]); }
};

// |a[i] - b[i]| in double; NaN stays NaN.
template <typename T>
struct AbsDiffOp {
  const T* a;
  const T* b;
  PRISM_HD double operator()(size_t i) const {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    return d < 0 ? -d : d;
  }
};

struct PlusOp {
  PRISM_HD double operator()(double x, double y) const { return x + y; }
};

// The larger value, NaN if either is NaN (so that one bad element is not hidden by the order).
struct MaxPropagateNanOp {
  PRISM_HD double operator()(double x, double y) const {
    if (x != x) return x;
    if (y != y) return y;
    return x < y ? y : x;
  }
};

// One output element of flip_crop_normalize, for its index in [N, 3, size, size] order. The
// crop parameters were validated on the host: every pixel read lies in its batch slot.
struct FlipCropNormalizeOp {
  const uint8_t* images;
  const CropParams* crops;
  int64_t height;
  int64_t width;
  int64_t size;
  int64_t padding;
  NormParams norm;

  PRISM_HD float operator()(int64_t i) const {
    const int64_t ox = i % size;
    int64_t rest = i / size;
    const int64_t oy = rest % size;
    rest /= size;
    const int c = static_cast<int>(rest % 3);
    const int64_t n = rest / 3;
    const CropParams& p = crops[n];

    int px = 0;                                // the zero padding
    const int64_t y = p.top + oy - padding;    // row in the full image
    const int64_t fx = p.left + ox - padding;  // column in the (flipped) full image
    if (y >= 0 && y < p.full_height && fx >= 0 && fx < p.full_width) {
      const int64_t x = p.flip ? p.full_width - 1 - fx : fx;  // column in the original image
      const int64_t sx = x - p.src_x;
      const int64_t sy = y - p.src_y;
      px = images[((n * height + sy) * width + sx) * 3 + c];
    }
    // Exactly ToTensor then Normalize (examples/image/transforms.h).
    float v = static_cast<float>(px) / 255.0f;
    v = (v - norm.mean[c]) / norm.std[c];
    return v;
  }
};

// --- implementations ----------------------------------------------------------------------------

template <typename T>
void add_impl(const T* a, const T* b, T* out, size_t n, void* stream) {
  if (n == 0) return;
  thrust::transform(Policies::launch(stream), a, a + n, b, out, AddOp<T>{});
  Policies::after_launch("add");
}

template <typename T>
void axpy_impl(double alpha, const T* x, const T* y, T* out, size_t n, void* stream) {
  if (n == 0) return;
  thrust::transform(Policies::launch(stream), x, x + n, y, out, AxpyOp<T>{static_cast<T>(alpha)});
  Policies::after_launch("axpy");
}

template <typename T>
double sum_impl(const T* a, size_t n, void* stream) {
  if (n == 0) return 0.0;
  return thrust::transform_reduce(Policies::value(stream), a, a + n, ToDoubleOp<T>{}, 0.0,
                                  PlusOp{});
}

template <typename T>
struct ExpSinhOp {
  PRISM_HD double operator()(T x) const {
    const double d = static_cast<double>(x);
    return ::exp(d) * ::sinh(d);
  }
};

template <typename T>
double sum_exp_sinh_impl(const T* a, size_t n, void* stream) {
  if (n == 0) return 0.0;
  return thrust::transform_reduce(Policies::value(stream), a, a + n, ExpSinhOp<T>{}, 0.0,
                                  PlusOp{});
}

template <typename T>
double trace_impl(const T* a, size_t rows, void* stream) {
  if (rows == 0) return 0.0;
  thrust::counting_iterator<size_t> first(0);
  return thrust::transform_reduce(Policies::value(stream), first, first + rows,
                                  StridedOp<T>{a, rows + 1}, 0.0, PlusOp{});
}

template <typename T>
double max_abs_diff_impl(const T* a, const T* b, size_t n, void* stream) {
  if (n == 0) return 0.0;
  thrust::counting_iterator<size_t> first(0);
  return thrust::transform_reduce(Policies::value(stream), first, first + n, AbsDiffOp<T>{a, b},
                                  0.0, MaxPropagateNanOp{});
}

}  // namespace detail

void add(const float* a, const float* b, float* out, size_t n, void* stream) {
  detail::add_impl(a, b, out, n, stream);
}
void add(const double* a, const double* b, double* out, size_t n, void* stream) {
  detail::add_impl(a, b, out, n, stream);
}

void axpy(double alpha, const float* x, const float* y, float* out, size_t n, void* stream) {
  detail::axpy_impl(alpha, x, y, out, n, stream);
}
void axpy(double alpha, const double* x, const double* y, double* out, size_t n, void* stream) {
  detail::axpy_impl(alpha, x, y, out, n, stream);
}

double sum(const float* a, size_t n, void* stream) { return detail::sum_impl(a, n, stream); }
double sum(const double* a, size_t n, void* stream) { return detail::sum_impl(a, n, stream); }

double sum_exp_sinh(const float* a, size_t n, void* stream) {
  return detail::sum_exp_sinh_impl(a, n, stream);
}
double sum_exp_sinh(const double* a, size_t n, void* stream) {
  return detail::sum_exp_sinh_impl(a, n, stream);
}

double trace(const float* a, size_t rows, void* stream) {
  return detail::trace_impl(a, rows, stream);
}
double trace(const double* a, size_t rows, void* stream) {
  return detail::trace_impl(a, rows, stream);
}

double max_abs_diff(const float* a, const float* b, size_t n, void* stream) {
  return detail::max_abs_diff_impl(a, b, n, stream);
}
double max_abs_diff(const double* a, const double* b, size_t n, void* stream) {
  return detail::max_abs_diff_impl(a, b, n, stream);
}

void flip_crop_normalize(const uint8_t* images, const CropParams* crops, const ImageBatch& batch,
                         const NormParams& norm, float* out, void* stream) {
  const int64_t total = batch.n * 3 * batch.size * batch.size;
  if (total == 0) return;
  thrust::counting_iterator<int64_t> first(0);
  thrust::transform(detail::Policies::launch(stream), first, first + total, out,
                    detail::FlipCropNormalizeOp{images, crops, batch.height, batch.width,
                                                batch.size, batch.padding, norm});
  detail::Policies::after_launch("flip_crop_normalize");
}

}  // namespace prism::gpu::kernels::PRISM_GPU_KERNELS_NS
