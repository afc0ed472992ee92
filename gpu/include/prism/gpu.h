// prism/gpu.h — Prism's GPU module: devices, streams, tensors and kernels.
//
//   #include <prism/prism.h>     // includes this header when Prism was built with gpu/
//
//   prism::gpu::Tensor square(const prism::gpu::Tensor& x) { return prism::gpu::matmul(x, x); }
//   auto y = prism::task(square).num_gpus(0.5).gpu_memory(1 << 30).remote(x);
//
// See device.h (backends, devices), stream.h (current_stream), tensor.h (device objects and how
// they move), kernels.h (Thrust/cuBLAS kernels with a host backend).
#pragma once

#include "prism/gpu/device.h"
#include "prism/gpu/kernels.h"
#include "prism/gpu/stream.h"
#include "prism/gpu/tensor.h"
