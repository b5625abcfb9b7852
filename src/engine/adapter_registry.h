// The adapters loaded for one base model, known by content hash.
//
// Users name adapters (a file name, or NAME=PATH on the command line), but the registry keys every
// adapter by its content hash (LoraContentHash): loading the same adapter twice, under two names
// or from two formats, gives one entry, and caches keyed by adapters (the prefix cache) never
// confuse two adapters that share a name. Names are aliases of hashes.
//
// Unloading removes an adapter from the registry; requests that still hold its shared_ptr keep
// it alive until they finish, so unloading never pulls weights from under a running forward.
// Thread-safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "model/config.h"
#include "model/lora.h"
#include "util/status.h"

namespace fgnet {

class AdapterRegistry {
 public:
  // `base`: the config adapters are checked against.
  explicit AdapterRegistry(const Gemma3Config& base);

  // Adds an adapter (validated against the base) under `name` (default: adapter.name). An
  // adapter with the same content is not stored twice: the existing entry gains the name.
  // Errors: an invalid adapter, a name already used by a different adapter.
  Result<std::shared_ptr<const LoraAdapter>> Add(LoraAdapter adapter, std::string name = "");

  // By name or by content hash (the full 64 hex digits, or a prefix of at least 12); nullptr
  // when unknown or ambiguous.
  std::shared_ptr<const LoraAdapter> Find(std::string_view name_or_hash) const;

  // Removes the adapter a name or hash refers to, with all its names. Error: unknown.
  Status Unload(std::string_view name_or_hash);

  struct Entry {
    std::shared_ptr<const LoraAdapter> adapter;
    std::vector<std::string> names;
    std::uint64_t bytes = 0;  // A and B in memory
  };
  // Every adapter, in the order they were added.
  std::vector<Entry> List() const;
  std::size_t size() const;
  std::uint64_t total_bytes() const;

 private:
  const LoraAdapter* FindLocked(std::string_view name_or_hash) const;

  Gemma3Config base_;
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<const LoraAdapter>> adapters_;  // in order of addition
  std::map<std::string, std::string, std::less<>> names_;     // name -> content hash
};

}  // namespace fgnet
