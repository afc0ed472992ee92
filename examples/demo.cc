// demo — what Prism does, in one table.
//
// Two real workloads, each run serially and then as Prism tasks on every CPU, each checked:
//   - matrix products: the tutorial's tree (x1*x2 + x3*x4) and a stream of products
//     (workloads/matmul.h), compared with the serial result;
//   - image preprocessing: decode a JPEG, random flip, random crop, to tensor, normalize, one
//     task per image (workloads/images.h); the tensors must equal the serial ones.
// "ideal" is the best speed-up this machine allows: the CPUs, or less when the longest chain of
// dependent steps (the critical path) is a large part of the work.
//
// --gpu adds two rows: the matmul tree and the images with their pixel work as GPU tasks
// (workloads/matmul_gpu.h, images_gpu.h), on CUDA devices or else on a logical GPU of the host
// backend, checked against the same serial results.
//
//   ./demo             # reduced size: well under a minute on 2 cores
//   ./demo --full      # 400 matrix products, 50 images of 3000 x 3000
//   ./demo --gpu       # and the GPU rows

#include <prism/prism.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "common/check.h"
#include "common/flags.h"
#include "common/gpu_flags.h"
#include "common/table.h"
#include "common/timer.h"
#include "workloads/images.h"
#include "workloads/images_gpu.h"
#include "workloads/matmul.h"
#include "workloads/matmul_gpu.h"

namespace images = examples::images;
namespace images_gpu = examples::images_gpu;
namespace matmul = examples::matmul;
namespace matmul_gpu = examples::matmul_gpu;

struct Row {
  std::string workload;
  double serial_s, prism_s, critical_s;  // critical_s: the critical path (from the serial run)
  bool ok;
};

int main(int argc, char** argv) try {
  examples::Flags flags(argc, argv);
  const bool full = flags.get_bool("full", "run the full-size workloads");
  const int n = static_cast<int>(flags.get_int("n", 1000, "matrix size"));
  const int iterations =
      static_cast<int>(flags.get_int("iterations", full ? 400 : 40, "matrix products"));
  const int count = static_cast<int>(flags.get_int("images", full ? 50 : 16, "images"));
  const int size = static_cast<int>(flags.get_int("size", 3000, "image width and height"));
  const std::string dir = flags.get_string("dir", "/tmp/prism-images", "folder of the JPEGs");
  const std::string timeline = flags.get_string(
      "timeline", "/tmp/prism-demo-timeline.json", "Chrome trace of the Prism runs ('' = none)");
  const int cpus = flags.cpus();
  const examples::GpuFlags gpu = examples::gpu_flags(flags);
  if (!flags.ok()) return 2;
  const uint64_t kSeed = 7;
  examples::Checker check("demo");

  std::printf("Prism demo on %d CPU slots (%u hardware threads), %s size%s\n", cpus,
              std::thread::hardware_concurrency(), full ? "full" : "reduced",
              full ? "" : " (--full for the full-size run)");
  prism::init({.num_cpus = static_cast<double>(cpus),
               .num_gpus = gpu.init_num_gpus(),
               .timeline = !timeline.empty()});
  if (gpu.enabled) examples::print_gpu_backend(gpu);
  images::ensure_images(dir, count, size);  // once; not timed
  std::vector<Row> rows;

  {  // The tutorial's tree of matrix products.
    double critical = 0;
    matmul::Matrix serial, parallel;
    const double s =
        examples::time_seconds([&] { serial = matmul::tree_serial(n, kSeed, &critical); });
    const double p = examples::time_seconds([&] { parallel = matmul::tree_prism(n, kSeed); });
    rows.push_back({"matmul tree (" + std::to_string(n) + "^2)", s, p, critical,
                    matmul::max_rel_diff(parallel, serial) < 1e-9});
    if (gpu.enabled) {  // The same tree, every step a GPU task on float64 tensors.
      matmul::Matrix on_gpu;
      const double g = examples::time_seconds([&] { on_gpu = matmul_gpu::tree_gpu(n, kSeed); });
      rows.push_back({"matmul tree (" + std::to_string(n) + "^2), GPU tasks", s, g, critical,
                      matmul::max_rel_diff(on_gpu, serial) <= 1e-9});
    }
  }
  {  // A stream of independent products, gathered as they finish.
    double critical = 0;
    matmul::Gathered serial, parallel;
    const double s = examples::time_seconds(
        [&] { serial = matmul::many_serial(n, iterations, kSeed, &critical); });
    const double p = examples::time_seconds(
        [&] { parallel = matmul::many_prism(n, iterations, kSeed, 2 * cpus); });
    rows.push_back({std::to_string(iterations) + " matrix products", s, p, critical,
                    matmul::max_rel_diff(parallel.sum, serial.sum) < 1e-9});
  }
  {  // One task per image.
    double critical = 0;
    std::vector<examples::img::Tensor> serial, parallel;
    const double s = examples::time_seconds(
        [&] { serial = images::preprocess_serial(dir, count, kSeed, false, &critical); });
    const double p = examples::time_seconds(
        [&] { parallel = images::preprocess_prism(dir, count, kSeed, false); });
    rows.push_back({std::to_string(count) + " images (" + std::to_string(size) + "^2 JPEG)", s, p,
                    critical, parallel == serial});
    if (gpu.enabled) {  // Decoding on CPU tasks, flip + crop + normalize on GPU tasks, 8 a batch.
      std::vector<examples::img::Tensor> on_gpu;
      const double g = examples::time_seconds([&] {
        on_gpu = images_gpu::to_image_tensors(
            images_gpu::preprocess_gpu(dir, count, kSeed, false, /*batch=*/8, size));
      });
      bool same = on_gpu.size() == serial.size();
      for (size_t i = 0; same && i < serial.size(); ++i) {
        same = images_gpu::bitwise_equal(on_gpu[i], serial[i]);
      }
      rows.push_back({std::to_string(count) + " images, GPU tasks", s, g, critical, same});
    }
  }
  if (!timeline.empty()) {
    prism::timeline(timeline);
    std::printf("timeline of the Prism runs: %s (open it in Perfetto)\n",
                timeline.c_str());
  }
  prism::shutdown();

  examples::Table table({"workload", "serial s", "prism s", "speed-up", "ideal", "check"});
  for (const Row& r : rows) {
    const double ideal = r.serial_s / std::max(r.serial_s / cpus, r.critical_s);
    table.add({r.workload, examples::fixed(r.serial_s), examples::fixed(r.prism_s),
               examples::times(r.serial_s / r.prism_s), examples::times(ideal),
               r.ok ? "OK" : "WRONG"});
    check.expect(r.ok, r.workload + ": the Prism result differs from the serial one");
  }
  std::printf("\n");
  table.print();
  std::printf("\n");
  return check.finish();
} catch (const std::exception& e) {
  return examples::report_error("demo", e);
}
