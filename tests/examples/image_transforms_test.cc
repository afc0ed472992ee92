// Unit tests for the image transforms of the examples (examples/image/transforms.h) and for the
// region decoding of examples/image/jpeg_io.h, on tiny hand-made images.

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "../../examples/image/jpeg_io.h"
#include "../../examples/image/synthetic.h"
#include "../../examples/image/transforms.h"

namespace examples::img {
namespace {

// A w x h image whose pixel (x, y) holds (10 * x + y + 1, 100 + 10 * x + y, 200 + x + y):
// every value says where it came from, and none is 0 (the padding value).
Image numbered(int w, int h) {
  Image im(w, h);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      im.at(x, y, 0) = static_cast<uint8_t>(10 * x + y + 1);
      im.at(x, y, 1) = static_cast<uint8_t>(100 + 10 * x + y);
      im.at(x, y, 2) = static_cast<uint8_t>(200 + x + y);
    }
  }
  return im;
}

TEST(HFlip, MirrorsEachRow) {
  const Image im = numbered(3, 2);
  const Image f = hflip(im);
  ASSERT_EQ(f.width, 3);
  ASSERT_EQ(f.height, 2);
  for (int y = 0; y < 2; ++y) {
    for (int x = 0; x < 3; ++x) {
      for (int c = 0; c < 3; ++c) EXPECT_EQ(f.at(x, y, c), im.at(2 - x, y, c)) << x << "," << y;
    }
  }
  EXPECT_EQ(hflip(f), im);
}

TEST(HFlip, SingleColumnIsUnchanged) {
  const Image im = numbered(1, 4);
  EXPECT_EQ(hflip(im), im);
}

TEST(CropPadded, InteriorCropIsASubImage) {
  const Image im = numbered(4, 4);
  const Image c = crop_padded(im, /*top=*/3, /*left=*/2, /*h=*/2, /*w=*/2, /*padding=*/2);
  // Padded (3, 2) is image (1, 0): rows 1..2, columns 0..1.
  for (int y = 0; y < 2; ++y) {
    for (int x = 0; x < 2; ++x) {
      for (int c2 = 0; c2 < 3; ++c2) EXPECT_EQ(c.at(x, y, c2), im.at(x, y + 1, c2));
    }
  }
}

// Crops a 3 x 3 window at each corner and edge of a 3 x 3 image padded by 2 and compares
// every pixel with "image pixel if inside, else 0".
TEST(CropPadded, ZeroPaddingAtEveryBorder) {
  const int w = 3, h = 3, p = 2, size = 3;
  const Image im = numbered(w, h);
  const int last = w + 2 * p - size;  // the largest top/left: 4
  for (int top : {0, 1, 2, last - 1, last}) {
    for (int left : {0, 1, 2, last - 1, last}) {
      const Image c = crop_padded(im, top, left, size, size, p);
      for (int y = 0; y < size; ++y) {
        for (int x = 0; x < size; ++x) {
          const int iy = top + y - p, ix = left + x - p;
          const bool inside = iy >= 0 && iy < h && ix >= 0 && ix < w;
          for (int ch = 0; ch < 3; ++ch) {
            EXPECT_EQ(c.at(x, y, ch), inside ? im.at(ix, iy, ch) : 0)
                << "top " << top << " left " << left << " at " << x << "," << y;
          }
        }
      }
    }
  }
}

TEST(CropPadded, TopLeftCornerHasPaddingRowsAndColumns) {
  const Image c = crop_padded(numbered(2, 2), 0, 0, 2, 2, 1);
  EXPECT_EQ(c.at(0, 0, 0), 0);  // padding corner
  EXPECT_EQ(c.at(1, 0, 0), 0);  // padding row
  EXPECT_EQ(c.at(0, 1, 0), 0);  // padding column
  EXPECT_EQ(c.at(1, 1, 0), 1);  // image pixel (0, 0)
}

TEST(CropPadded, BottomRightCornerHasPaddingRowsAndColumns) {
  const Image im = numbered(2, 2);
  const Image c = crop_padded(im, 2, 2, 2, 2, 1);
  EXPECT_EQ(c.at(0, 0, 0), im.at(1, 1, 0));
  EXPECT_EQ(c.at(1, 0, 0), 0);
  EXPECT_EQ(c.at(0, 1, 0), 0);
  EXPECT_EQ(c.at(1, 1, 0), 0);
}

TEST(CropPadded, RejectsWindowsOutsideThePaddedImage) {
  const Image im = numbered(3, 3);
  EXPECT_THROW(crop_padded(im, -1, 0, 2, 2, 1), std::invalid_argument);
  EXPECT_THROW(crop_padded(im, 0, 4, 2, 2, 1), std::invalid_argument);  // 4 + 2 > 3 + 2
  EXPECT_NO_THROW(crop_padded(im, 3, 3, 2, 2, 1));
}

TEST(RandomFlipCrop, DeterministicPerSeedAndInRange) {
  for (uint64_t seed = 0; seed < 200; ++seed) {
    const FlipCrop a = random_flip_crop(seed, 10, 7, 6, 2, 0.5);
    const FlipCrop b = random_flip_crop(seed, 10, 7, 6, 2, 0.5);
    EXPECT_EQ(a.flip, b.flip);
    EXPECT_EQ(a.top, b.top);
    EXPECT_EQ(a.left, b.left);
    EXPECT_GE(a.top, 0);
    EXPECT_LE(a.top, 7 + 4 - 6);
    EXPECT_GE(a.left, 0);
    EXPECT_LE(a.left, 10 + 4 - 6);
  }
}

TEST(RandomFlipCrop, FlipProbability) {
  int flips = 0;
  for (uint64_t seed = 0; seed < 2000; ++seed)
    flips += random_flip_crop(seed, 8, 8, 4, 0, 0.5).flip;
  EXPECT_GT(flips, 850);  // fixed seeds: a deterministic count near 1000
  EXPECT_LT(flips, 1150);
  EXPECT_FALSE(random_flip_crop(1, 8, 8, 4, 0, 0.0).flip);
  EXPECT_TRUE(random_flip_crop(1, 8, 8, 4, 0, 1.0).flip);
}

TEST(RandomFlipCrop, RejectsCropLargerThanPaddedImage) {
  EXPECT_THROW(random_flip_crop(1, 4, 4, 9, 2, 0.5), std::invalid_argument);
}

// flip_crop reading only the source rectangle == hflip (maybe) then crop_padded on the whole.
TEST(FlipCrop, FromSourceRectangleMatchesFlipThenCrop) {
  const int w = 5, h = 4, p = 2, size = 3;
  const Image im = numbered(w, h);
  for (bool flip : {false, true}) {
    const Image oriented = flip ? hflip(im) : im;
    for (int top = 0; top <= h + 2 * p - size; ++top) {
      for (int left = 0; left <= w + 2 * p - size; ++left) {
        const Image want = crop_padded(oriented, top, left, size, size, p);
        const FlipCrop fc{flip, top, left};
        const Rect r = flip_crop_source(fc, w, h, size, p);
        Image part(r.width, r.height);
        for (int y = 0; y < r.height; ++y) {
          for (int x = 0; x < r.width; ++x) {
            for (int c = 0; c < 3; ++c) part.at(x, y, c) = im.at(r.x + x, r.y + y, c);
          }
        }
        EXPECT_EQ(flip_crop(part, r.x, r.y, w, h, flip, top, left, size, size, p), want)
            << "flip " << flip << " top " << top << " left " << left;
      }
    }
  }
}

TEST(ToTensor, ChwLayoutScaledToUnitRange) {
  Image im(2, 1);
  const uint8_t px[2][3] = {{0, 51, 102}, {153, 204, 255}};
  for (int x = 0; x < 2; ++x) {
    for (int c = 0; c < 3; ++c) im.at(x, 0, c) = px[x][c];
  }
  const Tensor t = to_tensor(im);
  EXPECT_EQ(t.channels, 3);
  EXPECT_EQ(t.height, 1);
  EXPECT_EQ(t.width, 2);
  // Channel planes one after another: R R G G B B.
  const std::vector<float> want = {0.0f, 0.6f, 0.2f, 0.8f, 0.4f, 1.0f};
  ASSERT_EQ(t.data.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_FLOAT_EQ(t.data[i], want[i]) << i;
  EXPECT_FLOAT_EQ(t.at(2, 0, 1), 1.0f);
  EXPECT_FLOAT_EQ(t.at(1, 0, 0), 0.2f);
}

TEST(ToTensor, ChwIndexingOnATallerImage) {
  const Image im = numbered(3, 2);
  const Tensor t = to_tensor(im);
  for (int c = 0; c < 3; ++c) {
    for (int y = 0; y < 2; ++y) {
      for (int x = 0; x < 3; ++x) {
        EXPECT_FLOAT_EQ(t.data[(c * 2 + y) * 3 + x], im.at(x, y, c) / 255.0f);
      }
    }
  }
}

TEST(Normalize, HalfMeanHalfStdMapsToMinusOneOne) {
  Image im(3, 1);
  for (int c = 0; c < 3; ++c) {
    im.at(0, 0, c) = 0;
    im.at(1, 0, c) = 255;
    im.at(2, 0, c) = 51;
  }
  Tensor t = to_tensor(im);
  normalize(t, {0.5f, 0.5f, 0.5f}, {0.5f, 0.5f, 0.5f});
  for (int c = 0; c < 3; ++c) {
    EXPECT_FLOAT_EQ(t.at(c, 0, 0), -1.0f);
    EXPECT_FLOAT_EQ(t.at(c, 0, 1), 1.0f);
    EXPECT_FLOAT_EQ(t.at(c, 0, 2), -0.6f);  // (0.2 - 0.5) / 0.5
  }
}

TEST(Normalize, PerChannelMeanAndStd) {
  Image im(1, 1);
  im.at(0, 0, 0) = 255;
  im.at(0, 0, 1) = 255;
  im.at(0, 0, 2) = 255;
  Tensor t = to_tensor(im);
  normalize(t, {0.0f, 0.5f, 1.0f}, {1.0f, 0.25f, 2.0f});
  EXPECT_FLOAT_EQ(t.at(0, 0, 0), 1.0f);
  EXPECT_FLOAT_EQ(t.at(1, 0, 0), 2.0f);
  EXPECT_FLOAT_EQ(t.at(2, 0, 0), 0.0f);
}

// ---- jpeg_io.h ----

std::vector<uint8_t> encode(const Image& im, const std::string& name) {
  const std::string path = ::testing::TempDir() + "/" + name;
  write_jpeg(path, im, 60);
  return read_file(path);
}

TEST(Jpeg, RoundTripKeepsTheSize) {
  const std::vector<uint8_t> bytes = encode(synthetic_image(48, 1), "round_trip.jpg");
  const Rect r = jpeg_size(bytes);
  EXPECT_EQ(r.width, 48);
  EXPECT_EQ(r.height, 48);
  const Image d = decode_jpeg(bytes);
  EXPECT_EQ(d.width, 48);
  EXPECT_EQ(d.height, 48);
}

TEST(Jpeg, RegionDecodeEqualsFullDecodeCrop) {
  const int size = 100;  // 4:2:0: iMCUs of 16 x 16, so regions start inside and across them
  const std::vector<uint8_t> bytes = encode(synthetic_image(size, 2), "region.jpg");
  const Image full = decode_jpeg(bytes);
  const std::vector<Rect> regions = {{0, 0, size, size}, {0, 0, 1, 1},      {99, 99, 1, 1},
                                     {17, 33, 40, 25},   {5, 60, 95, 40},   {31, 0, 1, 100},
                                     {0, 47, 100, 1},    {80, 10, 50, 200}, {-5, -5, 20, 20}};
  for (const Rect& r : regions) {
    const Image part = decode_jpeg_region(bytes, r);
    const int x0 = std::max(r.x, 0), y0 = std::max(r.y, 0);
    const int x1 = std::min(r.x + r.width, size), y1 = std::min(r.y + r.height, size);
    ASSERT_EQ(part.width, x1 - x0);
    ASSERT_EQ(part.height, y1 - y0);
    for (int y = y0; y < y1; ++y) {
      for (int x = x0; x < x1; ++x) {
        for (int c = 0; c < 3; ++c) {
          ASSERT_EQ(part.at(x - x0, y - y0, c), full.at(x, y, c))
              << "region " << r.x << "," << r.y << " " << r.width << "x" << r.height << " at " << x
              << "," << y;
        }
      }
    }
  }
}

TEST(Jpeg, CorruptDataThrows) {
  const std::vector<uint8_t> bytes = encode(synthetic_image(32, 3), "corrupt.jpg");
  EXPECT_THROW(jpeg_size(std::vector<uint8_t>(bytes.begin() + 2, bytes.end())), std::runtime_error);
  EXPECT_THROW(read_file(::testing::TempDir() + "/no_such_file.jpg"), std::runtime_error);
}

TEST(Jpeg, TruncatedDataThrowsInsteadOfDecodingGray) {
  std::vector<uint8_t> bytes = encode(synthetic_image(64, 4), "truncated.jpg");
  bytes.resize(bytes.size() / 2);
  EXPECT_NO_THROW(jpeg_size(bytes));  // the header is intact
  EXPECT_THROW(decode_jpeg(bytes), std::runtime_error);
  EXPECT_THROW(decode_jpeg_region(bytes, {0, 40, 10, 10}), std::runtime_error);
}

}  // namespace
}  // namespace examples::img
