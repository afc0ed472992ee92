// Device channels between logical GPUs (the host backend, whose device memory is host memory)
// over loopback TCP: what runs the channel protocol in tests where NCCL cannot run
// (PRISM_DEVICE_CHANNEL=sockets). A communicator's id is the address rank 0 listens at; rank 1
// connects there. Faults for the tests of the fallback, PRISM_DEVICE_CHANNEL_FAIL: `join` makes
// rank 1's joins fail after reaching rank 0 (as an NCCL init failing on one side);
// `die-mid-send` kills the sending process (SIGKILL) halfway through its first transfer.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>

#include "device_channels.h"
#include "prism/errors.h"
#include "prism/internal/thread_annotations.h"

namespace prism::gpu::internal {
namespace {

bool failing(const char* what) {
  const char* v = std::getenv("PRISM_DEVICE_CHANNEL_FAIL");
  return v != nullptr && std::strcmp(v, what) == 0;
}

using prism::internal::Mutex;
using prism::internal::MutexLock;

[[noreturn]] void fail(const std::string& what) {
  throw Error(ErrorCode::kUnavailable, "device channel (sockets): " + what);
}

// Waits until `fd` is ready for `events`, checking `stop` every 50 ms.
void await(int fd, short events, const Stop& stop, const char* what) {
  for (;;) {
    stop.check(what);
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, 50);
    if (n > 0) return;
    if (n < 0 && errno != EINTR) fail(std::string(what) + ": poll: " + std::strerror(errno));
  }
}

class SocketComm final : public PairComm {
 public:
  explicit SocketComm(int fd) : fd_(fd) {}
  ~SocketComm() override { ::close(fd_); }

  void send(const void* data, size_t bytes, int, void*, const Stop& stop) override {
    const char* p = static_cast<const char*>(data);
    const size_t half = bytes / 2;
    const bool die = failing("die-mid-send");
    while (bytes > 0) {
      if (die && bytes <= half) ::raise(SIGKILL);
      await(fd_, POLLOUT, stop, "a send");
      const ssize_t n = ::send(fd_, p, bytes, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (n <= 0) fail(std::string("a send failed: ") + std::strerror(errno));
      p += n;
      bytes -= static_cast<size_t>(n);
    }
  }
  void recv(void* data, size_t bytes, int, void*, const Stop& stop) override {
    char* p = static_cast<char*>(data);
    while (bytes > 0) {
      await(fd_, POLLIN, stop, "a receive");
      const ssize_t n = ::recv(fd_, p, bytes, MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (n == 0) fail("the sending side closed the channel mid-transfer");
      if (n < 0) fail(std::string("a receive failed: ") + std::strerror(errno));
      p += n;
      bytes -= static_cast<size_t>(n);
    }
  }

 private:
  const int fd_;
};

class SocketTransport final : public PairTransport {
 public:
  ~SocketTransport() override {
    for (auto& [id, fd] : listening_) ::close(fd);
  }
  uint8_t kind() const noexcept override { return 2; }
  bool usable(int device) const noexcept override { return device >= 0; }

  std::string new_id() override {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) fail(std::string("socket: ") + std::strerror(errno));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 1) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      const std::string why = std::strerror(errno);
      ::close(fd);
      fail("cannot listen: " + why);
    }
    const std::string id = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
    MutexLock lock(mu_);
    listening_[id] = fd;
    return id;
  }

  std::unique_ptr<PairComm> join(const std::string& id, int rank, int, const Stop& stop) override {
    if (rank == 0) {
      int listener = -1;
      {
        MutexLock lock(mu_);
        auto it = listening_.find(id);
        if (it == listening_.end()) fail("no communicator " + id + " was made here");
        listener = it->second;
        listening_.erase(it);
      }
      struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
      } closer{listener};
      await(listener, POLLIN, stop, "joining (waiting for the receiving side)");
      const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) fail(std::string("accept: ") + std::strerror(errno));
      return std::make_unique<SocketComm>(fd);
    }
    const size_t colon = id.rfind(':');
    sockaddr_in a{};
    a.sin_family = AF_INET;
    if (colon == std::string::npos || ::inet_pton(AF_INET, id.substr(0, colon).c_str(), &a.sin_addr) != 1) {
      fail("a malformed communicator id");
    }
    const long port = std::strtol(id.c_str() + colon + 1, nullptr, 10);
    if (port <= 0 || port > 65535) fail("a malformed communicator id");
    a.sin_port = htons(static_cast<uint16_t>(port));
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) fail(std::string("socket: ") + std::strerror(errno));
    auto comm = std::make_unique<SocketComm>(fd);  // (closes it on a throw)
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      fail("cannot reach " + id + ": " + std::strerror(errno));
    }
    if (failing("join")) fail("joining failed (PRISM_DEVICE_CHANNEL_FAIL=join)");
    return comm;
  }

 private:
  Mutex mu_;
  std::map<std::string, int> listening_ PRISM_GUARDED_BY(mu_);  // made, not joined yet
};

}  // namespace

std::unique_ptr<PairTransport> make_socket_transport() {
  return std::make_unique<SocketTransport>();
}

}  // namespace prism::gpu::internal
