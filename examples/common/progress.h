// examples/common/progress.h — a progress line for long runs, on a terminal only.
//
//   {
//     examples::Progress shown("products");   // "products: 3.2 s; tasks: 120 done, 2 running..."
//     long_work();
//   }                                          // the line is cleared
//
// While it lives, a thread rewrites one line of stderr every 250 ms with the time so far and,
// once Prism runs, the job's task counts (prism::stats()). Quiet when stderr is not a terminal
// (CI, pipes, files) or with PRISM_PROGRESS=0, so logs and results are unchanged.
//
// Thread-compatible: one Progress per phase; its refresher thread only reads prism::stats().
#pragma once

#include <prism/prism.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

namespace examples {

class Progress {
 public:
  explicit Progress(std::string label) : label_(std::move(label)) {
    const char* env = std::getenv("PRISM_PROGRESS");
    if (env != nullptr && std::strcmp(env, "0") == 0) return;
    if (isatty(STDERR_FILENO) == 0) return;
    start_ = std::chrono::steady_clock::now();
    thread_ = std::thread([this] { refresh(); });
  }
  ~Progress() {
    if (!thread_.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_one();
    thread_.join();
    std::fprintf(stderr, "\r\033[K");  // clear the line
    std::fflush(stderr);
  }
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

 private:
  void refresh() {
    std::unique_lock<std::mutex> lock(mu_);
    // The period of the refresh, not a wait for another thread: done_ ends it at once.
    while (!cv_.wait_for(lock, std::chrono::milliseconds(250), [this] { return done_; })) {
      const double s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
      std::string line = label_ + ": " + std::to_string(static_cast<int>(s * 10) / 10) + "." +
                         std::to_string(static_cast<int>(s * 10) % 10) + " s";
      if (prism::is_initialized()) {
        try {
          const prism::TaskCounts t = prism::stats().tasks;
          line += "; tasks: " + std::to_string(t.done) + " done, " + std::to_string(t.running) +
                  " running, " +
                  std::to_string(t.waiting_for_arguments + t.waiting_for_resources) + " waiting";
          if (t.on_other_nodes > 0) {
            line += ", " + std::to_string(t.on_other_nodes) + " on other nodes";
          }
          if (t.failed > 0) line += ", " + std::to_string(t.failed) + " failed";
        } catch (const std::exception&) {
          // The runtime stopped between the two calls: the time alone.
        }
      }
      std::fprintf(stderr, "\r\033[K%s", line.c_str());
      std::fflush(stderr);
    }
  }

  std::string label_;
  std::chrono::steady_clock::time_point start_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

}  // namespace examples
