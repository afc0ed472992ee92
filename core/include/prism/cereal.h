// prism/cereal.h — types that cereal can serialize cross process boundaries too.
//
//   #include <cereal/types/string.hpp>    // cereal's support for the members' types
//   #include <cereal/types/vector.hpp>
//   #include <prism/cereal.h>
//   struct Doc {
//     std::string title;
//     std::vector<int> pages;
//     template <class Archive> void serialize(Archive& ar) { ar(title, pages); }
//   };
//
// A type with a cereal `serialize(Archive&)` member (and no prism::Serializer of its own, and not
// trivially copyable) is written with cereal's binary archive, as one length-prefixed blob.
// Include this header wherever such a type meets Prism (best: in the header that defines the
// type), so every translation unit agrees on how it travels. Needs Debian's libcereal-dev
// (header-only); the core does not include it by itself.
//
// Thread-safe: as prism/serialize.h.
#pragma once

#include <sstream>
#include <string>
#include <type_traits>
#include <utility>

#include <cereal/archives/binary.hpp>

#include "prism/serialize.h"

namespace prism {

namespace internal {
template <typename T, typename = void>
struct HasCerealSerialize : std::false_type {};
template <typename T>
struct HasCerealSerialize<T, std::void_t<decltype(std::declval<T&>().serialize(
                                 std::declval<cereal::BinaryOutputArchive&>()))>>
    : std::true_type {};
}  // namespace internal

template <typename T>
struct Serializer<T, std::enable_if_t<internal::HasCerealSerialize<T>::value &&
                                      !std::is_trivially_copyable_v<T>>> {
  static void write(Writer& w, const T& v) {
    std::ostringstream os(std::ios::binary);
    {
      cereal::BinaryOutputArchive ar(os);
      ar(v);
    }
    w.put(os.str());
  }
  static void read(Reader& r, T* v) {
    std::string blob;
    r.get(&blob);
    std::istringstream is(blob, std::ios::binary);
    try {
      cereal::BinaryInputArchive ar(is);
      ar(*v);
    } catch (const cereal::Exception& e) {
      internal::throw_malformed(e.what());
    }
  }
};

}  // namespace prism
