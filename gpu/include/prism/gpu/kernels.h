// prism/gpu/kernels.h — the device kernels the examples need, on any backend.
//
//   Tensor c = prism::gpu::matmul(a, b);            // cuBLAS on CUDA, Eigen on the host backend
//   Tensor s = prism::gpu::add(c, d);               // element-wise
//   double t = prism::gpu::trace(s);                // reductions return host values
//   Tensor x = prism::gpu::flip_crop_normalize(batch, crops, 224, 4, {{.5f,.5f,.5f}, {.5f,.5f,.5f}});
//
// Every kernel runs on the device of its inputs (which must all be on one device, and a GPU:
// host tensors are refused with prism::Error), queued on current_stream() after waiting for the
// inputs' ready events; results are new tensors on that device with their ready event recorded.
// Functions that return host values (sum, trace, max_abs_diff) wait for their own work.
//
// The element-wise, reduction and image kernels are written once with Thrust and compiled twice:
// by nvcc for the CUDA backend and by the host compiler (THRUST_DEVICE_SYSTEM_CPP) for the host
// backend, so their logic is tested on machines without a GPU. Float arithmetic is IEEE in both,
// with no fused multiply-add on either side (nvcc --fmad=false, host -ffp-contract=off). What
// that buys, exactly:
//  * element-wise kernels (add, axpy) and flip_crop_normalize: each element is computed by the
//    same operations in the same order on both backends, so results are equal bit for bit (and
//    equal a plain C++ loop compiled without contraction);
//  * reductions (sum, sum_exp_sinh, trace, max_abs_diff): accumulated in double, but in a different order per
//    backend and launch (tree vs sequential): equal within rounding, |error| <= n * 2^-52 * sum|x|;
//  * matmul: cuBLAS (CUBLAS_DEFAULT_MATH: float stays float, no TF32) against Eigen on the host:
//    equal within rounding of a k-term dot product (the tests allow 1e-4 relative for float32,
//    1e-9 for float64 at their sizes), never bit for bit.
//
// Thread-safe: each call works on its own outputs.
#pragma once

#include <array>
#include <vector>

#include "prism/gpu/tensor.h"

namespace prism::gpu {

// a + b, element-wise (same dtype and shape; float32 or float64).
Tensor add(const Tensor& a, const Tensor& b);
// alpha * x + y, element-wise (float32 or float64).
Tensor axpy(double alpha, const Tensor& x, const Tensor& y);

// Sum of all elements, accumulated in double (float32 or float64 tensors).
double sum(const Tensor& a);
// Sum of exp(x) * sinh(x) over all elements, in double (float32 or float64): the tutorial's
// "complex operation" (examples/complex_operation.cc).
double sum_exp_sinh(const Tensor& a);
// Sum of the diagonal of a square 2-D tensor.
double trace(const Tensor& a);
// max |a - b| over all elements.
double max_abs_diff(const Tensor& a, const Tensor& b);

// a (m x k) times b (k x n), row-major 2-D tensors of float32 or float64.
Tensor matmul(const Tensor& a, const Tensor& b);

// One image's flip and crop, as examples/image/transforms.h's flip_crop() takes them: the batch
// slot holds `src_width` x `src_height` pixels of the full image, whose top-left pixel is
// (src_x, src_y) of the full `full_width` x `full_height` picture; the crop is mirrored first if
// `flip`, then cut at (top, left) of the picture zero-padded by `padding` on every side.
struct ImageCrop {
  int src_x = 0;
  int src_y = 0;
  int src_width = 0;
  int src_height = 0;
  int full_width = 0;
  int full_height = 0;
  bool flip = false;
  int top = 0;
  int left = 0;
};

struct Normalization {
  std::array<float, 3> mean = {0.f, 0.f, 0.f};
  std::array<float, 3> std = {1.f, 1.f, 1.f};
};

// RandomHorizontalFlip + RandomCrop(size, padding) + ToTensor + Normalize on a batch:
// `images` is [N, H, W, 3] uint8 (slot n holds image n's pixels at its top-left), `crops` has N
// entries; the result is [N, 3, size, size] float32 with (x / 255 - mean[c]) / std[c].
// Throws prism::Error(kInvalidArgument) for a crop outside its padded picture or a slot that
// lacks a pixel the crop reads.
Tensor flip_crop_normalize(const Tensor& images, const std::vector<ImageCrop>& crops, int size,
                           int padding, const Normalization& norm);

}  // namespace prism::gpu
