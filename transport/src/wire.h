// wire.h — the messages node processes exchange, and their one decoder.
//
// Every message is a frame: a 16-byte header followed by `length` bytes of body.
//
//   offset  size  field
//   0       4     magic    0x4D535250 ("PRSM" little-endian)
//   4       1     version  kWireVersion; a frame of another version is refused
//   5       1     type     MsgType
//   6       2     flags    0 (frames with other flags are refused)
//   8       4     length   body bytes, <= kMaxBodyBytes
//   12      4     reserved 0
//
// All integers are little-endian. Strings and byte blobs in bodies are a u32 length followed by
// the bytes. A UCX message may carry several frames back to back (small messages are batched):
// split_frames() walks them. Every decoder checks every length against what is left, refuses
// unknown types, trailing bytes and counts that cannot fit, and never reads past the buffer: a
// malformed message is reported, never trusted (it is fuzzed: transport/fuzz/wire_fuzz.cc).
//
// Thread-safe: pure functions over caller-owned buffers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace prism::cluster {

inline constexpr uint32_t kWireMagic = 0x4D535250;
inline constexpr uint8_t kWireVersion = 10;
inline constexpr size_t kHeaderBytes = 16;
// Bodies above this are refused (values larger than the inline threshold travel in part 2's
// transfers; until then a task's arguments or result must fit in one frame).
inline constexpr uint32_t kMaxBodyBytes = 256u << 20;
inline constexpr size_t kChallengeBytes = 32;
inline constexpr size_t kMacBytes = 32;  // HMAC-SHA256

enum class MsgType : uint8_t {
  kHello = 1,     // listener -> joiner: its challenge
  kAuth = 2,      // joiner -> listener: proof, its own challenge, what it is
  kWelcome = 3,   // listener -> joiner: proof, the joiner's node index
  kRefused = 4,   // listener -> joiner: why it may not join (then the connection is closed)
  kCall = 5,      // run a registered function
  kResult = 6,    // a call's outcome
  kShutdown = 7,  // the job ended: exit
  kStatusQuery = 8,   // a `prism status` client asks
  kStatusReply = 9,   // text answer to kStatusQuery
  kActorCreate = 10,  // driver -> node: construct an actor there (answered by a kResult)
  kActorCall = 11,    // driver -> node: call a method of an actor there (answered by a kResult)
  kActorKill = 12,    // driver -> node: stop an actor there
  kActorLookup = 13,  // node -> driver: the named actor (answered by a kResult with its number)
  kObjectPull = 14,   // a holder is asked for an object's bytes (answered by a kObjectData)
  kObjectData = 15,   // an object's bytes, or why they cannot be had
  kObjectFree = 16,   // driver -> node: the last ref dropped; free these copies
  kOutput = 17,       // node -> driver: lines its tasks printed (stdout or stderr)
  kClockPing = 18,    // driver -> node: the driver's clock (answered by a kClockPong)
  kClockPong = 19,    // node -> driver: the ping's time and the node's clock when it came
  kSpansQuery = 20,   // driver -> node: send the spans of your task runs (kSpansReply)
  kSpansReply = 21,   // node -> driver: the spans (node clock)
  kNodeStats = 22,    // node -> driver: its own counts (each second while they change)
  kHeartbeat = 23,    // either way: "still here" (failure_detector.h), with the membership epoch
  kRefReady = 24,     // lender -> borrower: a lent object is done (where to pull it, or its error)
  kRefRelease = 25,   // borrower -> lender: its last ref of lent objects dropped
  kObjectWhere = 26,  // driver -> node: pull this object from that node directly (a redirect)
  kObjectHeld = 27,   // node -> driver: a direct pull landed; this node keeps a copy
  kDeviceOffer = 28,  // node -> node: a pulled GPU value comes on a device channel (not bytes)
};

// A resource amount in core's units (CPU/GPU in 1/10000, memory in bytes).
struct WireResources {
  int64_t cpu = 0;
  int64_t gpu = 0;
  int64_t memory = 0;
  int64_t gpu_memory = 0;
  std::vector<std::pair<std::string, int64_t>> custom;
  bool operator==(const WireResources&) const = default;
};

struct HelloMsg {
  uint8_t challenge[kChallengeBytes] = {};
};

// kPeer: a node connecting to another node of its job, to pull objects held there directly.
enum class PeerRole : uint8_t { kNode = 1, kClient = 2, kPeer = 3 };

struct AuthMsg {
  uint8_t mac[kMacBytes] = {};              // HMAC(token, "prism-join" || hello.challenge)
  uint8_t challenge[kChallengeBytes] = {};  // the joiner's, answered in kWelcome
  PeerRole role = PeerRole::kNode;
  std::string hostname;
  uint32_t pid = 0;
  uint64_t fingerprint = 0;             // hash of the registered functions (names and types)
  std::vector<std::string> functions;   // "name" of every registered function, sorted
  WireResources resources;              // what the node offers (zero for a client)
  // A node: where it listens for other nodes' direct pulls ("host:port"; empty: it does not).
  std::string listen;
};

struct WelcomeMsg {
  uint8_t mac[kMacBytes] = {};  // HMAC(token, "prism-welcome" || auth.challenge)
  uint32_t node_index = 0;      // 1, 2, ... (the driver is 0)
};

struct RefusedMsg {
  std::string reason;
};

// An argument passed by reference: the object's serialized bytes belong at offset `at` of the
// call's inline args (references are sorted by `at`); the receiver pulls what it lacks.
struct WireObjectRef {
  uint64_t object = 0;
  uint64_t bytes = 0;
  uint64_t at = 0;
  bool operator==(const WireObjectRef&) const = default;
};

struct CallMsg {
  uint64_t call_id = 0;
  std::string function;   // registered name
  std::string task_name;  // for errors and the timeline (may equal function)
  WireResources request;  // what the task asks for
  std::string args;       // serialized arguments (prism/serialize.h), less the references
  std::vector<WireObjectRef> objects;  // arguments passed by reference
  uint64_t result_object = 0;  // nonzero: a large result stays on the node under this number
  bool may_spill = false;  // the node may send it back (kSpilled) when it has no room for it now
  // Nonzero: a num_returns call of this many results (a tuple-like result), written one by one
  // (ResultMsg::elements); a large one stays on the node under result_object + its index.
  uint32_t num_returns = 0;
  // A rebuild of one of those results (its index; -1: every one): the others are not kept.
  int32_t only_element = -1;
  // The keys of the ObjectRefs serialized inside `args` (prism/object_ref.h), once per
  // occurrence: the sender lends them to the receiver (kRefReady, kRefRelease).
  std::vector<uint64_t> refs;
};

enum class CallStatus : uint8_t {
  kOk = 0,           // payload: the serialized result
  kTaskError = 1,    // the function threw: error_type, message
  kSystemError = 2,  // Prism could not run it: error_code (prism::ErrorCode), message
  kSpilled = 3,      // a call that may spill: this node has no room for it now (it did not run)
};

// One result of a num_returns call (ResultMsg::elements).
struct WireElement {
  uint64_t object = 0;  // nonzero: it stayed on the node as this object
  uint64_t bytes = 0;   // its serialized size (inline: its bytes are next in the payload)
};

struct ResultMsg {
  uint64_t call_id = 0;
  CallStatus status = CallStatus::kOk;
  int32_t error_code = 0;
  std::string error_type;
  std::string message;
  std::string payload;
  uint64_t object = 0;        // nonzero: the result stayed on the node as this object (no payload)
  uint64_t object_bytes = 0;  // ... of this many bytes
  uint64_t run_ns = 0;        // kOk, a task: how long its body ran there (variant calls' model)
  std::vector<uint64_t> refs;  // kOk: the ObjectRefs inside `payload` (as CallMsg::refs)
  // kOk, a num_returns call: its results in order; the payload holds those kept inline, one
  // after another (empty: the payload is the whole result, as for any call).
  std::vector<WireElement> elements;
};

struct ActorCreateMsg {
  uint64_t call_id = 0;      // answered by a ResultMsg with this id (empty payload when created)
  uint64_t actor = 0;        // the driver's number for the actor (names it in later messages)
  std::string constructor;   // registered constructor key (prism/actor.h)
  std::string type_name;     // for errors
  std::string name;          // a named actor's name (empty: unnamed)
  uint32_t max_concurrency = 1;
  WireResources request;     // what the actor holds for its life
  std::string args;          // serialized constructor arguments
  std::vector<uint64_t> refs;  // the ObjectRefs inside `args` (as CallMsg::refs)
};

struct ActorCallMsg {
  uint64_t call_id = 0;
  uint64_t actor = 0;
  std::string method;     // registered "Type::method"
  std::string task_name;  // for errors and the timeline
  std::string args;
  uint64_t result_object = 0;  // nonzero: a large result stays on the node under this number
  // Nonzero: a num_returns call of this many results, written one by one (as CallMsg's); a
  // large one stays on the node under result_object + its index.
  uint32_t num_returns = 0;
  std::vector<uint64_t> refs;  // the ObjectRefs inside `args` (as CallMsg::refs)
};

struct ActorKillMsg {
  uint64_t actor = 0;
  bool release = false;  // false: kill it now; true: the driver dropped its last handle (the
                         // actor finishes the calls it has, then stops)
};

struct ActorLookupMsg {
  uint64_t call_id = 0;
  std::string name;
  std::string type;  // the mangled type the caller expects
};

struct ObjectPullMsg {
  uint64_t object = 0;
  // node -> driver: the driver may answer with a kObjectWhere naming another node to pull the
  // object from, instead of the bytes (false: the bytes, relayed if need be; a node asks so
  // after a direct pull failed).
  bool may_redirect = false;
  // node -> node (a direct pull): the reader wants the value on its GPU `reader_gpu` (-1: in
  // host memory) and has device channels of kind `channel` (prism/internal/device_channel.h; 0:
  // none). A holder keeping the value live on a GPU with channels of that kind answers with a
  // kDeviceOffer; otherwise with the bytes, as always.
  int32_t reader_gpu = -1;
  uint8_t channel = 0;
};

// node -> node, the answer to a direct pull naming a GPU: object `object` (`bytes` long
// serialized) comes as transfer `seq` of the holder's communicator `comm` (`id`: how to join it,
// when it is new), to land on the reader's GPU; `stub` is what stands for it in its bytes
// (Placement::write_stub). The transfer failing is the reader's to notice (it pulls the bytes
// from the driver instead).
struct DeviceOfferMsg {
  uint64_t object = 0;
  uint64_t bytes = 0;
  uint64_t comm = 0;
  uint64_t seq = 0;
  std::string id;
  std::string stub;
};

// driver -> node, the answer to a kObjectPull with may_redirect: pull `object` (`bytes` long)
// from node `holder_index`, which listens for direct pulls at `address`.
struct ObjectWhereMsg {
  uint64_t object = 0;
  uint64_t bytes = 0;
  uint32_t holder_index = 0;
  std::string address;
};

// node -> driver, after a direct pull (kObjectWhere) brought `object` (`bytes` long) from node
// `from_index`, asked at `start_ns` and complete at `end_ns` (the node's steady clock): the
// transfer joins the driver's timeline, and when `kept` the node keeps the copy (the driver may
// send readers to it now); not kept: it was freed while on its way.
struct ObjectHeldMsg {
  uint64_t object = 0;
  uint64_t bytes = 0;
  uint32_t from_index = 0;
  int64_t start_ns = 0;
  int64_t end_ns = 0;
  bool kept = true;
};

// An object's serialized value, whole or one part of it: a value larger than one frame travels
// in parts, in order, each at its `offset` of the `total` bytes (ok: offset + bytes <= total,
// and a part is empty only when the value is; !ok: no bytes, offset and total 0).
struct ObjectDataMsg {
  uint64_t object = 0;
  bool ok = false;
  uint64_t offset = 0;  // ok: where these bytes go in the value
  uint64_t total = 0;   // ok: the value's size
  std::string error;  // !ok: why not
  std::string bytes;  // ok: the serialized value's bytes at `offset`
};

struct ObjectFreeMsg {
  std::vector<uint64_t> objects;
};

struct OutputMsg {
  uint8_t stream = 1;  // 1: stdout, 2: stderr
  std::string text;    // whole lines, each ending in '\n'
};

struct ClockPingMsg {
  int64_t driver_ns = 0;  // the driver's steady clock when it sent the ping
};

struct ClockPongMsg {
  int64_t driver_ns = 0;  // the ping's
  int64_t node_ns = 0;    // the node's steady clock when the ping arrived
};

struct SpansQueryMsg {
  uint64_t call_id = 0;
  int64_t since_ns = 0;     // the node's clock: spans that ended at or after it
  uint32_t max_spans = 0;   // the newest this many at most
};

struct WireSpan {
  std::string name;
  uint64_t task = 0;
  int32_t thread = 0;
  int64_t start_ns = 0;  // the node's steady clock
  int64_t end_ns = 0;
  int32_t gpu = -1;      // the first GPU, -1: none
};

struct SpansReplyMsg {
  uint64_t call_id = 0;
  bool recording = false;  // false: the node keeps no timeline (its InitOptions::timeline is off)
  bool truncated = false;  // older spans were left out (max_spans, or the message's size)
  std::vector<WireSpan> spans;
};

// A node's own counts: the fields of its prism::NodeStats of itself, as its driver shows them.
struct NodeStatsMsg {
  uint64_t tasks_waiting_for_arguments = 0;
  uint64_t tasks_queued = 0;
  uint64_t tasks_running = 0;
  uint64_t tasks_done = 0;
  uint64_t tasks_failed = 0;
  uint64_t objects = 0;
  uint64_t primary_bytes = 0;
  uint64_t capacity_bytes = 0;
  uint64_t secondary_bytes = 0;
  uint64_t spilled_bytes = 0;
  uint32_t threads = 0;
  // Transfers since it started: objects it pulled from others (the driver or other nodes) and
  // their bytes, and the pulls it answered with bytes.
  uint64_t pulls = 0;
  uint64_t pulled_bytes = 0;
  uint64_t served = 0;
  uint64_t served_bytes = 0;
  bool operator==(const NodeStatsMsg&) const = default;
};

// Sent each FailureDetector::interval() by the driver to every node and by a node to its driver.
// `epoch`: the driver's membership epoch (one more per node declared dead); a node's own copy.
struct HeartbeatMsg {
  uint64_t epoch = 0;
};

// An object lent to the receiver (its key came in an earlier message's `refs`) is done: its
// serialized value can be pulled (kObjectPull) from the sender as object `pull` (`bytes` long),
// or it failed (status kTaskError or kSystemError, with the fields of a ResultMsg's error).
struct RefReadyMsg {
  uint64_t key = 0;
  CallStatus status = CallStatus::kOk;
  uint64_t pull = 0;
  uint64_t bytes = 0;
  int32_t error_code = 0;
  std::string error_type;
  std::string message;
  std::string where;  // the node it failed on (kTaskError), for the error
};

// The receiver's last refs of lent objects dropped: for each key, how many times it was lent
// (the occurrences of the key in the `refs` of the messages it received from this peer).
struct RefReleaseMsg {
  std::vector<std::pair<uint64_t, uint64_t>> keys;  // key, count
};

struct ShutdownMsg {};
struct StatusQueryMsg {};
struct StatusReplyMsg {
  std::string text;
};

using Message = std::variant<HelloMsg, AuthMsg, WelcomeMsg, RefusedMsg, CallMsg, ResultMsg,
                             ShutdownMsg, StatusQueryMsg, StatusReplyMsg, ActorCreateMsg,
                             ActorCallMsg, ActorKillMsg, ActorLookupMsg, ObjectPullMsg,
                             ObjectDataMsg, ObjectFreeMsg, OutputMsg, ClockPingMsg, ClockPongMsg,
                             SpansQueryMsg, SpansReplyMsg, NodeStatsMsg, HeartbeatMsg,
                             RefReadyMsg, RefReleaseMsg, ObjectWhereMsg, ObjectHeldMsg,
                             DeviceOfferMsg>;

// Appends one whole frame (header + body) for `msg` to `out`.
void encode(const Message& msg, std::string* out);



enum class DecodeError : uint8_t {
  kNone = 0,
  kTruncated,       // fewer bytes than the header or the header's length says
  kBadMagic,
  kBadVersion,
  kBadFlags,
  kOversized,       // length > kMaxBodyBytes
  kUnknownType,
  kMalformedBody,   // a field's length runs past the body, or bytes are left over
};
const char* to_string(DecodeError e) noexcept;

// The most bytes of a value one ObjectData frame carries (larger values travel in parts).
inline constexpr size_t kMaxObjectPartBytes = kMaxBodyBytes - (8 + 1 + 8 + 8 + 4 + 4);

// An ObjectData frame in two pieces, so that a large value is sent from where it is (no copy):
// the returned head, then `part` bytes of the value from `offset` on (UcxComm::send with a
// tail). Throws prism::Error(kInvalidArgument) if the part is larger than kMaxObjectPartBytes or
// does not lie within `total`.
std::string encode_object_data_head(uint64_t object, uint64_t offset, size_t part, uint64_t total);

// An ObjectData frame decoded without copying its value: `bytes` points into the frame.
struct ObjectDataView {
  uint64_t object = 0;
  bool ok = false;
  uint64_t offset = 0;
  uint64_t total = 0;
  std::string error;
  std::string_view bytes;
  bool whole() const noexcept { return offset == 0 && bytes.size() == total; }
};
std::optional<ObjectDataView> decode_object_data(std::string_view frame, DecodeError* error);

// The type of a frame split_frames delivered (its header was checked).
inline MsgType frame_type(std::string_view frame) { return static_cast<MsgType>(frame[5]); }

// Splits a received buffer into frames: calls `fn(frame)` with each whole frame (header
// included) in order. Returns kNone if the buffer was exactly a sequence of well-formed headers
// with bodies inside the buffer, else the first error (frames before it were delivered).
// Checks the header only; bodies are checked by decode().
template <typename Fn>
DecodeError split_frames(std::string_view buffer, Fn&& fn);

// Decodes one frame (as delivered by split_frames). On error returns nullopt and sets *error.
std::optional<Message> decode(std::string_view frame, DecodeError* error);

// --- implementation detail of split_frames ---
// Checks the header at the start of `buffer`; on success sets *frame_bytes (header + body).
DecodeError check_header(std::string_view buffer, size_t* frame_bytes) noexcept;

template <typename Fn>
DecodeError split_frames(std::string_view buffer, Fn&& fn) {
  while (!buffer.empty()) {
    size_t n = 0;
    const DecodeError e = check_header(buffer, &n);
    if (e != DecodeError::kNone) return e;
    fn(buffer.substr(0, n));
    buffer.remove_prefix(n);
  }
  return DecodeError::kNone;
}

}  // namespace prism::cluster
