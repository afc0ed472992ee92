// examples/workloads/images_gpu.h — images.h's preprocessing with the pixel work on a GPU.
//
//   prism::init({.num_gpus = 1});                       // no CUDA here: one logical GPU
//   std::vector<Tensor> batches =
//       images_gpu::preprocess_gpu(dir, 50, kSeed, /*full_decode=*/false, /*batch=*/8, 3000);
//   std::vector<img::Tensor> t = images_gpu::to_image_tensors(batches);   // image order
//
// Decoding stays on CPU tasks, one per image: read the file, draw the flip and crop from the
// image's seed exactly as images::preprocess_image does, decode the rectangle the crop reads
// (or the whole picture with full_decode). GPU tasks then take `batch` decoded images each:
// pack them at the top-left of the slots of one [B, Hmax, Wmax, 3] uint8 buffer, upload it onto
// the task's GPU and run gpu::flip_crop_normalize, whose [B, 3, 224, 224] float32 result equals
// preprocess_image's tensors bit for bit (the kernel uses IEEE arithmetic, no fused multiply-add).
//
// Thread-safe: the task functions are pure; the drivers must run where Prism is initialized.
#pragma once

#include <prism/gpu.h>
#include <prism/prism.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "images.h"

namespace examples::images_gpu {

using prism::gpu::Tensor;

// The GPU share of every batch task: fractions up to 1 share one device.
inline constexpr double kGpuShare = 0.25;

// What a decoding task hands to the GPU: the pixels of rectangle `src` of a full_width x
// full_height picture, and the flip and crop drawn for the image.
struct Decoded {
  img::Image pixels;  // src.width x src.height
  img::Rect src;
  int full_width = 0;
  int full_height = 0;
  img::FlipCrop crop;
};

}  // namespace examples::images_gpu

// A decoded region's size for the object store's accounting.
template <>
struct prism::ObjectSize<examples::images_gpu::Decoded> {
  static size_t bytes(const examples::images_gpu::Decoded& d) {
    return sizeof(d) + d.pixels.pixels.size();
  }
};

// How a decoded region travels to a GPU task on another node (cluster mode).
template <>
struct prism::Serializer<examples::images_gpu::Decoded> {
  static void write(Writer& w, const examples::images_gpu::Decoded& d) {
    w.put(d.pixels.width);
    w.put(d.pixels.height);
    w.put(d.pixels.pixels);
    w.put(d.src.x);
    w.put(d.src.y);
    w.put(d.src.width);
    w.put(d.src.height);
    w.put(d.full_width);
    w.put(d.full_height);
    w.put(static_cast<uint8_t>(d.crop.flip ? 1 : 0));
    w.put(d.crop.top);
    w.put(d.crop.left);
  }
  static void read(Reader& r, examples::images_gpu::Decoded* d) {
    r.get(&d->pixels.width);
    r.get(&d->pixels.height);
    r.get(&d->pixels.pixels);
    r.get(&d->src.x);
    r.get(&d->src.y);
    r.get(&d->src.width);
    r.get(&d->src.height);
    r.get(&d->full_width);
    r.get(&d->full_height);
    uint8_t flip = 0;
    r.get(&flip);
    d->crop.flip = flip != 0;
    r.get(&d->crop.top);
    r.get(&d->crop.left);
    const examples::img::Image& p = d->pixels;
    constexpr int kMaxSide = 1 << 16;
    if (p.width <= 0 || p.height <= 0 || p.width > kMaxSide || p.height > kMaxSide ||
        p.pixels.size() != static_cast<size_t>(p.width) * static_cast<size_t>(p.height) * 3 ||
        d->full_width <= 0 || d->full_height <= 0 || d->full_width > kMaxSide ||
        d->full_height > kMaxSide) {
      throw prism::Error(prism::ErrorCode::kInvalidArgument,
                         "Decoded: a region of a bad size, or pixels that do not fill it");
    }
  }
};

namespace examples::images_gpu {

// ---- The remote functions ----

// CPU task: read and decode what image `file`'s flip and crop (drawn from `seed`) will read.
inline Decoded decode_for_crop(const std::string& file, uint64_t seed, bool full_decode) {
  const std::vector<uint8_t> bytes = img::read_file(file);
  const img::Rect size = img::jpeg_size(bytes);
  Decoded d;
  d.full_width = size.width;
  d.full_height = size.height;
  d.crop = img::random_flip_crop(seed, size.width, size.height, images::kCrop, images::kPadding,
                                 images::kFlipP);
  if (full_decode) {
    d.src = {0, 0, size.width, size.height};
    d.pixels = img::decode_jpeg(bytes);
  } else {
    d.src = img::flip_crop_source(d.crop, size.width, size.height, images::kCrop, images::kPadding);
    d.pixels = img::decode_jpeg_region(bytes, d.src);
  }
  return d;
}

// GPU task: flip, crop, ToTensor and Normalize a batch of decoded images on the task's GPU.
// Returns [B, 3, kCrop, kCrop] float32, image n of the batch at index n.
inline Tensor normalize_batch_gpu(const std::vector<Decoded>& batch) {
  const int64_t n = static_cast<int64_t>(batch.size());
  int height = 1, width = 1;  // the slots: the largest region of the batch
  for (const Decoded& d : batch) {
    height = std::max(height, d.pixels.height);
    width = std::max(width, d.pixels.width);
  }
  std::vector<uint8_t> packed(static_cast<size_t>(n) * height * width * 3, 0);
  std::vector<prism::gpu::ImageCrop> crops;
  crops.reserve(batch.size());
  for (int64_t i = 0; i < n; ++i) {
    const Decoded& d = batch[i];
    const size_t row = static_cast<size_t>(d.pixels.width) * 3;
    for (int y = 0; y < d.pixels.height; ++y) {
      std::memcpy(packed.data() + ((static_cast<size_t>(i) * height + y) * width) * 3,
                  d.pixels.pixels.data() + y * row, row);
    }
    crops.push_back({.src_x = d.src.x,
                     .src_y = d.src.y,
                     .src_width = d.pixels.width,
                     .src_height = d.pixels.height,
                     .full_width = d.full_width,
                     .full_height = d.full_height,
                     .flip = d.crop.flip,
                     .top = d.crop.top,
                     .left = d.crop.left});
  }
  const Tensor slots = Tensor::from_host(packed.data(), packed.size(), {n, height, width, 3});
  return prism::gpu::flip_crop_normalize(slots, crops, images::kCrop, images::kPadding,
                                         {{0.5f, 0.5f, 0.5f}, {0.5f, 0.5f, 0.5f}});
}

PRISM_REMOTE(decode_for_crop, normalize_batch_gpu);

// ---- Drivers ----

// GPU memory a batch task of `count` images of image_size x image_size pixels uses: the packed
// regions (at most the crop, or the whole picture with full_decode) and the result.
inline int64_t batch_bytes(int count, int image_size, bool full_decode) {
  const int64_t side = full_decode ? image_size : images::kCrop;
  return count * (side * side * 3 + int64_t{3} * images::kCrop * images::kCrop * 4);
}

// One CPU task per image decodes, one GPU task per `batch` images does the rest; image i uses
// seed + i, as images::preprocess_prism. Returns the batches' host copies, in image order.
inline std::vector<Tensor> preprocess_gpu(const std::string& dir, int count, uint64_t seed,
                                          bool full_decode, int batch, int image_size) {
  std::vector<prism::ObjectRef<Tensor>> batches;
  for (int first = 0; first < count; first += batch) {
    const int b = std::min(batch, count - first);
    std::vector<prism::ObjectRef<Decoded>> decoded;
    for (int i = first; i < first + b; ++i) {
      decoded.push_back(
          prism::task(decode_for_crop).remote(images::path(dir, i), seed + i, full_decode));
    }
    // A vector of refs reaches the task as the vector of their values.
    batches.push_back(prism::task(normalize_batch_gpu)
                          .num_gpus(kGpuShare)
                          .gpu_memory(batch_bytes(b, image_size, full_decode))
                          .remote(decoded));
  }
  return prism::get(batches);  // get() outside tasks: host copies
}

// The images of [B, 3, H, W] float32 batches (host or device), one img::Tensor each, in order.
inline std::vector<img::Tensor> to_image_tensors(const std::vector<Tensor>& batches) {
  std::vector<img::Tensor> out;
  for (const Tensor& b : batches) {
    const std::vector<float> all = b.to_vector<float>();
    const int channels = static_cast<int>(b.dim(1));
    const int height = static_cast<int>(b.dim(2));
    const int width = static_cast<int>(b.dim(3));
    const ptrdiff_t per_image = static_cast<ptrdiff_t>(channels) * height * width;
    for (ptrdiff_t n = 0; n < b.dim(0); ++n) {
      out.push_back({channels, height, width,
                     std::vector<float>(all.begin() + n * per_image,
                                        all.begin() + (n + 1) * per_image)});
    }
  }
  return out;
}

// Same shape and the same bits in every element (unlike ==, tells -0.0 from 0.0).
inline bool bitwise_equal(const img::Tensor& a, const img::Tensor& b) {
  return a.channels == b.channels && a.height == b.height && a.width == b.width &&
         a.data.size() == b.data.size() &&
         std::memcmp(a.data.data(), b.data.data(), a.data.size() * sizeof(float)) == 0;
}

}  // namespace examples::images_gpu
