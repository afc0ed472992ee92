// prism/internal/ids.h — object, task and actor ids that name their owner.
//
// An id is (owner, sequence): `owner` is the 64-bit id of the process that created it (the
// owner of its metadata, locations and lineage, as in Ray's ownership model), `sequence` is
// unique within that owner. In embedded mode every id has the runtime's own owner id; cluster
// mode routes requests about an object to its owner.
//
// Thread-safe: plain value types.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace prism {

struct UniqueId {
  uint64_t owner = 0;
  uint64_t sequence = 0;

  bool is_nil() const noexcept { return owner == 0 && sequence == 0; }
  friend bool operator==(const UniqueId&, const UniqueId&) = default;
  // "owner:sequence" in hex, e.g. "5f1c0e2a9b3d4e10:2a".
  std::string to_string() const;
};

struct ObjectId : UniqueId {};
struct TaskId : UniqueId {};
struct ActorId : UniqueId {};

}  // namespace prism

template <>
struct std::hash<prism::UniqueId> {
  size_t operator()(const prism::UniqueId& id) const noexcept {
    return std::hash<uint64_t>{}(id.owner * 0x9E3779B97F4A7C15ull ^ id.sequence);
  }
};
template <>
struct std::hash<prism::ObjectId> : std::hash<prism::UniqueId> {};
template <>
struct std::hash<prism::TaskId> : std::hash<prism::UniqueId> {};
template <>
struct std::hash<prism::ActorId> : std::hash<prism::UniqueId> {};
