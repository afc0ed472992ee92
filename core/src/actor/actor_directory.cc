#include "actor/actor_directory.h"

#include "actor/actor_core.h"
#include "prism/errors.h"

namespace prism::internal {

void ActorDirectory::add(const std::shared_ptr<ActorCore>& actor) {
  MutexLock lock(mu_);
  if (!actor->name().empty()) {
    if (by_name_.count(actor->name()) != 0) {
      throw Error(ErrorCode::kInvalidArgument,
                  "an actor named '" + actor->name() + "' already exists");
    }
    by_name_[actor->name()] = actor;
  }
  by_id_[actor->id()] = actor;
}

void ActorDirectory::remove(const ActorCore* actor) noexcept {
  std::shared_ptr<ActorCore> keep_id, keep_name;  // destroyed after the lock is released
  MutexLock lock(mu_);
  auto it = by_id_.find(actor->id());
  if (it != by_id_.end() && it->second.get() == actor) {
    keep_id = std::move(it->second);
    by_id_.erase(it);
  }
  if (!actor->name().empty()) {
    auto n = by_name_.find(actor->name());
    if (n != by_name_.end() && n->second.get() == actor) {
      keep_name = std::move(n->second);
      by_name_.erase(n);
    }
  }
  lock.unlock();
}

void ActorDirectory::release_name(const ActorCore* actor) noexcept {
  if (actor->name().empty()) return;
  std::shared_ptr<ActorCore> keep;  // destroyed after the lock is released
  MutexLock lock(mu_);
  auto n = by_name_.find(actor->name());
  if (n != by_name_.end() && n->second.get() == actor) {
    keep = std::move(n->second);
    by_name_.erase(n);
  }
  lock.unlock();
}

std::shared_ptr<ActorCore> ActorDirectory::find(const std::string& name,
                                                const std::type_info& type) const {
  MutexLock lock(mu_);
  auto it = by_name_.find(name);
  if (it == by_name_.end()) {
    throw Error(ErrorCode::kInvalidArgument, "no live actor named '" + name + "'");
  }
  if (it->second->type() != type) {
    throw Error(ErrorCode::kInvalidArgument, "the actor named '" + name + "' is a " +
                                                 it->second->type_name() + ", not the type asked for");
  }
  return it->second;
}

std::vector<std::shared_ptr<ActorCore>> ActorDirectory::all() const {
  MutexLock lock(mu_);
  std::vector<std::shared_ptr<ActorCore>> out;
  out.reserve(by_id_.size());
  for (const auto& [id, a] : by_id_) out.push_back(a);
  return out;
}

size_t ActorDirectory::size() const {
  MutexLock lock(mu_);
  return by_id_.size();
}

}  // namespace prism::internal
