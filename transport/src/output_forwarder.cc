#include "output_forwarder.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>

#include "common/event.h"
#include "prism/internal/thread_policy.h"

namespace prism::cluster {

namespace {

constexpr size_t kFlushAt = 4096;  // a line longer than this goes out in pieces

// For the SIGABRT handler (async-signal-safe reads only): the running forwarder's pipes and
// the original descriptors; -1 when none runs.
std::atomic<int> g_read_end[2] = {-1, -1};
std::atomic<int> g_saved[2] = {-1, -1};
struct sigaction g_previous_abort {};
std::atomic<bool> g_abort_handler_installed{false};

void write_all(int fd, const char* p, size_t n) noexcept {
  while (n > 0 && fd >= 0) {
    const ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    p += w;
    n -= static_cast<size_t>(w);
  }
}

// Moves what the pipes hold to the original descriptors, then lets the previous handler (or the
// default action) end the process.
void on_abort(int sig) {
  char buf[4096];
  for (int i = 0; i < 2; ++i) {
    const int in = g_read_end[i].load(std::memory_order_relaxed);
    const int out = g_saved[i].load(std::memory_order_relaxed);
    if (in < 0 || out < 0) continue;
    fcntl(in, F_SETFL, fcntl(in, F_GETFL) | O_NONBLOCK);
    for (ssize_t n; (n = read(in, buf, sizeof buf)) > 0;) write_all(out, buf, static_cast<size_t>(n));
  }
  sigaction(SIGABRT, &g_previous_abort, nullptr);
  raise(sig);
}

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
  // Both descriptors must be open: else a new pipe could take the number 1 or 2 itself.
  if (fcntl(1, F_GETFD) < 0 || fcntl(2, F_GETFD) < 0) return false;
  int pipes[2][2] = {{-1, -1}, {-1, -1}};
  const int wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  auto undo = [&] {
    for (auto& p : pipes) {
      for (int fd : p) {
        if (fd >= 0) close(fd);
      }
    }
    if (wake >= 0) close(wake);
  };
  if (wake < 0 || pipe2(pipes[0], O_CLOEXEC) != 0 || pipe2(pipes[1], O_CLOEXEC) != 0) {
    undo();
    return false;
  }
  // Everything the reader reads is set before it starts (saved_: where undeliverable text goes);
  // then the reader, and only then descriptors 1 and 2 change (something drains the pipes).
  send_ = std::move(send);
  read_end_[0] = pipes[0][0];
  read_end_[1] = pipes[1][0];
  wake_ = wake;
  std::fflush(nullptr);
  for (int i = 0; i < 2; ++i) saved_[i] = fcntl(i + 1, F_DUPFD_CLOEXEC, 3);
  try {
    reader_ = std::thread([this] { read_loop(); });
  } catch (...) {
    read_end_[0] = read_end_[1] = wake_ = -1;
    for (int& fd : saved_) {
      if (fd >= 0) close(fd);
      fd = -1;
    }
    undo();
    return false;
  }
  for (int i = 0; i < 2; ++i) {
    dup2(pipes[i][1], i + 1);  // fd 1/2 now write into the pipe
    close(pipes[i][1]);
    g_saved[i].store(saved_[i], std::memory_order_relaxed);
    // (pipes[i][0], not read_end_[i]: the reader thread owns that field now, and clears it)
    g_read_end[i].store(pipes[i][0], std::memory_order_relaxed);
  }
  if (!g_abort_handler_installed.exchange(true)) {
    struct sigaction sa {};
    sa.sa_handler = on_abort;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGABRT, &sa, &g_previous_abort);
  }
  return true;
}

void OutputForwarder::stop() noexcept {
  if (!reader_.joinable()) return;
  std::fflush(nullptr);
  for (int i = 0; i < 2; ++i) {
    g_read_end[i].store(-1, std::memory_order_relaxed);
    g_saved[i].store(-1, std::memory_order_relaxed);
    if (saved_[i] >= 0) dup2(saved_[i], i + 1);
  }
  const uint64_t one = 1;
  [[maybe_unused]] const ssize_t w = write(wake_, &one, sizeof one);
  reader_.join();
  for (int i = 0; i < 2; ++i) {
    if (saved_[i] >= 0) close(saved_[i]);
    saved_[i] = -1;
  }
  close(wake_);
  wake_ = -1;
}

void OutputForwarder::deliver(int stream, const std::string& text) noexcept {
  try {
    if (send_(stream, text)) return;
  } catch (...) {
    // (out of memory encoding it): written here instead
  }
  // Not sent: where it would have gone without the forwarder (never into our own pipe, which
  // could feed itself).
  write_all(saved_[stream - 1], text.data(), text.size());
}

void OutputForwarder::read_loop() {
  std::string pending[2];
  bool open[2] = {true, true};
  bool stopping = false;
  char buf[16384];
  auto flush_pending = [&](int i) {
    if (pending[i].empty()) return;
    if (pending[i].back() != '\n') pending[i].push_back('\n');
    deliver(i + 1, pending[i]);
    pending[i].clear();
  };
  while (open[0] || open[1]) {
    pollfd fds[3];
    for (int i = 0; i < 2; ++i) fds[i] = {open[i] ? read_end_[i] : -1, POLLIN, 0};
    fds[2] = {stopping ? -1 : wake_, POLLIN, 0};
    // Stopping: drain what is there without waiting (a writer in another process may never
    // close its end).
    const int ready = poll(fds, 3, stopping ? 0 : -1);
    if (ready < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (ready == 0) break;  // stopping and drained
    if (fds[2].revents != 0) stopping = true;
    for (int i = 0; i < 2; ++i) {
      if (!open[i] || fds[i].revents == 0) continue;
      const ssize_t n = read(read_end_[i], buf, sizeof buf);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0) {  // end of file: every writer is gone
        open[i] = false;
        flush_pending(i);
        continue;
      }
      pending[i].append(buf, static_cast<size_t>(n));
      std::string lines;
      try {
        lines = take_lines(&pending[i], kFlushAt);
      } catch (...) {
        continue;  // out of memory: kept for the next read
      }
      if (!lines.empty()) deliver(i + 1, lines);
    }
  }
  for (int i = 0; i < 2; ++i) {
    flush_pending(i);
    close(read_end_[i]);
    read_end_[i] = -1;
  }
}

bool OutputPrinter::print(int stream, std::string text) {
  {
    internal::MutexLock lock(mu_);
    if (stopping_ || bytes_ + text.size() > max_bytes_) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    if (!started_) {
      try {
        thread_ = std::thread([this] {
          prism::internal::use_default_thread_policy();
          loop();
        });
      } catch (...) {
        dropped_.fetch_add(1, std::memory_order_relaxed);
        return false;
      }
      started_ = true;
    }
    bytes_ += text.size();
    queue_.emplace_back(stream, std::move(text));
  }
  changes_.fetch_add(1, std::memory_order_acq_rel);
  internal::futex_wake_all(&changes_);
  return true;
}

void OutputPrinter::stop() noexcept {
  {
    internal::MutexLock lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  changes_.fetch_add(1, std::memory_order_acq_rel);
  internal::futex_wake_all(&changes_);
  if (thread_.joinable()) thread_.join();
}

void OutputPrinter::loop() {
  for (;;) {
    const uint32_t seen = changes_.load(std::memory_order_acquire);
    std::deque<std::pair<int, std::string>> batch;
    bool stopping = false;
    {
      internal::MutexLock lock(mu_);
      batch.swap(queue_);
      bytes_ = 0;
      stopping = stopping_;
    }
    for (auto& [stream, text] : batch) {
      write_all(stream == 2 ? STDERR_FILENO : STDOUT_FILENO, text.data(), text.size());
    }
    if (stopping && batch.empty()) return;
    if (batch.empty()) internal::futex_wait(&changes_, seen, internal::kNoDeadline);
  }
}

}  // namespace prism::cluster
