// The embedding router: ranks experts for a task by the cosine similarity of the task's embedding
// (TextEmbedder) with each expert's, and turns similarities into routing probabilities with a
// softmax at a temperature.
//
// An expert's embedding is the L2-normalised mean of the embeddings of its description and of
// each of its exemplars. Text embeddings are cached in memory under the SHA-256 (hex) of the
// embedder's fingerprint and the text, and can be kept on disk in a JSON file:
//   {"format": "fgnet.embedding_cache/1",
//    "entries": [{"key", "fingerprint", "text", "dimension", "embedding": [...]}, ...]}
// LoadCache checks each entry: its key must be the SHA-256 of its fingerprint and text, and its
// dimension and embedding length must agree (and match the embedder's when the fingerprint is
// this embedder's); entries failing a check are dropped and reported (their texts are embedded
// again when needed). Entries of another fingerprint (another base, adapter or option) are
// stale: not used, but written back by SaveCache so that one file can serve several settings.
//
// Thread-safety: not thread-safe; use one router from one thread at a time.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "router/text_embedder.h"
#include "util/json.h"
#include "util/status.h"

namespace fgnet::router {

struct RankedExpert {
  std::string id;
  double similarity = 0.0;   // cosine similarity with the task, in [-1, 1]
  double probability = 0.0;  // softmax of similarity / temperature over the ranked experts
};

struct CacheLoadReport {
  bool file_found = false;
  std::size_t loaded = 0;             // entries of this embedder, now in memory
  std::size_t stale = 0;              // valid entries of another fingerprint (kept for SaveCache)
  std::vector<std::string> rejected;  // one line per corrupt entry, naming it and the problem
};

struct CacheStats {
  std::size_t hits = 0;    // texts whose embedding came from the cache
  std::size_t misses = 0;  // texts embedded by the model
};

class EmbeddingRouter {
 public:
  // `embedder` must outlive the router.
  explicit EmbeddingRouter(const TextEmbedder& embedder);

  // Adds (or replaces) an expert; an empty description is left out of the mean. Errors: an
  // empty id, neither a description nor exemplars, an empty exemplar, an embedding error.
  Status AddExpert(const std::string& id, std::string_view description,
                   std::span<const std::string> exemplars);

  // Every expert id, in the order first added.
  const std::vector<std::string>& expert_ids() const { return order_; }
  // The expert's unit embedding [dimension]; null for an unknown id.
  const std::vector<float>* ExpertEmbedding(std::string_view id) const;

  // Ranks `candidates` (empty: every expert) for `task`, best first (ties by id); probabilities
  // sum to 1 over them. Errors: an empty task, no experts, an unknown or repeated candidate id,
  // a temperature that is not a positive finite number.
  Result<std::vector<RankedExpert>> Rank(std::string_view task,
                                         std::span<const std::string> candidates = {},
                                         double temperature = 1.0);

  // The embedding of one text, through the cache.
  Result<std::vector<float>> EmbedCached(std::string_view text);
  // The cache key of `text` under this router's embedder.
  std::string CacheKey(std::string_view text) const;

  // Reads a cache file; a missing file is not an error (file_found false). Errors: the file is
  // not JSON or not a cache file.
  Result<CacheLoadReport> LoadCache(const std::string& path);
  // Writes every cached embedding (and the stale entries loaded) to `path` atomically.
  Status SaveCache(const std::string& path) const;

  const CacheStats& cache_stats() const { return stats_; }
  std::size_t cache_size() const { return cache_.size(); }

 private:
  struct CacheEntry {
    std::string text;
    std::vector<float> embedding;
  };

  const TextEmbedder* embedder_;
  std::vector<std::string> order_;
  std::map<std::string, std::vector<float>, std::less<>> experts_;
  std::map<std::string, CacheEntry> cache_;  // key -> entry of this embedder
  std::map<std::string, Json> stale_;        // key -> entry of another fingerprint
  CacheStats stats_;
};

// The experts to run: the first `top_k` of `ranked` whose probability is at least `threshold`,
// but always at least the best one. Errors: top_k < 1, an empty ranking.
Result<std::vector<RankedExpert>> Select(std::span<const RankedExpert> ranked, std::int64_t top_k,
                                         double threshold);

}  // namespace fgnet::router
