// prism/prism.h — everything a Prism program needs (the core: tasks, actors, objects).
//
//   #include <prism/prism.h>            // find_package(Prism), link Prism::prism
//   #include <prism/gpu.h>              // GPU tensors and kernels as well:
//                                       // find_package(Prism COMPONENTS gpu), link Prism::gpu
//
//   int add(int a, int b) { return a + b; }
//   PRISM_REMOTE(add);
//
//   int main() {
//     prism::init();
//     auto a = prism::task(add).remote(1, 2);
//     auto b = prism::task(add).remote(a, 3);
//     return prism::get(b) == 6 ? 0 : 1;
//   }
#pragma once

#include "prism/actor.h"
#include "prism/context.h"
#include "prism/errors.h"
#include "prism/object_ref.h"
#include "prism/options.h"
#include "prism/registry.h"
#include "prism/runtime.h"
#include "prism/task.h"
#include "prism/variants.h"

// The GPU module is not included here: a CPU-only program needs no CUDA toolkit and links no CUDA
// library. Without it, GPUs are logical resources (num_gpus = N declares N) and tasks may ask for
// them; with it (<prism/gpu.h>), they are the CUDA devices found, or the host backend's.
