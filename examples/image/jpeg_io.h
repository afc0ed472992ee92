// examples/image/jpeg_io.h — reading and writing RGB JPEGs with libjpeg(-turbo)'s own API.
//
//   std::vector<uint8_t> bytes = examples::img::read_file("/tmp/prism-images/img_000.jpg");
//   examples::img::Image full = examples::img::decode_jpeg(bytes);
//   // Only rows [y, y+h) and columns [x, x+w): the same pixels as a full decode, less work.
//   examples::img::Image part = examples::img::decode_jpeg_region(bytes, {x, y, w, h});
//   examples::img::write_jpeg("out.jpg", full, /*quality=*/60);
//
// Decoding uses the library's accurate defaults (JDCT_ISLOW, fancy upsampling): with
// libjpeg-turbo's SIMD code they are about as fast as the inexact "fast" settings, and the
// output is the standard one. Scaled (1/2, 1/4, 1/8) decoding is NOT used: it changes pixels.
//
// Errors (a corrupt file, a missing file) throw std::runtime_error. libjpeg reports errors by
// calling error_exit, which must not return: we longjmp back into small functions that hold
// only trivially destructible locals, as the libjpeg documentation (example.txt) does.
//
// Thread-safe: every function works on its own decoder/encoder; call from any thread.
#pragma once

#include <algorithm>
#include <csetjmp>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

// jpeglib.h needs FILE and size_t declared first.
#include <jpeglib.h>

#include "transforms.h"

namespace examples::img {

inline std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

namespace jpeg_internal {

struct ErrorManager {
  jpeg_error_mgr mgr;  // first member: libjpeg hands us a pointer to it
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

[[noreturn]] inline void on_error(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// Warnings (level -1) are corrupt data that libjpeg would paper over, e.g. a truncated file
// decoded with gray rows at the bottom: treat them as errors. Trace messages are ignored.
inline void on_message(j_common_ptr cinfo, int level) {
  if (level < 0) on_error(cinfo);
}

// Owns a decompressor; jpeg_destroy_decompress frees everything libjpeg allocated.
struct Decoder {
  jpeg_decompress_struct cinfo;
  ErrorManager err;
  Decoder() {
    cinfo.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = on_error;
    err.mgr.emit_message = on_message;
    jpeg_create_decompress(&cinfo);
  }
  ~Decoder() { jpeg_destroy_decompress(&cinfo); }
  Decoder(const Decoder&) = delete;
  Decoder& operator=(const Decoder&) = delete;
};

// The functions below may be left by longjmp: only trivially destructible locals here.

inline bool start(Decoder* d, const uint8_t* data, size_t size) {
  if (setjmp(d->err.jump)) return false;
  jpeg_mem_src(&d->cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&d->cinfo, TRUE);
  d->cinfo.out_color_space = JCS_RGB;
  d->cinfo.dct_method = JDCT_ISLOW;  // accurate; as fast as JDCT_IFAST with SIMD
  d->cinfo.do_fancy_upsampling = TRUE;
  jpeg_start_decompress(&d->cinfo);
  return true;
}

// Crops each scanline to at least [*x, *x + *width) (libjpeg widens it to iMCU boundaries and
// updates *x and *width), then skips `skip` rows.
inline bool crop_and_skip(Decoder* d, JDIMENSION* x, JDIMENSION* width, JDIMENSION skip) {
  if (setjmp(d->err.jump)) return false;
  if (*x != 0 || *width != d->cinfo.output_width) jpeg_crop_scanline(&d->cinfo, x, width);
  if (skip > 0) jpeg_skip_scanlines(&d->cinfo, skip);
  return true;
}

// Reads `rows` scanlines of `row_bytes` into `out`; stops early (abort) when `finish` is false.
inline bool read_rows(Decoder* d, uint8_t* out, size_t row_bytes, JDIMENSION rows, bool finish) {
  if (setjmp(d->err.jump)) return false;
  JDIMENSION done = 0;
  while (done < rows) {
    JSAMPROW row = out + done * row_bytes;
    const JDIMENSION got = jpeg_read_scanlines(&d->cinfo, &row, 1);
    if (got == 0) {
      std::snprintf(d->err.message, sizeof d->err.message, "no scanline %u", done);
      return false;
    }
    done += got;
  }
  if (finish) {
    jpeg_finish_decompress(&d->cinfo);
  } else {
    jpeg_abort_decompress(&d->cinfo);  // the rows below the region are never decoded
  }
  return true;
}

inline bool read_size(Decoder* d, const uint8_t* data, size_t size) {
  if (setjmp(d->err.jump)) return false;
  jpeg_mem_src(&d->cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&d->cinfo, TRUE);
  return true;
}

struct Encoder {
  jpeg_compress_struct cinfo;
  ErrorManager err;
  Encoder() {
    cinfo.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = on_error;
    jpeg_create_compress(&cinfo);
  }
  ~Encoder() { jpeg_destroy_compress(&cinfo); }
  Encoder(const Encoder&) = delete;
  Encoder& operator=(const Encoder&) = delete;
};

inline bool encode(Encoder* e, std::FILE* f, const uint8_t* rgb, int width, int height,
                   int quality) {
  if (setjmp(e->err.jump)) return false;
  jpeg_stdio_dest(&e->cinfo, f);
  e->cinfo.image_width = static_cast<JDIMENSION>(width);
  e->cinfo.image_height = static_cast<JDIMENSION>(height);
  e->cinfo.input_components = 3;
  e->cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&e->cinfo);  // 4:2:0 chroma subsampling, as cameras and datasets use
  jpeg_set_quality(&e->cinfo, quality, TRUE);
  jpeg_start_compress(&e->cinfo, TRUE);
  while (e->cinfo.next_scanline < e->cinfo.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(rgb) + size_t{e->cinfo.next_scanline} * width * 3;
    jpeg_write_scanlines(&e->cinfo, &row, 1);
  }
  jpeg_finish_compress(&e->cinfo);
  return true;
}

}  // namespace jpeg_internal

// Width and height from the header only (nothing is decoded).
inline Rect jpeg_size(const std::vector<uint8_t>& bytes) {
  jpeg_internal::Decoder d;
  if (!jpeg_internal::read_size(&d, bytes.data(), bytes.size())) {
    throw std::runtime_error(std::string("jpeg header: ") + d.err.message);
  }
  return {0, 0, static_cast<int>(d.cinfo.image_width), static_cast<int>(d.cinfo.image_height)};
}

// Decodes `region` (clipped to the image) of an RGB or grayscale JPEG, as RGB. The pixels are
// exactly those of a full decode: libjpeg-turbo may simplify chroma upsampling at the left and
// right edges of a cropped scanline, so we decode a margin of 16 columns on each side (one
// 4:2:0 iMCU) and 16 rows above, then keep only the region.
inline Image decode_jpeg_region(const std::vector<uint8_t>& bytes, Rect region) {
  using namespace jpeg_internal;
  Decoder d;
  if (!start(&d, bytes.data(), bytes.size())) {
    throw std::runtime_error(std::string("jpeg decode: ") + d.err.message);
  }
  const int full_w = static_cast<int>(d.cinfo.output_width);
  const int full_h = static_cast<int>(d.cinfo.output_height);
  const int x0 = std::max(region.x, 0), x1 = std::min(region.x + region.width, full_w);
  const int y0 = std::max(region.y, 0), y1 = std::min(region.y + region.height, full_h);
  if (x0 >= x1 || y0 >= y1) return Image(0, 0);
  constexpr int kMargin = 16;
  const int dx0 = std::max(x0 - kMargin, 0), dx1 = std::min(x1 + kMargin, full_w);
  const int dy0 = std::max(y0 - kMargin, 0);
  JDIMENSION cx = static_cast<JDIMENSION>(dx0), cw = static_cast<JDIMENSION>(dx1 - dx0);
  if (!crop_and_skip(&d, &cx, &cw, static_cast<JDIMENSION>(dy0))) {
    throw std::runtime_error(std::string("jpeg decode: ") + d.err.message);
  }
  // Rows dy0 .. y1-1 of the (possibly widened) column range [cx, cx + cw).
  const size_t row_bytes = size_t{d.cinfo.output_width} * 3;
  std::vector<uint8_t> rows(row_bytes * static_cast<size_t>(y1 - dy0));
  const bool whole = dy0 == 0 && y1 == full_h;
  if (!read_rows(&d, rows.data(), row_bytes, static_cast<JDIMENSION>(y1 - dy0), whole)) {
    throw std::runtime_error(std::string("jpeg decode: ") + d.err.message);
  }
  Image out(x1 - x0, y1 - y0);
  const size_t out_row = static_cast<size_t>(out.width) * 3;
  for (int y = y0; y < y1; ++y) {
    const uint8_t* src = rows.data() + static_cast<size_t>(y - dy0) * row_bytes +
                         static_cast<size_t>(x0 - static_cast<int>(cx)) * 3;
    std::copy(src, src + out_row, out.pixels.data() + static_cast<size_t>(y - y0) * out_row);
  }
  return out;
}

// Decodes the whole image as RGB.
inline Image decode_jpeg(const std::vector<uint8_t>& bytes) {
  using namespace jpeg_internal;
  Decoder d;
  if (!start(&d, bytes.data(), bytes.size())) {
    throw std::runtime_error(std::string("jpeg decode: ") + d.err.message);
  }
  Image out(static_cast<int>(d.cinfo.output_width), static_cast<int>(d.cinfo.output_height));
  if (!read_rows(&d, out.pixels.data(), static_cast<size_t>(out.width) * 3, d.cinfo.output_height,
                 /*finish=*/true)) {
    throw std::runtime_error(std::string("jpeg decode: ") + d.err.message);
  }
  return out;
}

// Writes `image` as a baseline RGB JPEG (4:2:0) at `quality` (1..100).
inline void write_jpeg(const std::string& path, const Image& image, int quality) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw std::runtime_error("cannot create " + path);
  jpeg_internal::Encoder e;
  const bool ok =
      jpeg_internal::encode(&e, f, image.pixels.data(), image.width, image.height, quality);
  const bool closed = std::fclose(f) == 0;
  if (!ok) throw std::runtime_error("jpeg encode " + path + ": " + e.err.message);
  if (!closed) throw std::runtime_error("cannot write " + path);
}

}  // namespace examples::img
