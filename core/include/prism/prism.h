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
