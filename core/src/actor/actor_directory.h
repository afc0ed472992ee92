// ActorDirectory — the live actors of a runtime, by id and by name.
//
// Holds a reference to every actor until it is finalized, so that shutdown can stop them all and
// named actors can be found.
//
// Thread-safe.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <typeinfo>
#include <unordered_map>
#include <vector>

#include "prism/internal/thread_annotations.h"
#include "prism/internal/ids.h"

namespace prism::internal {

class ActorCore;

class ActorDirectory {
 public:
  // Adds an actor; throws prism::Error(kInvalidArgument) if its name is taken by a live actor.
  void add(const std::shared_ptr<ActorCore>& actor);
  void remove(const ActorCore* actor) noexcept;
  // Frees the actor's name (if it still has it) while the actor itself stays listed.
  void release_name(const ActorCore* actor) noexcept;
  // The live actor named `name` of type `type`, or throws prism::Error(kInvalidArgument).
  std::shared_ptr<ActorCore> find(const std::string& name, const std::type_info& type) const;
  std::vector<std::shared_ptr<ActorCore>> all() const;
  size_t size() const;

 private:
  mutable Mutex mu_;
  std::unordered_map<ActorId, std::shared_ptr<ActorCore>> by_id_ PRISM_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<ActorCore>> by_name_ PRISM_GUARDED_BY(mu_);
};

}  // namespace prism::internal
