// examples/common/gpu_flags.h — the --gpu and --gpus flags and the copy counters of the examples
// that have a GPU path.
//
//   examples::Flags flags(argc, argv);
//   const examples::GpuFlags gpu = examples::gpu_flags(flags);   // --gpu, --gpus=N
//   prism::init({.num_cpus = 2, .num_gpus = gpu.init_num_gpus()});
//   const prism::gpu::CopyStats before = prism::gpu::copy_stats();
//   ...GPU tasks...
//   std::printf("%s\n", examples::describe(examples::copies_since(before)).c_str());
//
// With CUDA devices present, Prism uses them all (num_gpus left to detection); without, --gpus
// declares that many logical GPUs, served by the host backend (device memory is host memory,
// kernels run on the CPU), so the same program runs on any machine.
//
// Thread-compatible.
#pragma once

#include <prism/gpu.h>

#include <cstdio>
#include <string>

#include "flags.h"

namespace examples {

struct GpuFlags {
  bool enabled = false;  // --gpu: run the GPU path too
  int logical_gpus = 1;  // --gpus: logical GPUs to declare when no CUDA device is found

  // The InitOptions::num_gpus for prism::init: detected (-1) without --gpu or with CUDA
  // devices, else the logical GPUs.
  double init_num_gpus() const {
    if (!enabled || prism::gpu::cuda_device_count() > 0) return -1;
    return logical_gpus;
  }
  // The GPUs the run uses: the CUDA devices, else the logical ones.
  int gpus_in_use() const {
    const int real = prism::gpu::cuda_device_count();
    return real > 0 ? real : logical_gpus;
  }
};

// Declares --gpu and --gpus (call before flags.ok()).
inline GpuFlags gpu_flags(Flags& flags) {
  GpuFlags g;
  g.enabled = flags.get_bool("gpu", "also run the GPU path (GPU tasks and tensors)");
  g.logical_gpus = static_cast<int>(flags.get_int(
      "gpus", 1, "logical GPUs to declare when no CUDA device is found (with --gpu)"));
  if (g.logical_gpus < 1) g.logical_gpus = 1;
  return g;
}

// The copies made since `before` (a copy_stats() taken earlier).
inline prism::gpu::CopyStats copies_since(const prism::gpu::CopyStats& before) {
  return prism::gpu::copy_stats() - before;
}

// "4 uploads, 0 peer copies, 1 download (40.0 MB)", then the tensors sent to and received from
// other nodes if there were any
inline std::string describe(const prism::gpu::CopyStats& d) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "%llu upload%s, %llu peer cop%s, %llu download%s (%.1f MB)",
                static_cast<unsigned long long>(d.host_to_device), d.host_to_device == 1 ? "" : "s",
                static_cast<unsigned long long>(d.device_to_device),
                d.device_to_device == 1 ? "y" : "ies",
                static_cast<unsigned long long>(d.device_to_host), d.device_to_host == 1 ? "" : "s",
                static_cast<double>(d.bytes) / 1e6);
  std::string out = buf;
  if (d.network_sends + d.network_receives > 0) {
    std::snprintf(buf, sizeof buf, "; %llu tensor%s sent to other nodes, %llu received (%.1f MB)",
                  static_cast<unsigned long long>(d.network_sends),
                  d.network_sends == 1 ? "" : "s",
                  static_cast<unsigned long long>(d.network_receives),
                  static_cast<double>(d.network_bytes) / 1e6);
    out += buf;
  }
  return out;
}

// One line about the GPUs in use: the backend and why.
inline void print_gpu_backend(const GpuFlags& g) {
  std::printf("GPU backend: %s\n", prism::gpu::backend_description().c_str());
  if (prism::gpu::cuda_device_count() == 0) {
    std::printf("(%d logical GPU%s declared with --gpus)\n", g.logical_gpus,
                g.logical_gpus == 1 ? "" : "s");
  }
}

}  // namespace examples
