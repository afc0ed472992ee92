// examples/workloads/images.h — a data-loader step per image, serial and with Prism.
//
//   images::ensure_images("/tmp/prism-images", 50, 3000);           // generated once
//   img::Tensor t = images::preprocess_image(images::path(dir, 7), kSeed + 7, false);
//   std::vector<img::Tensor> all = images::preprocess_prism(dir, 50, kSeed, false);
//
// One image = read the file, decode the JPEG, RandomHorizontalFlip(p=0.5),
// RandomCrop(224, padding=4), ToTensor, Normalize(mean=0.5, std=0.5) — torchvision's CIFAR-style
// training transform. The flip and crop come from a generator seeded per image, so serial and
// parallel runs give identical tensors.
//
// Decoding is the cost. The fast path decodes only the rows and columns the crop reads
// (libjpeg-turbo's skip/crop scanline API, with a margin that keeps every pixel identical to a
// full decode); full_decode = true decodes the whole picture first, as torchvision does.
//
// Used by image_preprocess.cc and demo.cc. Thread-safe: the task functions are pure.
#pragma once

#include <prism/prism.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <unistd.h>

#include "../common/timer.h"
#include "../image/jpeg_io.h"
#include "../image/synthetic.h"
#include "../image/transforms.h"

// How an image tensor travels between nodes in cluster mode (prism/serialize.h).
template <>
struct prism::Serializer<examples::img::Tensor> {
  static void write(Writer& w, const examples::img::Tensor& t) {
    w.put(t.channels);
    w.put(t.height);
    w.put(t.width);
    w.put(t.data);
  }
  static void read(Reader& r, examples::img::Tensor* t) {
    r.get(&t->channels);
    r.get(&t->height);
    r.get(&t->width);
    r.get(&t->data);
  }
};

// A tensor's size for the object store's accounting (its default is sizeof(T)).
template <>
struct prism::ObjectSize<examples::img::Tensor> {
  static size_t bytes(const examples::img::Tensor& t) {
    return sizeof(t) + t.data.size() * sizeof(float);
  }
};

namespace examples::images {

inline constexpr int kCrop = 224;
inline constexpr int kPadding = 4;
inline constexpr double kFlipP = 0.5;
inline constexpr int kQuality = 60;
// The pictures' seed: every example that shares the folder must see the same images.
inline constexpr uint64_t kDatasetSeed = 2024;

inline std::string path(const std::string& dir, int index) { return img::image_path(dir, index); }

// ---- The remote functions ----

// Writes synthetic image `index` (size x size, seeded) as a JPEG; returns the file size.
// Writes to a temporary name first, so that an interrupted run never leaves a truncated file; the
// name is the process's own, so that processes writing the same picture at once (the ranks of a
// cluster job run the code before prism::init each) never rename each other's file.
inline int64_t generate_image(const std::string& dir, int index, int size, uint64_t seed) {
  const std::string final_path = path(dir, index);
  const std::string tmp_path = final_path + "." + std::to_string(::getpid()) + ".tmp";
  img::write_jpeg(tmp_path, img::synthetic_image(size, seed + index), kQuality);
  std::filesystem::rename(tmp_path, final_path);
  return static_cast<int64_t>(std::filesystem::file_size(final_path));
}

// The whole per-image pipeline, as one task.
inline img::Tensor preprocess_image(const std::string& file, uint64_t seed, bool full_decode) {
  const std::vector<uint8_t> bytes = img::read_file(file);
  const img::Rect size = img::jpeg_size(bytes);
  const img::FlipCrop p =
      img::random_flip_crop(seed, size.width, size.height, kCrop, kPadding, kFlipP);
  img::Image crop;
  if (full_decode) {  // literally torchvision's order of operations
    img::Image im = img::decode_jpeg(bytes);
    if (p.flip) im = img::hflip(im);
    crop = img::crop_padded(im, p.top, p.left, kCrop, kCrop, kPadding);
  } else {  // the same pixels, decoding only what the crop reads
    const img::Rect src = img::flip_crop_source(p, size.width, size.height, kCrop, kPadding);
    const img::Image part = img::decode_jpeg_region(bytes, src);
    crop = img::flip_crop(part, src.x, src.y, size.width, size.height, p.flip, p.top, p.left, kCrop,
                          kCrop, kPadding);
  }
  img::Tensor t = img::to_tensor(crop);
  img::normalize(t, {0.5f, 0.5f, 0.5f}, {0.5f, 0.5f, 0.5f});
  return t;
}

PRISM_REMOTE(generate_image, preprocess_image);

// ---- Drivers ----

// Makes sure `dir` holds images 0..count-1 of size x size pixels, generating (as Prism tasks)
// those that are missing or of another size. Returns how many were generated.
inline int ensure_images(const std::string& dir, int count, int size) {
  std::filesystem::create_directories(dir);
  std::vector<prism::ObjectRef<int64_t>> written;
  for (int i = 0; i < count; ++i) {
    if (!img::image_ok(path(dir, i), size)) {
      written.push_back(prism::task(generate_image).remote(dir, i, size, kDatasetSeed));
    }
  }
  if (!written.empty()) {
    std::printf("generating %zu synthetic %dx%d JPEGs (quality %d) in %s ...\n", written.size(),
                size, size, kQuality, dir.c_str());
    std::fflush(stdout);
    prism::get(written);
  }
  return static_cast<int>(written.size());
}

// The serial baseline; also reports the longest single image (the critical path).
inline std::vector<img::Tensor> preprocess_serial(const std::string& dir, int count, uint64_t seed,
                                                  bool full_decode, double* longest_s = nullptr) {
  std::vector<img::Tensor> out;
  double longest = 0;
  for (int i = 0; i < count; ++i) {
    Timer t;
    out.push_back(preprocess_image(path(dir, i), seed + i, full_decode));
    longest = std::max(longest, t.seconds());
  }
  if (longest_s) *longest_s = longest;
  return out;
}

// One task per image; get() returns the tensors in image order.
inline std::vector<img::Tensor> preprocess_prism(const std::string& dir, int count, uint64_t seed,
                                                 bool full_decode) {
  std::vector<prism::ObjectRef<img::Tensor>> refs;
  for (int i = 0; i < count; ++i) {
    refs.push_back(prism::task(preprocess_image).remote(path(dir, i), seed + i, full_decode));
  }
  return prism::get(refs);
}

}  // namespace examples::images
