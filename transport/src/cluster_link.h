// cluster_link.h — one process's place in a cluster: the driver's or a node's ClusterLink.
//
// Topology: a star. The driver listens; every node connects to it, and the two prove
// the job's token to each other (auth.h) before anything else from the peer is acted on. The
// driver runs its tasks of registered functions here while its CPUs have room, else sends
// them to the node with the most room (kCall); the node runs them on its own scheduler
// (run_served_call) and answers (kResult). Nested tasks submitted on a node run on that node.
//
// Objects (object_table.h): a large result stays on the node that computed it (the driver's
// entry is kRemote, with a RemoteObject that fetches it on first read and frees every copy when
// the entry goes); arguments of at least kInlineObjectBytes travel by reference (kCall's
// `objects`): the node uses its copy or pulls it from the driver (kObjectPull / kObjectData),
// which sends its own or passes on the holder's. Values move by UCX rendezvous straight from
// the holder's bytes into a pooled buffer the receiver keeps.
//
// Placement by the driver, for a ready task that can run elsewhere (TaskRecord::encode_remote):
//   1. here, if the request fits in what is free here now;
//   2. else, of the live nodes that can hold it and have room now (outstanding requests sent to
//      them subtracted from their totals), the one holding the most bytes of its arguments,
//      then the one with the most room;
//   3. else here, if this node can ever run it (it queues here);
//   4. else the least loaded live node that can ever run it (it queues there).
//
// Peers in flight: every call sent is remembered with its task until its kResult arrives; a node
// that is lost fails its calls with kUnavailable naming it. Messages from a peer that has not
// authenticated, malformed frames, and results nobody waits for are dropped and counted.
//
// Locking: mu_ guards the peer table and the calls in flight. Never held while completing or
// failing a task (that runs dependents, which may offer() again) nor while calling into
// UcxComm (its callbacks take mu_ on the progress thread).
//
// Thread-safe: every method may be called from any thread; UcxComm's callbacks arrive on its
// progress thread.
#pragma once

#include <memory>

#include "api/cluster_link.h"
#include "object_table.h"

namespace prism::cluster {

std::unique_ptr<internal::ClusterLink> make_link(internal::RuntimeCore* rt,
                                                 const internal::ClusterConfig& config);

// Counters of what the link refused (for tests and `prism status`).
struct LinkCounters {
  uint64_t unauthenticated = 0;  // messages from peers that had not proven the token
  uint64_t malformed = 0;        // frames that failed to decode
  uint64_t refused_joins = 0;    // wrong token, different binary
  uint64_t unknown_results = 0;  // results for calls nobody waits for
  uint64_t evicted_handshakes = 0;  // unproven connections closed for newer ones (at most 32
                                    // wait to prove the token at once)
  uint64_t spilled = 0;  // driver: tasks a node sent back (no room there now) and placed again
  // Nested tasks of busy nodes (spillback): the driver placed them here or on a node with room
  // (nested_placed) or sent them back to queue on their node (nested_sent_back); a node counts
  // those sent back to it (nested_refused).
  uint64_t nested_placed = 0;
  uint64_t nested_sent_back = 0;
  uint64_t nested_refused = 0;
  // Failure detection: peers declared dead for their silence (heartbeats); calls lost with a
  // node and run again (max_retries); the membership epoch (driver: one more per node lost; a
  // node: the driver's, as its heartbeats bring it).
  uint64_t declared_dead = 0;
  // Connections this process closed: peers declared dead, and authenticated peers that sent a
  // message that cannot be decoded (a damaged stream: their work fails over as if they died).
  uint64_t dropped_connections = 0;
  uint64_t lost_tasks_retried = 0;
  uint64_t epoch = 0;
  uint64_t actor_restarts = 0;  // driver: actors built again after their node died
  uint64_t objects_rebuilt = 0;  // driver: runs sent to compute a lost object again (lineage)
  // Direct pulls: the driver's answers that named the node to pull from (redirected); a node's
  // pulls asked of the driver after all, their direct path having failed (direct_fallbacks).
  uint64_t redirected = 0;
  uint64_t direct_fallbacks = 0;
  // Node: direct connections open now (made here to pull, or made by other nodes to pull from
  // here), and those it closed after they went unused (PRISM_PEER_IDLE_CLOSE_S).
  uint64_t direct_connections = 0;
  uint64_t direct_closed_idle = 0;
  // Node: GPU values sent to other nodes' GPUs on a device channel (prism/internal/
  // device_channel.h), and received from them so (a failed one is pulled again as bytes: a
  // direct fallback).
  uint64_t device_sends = 0;
  uint64_t device_receives = 0;
  // Node: GPU values pulled as bytes in parts for a GPU call, uploaded to its GPU part by part
  // as they arrived (the staged path's receiving end, pipelined).
  uint64_t device_landings = 0;
};
// The counters of the global runtime's link; zeros in embedded mode.
LinkCounters link_counters();
// What the global runtime's link holds of other nodes' objects and has pulled; zeros in embedded
// mode.
ObjectTable::Stats object_stats();

}  // namespace prism::cluster
