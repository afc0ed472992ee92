// ucx_comm.h — one process's UCX endpoint set: a UCP context and worker, a listener, endpoints
// to peers, and the one progress thread that drives them.
//
// Messages are opaque byte strings (wire.h frames). send() may be called from any thread: it
// queues the bytes and wakes the progress thread, which alone touches UCX (the worker is
// single-threaded: UCS_THREAD_MODE_SINGLE). Messages queued for one peer while a send is being
// posted are batched into one active message (their frames simply follow each other). Large
// messages go by UCX's active-message rendezvous, received into pooled memory that the receiver
// may keep (message_owner); the receiver gets the whole message in one callback either way.
//
// The progress thread is event-driven: it progresses the worker until idle, then arms it
// (ucp_worker_arm) and sleeps in epoll on the worker's event fd and an eventfd that send()
// and stop() write to. No core is burned when idle.
//
// UCX's configuration is read from the UCX_* environment (ucp_config_read). Peers: endpoints use
// UCP_ERR_HANDLING_MODE_PEER, which needs tcp among the transports (UCX_TLS; the default
// includes it; see PLATFORM.md), so a peer that dies or closes is reported once through
// on_peer_error; its queued messages are dropped. Every message is sent with
// UCP_AM_SEND_FLAG_REPLY so that the receiver knows which peer sent it; an inbound connection
// becomes a peer when its connection request arrives.
//
// Callbacks run on the progress thread; they must not block (hand work to other threads) and
// may call send() and close().
//
// Thread-safe: every public method may be called from any thread (except the destructor, not
// from a callback).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace prism::cluster {

using PeerId = uint64_t;  // never 0; never reused within one UcxComm

class UcxComm {
 public:
  struct Callbacks {
    // One active message from `peer`: a message it sent, or several it queued together, back
    // to back (so messages must delimit themselves, as wire.h frames do); in the order `peer`
    // sent them. `data` is valid only during the call.
    std::function<void(PeerId peer, std::string_view data)> on_message;
    // An inbound connection was accepted as `peer` (before any of its messages arrive).
    std::function<void(PeerId peer)> on_accept;
    // `peer` failed or closed (once per peer; never after close() of that peer by us). A peer
    // that closed (its close() or destructor) is reported with why == "closed by peer", after
    // everything it sent before closing.
    std::function<void(PeerId peer, const std::string& why)> on_peer_error;
    // Optional: something arrived from `peer` (a message's first bytes, before its turn to be
    // delivered comes or the rest of it has arrived; or the rest of a long message): a sign of
    // life, for failure detection. `arriving`: the bytes of its messages that have begun to
    // arrive and are not complete yet (what holds up anything it sent after them).
    std::function<void(PeerId peer, uint64_t arriving)> on_activity;
  };

  // Creates the context and worker and starts the progress thread. Throws prism::Error
  // (kUnavailable) naming the UCX call and status if UCX cannot start.
  explicit UcxComm(Callbacks callbacks);
  // Stops the progress thread (flushing what was queued, bounded by a short deadline), closes
  // every endpoint and the listener, destroys the worker and context. No callback starts once
  // it has begun.
  ~UcxComm();
  UcxComm(const UcxComm&) = delete;
  UcxComm& operator=(const UcxComm&) = delete;

  // Listens on "host:port" (port 0: one from the OS). Returns the bound "host:port" (an IPv4
  // address, as given: 127.0.0.1 by default). Throws prism::Error(kInvalidArgument) for a
  // malformed address, kUnavailable if UCX cannot listen there. Once per UcxComm.
  std::string listen(const std::string& host_port);

  // Connects to "host:port" and returns the new peer. The endpoint may not be connected yet
  // when this returns (UCX connects in the background); messages sent meanwhile are delivered
  // once it is, and a connection that fails (nobody listening) is reported through
  // on_peer_error. Throws prism::Error(kInvalidArgument) for a malformed address.
  PeerId connect(const std::string& host_port);

  // Queues `data` for `peer`. Returns false if the peer is unknown, closed or failed.
  bool send(PeerId peer, std::string data);
  // Whether the caller is this communicator's progress thread (which must never wait for a
  // message: it is the one that would deliver it).
  bool on_progress_thread() const;
  // Queues `head` followed by `tail` as one message, without copying `tail` (it goes out by
  // UCX's rendezvous straight from that memory): `owner` keeps it alive until UCX is done.
  bool send(PeerId peer, std::string head, std::shared_ptr<const void> owner,
            std::string_view tail);

  // During on_message: what keeps its `data` alive after the callback returns, for a message
  // that came by rendezvous into a buffer of ours (pooled, already faulted in: buffer_pool.h);
  // null for a small message, whose bytes are UCX's (copy what you keep). On the progress
  // thread only.
  static std::shared_ptr<const void> message_owner();

  // Closes the endpoint (after flushing what was queued for it; the peer then sees "closed by
  // peer"); no callback for it starts once close() has returned.
  void close(PeerId peer);

  // Counters (relaxed): messages and bytes sent, batches (UCX sends) posted, and active
  // messages (on_message calls) and bytes received.
  struct Stats {
    uint64_t messages_sent = 0;
    uint64_t messages_received = 0;
    uint64_t bytes_sent = 0;
    uint64_t bytes_received = 0;
    uint64_t sends_posted = 0;
  };
  Stats stats() const;

  // The longest time the progress thread has spent in one pass (reading no new message
  // meanwhile: a callback that ran long, or UCX busy) since the previous call, counting a pass
  // still running; for failure detection, which must not blame peers for this thread's delay.
  std::chrono::nanoseconds take_longest_pass();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace prism::cluster
