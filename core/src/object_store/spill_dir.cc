// spill_dir.cc — see spill_dir.h.
#include "object_store/spill_dir.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "prism/errors.h"

namespace prism::internal {

std::string spill_root() {
  const char* root = std::getenv("PRISM_SPILL_DIR");
  if (root != nullptr && *root) return root;
  const char* tmp = std::getenv("TMPDIR");
  return tmp != nullptr && *tmp ? tmp : "/tmp";
}

namespace {

// Removes "<root>/<prefix>-<pid>-*" directories whose process is gone (killed before it could).
void remove_orphans(const std::string& root, const std::string& prefix) {
  std::error_code ec;
  const std::string lead = prefix + "-";
  for (const auto& e : std::filesystem::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    if (name.compare(0, lead.size(), lead) != 0) continue;
    char* end = nullptr;
    const long pid = std::strtol(name.c_str() + lead.size(), &end, 10);
    if (pid <= 0 || end == nullptr || *end != '-' || pid == static_cast<long>(getpid())) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;  // alive (or not ours)
    std::error_code rm;
    std::filesystem::remove_all(e.path(), rm);
  }
}

}  // namespace

std::string make_spill_dir(const std::string& root, const std::string& prefix) {
  std::error_code ec;
  std::filesystem::create_directories(root, ec);
  remove_orphans(root, prefix);
  std::string templ = root + "/" + prefix + "-" + std::to_string(getpid()) + "-XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) {
    throw Error(ErrorCode::kUnavailable,
                "cannot make a spill directory under " + root + ": " + std::strerror(errno));
  }
  return std::string(buf.data());
}

}  // namespace prism::internal
