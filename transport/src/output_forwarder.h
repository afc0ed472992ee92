// OutputForwarder — a node's stdout and stderr, sent to the driver's terminal (as Ray's
// workers' output reaches the driver, each line prefixed with where it came from).
//
// start() points file descriptors 1 and 2 at pipes (so whatever writes there — printf,
// std::cout, Prism's log, a library — is caught) and starts a reader thread that hands whole
// lines to `send` (partial lines wait for their end, or go out once 4 KiB long). stop() flushes
// C stdio, puts the original descriptors back, drains what the pipes still hold and joins the
// reader: nothing written before stop() is lost while the driver is reachable.
//
// Thread-safe: start() and stop() from one thread (the link's); `send` runs on the reader.
#pragma once

#include <functional>
#include <string>
#include <thread>

namespace prism::cluster {

class OutputForwarder {
 public:
  // stream: 1 (stdout) or 2 (stderr); text: one or more whole lines, each ending in '\n'.
  // False: it could not be sent (no driver): the forwarder writes it where it would have gone.
  using Send = std::function<bool(int stream, const std::string& text)>;

  OutputForwarder() = default;
  ~OutputForwarder() { stop(); }
  OutputForwarder(const OutputForwarder&) = delete;
  OutputForwarder& operator=(const OutputForwarder&) = delete;

  // False (and nothing changed) if the pipes cannot be made.
  bool start(Send send);
  // Idempotent.
  void stop() noexcept;

  // The lines of `buffer` up to its last '\n' (or all of it once it reaches `flush_at` bytes),
  // removed from it. Exposed for tests.
  static std::string take_lines(std::string* buffer, size_t flush_at);

 private:
  void read_loop();
  void deliver(int stream, const std::string& text);

  Send send_;
  int saved_[2] = {-1, -1};      // the original fd 1 and 2 (closed after the reader is joined)
  int read_end_[2] = {-1, -1};   // the pipes' read ends (the reader owns them)
  std::thread reader_;
};

}  // namespace prism::cluster
