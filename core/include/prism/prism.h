// prism/prism.h — everything a Prism program needs.
//
//   #include <prism/prism.h>
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

// The GPU module (devices, streams, tensors, kernels), when Prism was built with it. Including it
// here also links it into the program, so runtimes find its GPUs.
#if __has_include(<prism/gpu.h>)
#include <prism/gpu.h>
#endif
