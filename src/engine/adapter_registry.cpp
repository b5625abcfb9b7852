#include "engine/adapter_registry.h"

#include <algorithm>
#include <utility>

namespace fgnet {
namespace {

constexpr std::size_t kMinHashPrefix = 12;

}  // namespace

AdapterRegistry::AdapterRegistry(const Gemma3Config& base) : base_(base) {}

Result<std::shared_ptr<const LoraAdapter>> AdapterRegistry::Add(LoraAdapter adapter,
                                                                std::string name) {
  FGNET_TRY(ValidateLoraAdapter(adapter, base_));
  // Every loader sets the hash; an adapter built in memory may not have one yet.
  if (adapter.content_hash.empty()) adapter.content_hash = LoraContentHash(adapter);
  if (name.empty()) name = adapter.name;
  if (name.empty()) name = adapter.content_hash.substr(0, kMinHashPrefix);
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = names_.find(name); it != names_.end() && it->second != adapter.content_hash) {
    return MakeError("adapter name '", name, "' is already used by another adapter (",
                     it->second.substr(0, kMinHashPrefix), ")");
  }
  for (const auto& existing : adapters_) {
    if (existing->content_hash == adapter.content_hash) {
      names_[name] = adapter.content_hash;
      return existing;
    }
  }
  adapter.name = name;
  auto shared = std::make_shared<const LoraAdapter>(std::move(adapter));
  adapters_.push_back(shared);
  names_[name] = shared->content_hash;
  return shared;
}

const LoraAdapter* AdapterRegistry::FindLocked(std::string_view key) const {
  std::string_view hash = key;
  if (auto it = names_.find(key); it != names_.end()) hash = it->second;
  if (hash.size() < kMinHashPrefix) return nullptr;
  const LoraAdapter* found = nullptr;
  for (const auto& a : adapters_) {
    if (a->content_hash.compare(0, hash.size(), hash) != 0) continue;
    if (found != nullptr) return nullptr;  // an ambiguous prefix
    found = a.get();
  }
  return found;
}

std::shared_ptr<const LoraAdapter> AdapterRegistry::Find(std::string_view name_or_hash) const {
  std::lock_guard<std::mutex> lock(mu_);
  const LoraAdapter* found = FindLocked(name_or_hash);
  for (const auto& a : adapters_) {
    if (a.get() == found) return a;
  }
  return nullptr;
}

Status AdapterRegistry::Unload(std::string_view name_or_hash) {
  std::lock_guard<std::mutex> lock(mu_);
  const LoraAdapter* found = FindLocked(name_or_hash);
  if (found == nullptr) return MakeError("no adapter '", name_or_hash, "' is loaded");
  const std::string hash = found->content_hash;
  std::erase_if(names_, [&](const auto& kv) { return kv.second == hash; });
  std::erase_if(adapters_, [&](const auto& a) { return a.get() == found; });
  return Ok();
}

std::vector<AdapterRegistry::Entry> AdapterRegistry::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Entry> entries;
  for (const auto& a : adapters_) {
    Entry e{a, {}, a->num_bytes()};
    for (const auto& [name, hash] : names_) {
      if (hash == a->content_hash) e.names.push_back(name);
    }
    entries.push_back(std::move(e));
  }
  return entries;
}

std::size_t AdapterRegistry::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return adapters_.size();
}

std::uint64_t AdapterRegistry::total_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::uint64_t total = 0;
  for (const auto& a : adapters_) total += a->num_bytes();
  return total;
}

}  // namespace fgnet
