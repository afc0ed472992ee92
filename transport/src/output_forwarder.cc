#include "output_forwarder.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

namespace prism::cluster {

namespace {
constexpr size_t kFlushAt = 4096;  // a line longer than this goes out in pieces
}  // namespace

std::string OutputForwarder::take_lines(std::string* buffer, size_t flush_at) {
  if (buffer->size() >= flush_at) {
    std::string all = std::move(*buffer);
    buffer->clear();
    if (all.back() != '\n') all.push_back('\n');
    return all;
  }
  const size_t last = buffer->rfind('\n');
  if (last == std::string::npos) return {};
  std::string lines = buffer->substr(0, last + 1);
  buffer->erase(0, last + 1);
  return lines;
}

bool OutputForwarder::start(Send send) {
  if (reader_.joinable()) return true;
  int pipes[2][2];
  for (int i = 0; i < 2; ++i) {
    if (pipe2(pipes[i], O_CLOEXEC) != 0) {
      for (int j = 0; j < i; ++j) {
        close(pipes[j][0]);
        close(pipes[j][1]);
      }
      return false;
    }
  }
  std::fflush(nullptr);
  for (int i = 0; i < 2; ++i) {
    saved_[i] = fcntl(i + 1, F_DUPFD_CLOEXEC, 3);
    dup2(pipes[i][1], i + 1);  // fd 1/2 now write into the pipe
    close(pipes[i][1]);
    read_end_[i] = pipes[i][0];
  }
  send_ = std::move(send);
  reader_ = std::thread([this] { read_loop(); });
  return true;
}

void OutputForwarder::stop() noexcept {
  if (!reader_.joinable()) return;
  std::fflush(nullptr);
  // Putting the originals back closes the pipes' last write ends: the reader drains them, sees
  // end of file and returns.
  for (int i = 0; i < 2; ++i) {
    if (saved_[i] >= 0) dup2(saved_[i], i + 1);
  }
  reader_.join();
  for (int i = 0; i < 2; ++i) {
    if (saved_[i] >= 0) close(saved_[i]);
    saved_[i] = -1;
  }
}

void OutputForwarder::deliver(int stream, const std::string& text) {
  if (send_(stream, text)) return;
  // Not sent: where it would have gone without the forwarder (never into our own pipe, which
  // could feed itself).
  const int fd = saved_[stream - 1];
  for (size_t done = 0; fd >= 0 && done < text.size();) {
    const ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
}

void OutputForwarder::read_loop() {
  std::string pending[2];
  bool open[2] = {true, true};
  char buf[16384];
  while (open[0] || open[1]) {
    pollfd fds[2];
    for (int i = 0; i < 2; ++i) fds[i] = {open[i] ? read_end_[i] : -1, POLLIN, 0};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (!open[i] || fds[i].revents == 0) continue;
      const ssize_t n = read(read_end_[i], buf, sizeof buf);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0) {  // end of file: every writer is gone
        open[i] = false;
        if (!pending[i].empty()) {
          if (pending[i].back() != '\n') pending[i].push_back('\n');
          deliver(i + 1, pending[i]);
          pending[i].clear();
        }
        continue;
      }
      pending[i].append(buf, static_cast<size_t>(n));
      std::string lines = take_lines(&pending[i], kFlushAt);
      if (!lines.empty()) deliver(i + 1, lines);
    }
  }
  for (int i = 0; i < 2; ++i) {
    close(read_end_[i]);
    read_end_[i] = -1;
  }
}

}  // namespace prism::cluster
