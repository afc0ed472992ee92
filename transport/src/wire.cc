#include "wire.h"

#include <cstring>
#include <initializer_list>
#include <string>
#include <utility>

#include "prism/errors.h"

namespace prism::cluster {
namespace {

// --- Little-endian integers, byte by byte (no unaligned access, no host byte order) ----------

// Stores the low `n` bytes of `v` at `dst`, least significant first. n <= 8.
void store_le(char* dst, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = static_cast<char>(static_cast<uint8_t>(v >> (8 * i)));
}

// Loads an `n`-byte little-endian unsigned integer from `src`. n <= 8.
uint64_t load_le(const char* src, size_t n) noexcept {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= uint64_t{static_cast<uint8_t>(src[i])} << (8 * i);
  return v;
}

// Header field offsets (see the table in wire.h).
constexpr size_t kMagicAt = 0;
constexpr size_t kVersionAt = 4;
constexpr size_t kTypeAt = 5;
constexpr size_t kFlagsAt = 6;
constexpr size_t kLengthAt = 8;
constexpr size_t kReservedAt = 12;
static_assert(kReservedAt + 4 == kHeaderBytes);

bool known_type(uint8_t type) noexcept {
  return type >= static_cast<uint8_t>(MsgType::kHello) &&
         type <= static_cast<uint8_t>(MsgType::kDeviceOffer);
}

// The wire type of each message struct.
MsgType type_of(const HelloMsg&) { return MsgType::kHello; }
MsgType type_of(const AuthMsg&) { return MsgType::kAuth; }
MsgType type_of(const WelcomeMsg&) { return MsgType::kWelcome; }
MsgType type_of(const RefusedMsg&) { return MsgType::kRefused; }
MsgType type_of(const CallMsg&) { return MsgType::kCall; }
MsgType type_of(const ResultMsg&) { return MsgType::kResult; }
MsgType type_of(const ShutdownMsg&) { return MsgType::kShutdown; }
MsgType type_of(const StatusQueryMsg&) { return MsgType::kStatusQuery; }
MsgType type_of(const StatusReplyMsg&) { return MsgType::kStatusReply; }
MsgType type_of(const ActorCreateMsg&) { return MsgType::kActorCreate; }
MsgType type_of(const ActorCallMsg&) { return MsgType::kActorCall; }
MsgType type_of(const ActorKillMsg&) { return MsgType::kActorKill; }
MsgType type_of(const ActorLookupMsg&) { return MsgType::kActorLookup; }
MsgType type_of(const ObjectPullMsg&) { return MsgType::kObjectPull; }
MsgType type_of(const ObjectDataMsg&) { return MsgType::kObjectData; }
MsgType type_of(const ObjectFreeMsg&) { return MsgType::kObjectFree; }
MsgType type_of(const OutputMsg&) { return MsgType::kOutput; }
MsgType type_of(const ClockPingMsg&) { return MsgType::kClockPing; }
MsgType type_of(const ClockPongMsg&) { return MsgType::kClockPong; }
MsgType type_of(const SpansQueryMsg&) { return MsgType::kSpansQuery; }
MsgType type_of(const SpansReplyMsg&) { return MsgType::kSpansReply; }
MsgType type_of(const NodeStatsMsg&) { return MsgType::kNodeStats; }
MsgType type_of(const HeartbeatMsg&) { return MsgType::kHeartbeat; }
MsgType type_of(const RefReadyMsg&) { return MsgType::kRefReady; }
MsgType type_of(const RefReleaseMsg&) { return MsgType::kRefRelease; }
MsgType type_of(const ObjectWhereMsg&) { return MsgType::kObjectWhere; }
MsgType type_of(const ObjectHeldMsg&) { return MsgType::kObjectHeld; }
MsgType type_of(const DeviceOfferMsg&) { return MsgType::kDeviceOffer; }

const char* type_name(MsgType type) {
  switch (type) {
    case MsgType::kHello: return "Hello";
    case MsgType::kAuth: return "Auth";
    case MsgType::kWelcome: return "Welcome";
    case MsgType::kRefused: return "Refused";
    case MsgType::kCall: return "Call";
    case MsgType::kResult: return "Result";
    case MsgType::kShutdown: return "Shutdown";
    case MsgType::kStatusQuery: return "StatusQuery";
    case MsgType::kStatusReply: return "StatusReply";
    case MsgType::kActorCreate: return "ActorCreate";
    case MsgType::kActorCall: return "ActorCall";
    case MsgType::kActorKill: return "ActorKill";
    case MsgType::kActorLookup: return "ActorLookup";
    case MsgType::kObjectPull: return "ObjectPull";
    case MsgType::kObjectData: return "ObjectData";
    case MsgType::kObjectFree: return "ObjectFree";
    case MsgType::kOutput: return "Output";
    case MsgType::kClockPing: return "ClockPing";
    case MsgType::kClockPong: return "ClockPong";
    case MsgType::kSpansQuery: return "SpansQuery";
    case MsgType::kSpansReply: return "SpansReply";
    case MsgType::kNodeStats: return "NodeStats";
    case MsgType::kHeartbeat: return "Heartbeat";
    case MsgType::kRefReady: return "RefReady";
    case MsgType::kRefRelease: return "RefRelease";
    case MsgType::kObjectWhere: return "ObjectWhere";
    case MsgType::kObjectHeld: return "ObjectHeld";
    case MsgType::kDeviceOffer: return "DeviceOffer";
  }
  return "?";
}

// --- Encoding -------------------------------------------------------------------------------

// Appends one frame's body to a string whose body starts at `body_start`.
// Invariant: the body never exceeds kMaxBodyBytes; an append that would grow it past that
// throws prism::Error(kInvalidArgument) before anything is appended, so every u32 length and
// count written fits (each is at most the body size).
class Writer {
 public:
  Writer(std::string* out, size_t body_start, MsgType type)
      : out_(out), body_start_(body_start), type_(type) {}

  size_t body_bytes() const { return out_->size() - body_start_; }

  void u8(uint8_t v) { put_le(v, 1); }
  void u32(uint32_t v) { put_le(v, 4); }
  void u64(uint64_t v) { put_le(v, 8); }
  // Signed integers travel as their two's-complement bit pattern.
  void i32(int32_t v) { put_le(static_cast<uint32_t>(v), 4); }
  void i64(int64_t v) { put_le(static_cast<uint64_t>(v), 8); }

  void raw(const uint8_t* p, size_t n) {
    check_room(n);
    out_->append(reinterpret_cast<const char*>(p), n);
  }

  // A string or byte blob: u32 length, then the bytes.
  void str(std::string_view s) {
    if (s.size() > kMaxBodyBytes) fail();
    check_room(4 + s.size());  // checked first: the u32 cast below cannot truncate
    u32(static_cast<uint32_t>(s.size()));
    out_->append(s.data(), s.size());
  }

  // A vector's element count (u32). The elements follow.
  void count(size_t n) {
    if (n > kMaxBodyBytes) fail();  // cannot fit: every element takes at least one byte
    u32(static_cast<uint32_t>(n));
  }

 private:
  void put_le(uint64_t v, size_t n) {
    check_room(n);
    char bytes[8];
    store_le(bytes, v, n);
    out_->append(bytes, n);
  }

  // Throws unless `n` more bytes keep the body within kMaxBodyBytes.
  void check_room(size_t n) {
    if (n > kMaxBodyBytes - body_bytes()) fail();
  }

  [[noreturn]] void fail() const {
    throw Error(ErrorCode::kInvalidArgument,
                std::string("wire: ") + type_name(type_) + " message body would exceed " +
                    std::to_string(kMaxBodyBytes) + " bytes (kMaxBodyBytes)");
  }

  std::string* out_;
  size_t body_start_;
  MsgType type_;
};

void write_keys(Writer* w, const std::vector<uint64_t>& keys) {
  w->count(keys.size());
  for (uint64_t k : keys) w->u64(k);
}

void write_resources(Writer* w, const WireResources& r) {
  w->i64(r.cpu);
  w->i64(r.gpu);
  w->i64(r.memory);
  w->i64(r.gpu_memory);
  w->count(r.custom.size());
  for (const auto& [name, amount] : r.custom) {
    w->str(name);
    w->i64(amount);
  }
}

void write_body(Writer* w, const HelloMsg& m) { w->raw(m.challenge, kChallengeBytes); }

void write_body(Writer* w, const AuthMsg& m) {
  w->raw(m.mac, kMacBytes);
  w->raw(m.challenge, kChallengeBytes);
  w->u8(static_cast<uint8_t>(m.role));
  w->str(m.hostname);
  w->u32(m.pid);
  w->u64(m.fingerprint);
  w->count(m.functions.size());
  for (const std::string& f : m.functions) w->str(f);
  write_resources(w, m.resources);
  w->str(m.listen);
}

void write_body(Writer* w, const WelcomeMsg& m) {
  w->raw(m.mac, kMacBytes);
  w->u32(m.node_index);
}

void write_body(Writer* w, const RefusedMsg& m) { w->str(m.reason); }

void write_body(Writer* w, const CallMsg& m) {
  w->u64(m.call_id);
  w->str(m.function);
  w->str(m.task_name);
  write_resources(w, m.request);
  w->str(m.args);
  w->count(m.objects.size());
  for (const WireObjectRef& o : m.objects) {
    w->u64(o.object);
    w->u64(o.bytes);
    w->u64(o.at);
  }
  w->u64(m.result_object);
  w->u8(m.may_spill ? 1 : 0);
  w->u32(m.num_returns);
  w->i32(m.only_element);
  write_keys(w, m.refs);
}

void write_body(Writer* w, const ResultMsg& m) {
  w->u64(m.call_id);
  w->u8(static_cast<uint8_t>(m.status));
  w->i32(m.error_code);
  w->str(m.error_type);
  w->str(m.message);
  w->str(m.payload);
  w->u64(m.object);
  w->u64(m.object_bytes);
  w->u64(m.run_ns);
  write_keys(w, m.refs);
  w->count(m.elements.size());
  for (const WireElement& e : m.elements) {
    w->u64(e.object);
    w->u64(e.bytes);
  }
}

void write_body(Writer* w, const ObjectPullMsg& m) {
  w->u64(m.object);
  w->u8(m.may_redirect ? 1 : 0);
  w->u32(static_cast<uint32_t>(m.reader_gpu));
  w->u8(m.channel);
}

void write_body(Writer* w, const DeviceOfferMsg& m) {
  w->u64(m.object);
  w->u64(m.bytes);
  w->u64(m.comm);
  w->u64(m.seq);
  w->str(m.id);
  w->str(m.stub);
}

void write_body(Writer* w, const ObjectWhereMsg& m) {
  w->u64(m.object);
  w->u64(m.bytes);
  w->u32(m.holder_index);
  w->str(m.address);
}

void write_body(Writer* w, const ObjectHeldMsg& m) {
  w->u64(m.object);
  w->u64(m.bytes);
  w->u32(m.from_index);
  w->u64(static_cast<uint64_t>(m.start_ns));
  w->u64(static_cast<uint64_t>(m.end_ns));
  w->u8(m.kept ? 1 : 0);
}

void write_body(Writer* w, const ObjectDataMsg& m) {
  w->u64(m.object);
  w->u8(m.ok ? 1 : 0);
  w->u64(m.offset);
  w->u64(m.total);
  w->str(m.error);
  w->str(m.bytes);
}

void write_body(Writer* w, const ObjectFreeMsg& m) {
  w->count(m.objects.size());
  for (uint64_t o : m.objects) w->u64(o);
}

void write_body(Writer* w, const OutputMsg& m) {
  w->u8(m.stream);
  w->str(m.text);
}

void write_body(Writer* w, const HeartbeatMsg& m) { w->u64(m.epoch); }
void write_body(Writer* w, const ClockPingMsg& m) { w->u64(static_cast<uint64_t>(m.driver_ns)); }

void write_body(Writer* w, const ClockPongMsg& m) {
  w->u64(static_cast<uint64_t>(m.driver_ns));
  w->u64(static_cast<uint64_t>(m.node_ns));
}

void write_body(Writer* w, const SpansQueryMsg& m) {
  w->u64(m.call_id);
  w->u64(static_cast<uint64_t>(m.since_ns));
  w->u32(m.max_spans);
}

void write_body(Writer* w, const SpansReplyMsg& m) {
  w->u64(m.call_id);
  w->u8(m.recording ? 1 : 0);
  w->u8(m.truncated ? 1 : 0);
  w->count(m.spans.size());
  for (const WireSpan& s : m.spans) {
    w->str(s.name);
    w->u64(s.task);
    w->u32(static_cast<uint32_t>(s.thread));
    w->u64(static_cast<uint64_t>(s.start_ns));
    w->u64(static_cast<uint64_t>(s.end_ns));
    w->u32(static_cast<uint32_t>(s.gpu));
  }
}

void write_body(Writer*, const ShutdownMsg&) {}
void write_body(Writer*, const StatusQueryMsg&) {}
void write_body(Writer* w, const NodeStatsMsg& m) {
  for (uint64_t v : {m.tasks_waiting_for_arguments, m.tasks_queued, m.tasks_running, m.tasks_done, m.tasks_failed, m.objects, m.primary_bytes,
                     m.capacity_bytes, m.secondary_bytes, m.spilled_bytes}) {
    w->u64(v);
  }
  w->u32(m.threads);
  for (uint64_t v : {m.pulls, m.pulled_bytes, m.served, m.served_bytes}) w->u64(v);
}
void write_body(Writer* w, const StatusReplyMsg& m) { w->str(m.text); }

void write_body(Writer* w, const ActorCreateMsg& m) {
  w->u64(m.call_id);
  w->u64(m.actor);
  w->str(m.constructor);
  w->str(m.type_name);
  w->str(m.name);
  w->u32(m.max_concurrency);
  write_resources(w, m.request);
  w->str(m.args);
  write_keys(w, m.refs);
}

void write_body(Writer* w, const ActorCallMsg& m) {
  w->u64(m.call_id);
  w->u64(m.actor);
  w->str(m.method);
  w->str(m.task_name);
  w->str(m.args);
  w->u64(m.result_object);
  w->u32(m.num_returns);
  write_keys(w, m.refs);
}

void write_body(Writer* w, const RefReadyMsg& m) {
  w->u64(m.key);
  w->u8(static_cast<uint8_t>(m.status));
  w->u64(m.pull);
  w->u64(m.bytes);
  w->i32(m.error_code);
  w->str(m.error_type);
  w->str(m.message);
  w->str(m.where);
}

void write_body(Writer* w, const RefReleaseMsg& m) {
  w->count(m.keys.size());
  for (const auto& [key, n] : m.keys) {
    w->u64(key);
    w->u64(n);
  }
}

void write_body(Writer* w, const ActorLookupMsg& m) {
  w->u64(m.call_id);
  w->str(m.name);
  w->str(m.type);
}

void write_body(Writer* w, const ActorKillMsg& m) {
  w->u64(m.actor);
  w->u8(m.release ? 1 : 0);
}

// Fills the kHeaderBytes at `h` for a frame of `type` with a `length`-byte body.
void store_header(char* h, MsgType type, uint32_t length) {
  store_le(h + kMagicAt, kWireMagic, 4);
  store_le(h + kVersionAt, kWireVersion, 1);
  store_le(h + kTypeAt, static_cast<uint8_t>(type), 1);
  store_le(h + kFlagsAt, 0, 2);
  store_le(h + kLengthAt, length, 4);
  store_le(h + kReservedAt, 0, 4);
}

// --- Decoding -------------------------------------------------------------------------------

// Reads a body front to back. Every read first checks that its bytes are left, and fails
// (returns false, consuming nothing more) otherwise: nothing is ever read past the body, and
// nothing is allocated for more bytes than the body still holds.
class Reader {
 public:
  explicit Reader(std::string_view body) : rest_(body) {}

  bool done() const { return rest_.empty(); }

  bool u8(uint8_t* v) { return get_le(v, 1); }
  bool u32(uint32_t* v) { return get_le(v, 4); }
  bool u64(uint64_t* v) { return get_le(v, 8); }
  bool i32(int32_t* v) {
    uint32_t u = 0;
    if (!u32(&u)) return false;
    *v = static_cast<int32_t>(u);  // modular since C++20: the two's-complement bit pattern
    return true;
  }
  bool i64(int64_t* v) {
    uint64_t u = 0;
    if (!u64(&u)) return false;
    *v = static_cast<int64_t>(u);
    return true;
  }

  bool raw(uint8_t* dst, size_t n) {
    const char* p = nullptr;
    if (!take(n, &p)) return false;
    std::memcpy(dst, p, n);
    return true;
  }

  // A string or blob: u32 length, then that many bytes (checked against what is left before
  // anything is allocated).
  bool str(std::string* s) {
    std::string_view v;
    if (!str_view(&v)) return false;
    s->assign(v.data(), v.size());
    return true;
  }
  // The same, as a view into the body (no copy).
  bool str_view(std::string_view* s) {
    uint32_t n = 0;
    const char* p = nullptr;
    if (!u32(&n) || !take(n, &p)) return false;
    *s = std::string_view(p, n);
    return true;
  }

  // A vector's u32 element count. Fails if `*n` elements of at least `min_element_bytes` each
  // cannot fit in what is left, so a caller may reserve(*n) safely.
  bool count(size_t min_element_bytes, uint32_t* n) {
    if (!u32(n)) return false;
    return *n <= rest_.size() / min_element_bytes;
  }

 private:
  template <typename T>
  bool get_le(T* v, size_t n) {
    const char* p = nullptr;
    if (!take(n, &p)) return false;
    *v = static_cast<T>(load_le(p, n));
    return true;
  }

  // Consumes the next `n` bytes, pointing *p at them; false if fewer are left.
  bool take(size_t n, const char** p) {
    if (n > rest_.size()) return false;
    *p = rest_.data();
    rest_.remove_prefix(n);
    return true;
  }

  std::string_view rest_;
};

// Smallest encodings of a vector's elements, for Reader::count.
constexpr size_t kMinStrBytes = 4;                  // u32 length, no bytes
constexpr size_t kMinCustomBytes = kMinStrBytes + 8;  // (str, i64)
constexpr size_t kObjectRefBytes = 24;                  // WireObjectRef: three u64
constexpr size_t kElementBytes = 16;                    // WireElement: two u64

// Enums: values the wire does not define are malformed.
bool read_role(Reader* r, PeerRole* role) {
  uint8_t v = 0;
  if (!r->u8(&v)) return false;
  if (v != static_cast<uint8_t>(PeerRole::kNode) && v != static_cast<uint8_t>(PeerRole::kClient) &&
      v != static_cast<uint8_t>(PeerRole::kPeer)) {
    return false;
  }
  *role = static_cast<PeerRole>(v);
  return true;
}

bool read_status(Reader* r, CallStatus* status) {
  uint8_t v = 0;
  if (!r->u8(&v)) return false;
  if (v > static_cast<uint8_t>(CallStatus::kSpilled)) return false;
  *status = static_cast<CallStatus>(v);
  return true;
}

// Keys of lent ObjectRefs: never 0.
bool read_keys(Reader* r, std::vector<uint64_t>* keys) {
  uint32_t n = 0;
  if (!r->count(8, &n)) return false;
  keys->resize(n);
  for (uint64_t& k : *keys) {
    if (!r->u64(&k) || k == 0) return false;
  }
  return true;
}

bool read_resources(Reader* r, WireResources* res) {
  if (!r->i64(&res->cpu) || !r->i64(&res->gpu) || !r->i64(&res->memory) ||
      !r->i64(&res->gpu_memory)) {
    return false;
  }
  uint32_t n = 0;
  if (!r->count(kMinCustomBytes, &n)) return false;
  res->custom.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    std::pair<std::string, int64_t> entry;
    if (!r->str(&entry.first) || !r->i64(&entry.second)) return false;
    res->custom.push_back(std::move(entry));
  }
  return true;
}

bool read_body(Reader* r, HelloMsg* m) { return r->raw(m->challenge, kChallengeBytes); }

bool read_body(Reader* r, AuthMsg* m) {
  if (!r->raw(m->mac, kMacBytes) || !r->raw(m->challenge, kChallengeBytes) ||
      !read_role(r, &m->role) || !r->str(&m->hostname) || !r->u32(&m->pid) ||
      !r->u64(&m->fingerprint)) {
    return false;
  }
  uint32_t n = 0;
  if (!r->count(kMinStrBytes, &n)) return false;
  m->functions.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    std::string f;
    if (!r->str(&f)) return false;
    m->functions.push_back(std::move(f));
  }
  return read_resources(r, &m->resources) && r->str(&m->listen);
}

bool read_body(Reader* r, WelcomeMsg* m) {
  return r->raw(m->mac, kMacBytes) && r->u32(&m->node_index);
}

bool read_body(Reader* r, RefusedMsg* m) { return r->str(&m->reason); }

bool read_body(Reader* r, CallMsg* m) {
  if (!r->u64(&m->call_id) || !r->str(&m->function) || !r->str(&m->task_name) ||
      !read_resources(r, &m->request) || !r->str(&m->args)) {
    return false;
  }
  uint32_t n = 0;
  if (!r->count(kObjectRefBytes, &n)) return false;
  m->objects.reserve(n);
  uint64_t last_at = 0;
  for (uint32_t i = 0; i < n; ++i) {
    WireObjectRef o;
    if (!r->u64(&o.object) || !r->u64(&o.bytes) || !r->u64(&o.at)) return false;
    // Each reference lands inside the inline args, in order.
    if (o.object == 0 || o.at > m->args.size() || o.at < last_at) return false;
    last_at = o.at;
    m->objects.push_back(o);
  }
  uint8_t may_spill = 0;
  if (!r->u64(&m->result_object) || !r->u8(&may_spill) || may_spill > 1) return false;
  m->may_spill = may_spill == 1;
  if (!r->u32(&m->num_returns) || !r->i32(&m->only_element)) return false;
  if (m->only_element < -1 || (m->only_element >= 0 &&
                               static_cast<uint32_t>(m->only_element) >= m->num_returns)) {
    return false;
  }
  return read_keys(r, &m->refs);
}

bool read_body(Reader* r, ResultMsg* m) {
  if (!r->u64(&m->call_id) || !read_status(r, &m->status) || !r->i32(&m->error_code) ||
      !r->str(&m->error_type) || !r->str(&m->message) || !r->str(&m->payload) ||
      !r->u64(&m->object) || !r->u64(&m->object_bytes) || !r->u64(&m->run_ns) ||
      !read_keys(r, &m->refs)) {
    return false;
  }
  uint32_t n = 0;
  if (!r->count(kElementBytes, &n)) return false;
  // The results kept inline fill the payload exactly; a call whose results come one by one
  // names no single object.
  if (n != 0 && m->object != 0) return false;
  uint64_t inline_bytes = 0;
  m->elements.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    WireElement e;
    if (!r->u64(&e.object) || !r->u64(&e.bytes)) return false;
    if (e.object == 0) {
      if (e.bytes > m->payload.size() - inline_bytes) return false;
      inline_bytes += e.bytes;
    }
    m->elements.push_back(e);
  }
  return n == 0 || inline_bytes == m->payload.size();
}

bool read_body(Reader* r, ObjectPullMsg* m) {
  uint8_t may_redirect = 0;
  uint32_t reader_gpu = 0;
  if (!r->u64(&m->object) || !r->u8(&may_redirect) || may_redirect > 1 || !r->u32(&reader_gpu) ||
      !r->u8(&m->channel)) {
    return false;
  }
  m->may_redirect = may_redirect == 1;
  m->reader_gpu = static_cast<int32_t>(reader_gpu);
  return m->reader_gpu >= -1 && m->reader_gpu < (1 << 16);
}

bool read_body(Reader* r, DeviceOfferMsg* m) {
  // (An offer names a communicator and a transfer: both count from 1.)
  return r->u64(&m->object) && r->u64(&m->bytes) && r->u64(&m->comm) && r->u64(&m->seq) &&
         r->str(&m->id) && r->str(&m->stub) && m->comm != 0 && m->seq != 0 &&
         !m->stub.empty();
}

bool read_body(Reader* r, ObjectWhereMsg* m) {
  return r->u64(&m->object) && r->u64(&m->bytes) && r->u32(&m->holder_index) &&
         r->str(&m->address);
}

bool read_body(Reader* r, ObjectHeldMsg* m) {
  uint64_t start = 0, end = 0;
  if (!r->u64(&m->object) || !r->u64(&m->bytes) || !r->u32(&m->from_index) || !r->u64(&start) ||
      !r->u64(&end)) {
    return false;
  }
  m->start_ns = static_cast<int64_t>(start);
  m->end_ns = static_cast<int64_t>(end);
  uint8_t kept = 0;
  if (!r->u8(&kept) || kept > 1) return false;
  m->kept = kept == 1;
  return true;
}

// The part lies within the value; a failure carries no bytes and no place.
bool object_part_valid(bool ok, uint64_t offset, uint64_t total, size_t bytes) {
  if (!ok) return offset == 0 && total == 0 && bytes == 0;
  return offset <= total && bytes <= total - offset && (bytes > 0 || total == 0);
}

bool read_body(Reader* r, ObjectDataMsg* m) {
  uint8_t ok = 0;
  if (!r->u64(&m->object) || !r->u8(&ok) || ok > 1 || !r->u64(&m->offset) ||
      !r->u64(&m->total)) {
    return false;
  }
  m->ok = ok == 1;
  return r->str(&m->error) && r->str(&m->bytes) &&
         object_part_valid(m->ok, m->offset, m->total, m->bytes.size());
}

bool read_body(Reader* r, ObjectFreeMsg* m) {
  uint32_t n = 0;
  if (!r->count(8, &n)) return false;
  m->objects.resize(n);
  for (uint32_t i = 0; i < n; ++i) {
    if (!r->u64(&m->objects[i])) return false;
  }
  return true;
}

bool read_body(Reader* r, OutputMsg* m) {
  return r->u8(&m->stream) && (m->stream == 1 || m->stream == 2) && r->str(&m->text);
}

bool read_body(Reader* r, HeartbeatMsg* m) { return r->u64(&m->epoch); }
bool read_body(Reader* r, ClockPingMsg* m) {
  uint64_t v = 0;
  if (!r->u64(&v)) return false;
  m->driver_ns = static_cast<int64_t>(v);
  return true;
}

bool read_body(Reader* r, ClockPongMsg* m) {
  uint64_t a = 0, b = 0;
  if (!r->u64(&a) || !r->u64(&b)) return false;
  m->driver_ns = static_cast<int64_t>(a);
  m->node_ns = static_cast<int64_t>(b);
  return true;
}

bool read_body(Reader* r, SpansQueryMsg* m) {
  uint64_t since = 0;
  if (!r->u64(&m->call_id) || !r->u64(&since) || !r->u32(&m->max_spans)) return false;
  m->since_ns = static_cast<int64_t>(since);
  return true;
}

bool read_body(Reader* r, SpansReplyMsg* m) {
  uint8_t recording = 0, truncated = 0;
  uint32_t n = 0;
  // The smallest span: an empty name (4) + task (8) + thread (4) + times (16) + gpu (4).
  if (!r->u64(&m->call_id) || !r->u8(&recording) || recording > 1 || !r->u8(&truncated) ||
      truncated > 1 || !r->count(36, &n)) {
    return false;
  }
  m->recording = recording == 1;
  m->truncated = truncated == 1;
  m->spans.resize(n);
  for (WireSpan& s : m->spans) {
    uint32_t thread = 0, gpu = 0;
    uint64_t start = 0, end = 0;
    if (!r->str(&s.name) || !r->u64(&s.task) || !r->u32(&thread) || !r->u64(&start) ||
        !r->u64(&end) || !r->u32(&gpu)) {
      return false;
    }
    s.thread = static_cast<int32_t>(thread);
    s.start_ns = static_cast<int64_t>(start);
    s.end_ns = static_cast<int64_t>(end);
    s.gpu = static_cast<int32_t>(gpu);
  }
  return true;
}

bool read_body(Reader*, ShutdownMsg*) { return true; }
bool read_body(Reader*, StatusQueryMsg*) { return true; }
bool read_body(Reader* r, NodeStatsMsg* m) {
  for (uint64_t* v : {&m->tasks_waiting_for_arguments, &m->tasks_queued, &m->tasks_running,
                      &m->tasks_done, &m->tasks_failed, &m->objects,
                      &m->primary_bytes, &m->capacity_bytes, &m->secondary_bytes,
                      &m->spilled_bytes}) {
    if (!r->u64(v)) return false;
  }
  if (!r->u32(&m->threads)) return false;
  for (uint64_t* v : {&m->pulls, &m->pulled_bytes, &m->served, &m->served_bytes}) {
    if (!r->u64(v)) return false;
  }
  return true;
}
bool read_body(Reader* r, StatusReplyMsg* m) { return r->str(&m->text); }

bool read_body(Reader* r, ActorCreateMsg* m) {
  return r->u64(&m->call_id) && r->u64(&m->actor) && r->str(&m->constructor) &&
         r->str(&m->type_name) && r->str(&m->name) && r->u32(&m->max_concurrency) &&
         read_resources(r, &m->request) && r->str(&m->args) && read_keys(r, &m->refs);
}

bool read_body(Reader* r, ActorCallMsg* m) {
  return r->u64(&m->call_id) && r->u64(&m->actor) && r->str(&m->method) &&
         r->str(&m->task_name) && r->str(&m->args) && r->u64(&m->result_object) &&
         r->u32(&m->num_returns) && read_keys(r, &m->refs);
}

bool read_body(Reader* r, RefReadyMsg* m) {
  if (!r->u64(&m->key) || !read_status(r, &m->status) || !r->u64(&m->pull) ||
      !r->u64(&m->bytes) || !r->i32(&m->error_code) || !r->str(&m->error_type) ||
      !r->str(&m->message) || !r->str(&m->where)) {
    return false;
  }
  // A key is never 0 (an empty ref travels as 0, with nothing lent); a done value has a number
  // to pull it by; kSpilled is no outcome of an object.
  if (m->key == 0 || m->status == CallStatus::kSpilled) return false;
  return m->status != CallStatus::kOk || m->pull != 0;
}

bool read_body(Reader* r, RefReleaseMsg* m) {
  uint32_t n = 0;
  if (!r->count(16, &n)) return false;
  m->keys.resize(n);
  for (auto& [key, count] : m->keys) {
    if (!r->u64(&key) || !r->u64(&count) || key == 0 || count == 0) return false;
  }
  return true;
}

bool read_body(Reader* r, ActorLookupMsg* m) {
  return r->u64(&m->call_id) && r->str(&m->name) && r->str(&m->type);
}

bool read_body(Reader* r, ActorKillMsg* m) {
  uint8_t release = 0;
  if (!r->u64(&m->actor) || !r->u8(&release) || release > 1) return false;
  m->release = release == 1;
  return true;
}

// Decodes a whole body as a T: every field present and no byte left over.
template <typename T>
std::optional<Message> read_whole_body(std::string_view body) {
  Reader r(body);
  T msg;
  if (!read_body(&r, &msg) || !r.done()) return std::nullopt;
  return Message(std::move(msg));
}

std::optional<Message> read_message(MsgType type, std::string_view body) {
  switch (type) {
    case MsgType::kHello: return read_whole_body<HelloMsg>(body);
    case MsgType::kAuth: return read_whole_body<AuthMsg>(body);
    case MsgType::kWelcome: return read_whole_body<WelcomeMsg>(body);
    case MsgType::kRefused: return read_whole_body<RefusedMsg>(body);
    case MsgType::kCall: return read_whole_body<CallMsg>(body);
    case MsgType::kResult: return read_whole_body<ResultMsg>(body);
    case MsgType::kShutdown: return read_whole_body<ShutdownMsg>(body);
    case MsgType::kStatusQuery: return read_whole_body<StatusQueryMsg>(body);
    case MsgType::kStatusReply: return read_whole_body<StatusReplyMsg>(body);
    case MsgType::kActorCreate: return read_whole_body<ActorCreateMsg>(body);
    case MsgType::kActorCall: return read_whole_body<ActorCallMsg>(body);
    case MsgType::kActorKill: return read_whole_body<ActorKillMsg>(body);
    case MsgType::kActorLookup: return read_whole_body<ActorLookupMsg>(body);
    case MsgType::kObjectPull: return read_whole_body<ObjectPullMsg>(body);
    case MsgType::kObjectData: return read_whole_body<ObjectDataMsg>(body);
    case MsgType::kObjectFree: return read_whole_body<ObjectFreeMsg>(body);
    case MsgType::kOutput: return read_whole_body<OutputMsg>(body);
    case MsgType::kClockPing: return read_whole_body<ClockPingMsg>(body);
    case MsgType::kClockPong: return read_whole_body<ClockPongMsg>(body);
    case MsgType::kSpansQuery: return read_whole_body<SpansQueryMsg>(body);
    case MsgType::kSpansReply: return read_whole_body<SpansReplyMsg>(body);
    case MsgType::kNodeStats: return read_whole_body<NodeStatsMsg>(body);
    case MsgType::kHeartbeat: return read_whole_body<HeartbeatMsg>(body);
    case MsgType::kRefReady: return read_whole_body<RefReadyMsg>(body);
    case MsgType::kRefRelease: return read_whole_body<RefReleaseMsg>(body);
    case MsgType::kObjectWhere: return read_whole_body<ObjectWhereMsg>(body);
    case MsgType::kObjectHeld: return read_whole_body<ObjectHeldMsg>(body);
    case MsgType::kDeviceOffer: return read_whole_body<DeviceOfferMsg>(body);
  }
  return std::nullopt;  // unreachable: check_header refused unknown types
}

// decode() without the out-parameter bookkeeping.
std::optional<Message> decode_frame(std::string_view frame, DecodeError* error) {
  size_t frame_bytes = 0;
  *error = check_header(frame, &frame_bytes);
  if (*error != DecodeError::kNone) return std::nullopt;
  // A frame shorter than its header says is kTruncated (check_header); one longer than that
  // carries bytes no field accounts for, which is kMalformedBody like a body's leftover bytes.
  if (frame.size() != frame_bytes) {
    *error = DecodeError::kMalformedBody;
    return std::nullopt;
  }
  const auto type = static_cast<MsgType>(static_cast<uint8_t>(frame[kTypeAt]));
  std::optional<Message> msg = read_message(type, frame.substr(kHeaderBytes));
  if (!msg) *error = DecodeError::kMalformedBody;
  return msg;
}

}  // namespace

// Strong guarantee: if encoding throws (body over kMaxBodyBytes, or out of memory), `out` is left
// exactly as it was — never with half a frame appended.
void encode(const Message& msg, std::string* out) {
  const size_t start = out->size();
  try {
    out->append(kHeaderBytes, '\0');  // the header is filled in once the body's length is known
    std::visit(
        [&](const auto& m) {
          const MsgType type = type_of(m);
          Writer w(out, start + kHeaderBytes, type);
          write_body(&w, m);
          // Writer keeps the body within kMaxBodyBytes, so the length fits a u32.
          store_header(out->data() + start, type, static_cast<uint32_t>(w.body_bytes()));
        },
        msg);
  } catch (...) {
    out->resize(start);
    throw;
  }
}

std::string encode_object_data_head(uint64_t object, uint64_t offset, size_t part,
                                    uint64_t total) {
  // The body: object u64, ok u8, offset u64, total u64, error str (empty), bytes str (u32
  // length, then the bytes).
  constexpr size_t kFixed = kMaxBodyBytes - kMaxObjectPartBytes;
  if (part > kMaxObjectPartBytes || !object_part_valid(true, offset, total, part)) {
    throw Error(ErrorCode::kInvalidArgument,
                "wire: a part of " + std::to_string(part) + " bytes at " + std::to_string(offset) +
                    " of an object of " + std::to_string(total) +
                    " bytes does not fit in one message (at most " +
                    std::to_string(kMaxObjectPartBytes) + " bytes) or in the object");
  }
  std::string out(kHeaderBytes, '\0');
  Writer w(&out, kHeaderBytes, MsgType::kObjectData);
  w.u64(object);
  w.u8(1);
  w.u64(offset);
  w.u64(total);
  w.str("");
  w.u32(static_cast<uint32_t>(part));
  store_header(out.data(), MsgType::kObjectData, static_cast<uint32_t>(kFixed + part));
  return out;
}

std::optional<ObjectDataView> decode_object_data(std::string_view frame, DecodeError* error) {
  size_t frame_bytes = 0;
  *error = check_header(frame, &frame_bytes);
  if (*error != DecodeError::kNone) return std::nullopt;
  if (frame.size() != frame_bytes || frame_type(frame) != MsgType::kObjectData) {
    *error = DecodeError::kMalformedBody;
    return std::nullopt;
  }
  Reader r(frame.substr(kHeaderBytes));
  ObjectDataView v;
  uint8_t ok = 0;
  if (!r.u64(&v.object) || !r.u8(&ok) || ok > 1 || !r.u64(&v.offset) || !r.u64(&v.total) ||
      !r.str(&v.error) || !r.str_view(&v.bytes) || !r.done() ||
      !object_part_valid(ok == 1, v.offset, v.total, v.bytes.size())) {
    *error = DecodeError::kMalformedBody;
    return std::nullopt;
  }
  v.ok = ok == 1;
  return v;
}

const char* to_string(DecodeError e) noexcept {
  switch (e) {
    case DecodeError::kNone: return "none";
    case DecodeError::kTruncated: return "truncated";
    case DecodeError::kBadMagic: return "bad magic";
    case DecodeError::kBadVersion: return "bad version";
    case DecodeError::kBadFlags: return "bad flags";
    case DecodeError::kOversized: return "oversized";
    case DecodeError::kUnknownType: return "unknown type";
    case DecodeError::kMalformedBody: return "malformed body";
  }
  return "unknown decode error";
}

// Checks, in order: a whole header is present (kTruncated), magic, version, flags and the
// reserved word (both must be 0; a non-zero reserved word is reported as kBadFlags), the length
// bound (kOversized), the type (kUnknownType), and last that the body is inside `buffer`
// (kTruncated). `frame_bytes` may be null.
DecodeError check_header(std::string_view buffer, size_t* frame_bytes) noexcept {
  if (buffer.size() < kHeaderBytes) return DecodeError::kTruncated;
  const char* h = buffer.data();
  if (load_le(h + kMagicAt, 4) != kWireMagic) return DecodeError::kBadMagic;
  if (load_le(h + kVersionAt, 1) != kWireVersion) return DecodeError::kBadVersion;
  if (load_le(h + kFlagsAt, 2) != 0 || load_le(h + kReservedAt, 4) != 0) {
    return DecodeError::kBadFlags;
  }
  const uint64_t length = load_le(h + kLengthAt, 4);
  if (length > kMaxBodyBytes) return DecodeError::kOversized;
  if (!known_type(static_cast<uint8_t>(load_le(h + kTypeAt, 1)))) return DecodeError::kUnknownType;
  if (length > buffer.size() - kHeaderBytes) return DecodeError::kTruncated;
  if (frame_bytes != nullptr) *frame_bytes = kHeaderBytes + length;
  return DecodeError::kNone;
}

// On success *error is kNone. `error` may be null.
std::optional<Message> decode(std::string_view frame, DecodeError* error) {
  DecodeError e = DecodeError::kNone;
  std::optional<Message> msg = decode_frame(frame, &e);
  if (error != nullptr) *error = e;
  return msg;
}

}  // namespace prism::cluster
