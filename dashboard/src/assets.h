// The dashboard's page, compiled into the library (the machines have no internet: no CDN).
// dashboard_assets.cc is generated at build time from dashboard/assets/ (embed_assets.cmake).
//
// Thread-safe: constant data.
#pragma once

#include <string_view>

namespace prism::dashboard {

struct Asset {
  std::string_view path;          // "/", "/app.js", ...
  std::string_view content_type;  // without the charset (utf-8)
  std::string_view body;
};

// The assets, ending with one whose path is empty.
extern const Asset kAssets[];

}  // namespace prism::dashboard
