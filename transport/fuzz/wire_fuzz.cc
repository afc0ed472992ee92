// libFuzzer target for the wire decoder (wire.h): whatever bytes a peer sends, decode() must
// neither crash nor read out of bounds, and every frame it accepts must survive a round trip.
//
// The input is treated two ways: as a received UCX message (split_frames, then decode() on each
// frame) and as one frame handed straight to decode() (its own header and exact-size checks).
// A decoded message is re-encoded and decoded again; abort() (a fuzzer finding) if:
//   - decode() fails without an error, or succeeds with one;
//   - the re-encoding does not decode, or decodes to a message that encodes differently;
//   - the re-encoding differs from the accepted frame itself. The encoding is canonical: decode
//     refuses everything encode() would not write (flags, reserved word, trailing bytes, enum
//     values), so a frame that decodes is exactly the encoding of what it decoded to. If decode
//     ever learns to accept non-canonical frames, this last check must go.
//
// Build (see transport/CMakeLists.txt):
//   clang++ -std=c++20 -fsanitize=fuzzer,address,undefined -I core/include -I transport/src \
//     transport/fuzz/wire_fuzz.cc transport/src/wire.cc core/src/common/errors.cc
// Run over the seed corpus: prism_wire_fuzz -seed=1 -runs=200000 tests/transport/fuzz_corpus

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "wire.h"

namespace {

using prism::cluster::DecodeError;
using prism::cluster::Message;

// decode() then, on success, the round-trip checks above.
void check_frame(std::string_view frame) {
  DecodeError error = DecodeError::kNone;
  const std::optional<Message> msg = prism::cluster::decode(frame, &error);
  // The link decodes ObjectData frames without copying their value: both decoders agree.
  if (frame.size() >= prism::cluster::kHeaderBytes &&
      prism::cluster::frame_type(frame) == prism::cluster::MsgType::kObjectData) {
    DecodeError view_error = DecodeError::kNone;
    const auto view = prism::cluster::decode_object_data(frame, &view_error);
    if (view.has_value() != msg.has_value()) std::abort();
    if (view) {
      const auto& m = std::get<prism::cluster::ObjectDataMsg>(*msg);
      if (view->object != m.object || view->ok != m.ok || view->offset != m.offset ||
          view->total != m.total || view->error != m.error || view->bytes != m.bytes) {
        std::abort();
      }
    }
  }
  if (!msg) {
    if (error == DecodeError::kNone) std::abort();
    return;
  }
  if (error != DecodeError::kNone) std::abort();

  std::string once;
  prism::cluster::encode(*msg, &once);
  if (once != frame) std::abort();

  DecodeError again_error = DecodeError::kNone;
  const std::optional<Message> again = prism::cluster::decode(once, &again_error);
  if (!again || again_error != DecodeError::kNone) std::abort();
  std::string twice;
  prism::cluster::encode(*again, &twice);
  if (twice != once) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  prism::cluster::split_frames(input, [](std::string_view frame) { check_frame(frame); });
  check_frame(input);
  return 0;
}
