// examples/image/synthetic.h — a deterministic stand-in for a folder of photos.
//
//   Image im = synthetic_image(3000, /*seed=*/7);   // same seed, same pixels, on every machine
//   write_jpeg(image_path("/tmp/prism-images", 7), im, 60);
//
// The pictures mix smooth gradients, overlapping discs and fine noise, so that JPEG files have
// the size and decoding cost of real photos (a flat image would decode unrealistically fast).
//
// Thread-safe: pure functions.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "jpeg_io.h"
#include "transforms.h"

namespace examples::img {

// splitmix64: a tiny generator whose output is the same with every standard library.
inline uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

inline Image synthetic_image(int size, uint64_t seed) {
  uint64_t rng = seed * 0x2545F4914F6CDD1Dull + 1;
  auto next = [&](int bound) {
    return static_cast<int>(splitmix64(rng) % static_cast<uint64_t>(bound));
  };
  Image im(size, size);
  // A diagonal colour gradient.
  const int r0 = next(256), g0 = next(256), b0 = next(256);
  for (int y = 0; y < size; ++y) {
    for (int x = 0; x < size; ++x) {
      const int t = (x + y) * 255 / (2 * size);
      im.at(x, y, 0) = static_cast<uint8_t>((r0 + t) & 255);
      im.at(x, y, 1) = static_cast<uint8_t>((g0 + 2 * t) & 255);
      im.at(x, y, 2) = static_cast<uint8_t>((b0 + 255 - t) & 255);
    }
  }
  // Discs of flat colour.
  for (int i = 0; i < 60; ++i) {
    const int cx = next(size), cy = next(size), rad = 1 + next(size / 6 + 1);
    const uint8_t col[3] = {static_cast<uint8_t>(next(256)), static_cast<uint8_t>(next(256)),
                            static_cast<uint8_t>(next(256))};
    for (int y = std::max(cy - rad, 0); y < std::min(cy + rad, size); ++y) {
      for (int x = std::max(cx - rad, 0); x < std::min(cx + rad, size); ++x) {
        if ((x - cx) * (x - cx) + (y - cy) * (y - cy) > rad * rad) continue;
        for (int c = 0; c < 3; ++c) im.at(x, y, c) = col[c];
      }
    }
  }
  // Sensor-like noise of +-20 on every sample.
  for (uint8_t& v : im.pixels) {
    const int n = static_cast<int>(splitmix64(rng) % 41) - 20;
    v = static_cast<uint8_t>(std::clamp(v + n, 0, 255));
  }
  return im;
}

// "<dir>/img_007.jpg"
inline std::string image_path(const std::string& dir, int index) {
  char name[32];
  std::snprintf(name, sizeof name, "/img_%03d.jpg", index);
  return dir + name;
}

// True if `path` is a readable JPEG of size x size pixels.
inline bool image_ok(const std::string& path, int size) {
  try {
    const Rect r = jpeg_size(read_file(path));
    return r.width == size && r.height == size;
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace examples::img
