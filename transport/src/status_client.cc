#include "status_client.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <optional>
#include <utility>

#include "auth.h"
#include "common/event.h"
#include "prism/errors.h"
#include "prism/internal/thread_annotations.h"
#include "ucx_comm.h"
#include "wire.h"

namespace prism::cluster {

namespace {

// What the progress thread learns, handed to the caller. Each step's event is set once.
struct Exchange {
  internal::Mutex mu;
  std::optional<HelloMsg> hello PRISM_GUARDED_BY(mu);
  std::optional<WelcomeMsg> welcome PRISM_GUARDED_BY(mu);
  std::optional<std::string> reply PRISM_GUARDED_BY(mu);
  std::string error PRISM_GUARDED_BY(mu);
  internal::Event got_hello;
  internal::Event got_welcome;  // (or a refusal / an error)
  internal::Event got_reply;    // (or an error)

  void fail(std::string why) {
    {
      internal::MutexLock lock(mu);
      if (error.empty()) error = std::move(why);
    }
    got_hello.set();
    got_welcome.set();
    got_reply.set();
  }
  std::string error_text() {
    internal::MutexLock lock(mu);
    return error;
  }
};

void wait_step(internal::Event& e, internal::Deadline deadline, const std::string& address,
               const char* step) {
  if (!e.wait_until(deadline)) {
    throw TimeoutError("prism status: no " + std::string(step) + " from the driver at " +
                       address + " before the deadline");
  }
}

}  // namespace

std::string query_status(const std::string& address, const std::string& token, double timeout_s) {
  const internal::Deadline deadline =
      internal::deadline_after(std::chrono::duration<double>(timeout_s));
  Exchange x;
  UcxComm::Callbacks cb;
  cb.on_message = [&x](PeerId, std::string_view data) {
    const DecodeError e = split_frames(data, [&](std::string_view frame) {
      DecodeError de = DecodeError::kNone;
      std::optional<Message> msg = decode(frame, &de);
      if (!msg) return x.fail(std::string("a malformed message: ") + to_string(de));
      if (auto* h = std::get_if<HelloMsg>(&*msg)) {
        {
          internal::MutexLock lock(x.mu);
          x.hello = *h;
        }
        x.got_hello.set();
      } else if (auto* w = std::get_if<WelcomeMsg>(&*msg)) {
        {
          internal::MutexLock lock(x.mu);
          x.welcome = *w;
        }
        x.got_welcome.set();
      } else if (auto* r = std::get_if<RefusedMsg>(&*msg)) {
        x.fail("the driver refused: " + r->reason);
      } else if (auto* s = std::get_if<StatusReplyMsg>(&*msg)) {
        {
          internal::MutexLock lock(x.mu);
          x.reply = s->text;
        }
        x.got_reply.set();
      }
    });
    if (e != DecodeError::kNone) x.fail(std::string("malformed bytes: ") + to_string(e));
  };
  cb.on_accept = [](PeerId) {};
  cb.on_peer_error = [&x](PeerId, const std::string& why) { x.fail("connection lost: " + why); };
  UcxComm comm(std::move(cb));
  const PeerId driver = comm.connect(address);

  wait_step(x.got_hello, deadline, address, "greeting");
  AuthMsg auth;
  {
    internal::MutexLock lock(x.mu);
    if (!x.hello) {
      throw Error(ErrorCode::kUnavailable,
                  "prism status: cannot reach the driver at " + address + ": " + x.error);
    }
    compute_mac(token, kJoinLabel, x.hello->challenge, auth.mac);
  }
  new_challenge(auth.challenge);
  auth.role = PeerRole::kClient;
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  auth.hostname = host;
  auth.pid = static_cast<uint32_t>(getpid());
  std::string frame;
  encode(auth, &frame);
  comm.send(driver, std::move(frame));

  wait_step(x.got_welcome, deadline, address, "answer to the token");
  {
    internal::MutexLock lock(x.mu);
    if (!x.welcome || !verify_mac(token, kWelcomeLabel, auth.challenge, x.welcome->mac)) {
      throw Error(ErrorCode::kUnavailable,
                  "prism status: the driver at " + address + " did not accept the token" +
                      (x.error.empty() ? std::string(" (or does not know it)") : ": " + x.error));
    }
  }
  frame.clear();
  encode(StatusQueryMsg{}, &frame);
  comm.send(driver, std::move(frame));
  wait_step(x.got_reply, deadline, address, "status");
  internal::MutexLock lock(x.mu);
  if (!x.reply) {
    throw Error(ErrorCode::kUnavailable, "prism status: " + x.error);
  }
  return *x.reply;
}

}  // namespace prism::cluster
