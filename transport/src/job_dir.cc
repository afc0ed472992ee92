#include "job_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>

#include "prism/errors.h"

namespace prism::cluster {

namespace {

[[noreturn]] void fail(const std::string& what, const std::string& path) {
  throw Error(ErrorCode::kUnavailable,
              "cluster job directory: " + what + " '" + path + "': " + std::strerror(errno));
}

void make_dir(const std::string& path) {
  if (mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) fail("cannot create", path);
}

void write_file(const std::string& path, const std::string& text, mode_t mode) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) fail("cannot write", path);
  // The mode given to open() is filtered by the umask and ignored for an existing file.
  bool ok = fchmod(fd, mode) == 0;
  size_t done = 0;
  while (ok && done < text.size()) {
    const ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += static_cast<size_t>(n);
  }
  if (close(fd) != 0) ok = false;
  if (!ok) fail("cannot write", path);
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  size_t b = 0;
  while (b < s.size() && s[b] == ' ') ++b;
  return s.substr(b);
}

}  // namespace

std::string jobs_root() {
  const char* tmp = std::getenv("TMPDIR");
  std::string root = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  return root + "/prism";
}

std::string write_job_dir(const std::string& dir, const std::string& address,
                          const std::string& token) {
  std::string path = dir;
  if (path.empty()) {
    const std::string root = jobs_root();
    make_dir(root);
    char stamp[32];
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
    path = root + "/job-" + stamp + "-" + std::to_string(getpid());
    make_dir(path);
    // `latest` names the newest job (as Ray's session_latest): replaced atomically.
    const std::string tmp_link = root + "/.latest-" + std::to_string(getpid());
    unlink(tmp_link.c_str());
    if (symlink(path.c_str(), tmp_link.c_str()) != 0 ||
        rename(tmp_link.c_str(), (root + "/latest").c_str()) != 0) {
      fail("cannot link latest to", path);
    }
  } else {
    make_dir(path);
  }
  write_file(path + "/token", token + "\n", 0600);
  write_file(path + "/address", address + "\n", 0644);
  return path;
}

std::string read_line_file(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) {
    throw Error(ErrorCode::kInvalidArgument, "cannot read '" + path + "'");
  }
  return trim(line);
}

std::string read_token_file(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) {
    throw Error(ErrorCode::kInvalidArgument,
                "cluster token file '" + path + "': " + std::strerror(errno) +
                    " (set PRISM_TOKEN_FILE to the driver's job directory's token file)");
  }
  if ((st.st_mode & 0077) != 0) {
    throw Error(ErrorCode::kInvalidArgument,
                "cluster token file '" + path + "' is readable by other users: chmod 600 it");
  }
  const std::string token = read_line_file(path);
  bool hex = token.size() >= 32;
  for (char c : token) hex = hex && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
  if (!hex) {
    throw Error(ErrorCode::kInvalidArgument,
                "cluster token file '" + path + "' does not hold a token (hex characters)");
  }
  return token;
}

}  // namespace prism::cluster
