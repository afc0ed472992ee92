// image_preprocess — a data loader's work, one task per image.
//
// Each image goes through: read file -> decode JPEG (libjpeg-turbo) -> RandomHorizontalFlip
// (p = 0.5) -> RandomCrop(224, padding = 4) -> ToTensor (CHW float in [0, 1]) ->
// Normalize(mean 0.5, std 0.5). The images do not depend on each other, so Prism runs one
// task per image on every CPU; get() returns the tensors in image order.
//
// The random flip and crop come from a generator seeded per image (not one shared generator),
// so the serial and the parallel run produce identical tensors, which the example checks.
// It also checks, on the first image, that the fast decoding path (only the rows and columns
// the crop reads) gives exactly the tensor of a full decode followed by the crop.
//
// The images are synthetic 3000 x 3000 JPEGs at quality 60, generated once (as Prism tasks)
// into --dir and regenerated only when missing or of another size.
//
// --gpu runs the pipeline once more with the pixel work on a GPU (workloads/images_gpu.h):
// CPU tasks decode, GPU tasks flip, crop and normalize --batch images at a time, on the CUDA
// devices when there are any, else on --gpus logical GPUs of the host backend. Every image's
// tensor must equal the serial one bit for bit.
//
//   ./image_preprocess                                   # 50 images of 3000 x 3000
//   ./image_preprocess --images=4 --size=600 --dir=/tmp/prism-images-small
//   ./image_preprocess --full-decode                     # decode whole images, as torchvision
//   ./image_preprocess --gpu --batch=8                   # and again with GPU tasks

#include <prism/prism.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/cluster_report.h"
#include "common/flags.h"
#include "common/gpu_flags.h"
#include "common/table.h"
#include "common/timer.h"
#include "workloads/images.h"
#include "workloads/images_gpu.h"

namespace images = examples::images;
namespace images_gpu = examples::images_gpu;

int main(int argc, char** argv) try {
  examples::Flags flags(argc, argv);
  const int count = static_cast<int>(flags.get_int("images", 50, "number of images"));
  const int size = static_cast<int>(flags.get_int("size", 3000, "image width and height"));
  const std::string dir = flags.get_string("dir", "/tmp/prism-images", "folder of the JPEGs");
  const bool full_decode = flags.get_bool("full-decode", "decode whole images before cropping");
  const int batch = static_cast<int>(flags.get_int("batch", 8, "images per GPU task (with --gpu)"));
  const int cpus = flags.cpus();
  const examples::GpuFlags gpu = examples::gpu_flags(flags);
  if (!flags.ok()) return 2;
  if (count < 1 || size < images::kCrop - 2 * images::kPadding || batch < 1) {
    std::fprintf(stderr, "image_preprocess: needs --images >= 1, --size >= %d and --batch >= 1\n",
                 images::kCrop - 2 * images::kPadding);
    return 2;
  }
  const uint64_t kSeed = 42;  // the crops' seed: image i uses kSeed + i
  examples::Checker check("image_preprocess");

  prism::init({.num_cpus = static_cast<double>(cpus), .num_gpus = gpu.init_num_gpus()});
  images::ensure_images(dir, count, size);

  double longest_s = 0;
  std::vector<examples::img::Tensor> serial;
  const double serial_s = examples::time_seconds(
      [&] { serial = images::preprocess_serial(dir, count, kSeed, full_decode, &longest_s); });
  std::vector<examples::img::Tensor> parallel;
  const double prism_s = examples::time_seconds(
      [&] { parallel = images::preprocess_prism(dir, count, kSeed, full_decode); });

  // The same images with the pixel work on GPU tasks, and the copies that made.
  std::vector<examples::img::Tensor> on_gpu;
  double gpu_s = 0;
  prism::gpu::CopyStats gpu_copies;
  if (gpu.enabled) {
    examples::print_gpu_backend(gpu);
    const prism::gpu::CopyStats before = prism::gpu::copy_stats();
    std::vector<prism::gpu::Tensor> batches;
    gpu_s = examples::time_seconds([&] {
      batches = images_gpu::preprocess_gpu(dir, count, kSeed, full_decode, batch, size);
    });
    gpu_copies = examples::copies_since(before);
    on_gpu = images_gpu::to_image_tensors(batches);
  }

  // The fast path must not change a single value: compare with a full decode, image 0.
  const examples::img::Tensor reference =
      images::preprocess_image(images::path(dir, 0), kSeed, /*full_decode=*/true);
  const std::string moved = examples::cluster_traffic();  // empty on one node
  // On a cluster, tasks run on every node: this process's copies are only its share.
  const bool one_process = prism::node_count() <= 1;
  prism::shutdown();
  if (!moved.empty()) std::printf("%s\n", moved.c_str());

  const double ideal = serial_s / std::max(serial_s / cpus, longest_s);
  examples::Table table({"run (" + std::to_string(cpus) + " CPUs)", "images", "seconds", "images/s",
                         "speed-up", "ideal"});
  table.add({"serial", std::to_string(count), examples::fixed(serial_s),
             examples::fixed(count / serial_s, 1), "1.00x", "1.00x"});
  table.add({"prism", std::to_string(count), examples::fixed(prism_s),
             examples::fixed(count / prism_s, 1), examples::times(serial_s / prism_s),
             examples::times(ideal)});
  if (gpu.enabled) {
    table.add({"prism, GPU tasks (" + std::string(prism::gpu::backend_name(prism::gpu::backend())) +
                   ", batch " + std::to_string(batch) + ")",
               std::to_string(count), examples::fixed(gpu_s), examples::fixed(count / gpu_s, 1),
               examples::times(serial_s / gpu_s), "-"});
  }
  table.print();
  std::printf("%dx%d JPEGs, %s decode, tensors 3x%dx%d\n", size, size,
              full_decode ? "full" : "cropped-region", images::kCrop, images::kCrop);
  examples::print_speedup("image_preprocess", serial_s, prism_s);
  if (gpu.enabled) {
    examples::print_speedup("image_preprocess (GPU tasks)", serial_s, gpu_s);
    const int batches = (count + batch - 1) / batch;
    std::printf("GPU copies%s: %s\n  (one GPU: %d uploads, one per batch; %d downloads, the "
                "batches' host copies)\n",
                one_process ? "" : " made by the driver", examples::describe(gpu_copies).c_str(),
                batches, batches);
  }

  check.expect(parallel.size() == serial.size(), "missing tensors");
  for (size_t i = 0; i < std::min(parallel.size(), serial.size()); ++i) {
    check.expect(parallel[i] == serial[i],
                 "image " + std::to_string(i) + ": the task's tensor differs from the serial one");
  }
  check.expect(serial[0] == reference, "image 0: region decoding differs from a full decode");
  if (gpu.enabled) {
    const uint64_t batches = static_cast<uint64_t>((count + batch - 1) / batch);
    if (gpu.gpus_in_use() == 1 && one_process) {
      check.expect(gpu_copies.host_to_device == batches && gpu_copies.device_to_host == batches &&
                       gpu_copies.device_to_device == 0,
                   "the GPU path made other copies than one upload and one download per batch");
    }
    check.expect(on_gpu.size() == serial.size(), "missing GPU tensors");
    int same = 0;
    for (size_t i = 0; i < std::min(on_gpu.size(), serial.size()); ++i) {
      const bool ok = images_gpu::bitwise_equal(on_gpu[i], serial[i]);
      same += ok;
      check.expect(ok, "image " + std::to_string(i) +
                           ": the GPU tensor differs from the serial one");
    }
    std::printf("GPU tensors bit-identical to the serial ones: %d of %d\n", same, count);
  }
  for (const auto& t : serial) {
    const bool shape = t.channels == 3 && t.height == images::kCrop && t.width == images::kCrop;
    const auto [lo, hi] = std::minmax_element(t.data.begin(), t.data.end());
    check.expect(shape && *lo >= -1.0f && *hi <= 1.0f, "a tensor has the wrong shape or range");
  }
  return check.finish();
} catch (const std::exception& e) {
  return examples::report_error("image_preprocess", e);
}
