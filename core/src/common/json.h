// JSON text helpers for what Prism writes (the timeline file, the dashboard's API).
//
// Thread-safe: pure functions.
#pragma once

#include <string>

namespace prism::internal {

// `s` as a JSON string literal, quotes included: ", \ and control characters escaped. Bytes
// >= 0x80 pass through (UTF-8 stays UTF-8).
std::string json_string(const std::string& s);
// Appends json_string(s) to `out` (no temporary).
void append_json_string(std::string* out, const std::string& s);

}  // namespace prism::internal
