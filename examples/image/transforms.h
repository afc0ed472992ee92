// examples/image/transforms.h — torchvision-style image transforms on 8-bit RGB images.
//
//   Image im = ...;                                  // width x height, RGB interleaved (HWC)
//   FlipCrop p = random_flip_crop(seed, im.width, im.height, 224, /*padding=*/4, /*p=*/0.5);
//   if (p.flip) im = hflip(im);                      // RandomHorizontalFlip
//   im = crop_padded(im, p.top, p.left, 224, 224, 4); // RandomCrop(224, padding=4)
//   Tensor t = to_tensor(im);                        // ToTensor: CHW float in [0, 1]
//   normalize(t, {0.5f, 0.5f, 0.5f}, {0.5f, 0.5f, 0.5f});   // Normalize(mean, std)
//
// flip_crop() does the flip and the padded crop in one pass and can read from a decoded
// sub-rectangle of the image (see decode_jpeg_region in jpeg_io.h): the result is the same.
//
// Random parameters come from a generator seeded per image, so a serial run and a parallel
// run produce identical tensors whatever order the images are processed in.
//
// Thread-safe: pure functions on values.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace examples::img {

// An 8-bit RGB image, rows top to bottom, pixels interleaved: pixels[(y * width + x) * 3 + c].
struct Image {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;

  Image() = default;
  Image(int w, int h) : width(w), height(h), pixels(static_cast<size_t>(w) * h * 3, 0) {}

  uint8_t& at(int x, int y, int c) { return pixels[(static_cast<size_t>(y) * width + x) * 3 + c]; }
  uint8_t at(int x, int y, int c) const {
    return pixels[(static_cast<size_t>(y) * width + x) * 3 + c];
  }
  friend bool operator==(const Image&, const Image&) = default;
};

// A rectangle of pixels: columns [x, x + width), rows [y, y + height).
struct Rect {
  int x = 0;
  int y = 0;
  int width = 0;
  int height = 0;
};

// A float tensor in CHW layout: data[(c * height + y) * width + x].
struct Tensor {
  int channels = 0;
  int height = 0;
  int width = 0;
  std::vector<float> data;

  float at(int c, int y, int x) const {
    return data[(static_cast<size_t>(c) * height + y) * width + x];
  }
  friend bool operator==(const Tensor&, const Tensor&) = default;
};

// Mirror left-right.
inline Image hflip(const Image& src) {
  Image out(src.width, src.height);
  for (int y = 0; y < src.height; ++y) {
    for (int x = 0; x < src.width; ++x) {
      for (int c = 0; c < 3; ++c) out.at(x, y, c) = src.at(src.width - 1 - x, y, c);
    }
  }
  return out;
}

// The parameters of RandomHorizontalFlip + RandomCrop for one image.
struct FlipCrop {
  bool flip = false;
  int top = 0;   // in the padded image
  int left = 0;  // in the padded (and flipped) image
};

// Draws flip with probability `flip_p`, then a crop position uniformly in the image padded by
// `padding` on every side (as torchvision's RandomCrop.get_params does).
inline FlipCrop random_flip_crop(uint64_t seed, int width, int height, int size, int padding,
                                 double flip_p) {
  if (width + 2 * padding < size || height + 2 * padding < size) {
    throw std::invalid_argument("random crop of " + std::to_string(size) +
                                " is larger than the padded image");
  }
  std::mt19937_64 gen(seed);
  FlipCrop p;
  p.flip = std::uniform_real_distribution<double>(0.0, 1.0)(gen) < flip_p;
  p.top = std::uniform_int_distribution<int>(0, height + 2 * padding - size)(gen);
  p.left = std::uniform_int_distribution<int>(0, width + 2 * padding - size)(gen);
  return p;
}

// Crops out_h x out_w pixels at (top, left) of the image `full_w` x `full_h`, zero-padded by
// `padding` on every side and mirrored first if `flip`. `src` holds the part of the full image
// whose top-left pixel is (src_x, src_y): the whole image, or just what the crop needs.
inline Image flip_crop(const Image& src, int src_x, int src_y, int full_w, int full_h, bool flip,
                       int top, int left, int out_h, int out_w, int padding) {
  if (top < 0 || left < 0 || top + out_h > full_h + 2 * padding ||
      left + out_w > full_w + 2 * padding) {
    throw std::invalid_argument("crop window outside the padded image");
  }
  Image out(out_w, out_h);  // zeros: the padding
  for (int oy = 0; oy < out_h; ++oy) {
    const int y = top + oy - padding;  // row in the full image
    if (y < 0 || y >= full_h) continue;
    for (int ox = 0; ox < out_w; ++ox) {
      const int fx = left + ox - padding;  // column in the (flipped) full image
      if (fx < 0 || fx >= full_w) continue;
      const int x = flip ? full_w - 1 - fx : fx;  // column in the original full image
      const int sx = x - src_x, sy = y - src_y;
      if (sx < 0 || sy < 0 || sx >= src.width || sy >= src.height) {
        throw std::invalid_argument("flip_crop: the source rectangle lacks a needed pixel");
      }
      for (int c = 0; c < 3; ++c) out.at(ox, oy, c) = src.at(sx, sy, c);
    }
  }
  return out;
}

// RandomCrop's crop: out_h x out_w at (top, left) of `src` zero-padded by `padding`.
inline Image crop_padded(const Image& src, int top, int left, int out_h, int out_w, int padding) {
  return flip_crop(src, 0, 0, src.width, src.height, /*flip=*/false, top, left, out_h, out_w,
                   padding);
}

// The rectangle of the original image that the flip and crop `p` read (empty if the crop lies
// in the padding only).
inline Rect flip_crop_source(const FlipCrop& p, int full_w, int full_h, int size, int padding) {
  const int y0 = std::max(p.top - padding, 0);
  const int y1 = std::min(p.top - padding + size, full_h);
  int x0 = p.left - padding, x1 = p.left - padding + size;  // in flipped coordinates
  if (p.flip) {
    const int fx0 = full_w - x1, fx1 = full_w - x0;
    x0 = fx0;
    x1 = fx1;
  }
  x0 = std::max(x0, 0);
  x1 = std::min(x1, full_w);
  if (x0 >= x1 || y0 >= y1) return {};
  return {x0, y0, x1 - x0, y1 - y0};
}

// ToTensor: HWC uint8 -> CHW float in [0, 1].
inline Tensor to_tensor(const Image& im) {
  Tensor t{3, im.height, im.width,
           std::vector<float>(static_cast<size_t>(im.width) * im.height * 3)};
  const size_t plane = static_cast<size_t>(im.width) * im.height;
  for (size_t i = 0; i < plane; ++i) {
    for (int c = 0; c < 3; ++c) t.data[c * plane + i] = im.pixels[i * 3 + c] / 255.0f;
  }
  return t;
}

// Normalize: (x - mean[c]) / std[c] per channel, in place.
inline void normalize(Tensor& t, const std::array<float, 3>& mean,
                      const std::array<float, 3>& std) {
  const size_t plane = static_cast<size_t>(t.width) * t.height;
  for (int c = 0; c < t.channels && c < 3; ++c) {
    float* p = t.data.data() + c * plane;
    for (size_t i = 0; i < plane; ++i) p[i] = (p[i] - mean[c]) / std[c];
  }
}

}  // namespace examples::img
