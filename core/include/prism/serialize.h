// prism/serialize.h — how values cross process boundaries in cluster mode.
//
// Embedded programs never serialize. In cluster mode a task of a registered function runs on
// another node only if its parameters and its result are serializable; otherwise it runs on the
// node that submitted it. Serializable, as raw bytes where the layout allows:
//   - arithmetic types, enums, and trivially copyable structs without pointers at top level
//     (their bytes: both sides are the same executable on the same architecture);
//   - std::string, std::vector<T>, std::array<T, N>, std::pair, std::tuple, std::optional,
//     std::map and std::unordered_map of serializable types (contiguous containers of trivially
//     copyable elements in one copy);
//   - prism::gpu::Tensor, through host memory (prism/gpu/tensor.h: it lands on the reading
//     task's GPU);
//   - any type with a specialization of prism::Serializer<T> (write/read below).
//
//   struct Point { double x, y; };             // trivially copyable: nothing to do
//   struct Doc { std::string title; std::vector<Point> pts; };
//   template <> struct prism::Serializer<Doc> {
//     static void write(prism::Writer& w, const Doc& d) { w.put(d.title); w.put(d.pts); }
//     static void read(prism::Reader& r, Doc* d) { r.get(&d->title); r.get(&d->pts); }
//   };
//
// Reading is bounds-checked: a truncated or malformed buffer throws prism::Error
// (kInvalidArgument), never reads past the buffer, and never allocates more than the buffer
// could hold.
//
// Thread-safe: Writer and Reader are plain values used by one thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "prism/internal/buffer_pool.h"

namespace prism {

class Writer;
class Reader;

// Specialize for your own types (write and read must mirror each other).
template <typename T, typename = void>
struct Serializer;

namespace internal {
template <typename T, typename = void>
struct HasSerializer : std::false_type {};
template <typename T>
struct HasSerializer<T, std::void_t<decltype(Serializer<T>::write)>> : std::true_type {};
[[noreturn]] void throw_malformed(const char* what);
// Pairs and tuples are written field by field (their padding is not data), even when trivially
// copyable; views hold pointers.
template <typename T>
struct FieldWise : std::false_type {};
template <typename A, typename B>
struct FieldWise<std::pair<A, B>> : std::true_type {};
template <typename... T>
struct FieldWise<std::tuple<T...>> : std::true_type {};
template <typename T>
struct FieldWise<std::optional<T>> : std::true_type {};
template <>
struct FieldWise<std::string_view> : std::true_type {};
}  // namespace internal

// True if values of T can cross a process boundary.
template <typename T>
inline constexpr bool is_serializable_v = internal::HasSerializer<std::remove_cv_t<T>>::value;

class Writer {
 public:
  explicit Writer(std::string* out) : out_(out) {}
  void bytes(const void* p, size_t n) { out_->append(static_cast<const char*>(p), n); }
  void u32(uint32_t v) { bytes(&v, sizeof v); }
  template <typename T>
  void put(const T& v) {
    Serializer<std::remove_cv_t<T>>::write(*this, v);
  }

 private:
  std::string* out_;
};

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  void bytes(void* p, size_t n) {
    if (n > in_.size()) internal::throw_malformed("truncated value");
    if (n != 0) std::memcpy(p, in_.data(), n);
    in_.remove_prefix(n);
  }
  uint32_t u32() {
    uint32_t v;
    bytes(&v, sizeof v);
    return v;
  }
  // A count of elements each at least `min_bytes` long: refused if the rest cannot hold them.
  uint32_t count(size_t min_bytes) {
    const uint32_t n = u32();
    if (min_bytes != 0 && n > in_.size() / min_bytes) internal::throw_malformed("bad count");
    return n;
  }
  template <typename T>
  void get(T* v) {
    Serializer<std::remove_cv_t<T>>::read(*this, v);
  }
  size_t remaining() const noexcept { return in_.size(); }
  // Where the next byte is read from (the bytes being read outlive the reader).
  const char* position() const noexcept { return in_.data(); }
  void skip(size_t n) {
    if (n > in_.size()) internal::throw_malformed("truncated value");
    in_.remove_prefix(n);
  }

 private:
  std::string_view in_;
};

// Raw bytes: arithmetic types, enums, trivially copyable classes (not pointers, not arrays of
// unknown meaning such as member pointers).
template <typename T>
struct Serializer<T, std::enable_if_t<std::is_trivially_copyable_v<T> && !std::is_pointer_v<T> &&
                                      !std::is_member_pointer_v<T> && !std::is_array_v<T> &&
                                      !std::is_empty_v<T> && !internal::FieldWise<T>::value>> {
  static void write(Writer& w, const T& v) { w.bytes(&v, sizeof(T)); }
  static void read(Reader& r, T* v) { r.bytes(v, sizeof(T)); }
};

template <>
struct Serializer<std::string> {
  static void write(Writer& w, const std::string& s) {
    w.u32(static_cast<uint32_t>(s.size()));
    w.bytes(s.data(), s.size());
  }
  static void read(Reader& r, std::string* s) {
    s->resize(r.count(1));
    r.bytes(s->data(), s->size());
  }
};

template <typename T>
struct Serializer<std::vector<T>, std::enable_if_t<is_serializable_v<T>>> {
  static constexpr bool kRaw = std::is_trivially_copyable_v<T> && !std::is_same_v<T, bool>;
  static void write(Writer& w, const std::vector<T>& v) {
    w.u32(static_cast<uint32_t>(v.size()));
    if constexpr (kRaw) {
      w.bytes(v.data(), v.size() * sizeof(T));
    } else {
      for (const auto& x : v) w.put(static_cast<const T&>(x));
    }
  }
  static void read(Reader& r, std::vector<T>* v) {
    const uint32_t n = r.count(kRaw ? sizeof(T) : 1);
    v->clear();
    if constexpr (kRaw) {
      // A large vector lands in a pooled buffer, already faulted in (buffer_pool.h).
      if (size_t{n} * sizeof(T) >= internal::BufferPool::kMinBytes) {
        *v = internal::BufferPool::sized<T>(n);
      } else {
        v->resize(n);
      }
      r.bytes(v->data(), size_t{n} * sizeof(T));
    } else {
      v->reserve(n);
      for (uint32_t i = 0; i < n; ++i) {
        T x{};
        r.get(&x);
        v->push_back(std::move(x));
      }
    }
  }
};

template <typename T, size_t N>
struct Serializer<std::array<T, N>,
                  std::enable_if_t<is_serializable_v<T> && !std::is_trivially_copyable_v<T>>> {
  static void write(Writer& w, const std::array<T, N>& a) {
    for (const auto& x : a) w.put(x);
  }
  static void read(Reader& r, std::array<T, N>* a) {
    for (auto& x : *a) r.get(&x);
  }
};

template <typename A, typename B>
struct Serializer<std::pair<A, B>,
                  std::enable_if_t<is_serializable_v<A> && is_serializable_v<B>>> {
  static void write(Writer& w, const std::pair<A, B>& p) {
    w.put(p.first);
    w.put(p.second);
  }
  static void read(Reader& r, std::pair<A, B>* p) {
    r.get(&p->first);
    r.get(&p->second);
  }
};

template <typename... T>
struct Serializer<std::tuple<T...>, std::enable_if_t<(is_serializable_v<T> && ...)>> {
  static void write(Writer& w, const std::tuple<T...>& t) {
    std::apply([&](const auto&... x) { (w.put(x), ...); }, t);
    (void)w;
  }
  static void read(Reader& r, std::tuple<T...>* t) {
    std::apply([&](auto&... x) { (r.get(&x), ...); }, *t);
    (void)r;
  }
};

template <typename T>
struct Serializer<std::optional<T>, std::enable_if_t<is_serializable_v<T>>> {
  static void write(Writer& w, const std::optional<T>& o) {
    const uint8_t has = o.has_value() ? 1 : 0;
    w.bytes(&has, 1);
    if (o) w.put(*o);
  }
  static void read(Reader& r, std::optional<T>* o) {
    uint8_t has = 0;
    r.bytes(&has, 1);
    if (has > 1) internal::throw_malformed("bad optional flag");
    o->reset();
    if (has != 0) r.get(&o->emplace());
  }
};

namespace internal {
template <typename M>
struct MapSerializer {
  using K = typename M::key_type;
  using V = typename M::mapped_type;
  static void write(Writer& w, const M& m) {
    w.u32(static_cast<uint32_t>(m.size()));
    for (const auto& [k, v] : m) {
      w.put(k);
      w.put(v);
    }
  }
  static void read(Reader& r, M* m) {
    const uint32_t n = r.count(1);
    m->clear();
    for (uint32_t i = 0; i < n; ++i) {
      K k{};
      V v{};
      r.get(&k);
      r.get(&v);
      m->emplace(std::move(k), std::move(v));
    }
  }
};
}  // namespace internal

template <typename K, typename V>
struct Serializer<std::map<K, V>, std::enable_if_t<is_serializable_v<K> && is_serializable_v<V>>>
    : internal::MapSerializer<std::map<K, V>> {};
template <typename K, typename V>
struct Serializer<std::unordered_map<K, V>,
                  std::enable_if_t<is_serializable_v<K> && is_serializable_v<V>>>
    : internal::MapSerializer<std::unordered_map<K, V>> {};

// One value into a fresh buffer / out of a whole buffer (bytes left over are an error).
template <typename T>
std::string to_bytes(const T& v) {
  std::string out;
  Writer w(&out);
  w.put(v);
  return out;
}
template <typename T>
T from_bytes(std::string_view in) {
  Reader r(in);
  T v{};
  r.get(&v);
  if (r.remaining() != 0) internal::throw_malformed("bytes left over after the value");
  return v;
}

}  // namespace prism
