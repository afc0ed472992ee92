// Tests of prism/gpu/kernels.h against plain C++ references.
//
// KernelsTest runs on whichever backend the process has: on a machine without a CUDA device the
// host backend runs the same Thrust code as the GPU (Thrust's CPP system), on logical GPUs.
// CudaKernelsTest needs a real device and skips (with the reason) otherwise.
//
// Every blocking wait has a deadline (prism::get with kTimeout).

#include <gtest/gtest.h>
#include <prism/gpu.h>
#include <prism/prism.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "../../examples/image/transforms.h"

namespace {

using prism::gpu::Backend;
using prism::gpu::Device;
using prism::gpu::DType;
using prism::gpu::ImageCrop;
using prism::gpu::Normalization;
using prism::gpu::Tensor;

constexpr std::chrono::seconds kTimeout{30};

class KernelsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    prism::init({.num_cpus = 2, .num_gpus = 1});
    started_ = true;
    // A build without Thrust (no CUDA toolkit at all) has no host kernels: nothing to test.
    try {
      prism::gpu::sum(Tensor::from_vector(std::vector<float>{1.f}, {1}, Device::gpu(0)));
    } catch (const prism::Error& e) {
      if (e.code() != prism::ErrorCode::kUnavailable) throw;
      GTEST_SKIP() << e.what();
    }
  }
  void TearDown() override {
    if (started_) prism::shutdown();
  }

  bool started_ = false;
};

// The same, on a real CUDA device only.
class CudaKernelsTest : public KernelsTest {
 protected:
  void SetUp() override {
    if (prism::gpu::backend() != Backend::kCuda) {
      GTEST_SKIP() << "no CUDA device: " << prism::gpu::backend_description();
    }
    KernelsTest::SetUp();
  }
};

// --- helpers
// --------------------------------------------------------------------------------------

template <typename T>
std::vector<T> random_values(size_t n, uint32_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<T> v(n);
  for (T& x : v) x = static_cast<T>(dist(gen));
  return v;
}

template <typename T>
Tensor on_gpu(const std::vector<T>& v, std::vector<int64_t> shape, int device = 0) {
  return Tensor::from_vector(v, std::move(shape), Device::gpu(device));
}

// Expects `f` to throw prism::Error with kInvalidArgument.
template <typename F>
void expect_invalid(F&& f, const std::string& what) {
  SCOPED_TRACE(what);
  try {
    f();
    ADD_FAILURE() << what << ": no exception";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kInvalidArgument) << what << ": " << e.what();
  }
}

// Same bits (so that -0.0 != 0.0 and NaN == NaN of the same payload).
void expect_bit_equal(const std::vector<float>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  size_t mismatches = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    uint32_t g, w;
    std::memcpy(&g, &got[i], sizeof g);
    std::memcpy(&w, &want[i], sizeof w);
    if (g != w && ++mismatches <= 5) {
      ADD_FAILURE() << "element " << i << ": got " << got[i] << " want " << want[i];
    }
  }
  EXPECT_EQ(mismatches, 0u);
}

// Row-major naive product, in the element type, and the scale sum_p |a_ip| |b_pj| of each
// element (the bound of a backward-stable product's error, in units of the rounding error).
template <typename T>
void reference_matmul(const std::vector<T>& a, const std::vector<T>& b, int64_t m, int64_t k,
                      int64_t n, std::vector<T>* c, std::vector<double>* scale) {
  c->assign(m * n, T(0));
  scale->assign(m * n, 0.0);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      T acc = 0;
      double s = 0;
      for (int64_t p = 0; p < k; ++p) {
        acc += a[i * k + p] * b[p * n + j];
        s += std::abs(static_cast<double>(a[i * k + p]) * static_cast<double>(b[p * n + j]));
      }
      (*c)[i * n + j] = acc;
      (*scale)[i * n + j] = s;
    }
  }
}

template <typename T>
void check_matmul(int64_t m, int64_t k, int64_t n, double rel, uint32_t seed) {
  SCOPED_TRACE(std::to_string(m) + "x" + std::to_string(k) + " * " + std::to_string(k) + "x" +
               std::to_string(n) + " " + prism::gpu::dtype_name(prism::gpu::dtype_of<T>()));
  const std::vector<T> a = random_values<T>(m * k, seed);
  const std::vector<T> b = random_values<T>(k * n, seed + 1);
  std::vector<T> want;
  std::vector<double> scale;
  reference_matmul(a, b, m, k, n, &want, &scale);
  const Tensor c = prism::gpu::matmul(on_gpu(a, {m, k}), on_gpu(b, {k, n}));
  ASSERT_EQ(c.shape(), (std::vector<int64_t>{m, n}));
  ASSERT_EQ(c.dtype(), prism::gpu::dtype_of<T>());
  EXPECT_FALSE(c.device().is_host());
  const std::vector<T> got = c.to_vector<T>();
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_LE(std::abs(static_cast<double>(got[i]) - static_cast<double>(want[i])),
              rel * std::max(scale[i], std::numeric_limits<double>::min()))
        << "element " << i << ": got " << got[i] << " want " << want[i];
  }
}

// --- image batches ----------------------------------------------------------------------------

// What a batch slot holds of its image.
enum class Slot {
  kWhole,   // the whole image (it fits the slot)
  kExact,   // exactly the rectangle the crop reads (flip_crop_source)
  kMargin,  // that rectangle grown by one pixel on every side, within the image
};

struct ImageCase {
  int full_width;
  int full_height;
  bool flip;
  int top;
  int left;
  Slot slot;
};

struct ImageBatchData {
  int height = 0;  // of a slot
  int width = 0;
  int size = 0;
  int padding = 0;
  std::vector<uint8_t> pixels;  // [N, height, width, 3]
  std::vector<ImageCrop> crops;
  std::vector<float> expected;  // [N, 3, size, size], from examples/image/transforms.h
};

// Builds a batch of random images cut as `cases` say, and the expected result computed with the
// example's flip_crop + to_tensor + normalize. The slot's pixels outside what it holds are random
// too, so that a kernel reading the wrong pixel is caught.
ImageBatchData make_image_batch(const std::vector<ImageCase>& cases, int height, int width,
                                int size, int padding, const Normalization& norm, uint32_t seed) {
  namespace img = examples::img;
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  ImageBatchData b;
  b.height = height;
  b.width = width;
  b.size = size;
  b.padding = padding;
  b.pixels.resize(cases.size() * height * width * 3);
  for (uint8_t& p : b.pixels) p = static_cast<uint8_t>(byte(gen));

  for (size_t n = 0; n < cases.size(); ++n) {
    const ImageCase& c = cases[n];
    img::Image full(c.full_width, c.full_height);
    for (uint8_t& p : full.pixels) p = static_cast<uint8_t>(byte(gen));

    const img::FlipCrop fc{c.flip, c.top, c.left};
    img::Rect src;
    switch (c.slot) {
      case Slot::kWhole:
        src = {0, 0, c.full_width, c.full_height};
        break;
      case Slot::kExact:
        src = img::flip_crop_source(fc, c.full_width, c.full_height, size, padding);
        break;
      case Slot::kMargin: {
        const img::Rect r = img::flip_crop_source(fc, c.full_width, c.full_height, size, padding);
        const int x0 = std::max(r.x - 1, 0), y0 = std::max(r.y - 1, 0);
        const int x1 = std::min(r.x + r.width + 1, c.full_width);
        const int y1 = std::min(r.y + r.height + 1, c.full_height);
        src = {x0, y0, x1 - x0, y1 - y0};
        break;
      }
    }
    if (src.width > width || src.height > height) {
      ADD_FAILURE() << "test case " << n << " does not fit its slot";
      return b;
    }
    img::Image part(src.width, src.height);
    for (int y = 0; y < src.height; ++y) {
      for (int x = 0; x < src.width; ++x) {
        for (int ch = 0; ch < 3; ++ch) {
          const uint8_t v = full.at(src.x + x, src.y + y, ch);
          part.at(x, y, ch) = v;
          b.pixels[((n * height + y) * width + x) * 3 + ch] = v;
        }
      }
    }
    b.crops.push_back(ImageCrop{.src_x = src.x,
                                .src_y = src.y,
                                .src_width = src.width,
                                .src_height = src.height,
                                .full_width = c.full_width,
                                .full_height = c.full_height,
                                .flip = c.flip,
                                .top = c.top,
                                .left = c.left});

    img::Tensor t = img::to_tensor(img::flip_crop(part, src.x, src.y, c.full_width, c.full_height,
                                                  c.flip, c.top, c.left, size, size, padding));
    img::normalize(t, norm.mean, norm.std);
    b.expected.insert(b.expected.end(), t.data.begin(), t.data.end());
  }
  return b;
}

Tensor run_flip_crop_normalize(const ImageBatchData& b, const Normalization& norm) {
  const Tensor images =
      on_gpu(b.pixels, {static_cast<int64_t>(b.crops.size()), b.height, b.width, 3});
  return prism::gpu::flip_crop_normalize(images, b.crops, b.size, b.padding, norm);
}

// Slots of 12 x 14 pixels, crops of 8 with padding 4: every corner and border of the padded
// image, flipped and not, whole images, exact and grown sub-rectangles of larger images.
std::vector<ImageCase> standard_cases() {
  return {
      {14, 12, false, 0, 0, Slot::kWhole},     // top-left corner of the padding
      {14, 12, true, 0, 14, Slot::kWhole},     // top-right
      {10, 9, false, 9, 0, Slot::kWhole},      // bottom-left
      {10, 9, true, 9, 10, Slot::kWhole},      // bottom-right
      {14, 12, true, 6, 7, Slot::kWhole},      // middle
      {5, 3, true, 2, 1, Slot::kWhole},        // tiny image, mostly padding
      {8, 8, false, 4, 4, Slot::kExact},       // exactly the image
      {20, 16, true, 5, 7, Slot::kExact},      // sub-rectangle, flipped
      {30, 25, false, 13, 20, Slot::kMargin},  // sub-rectangle with a margin
      {16, 20, true, 0, 3, Slot::kExact},      // top border of a tall image
      {40, 30, false, 30, 40, Slot::kExact},   // bottom-right corner of a large image
      {40, 30, true, 30, 0, Slot::kMargin},    // bottom-left corner, flipped: reads the right edge
      {40, 30, true, 11, 40, Slot::kExact},    // right border, flipped: reads the left edge
      {40, 30, false, 0, 17, Slot::kMargin},   // top border
  };
}

const Normalization kImageNet{{0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}};
const Normalization kHalf{{0.5f, 0.5f, 0.5f}, {0.5f, 0.5f, 0.5f}};

// Queues dependent kernels on one stream with no host synchronization in between; returns
// max |e| for e = axpy(-2, c, c + c) with c = a * b (exactly 0 when each kernel saw its input
// complete) and the sum of x + steps * x computed as a chain of axpy.
struct ChainResult {
  double zero_diff = -1;
  double chain_sum = 0;
};
ChainResult chained_kernels(const Tensor& a, const Tensor& b, const Tensor& x, int steps) {
  const Tensor c = prism::gpu::matmul(a, b);
  const Tensor d = prism::gpu::add(c, c);
  const Tensor e = prism::gpu::axpy(-2.0, c, d);
  Tensor t = x;
  for (int i = 0; i < steps; ++i) t = prism::gpu::axpy(1.0, x, t);
  ChainResult r;
  r.zero_diff = prism::gpu::max_abs_diff(e, Tensor::zeros(e.dtype(), e.shape(), e.device()));
  r.chain_sum = prism::gpu::sum(t);
  return r;
}

// --- element-wise -------------------------------------------------------------------------------

template <typename T>
void check_add_axpy(size_t n, uint32_t seed) {
  SCOPED_TRACE("n = " + std::to_string(n));
  const std::vector<T> a = random_values<T>(n, seed);
  const std::vector<T> b = random_values<T>(n, seed + 7);
  const Tensor ta = on_gpu(a, {static_cast<int64_t>(n)});
  const Tensor tb = on_gpu(b, {static_cast<int64_t>(n)});

  const Tensor sum = prism::gpu::add(ta, tb);
  EXPECT_EQ(sum.shape(), ta.shape());
  EXPECT_EQ(sum.device(), Device::gpu(0));
  const std::vector<T> got_sum = sum.to_vector<T>();
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(got_sum[i], a[i] + b[i]) << "add, element " << i;

  for (double alpha : {2.5, -0.75, 1.0 / 3.0}) {
    const std::vector<T> got = prism::gpu::axpy(alpha, ta, tb).to_vector<T>();
    const T al = static_cast<T>(alpha);
    for (size_t i = 0; i < n; ++i) {
      const T want = al * a[i] + b[i];
      ASSERT_EQ(got[i], want) << "axpy(" << alpha << "), element " << i;
    }
  }
}

TEST_F(KernelsTest, AddAndAxpyMatchLoopExactly) {
  for (size_t n : {1u, 3u, 1000u, 4097u}) {
    check_add_axpy<float>(n, 11);
    check_add_axpy<double>(n, 12);
  }
}

TEST_F(KernelsTest, AddKeepsShape) {
  const std::vector<float> v = random_values<float>(24, 5);
  const Tensor r = prism::gpu::add(on_gpu(v, {2, 3, 4}), on_gpu(v, {2, 3, 4}));
  EXPECT_EQ(r.shape(), (std::vector<int64_t>{2, 3, 4}));
  EXPECT_EQ(r.dtype(), DType::kFloat32);
}

// --- reductions ---------------------------------------------------------------------------------

template <typename T>
void check_reductions(int64_t rows, uint32_t seed) {
  SCOPED_TRACE("rows = " + std::to_string(rows));
  const size_t n = static_cast<size_t>(rows * rows);
  const std::vector<T> a = random_values<T>(n, seed);
  const std::vector<T> b = random_values<T>(n, seed + 3);
  const Tensor ta = on_gpu(a, {rows, rows});
  const Tensor tb = on_gpu(b, {rows, rows});

  double want_sum = 0, abs_sum = 0;
  for (T v : a) {
    want_sum += static_cast<double>(v);
    abs_sum += std::abs(static_cast<double>(v));
  }
  EXPECT_NEAR(prism::gpu::sum(ta), want_sum, 1e-12 * abs_sum);

  double want_trace = 0, abs_trace = 0;
  for (int64_t i = 0; i < rows; ++i) {
    want_trace += static_cast<double>(a[i * rows + i]);
    abs_trace += std::abs(static_cast<double>(a[i * rows + i]));
  }
  EXPECT_NEAR(prism::gpu::trace(ta), want_trace, 1e-12 * abs_trace);

  double want_diff = 0;
  for (size_t i = 0; i < n; ++i) {
    want_diff =
        std::max(want_diff, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
  }
  EXPECT_NEAR(prism::gpu::max_abs_diff(ta, tb), want_diff, 1e-12 * want_diff);
  EXPECT_EQ(prism::gpu::max_abs_diff(ta, ta), 0.0);
}

TEST_F(KernelsTest, ReductionsMatchLoop) {
  for (int64_t rows : {1, 2, 7, 64, 301}) {
    check_reductions<float>(rows, 21);
    check_reductions<double>(rows, 22);
  }
}

TEST_F(KernelsTest, SumOfKnownValues) {
  EXPECT_EQ(prism::gpu::sum(on_gpu(std::vector<double>{1, 2, 3, 4.5}, {4})), 10.5);
  EXPECT_EQ(prism::gpu::sum(on_gpu(std::vector<float>{0.5f, 0.25f}, {2, 1})), 0.75);
  EXPECT_EQ(prism::gpu::trace(on_gpu(std::vector<double>{1, 2, 3, 4}, {2, 2})), 5.0);
}

TEST_F(KernelsTest, MaxAbsDiffPropagatesNan) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const Tensor a = on_gpu(std::vector<double>{1, nan, 3, 4}, {4});
  const Tensor b = on_gpu(std::vector<double>{1, 2, 3, 100}, {4});
  EXPECT_TRUE(std::isnan(prism::gpu::max_abs_diff(a, b)));
}

// --- matmul -------------------------------------------------------------------------------------

TEST_F(KernelsTest, MatmulFloat32MatchesNaiveLoop) {
  check_matmul<float>(3, 5, 2, 1e-4, 31);
  check_matmul<float>(64, 33, 17, 1e-4, 32);
  check_matmul<float>(1, 1, 1, 1e-4, 33);
  check_matmul<float>(1, 40, 9, 1e-4, 34);
  check_matmul<float>(16, 1, 8, 1e-4, 35);
}

TEST_F(KernelsTest, MatmulFloat64MatchesNaiveLoop) {
  check_matmul<double>(3, 5, 2, 1e-9, 41);
  check_matmul<double>(64, 33, 17, 1e-9, 42);
  check_matmul<double>(17, 64, 33, 1e-9, 43);
  check_matmul<double>(8, 1, 5, 1e-9, 44);
}

TEST_F(KernelsTest, MatmulOfKnownValues) {
  // [1 2 3; 4 5 6] * [7 8; 9 10; 11 12] = [58 64; 139 154]
  const Tensor c = prism::gpu::matmul(on_gpu(std::vector<double>{1, 2, 3, 4, 5, 6}, {2, 3}),
                                      on_gpu(std::vector<double>{7, 8, 9, 10, 11, 12}, {3, 2}));
  EXPECT_EQ(c.to_vector<double>(), (std::vector<double>{58, 64, 139, 154}));
}

TEST_F(KernelsTest, EmptyTensors) {
  const Tensor e = on_gpu(std::vector<float>{}, {0});
  EXPECT_EQ(prism::gpu::add(e, e).numel(), 0);
  EXPECT_EQ(prism::gpu::axpy(2.0, e, e).shape(), (std::vector<int64_t>{0}));
  EXPECT_EQ(prism::gpu::sum(e), 0.0);
  EXPECT_EQ(prism::gpu::max_abs_diff(e, e), 0.0);
  EXPECT_EQ(prism::gpu::trace(on_gpu(std::vector<double>{}, {0, 0})), 0.0);
  // An empty inner dimension: a sum of nothing, zeros.
  const Tensor z = prism::gpu::matmul(on_gpu(std::vector<double>{}, {3, 0}),
                                      on_gpu(std::vector<double>{}, {0, 2}));
  EXPECT_EQ(z.shape(), (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(z.to_vector<double>(), std::vector<double>(6, 0.0));
  const Tensor none = prism::gpu::matmul(on_gpu(std::vector<float>{}, {0, 4}),
                                         on_gpu(std::vector<float>(8, 1.f), {4, 2}));
  EXPECT_EQ(none.shape(), (std::vector<int64_t>{0, 2}));
  const Tensor no_images = prism::gpu::flip_crop_normalize(
      on_gpu(std::vector<uint8_t>{}, {0, 4, 4, 3}), {}, 2, 1, kHalf);
  EXPECT_EQ(no_images.shape(), (std::vector<int64_t>{0, 3, 2, 2}));
}

// --- images -------------------------------------------------------------------------------------

TEST_F(KernelsTest, FlipCropNormalizeEqualsTransformsBitForBit) {
  for (const Normalization& norm : {kHalf, kImageNet}) {
    const ImageBatchData b = make_image_batch(standard_cases(), 12, 14, 8, 4, norm, 51);
    ASSERT_EQ(b.crops.size(), standard_cases().size());
    const Tensor out = run_flip_crop_normalize(b, norm);
    EXPECT_EQ(out.shape(), (std::vector<int64_t>{static_cast<int64_t>(b.crops.size()), 3, 8, 8}));
    EXPECT_EQ(out.dtype(), DType::kFloat32);
    EXPECT_EQ(out.device(), Device::gpu(0));
    expect_bit_equal(out.to_vector<float>(), b.expected);
  }
}

TEST_F(KernelsTest, FlipCropNormalizePaddingOnlyAndNoPadding) {
  // Crops of 3 with padding 4: a crop in the padding only reads nothing (an empty slot is fine).
  const std::vector<ImageCase> padded = {
      {6, 5, false, 0, 0, Slot::kExact},   // all padding, top-left
      {6, 5, true, 10, 11, Slot::kExact},  // all padding, bottom-right
      {6, 5, true, 3, 2, Slot::kExact},    // touches one pixel row/column
      {6, 5, false, 4, 5, Slot::kWhole},
  };
  const ImageBatchData b = make_image_batch(padded, 5, 6, 3, 4, kImageNet, 61);
  EXPECT_EQ(b.crops[0].src_width, 0);
  expect_bit_equal(run_flip_crop_normalize(b, kImageNet).to_vector<float>(), b.expected);

  // No padding: every crop lies inside its image.
  const std::vector<ImageCase> inside = {
      {7, 6, false, 0, 0, Slot::kWhole},
      {7, 6, true, 2, 3, Slot::kWhole},
      {9, 9, true, 5, 0, Slot::kExact},
  };
  const ImageBatchData c = make_image_batch(inside, 6, 7, 4, 0, kHalf, 62);
  expect_bit_equal(run_flip_crop_normalize(c, kHalf).to_vector<float>(), c.expected);
}

// --- errors -------------------------------------------------------------------------------------

TEST_F(KernelsTest, ElementwiseAndReductionErrorsAreInvalidArgument) {
  const std::vector<float> v4 = {1, 2, 3, 4};
  const Tensor g = on_gpu(v4, {4});
  const Tensor g22 = on_gpu(v4, {2, 2});
  const Tensor h = Tensor::from_vector(v4, {4}, Device::host());
  const Tensor d = on_gpu(std::vector<double>{1, 2, 3, 4}, {4});
  const Tensor i32 = on_gpu(std::vector<int32_t>{1, 2, 3, 4}, {4});

  expect_invalid([&] { prism::gpu::add(h, h); }, "add of host tensors");
  expect_invalid([&] { prism::gpu::add(g, h); }, "add with one host tensor");
  expect_invalid([&] { prism::gpu::add(Tensor(), g); }, "add of an undefined tensor");
  expect_invalid([&] { prism::gpu::add(g, g22); }, "add of mismatched shapes");
  expect_invalid([&] { prism::gpu::add(g, d); }, "add of mismatched dtypes");
  expect_invalid([&] { prism::gpu::add(i32, i32); }, "add of int32");
  expect_invalid([&] { prism::gpu::axpy(1.0, g, g22); }, "axpy of mismatched shapes");
  expect_invalid([&] { prism::gpu::axpy(1.0, h, h); }, "axpy of host tensors");
  expect_invalid([&] { prism::gpu::sum(h); }, "sum of a host tensor");
  expect_invalid([&] { prism::gpu::sum(i32); }, "sum of int32");
  expect_invalid([&] { prism::gpu::trace(g); }, "trace of a 1-D tensor");
  expect_invalid([&] { prism::gpu::trace(on_gpu(v4, {1, 4})); }, "trace of a non-square tensor");
  expect_invalid(
      [&] {
        prism::gpu::trace(Tensor::from_vector(v4, {2, 2}, Device::host()));
      },
      "trace of a host tensor");
  expect_invalid([&] { prism::gpu::max_abs_diff(g, d); }, "max_abs_diff of mismatched dtypes");
  expect_invalid([&] { prism::gpu::max_abs_diff(g, g22); }, "max_abs_diff of mismatched shapes");
  expect_invalid([&] { prism::gpu::max_abs_diff(h, h); }, "max_abs_diff of host tensors");

  if (prism::gpu::backend() == Backend::kHost || prism::gpu::cuda_device_count() >= 2) {
    const Tensor g1 = on_gpu(v4, {4}, /*device=*/1);
    expect_invalid([&] { prism::gpu::add(g, g1); }, "add across devices");
    expect_invalid([&] { prism::gpu::max_abs_diff(g, g1); }, "max_abs_diff across devices");
    expect_invalid(
        [&] {
          prism::gpu::matmul(g22, on_gpu(v4, {2, 2}, 1));
        },
        "matmul across devices");
  }
}

TEST_F(KernelsTest, MatmulErrorsAreInvalidArgument) {
  const std::vector<float> v6 = {1, 2, 3, 4, 5, 6};
  const Tensor a23 = on_gpu(v6, {2, 3});
  const Tensor b23 = on_gpu(v6, {2, 3});
  const Tensor b32d = on_gpu(std::vector<double>(v6.begin(), v6.end()), {3, 2});
  expect_invalid([&] { prism::gpu::matmul(a23, b23); }, "matmul with mismatched inner dims");
  expect_invalid(
      [&] {
        prism::gpu::matmul(on_gpu(v6, {6}), on_gpu(v6, {6, 1}));
      },
      "matmul of a 1-D tensor");
  expect_invalid(
      [&] {
        prism::gpu::matmul(on_gpu(v6, {1, 2, 3}), on_gpu(v6, {3, 2}));
      },
      "matmul of a 3-D tensor");
  expect_invalid([&] { prism::gpu::matmul(a23, b32d); }, "matmul of mismatched dtypes");
  expect_invalid(
      [&] {
        prism::gpu::matmul(Tensor::from_vector(v6, {2, 3}, Device::host()),
                           Tensor::from_vector(v6, {3, 2}, Device::host()));
      },
      "matmul of host tensors");
  expect_invalid([&] { prism::gpu::matmul(Tensor(), a23); }, "matmul of an undefined tensor");
  expect_invalid(
      [&] {
        prism::gpu::matmul(on_gpu(std::vector<int32_t>(6, 1), {2, 3}),
                           on_gpu(std::vector<int32_t>(6, 1), {3, 2}));
      },
      "matmul of int32");
}

TEST_F(KernelsTest, FlipCropNormalizeErrorsAreInvalidArgument) {
  namespace img = examples::img;
  // Two valid crops of 8 with padding 4 out of 12 x 14 slots; each case breaks one thing.
  const std::vector<ImageCase> cases = {{14, 12, false, 2, 3, Slot::kWhole},
                                        {20, 16, true, 5, 7, Slot::kExact}};
  const ImageBatchData b = make_image_batch(cases, 12, 14, 8, 4, kHalf, 71);
  const Tensor images = on_gpu(b.pixels, {2, 12, 14, 3});
  ASSERT_NO_THROW(prism::gpu::flip_crop_normalize(images, b.crops, 8, 4, kHalf));

  auto run = [&](const std::vector<ImageCrop>& crops) {
    prism::gpu::flip_crop_normalize(images, crops, 8, 4, kHalf);
  };
  // Runs the example's flip_crop on a whole-image slot as the kernel would see it, to check that
  // the reference refuses the same crop.
  auto reference_refuses = [&](const ImageCrop& c) {
    img::Image part(c.src_width, c.src_height);
    try {
      img::flip_crop(part, c.src_x, c.src_y, c.full_width, c.full_height, c.flip, c.top, c.left, 8,
                     8, 4);
    } catch (const std::invalid_argument&) {
      return true;
    }
    return false;
  };
  // A copy of the valid crops with crop 0 (or 1) changed by `edit`.
  auto with = [&](size_t i, auto edit) {
    std::vector<ImageCrop> crops = b.crops;
    edit(crops[i]);
    return crops;
  };
  auto expect_bad_crop = [&](size_t i, auto edit, const std::string& what) {
    const std::vector<ImageCrop> crops = with(i, edit);
    EXPECT_TRUE(reference_refuses(crops[i])) << what << ": the reference accepts it";
    expect_invalid([&] { run(crops); }, what);
  };

  // The tensor.
  expect_invalid(
      [&] {
        prism::gpu::flip_crop_normalize(
            Tensor::from_vector(b.pixels, {2, 12, 14, 3}, Device::host()), b.crops, 8, 4, kHalf);
      },
      "images on the host");
  expect_invalid([&] { prism::gpu::flip_crop_normalize(Tensor(), b.crops, 8, 4, kHalf); },
                 "undefined images");
  expect_invalid(
      [&] {
        prism::gpu::flip_crop_normalize(on_gpu(std::vector<float>(2 * 12 * 14 * 3), {2, 12, 14, 3}),
                                        b.crops, 8, 4, kHalf);
      },
      "float images");
  expect_invalid(
      [&] {
        prism::gpu::flip_crop_normalize(images.reshape({2, 12, 14 * 3}), b.crops, 8, 4, kHalf);
      },
      "3-D images");
  expect_invalid(
      [&] {
        prism::gpu::flip_crop_normalize(images.reshape({2, 12, 7, 6}), b.crops, 8, 4, kHalf);
      },
      "images with 6 channels");
  // The crop list and sizes.
  expect_invalid([&] { run({b.crops[0]}); }, "fewer crops than images");
  expect_invalid([&] { run({b.crops[0], b.crops[1], b.crops[0]}); }, "more crops than images");
  expect_invalid([&] { prism::gpu::flip_crop_normalize(images, b.crops, 0, 4, kHalf); }, "size 0");
  expect_invalid([&] { prism::gpu::flip_crop_normalize(images, b.crops, 8, -1, kHalf); },
                 "negative padding");
  // Crop windows outside the padded picture (14 x 12 padded by 4 is 22 x 20).
  expect_bad_crop(
      0, [](ImageCrop& c) { c.top = -1; }, "top < 0");
  expect_bad_crop(
      0, [](ImageCrop& c) { c.left = -1; }, "left < 0");
  expect_bad_crop(
      0, [](ImageCrop& c) { c.top = 13; }, "top + size > full_height + 2 * padding");
  expect_bad_crop(
      0, [](ImageCrop& c) { c.left = 15; }, "left + size > full_width + 2 * padding");
  expect_bad_crop(
      1, [](ImageCrop& c) { c.top = 100000; }, "far below the picture");
  // Slots that lack a pixel the crop reads.
  expect_bad_crop(
      0,
      [](ImageCrop& c) {
        c.src_x = 1;
        c.src_width = 13;
      },
      "slot starts one column late");
  expect_bad_crop(
      0,
      [](ImageCrop& c) {
        c.src_y = 1;
        c.src_height = 11;
      },
      "slot starts one row late");
  expect_bad_crop(
      0,
      [](ImageCrop& c) {
        c.src_width = 13;
        c.left = 14;
      },
      "slot one column short");
  expect_bad_crop(
      0,
      [](ImageCrop& c) {
        c.src_height = 11;
        c.top = 12;
      },
      "slot one row short");
  expect_bad_crop(
      1, [](ImageCrop& c) { c.flip = !c.flip; }, "slot holds the unflipped crop's pixels");
  expect_bad_crop(
      1, [](ImageCrop& c) { c.src_x += 1; }, "sub-rectangle shifted right");
  expect_bad_crop(
      1, [](ImageCrop& c) { c.src_width -= 1; }, "sub-rectangle one column short");
  expect_bad_crop(
      1,
      [](ImageCrop& c) {
        c.src_y -= 1;
        c.src_height -= 1;
      },
      "sub-rectangle one row short at the bottom");
  // Slots that do not fit the batch's 12 x 14 slot, and nonsense sizes.
  expect_invalid([&] { run(with(0, [](ImageCrop& c) { c.src_width = 15; })); },
                 "source wider than the slot");
  expect_invalid([&] { run(with(0, [](ImageCrop& c) { c.src_height = 13; })); },
                 "source taller than the slot");
  expect_invalid([&] { run(with(0, [](ImageCrop& c) { c.src_width = -1; })); },
                 "negative source width");
  expect_invalid([&] { run(with(0, [](ImageCrop& c) { c.full_width = -3; })); },
                 "negative image width");
}

// --- tasks --------------------------------------------------------------------------------------

TEST_F(KernelsTest, KernelsRunInsideGpuTask) {
  const int64_t m = 24, k = 16, n = 8;
  const std::vector<double> av = random_values<double>(m * k, 81);
  const std::vector<double> bv = random_values<double>(k * n, 82);
  std::vector<double> want;
  std::vector<double> scale;
  reference_matmul(av, bv, m, k, n, &want, &scale);

  auto product =
      prism::task([](const Tensor& a, const Tensor& b) {
        if (a.device().is_host() || !(a.device() == prism::gpu::current_device())) {
          throw std::runtime_error("argument on " + a.device().to_string() + ", task on " +
                                   prism::gpu::current_device().to_string());
        }
        return prism::gpu::matmul(a, b);
      })
          .num_gpus(1)
          .remote(prism::put(on_gpu(av, {m, k})),
                  // A host tensor: the task gets it uploaded to its GPU.
                  prism::put(Tensor::from_vector(bv, {k, n}, Device::host())));
  auto total = prism::task([](const Tensor& c) { return prism::gpu::sum(prism::gpu::add(c, c)); })
                   .num_gpus(1)
                   .remote(product);

  const Tensor c = prism::get(product, kTimeout);
  const std::vector<double> got = c.to_vector<double>();
  ASSERT_EQ(got.size(), want.size());
  double want_total = 0, abs_total = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], 1e-9 * scale[i]) << "element " << i;
    want_total += 2 * want[i];
    abs_total += 2 * scale[i];
  }
  EXPECT_NEAR(prism::get(total, kTimeout), want_total, 1e-9 * abs_total);
}

TEST_F(KernelsTest, ChainedKernelsInGpuTask) {
  const std::vector<float> x(1000, 0.5f);
  auto r = prism::task([](const Tensor& a, const Tensor& b, const Tensor& v) {
             const ChainResult c = chained_kernels(a, b, v, 20);
             return std::vector<double>{c.zero_diff, c.chain_sum};
           })
               .num_gpus(1)
               .remote(on_gpu(random_values<float>(32 * 16, 91), {32, 16}),
                       on_gpu(random_values<float>(16 * 8, 92), {16, 8}), on_gpu(x, {1000}));
  const std::vector<double> got = prism::get(r, kTimeout);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0], 0.0);
  EXPECT_EQ(got[1], 21 * 0.5 * 1000);
}

// --- real CUDA devices --------------------------------------------------------------------------

TEST_F(CudaKernelsTest, MatmulMatchesHostReference) {
  check_matmul<float>(3, 5, 2, 1e-4, 101);
  check_matmul<float>(257, 300, 129, 1e-4, 102);
  check_matmul<double>(64, 33, 17, 1e-9, 103);
  check_matmul<double>(300, 129, 257, 1e-9, 104);
}

TEST_F(CudaKernelsTest, FlipCropNormalizeMatchesHostReferenceBitForBit) {
  for (const Normalization& norm : {kHalf, kImageNet}) {
    const ImageBatchData b = make_image_batch(standard_cases(), 12, 14, 8, 4, norm, 111);
    expect_bit_equal(run_flip_crop_normalize(b, norm).to_vector<float>(), b.expected);
  }
  // A bigger batch: 64 crops of 32 out of 40 x 40 slots.
  std::vector<ImageCase> many;
  std::mt19937 gen(112);
  for (int i = 0; i < 64; ++i) {
    const int w = 24 + static_cast<int>(gen() % 17), h = 24 + static_cast<int>(gen() % 17);
    const int top = static_cast<int>(gen() % (h + 8 - 32 + 1));
    const int left = static_cast<int>(gen() % (w + 8 - 32 + 1));
    many.push_back({w, h, gen() % 2 == 0, top, left, i % 3 == 0 ? Slot::kExact : Slot::kWhole});
  }
  const ImageBatchData b = make_image_batch(many, 40, 40, 32, 4, kImageNet, 113);
  expect_bit_equal(run_flip_crop_normalize(b, kImageNet).to_vector<float>(), b.expected);
}

// Dependent kernels queued on one stream (in a GPU task) with no host synchronization between
// them: big enough that a kernel reading an unfinished input would see garbage.
TEST_F(CudaKernelsTest, StreamOrderingWithoutHostSync) {
  const int64_t m = 1024, k = 1024, n = 1024;
  const size_t len = 1 << 22;
  auto r = prism::task([](const Tensor& a, const Tensor& b, const Tensor& v) {
             const ChainResult c = chained_kernels(a, b, v, 50);
             return std::vector<double>{c.zero_diff, c.chain_sum};
           })
               .num_gpus(1)
               .remote(on_gpu(random_values<float>(m * k, 121), {m, k}),
                       on_gpu(random_values<float>(k * n, 122), {k, n}),
                       on_gpu(std::vector<float>(len, 0.25f), {static_cast<int64_t>(len)}));
  const std::vector<double> got = prism::get(r, kTimeout);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0], 0.0);
  EXPECT_EQ(got[1], 51 * 0.25 * static_cast<double>(len));
}

}  // namespace
