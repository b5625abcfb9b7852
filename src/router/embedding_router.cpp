#include "router/embedding_router.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <utility>

#include "util/sha256.h"

namespace fgnet::router {
namespace {

constexpr const char* kCacheFormat = "fgnet.embedding_cache/1";

std::string KeyOf(std::string_view fingerprint, std::string_view text) {
  std::string data(fingerprint);
  data += '\n';
  data += text;
  return Sha256Hex(data);
}

bool IsBlank(std::string_view text) {
  return text.find_first_not_of(" \t\r\n") == std::string_view::npos;
}

}  // namespace

EmbeddingRouter::EmbeddingRouter(const TextEmbedder& embedder) : embedder_(&embedder) {}

std::string EmbeddingRouter::CacheKey(std::string_view text) const {
  return KeyOf(embedder_->fingerprint(), text);
}

Result<std::vector<float>> EmbeddingRouter::EmbedCached(std::string_view text) {
  const std::string key = CacheKey(text);
  if (auto it = cache_.find(key); it != cache_.end()) {
    ++stats_.hits;
    return it->second.embedding;
  }
  FGNET_ASSIGN_OR_RETURN(std::vector<float> embedding, embedder_->Embed(text));
  ++stats_.misses;
  cache_[key] = CacheEntry{std::string(text), embedding};
  return embedding;
}

Status EmbeddingRouter::AddExpert(const std::string& id, std::string_view description,
                                  std::span<const std::string> exemplars) {
  if (id.empty()) return MakeError("router: an expert has an empty id");
  if (IsBlank(description) && exemplars.empty())
    return MakeError("router: expert '", id, "' has no description and no exemplars");
  const auto dim = static_cast<std::size_t>(embedder_->dimension());
  std::vector<double> sum(dim, 0.0);
  std::size_t texts = 0;
  const auto add = [&](std::string_view text) -> Status {
    FGNET_ASSIGN_OR_RETURN(std::vector<float> e, EmbedCached(text));
    for (std::size_t j = 0; j < dim; ++j) sum[j] += e[j];
    ++texts;
    return Ok();
  };
  if (!IsBlank(description)) {
    const Status status = add(description);
    if (!status.ok()) {
      return MakeError("router: expert '", id, "': description: ", status.error().message());
    }
  }
  for (std::size_t i = 0; i < exemplars.size(); ++i) {
    if (IsBlank(exemplars[i]))
      return MakeError("router: expert '", id, "': exemplar ", i, " is empty");
    const Status status = add(exemplars[i]);
    if (!status.ok()) {
      return MakeError("router: expert '", id, "': exemplar ", i, ": ", status.error().message());
    }
  }
  std::vector<float> mean(dim);
  const double n = static_cast<double>(texts);
  for (std::size_t j = 0; j < dim; ++j) mean[j] = static_cast<float>(sum[j] / n);
  if (!NormalizeL2(mean)) {
    return MakeError("router: expert '", id,
                     "': the mean of its embeddings is zero (its texts cancel out)");
  }
  if (experts_.find(id) == experts_.end()) order_.push_back(id);
  experts_[id] = std::move(mean);
  return Ok();
}

const std::vector<float>* EmbeddingRouter::ExpertEmbedding(std::string_view id) const {
  auto it = experts_.find(id);
  return it == experts_.end() ? nullptr : &it->second;
}

Result<std::vector<RankedExpert>> EmbeddingRouter::Rank(std::string_view task,
                                                        std::span<const std::string> candidates,
                                                        double temperature) {
  if (!(temperature > 0.0) || !std::isfinite(temperature))
    return MakeError("router: temperature must be a positive number, got ", temperature);
  if (IsBlank(task)) return MakeError("router: the task is empty");
  if (experts_.empty()) return MakeError("router: no experts to rank");
  std::vector<std::string> ids =
      candidates.empty() ? order_ : std::vector<std::string>(candidates.begin(), candidates.end());
  std::set<std::string_view> seen;
  for (const std::string& id : ids) {
    if (experts_.find(id) == experts_.end()) return MakeError("router: unknown expert '", id, "'");
    if (!seen.insert(id).second) return MakeError("router: expert '", id, "' is listed twice");
  }
  FGNET_ASSIGN_OR_RETURN(std::vector<float> query, embedder_->Embed(task));
  std::vector<RankedExpert> ranked;
  ranked.reserve(ids.size());
  double best = -2.0;
  for (const std::string& id : ids) {
    const std::vector<float>& e = experts_.find(id)->second;
    double dot = 0.0;
    for (std::size_t j = 0; j < e.size(); ++j) dot += static_cast<double>(e[j]) * query[j];
    dot = std::clamp(dot, -1.0, 1.0);
    ranked.push_back({id, dot, 0.0});
    best = std::max(best, dot);
  }
  double total = 0.0;
  for (RankedExpert& r : ranked) {
    r.probability = std::exp((r.similarity - best) / temperature);
    total += r.probability;
  }
  for (RankedExpert& r : ranked) r.probability /= total;
  std::sort(ranked.begin(), ranked.end(), [](const RankedExpert& a, const RankedExpert& b) {
    if (a.similarity != b.similarity) return a.similarity > b.similarity;
    return a.id < b.id;
  });
  return ranked;
}

Result<CacheLoadReport> EmbeddingRouter::LoadCache(const std::string& path) {
  CacheLoadReport report;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return report;
  report.file_found = true;
  FGNET_ASSIGN_OR_RETURN(Json json, ReadJsonFile(path));
  if (!json.is_object() || !json.contains("format") || json.at("format") != kCacheFormat) {
    return MakeError(path, ": not an embedding cache (expected \"format\": \"", kCacheFormat,
                     "\")");
  }
  if (!json.contains("entries") || !json.at("entries").is_array())
    return MakeError(path, ": $.entries must be an array");
  const Json& entries = json.at("entries");
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const Json& e = entries[i];
    const std::string where = path + ": $.entries[" + std::to_string(i) + "]";
    const auto reject = [&](const std::string& why) {
      report.rejected.push_back(where + ": " + why);
    };
    if (!e.is_object()) {
      reject("not an object");
      continue;
    }
    const auto is_string = [&](const char* k) { return e.contains(k) && e.at(k).is_string(); };
    if (!is_string("key") || !is_string("fingerprint") || !is_string("text")) {
      reject("needs string fields key, fingerprint and text");
      continue;
    }
    const std::string key = e.at("key").get<std::string>();
    const std::string fingerprint = e.at("fingerprint").get<std::string>();
    const std::string text = e.at("text").get<std::string>();
    if (KeyOf(fingerprint, text) != key) {
      reject("key does not match its fingerprint and text");
      continue;
    }
    if (!e.contains("dimension") || !e.at("dimension").is_number_integer() ||
        !e.contains("embedding") || !e.at("embedding").is_array()) {
      reject("needs an integer dimension and an embedding array");
      continue;
    }
    const std::int64_t dimension = e.at("dimension").get<std::int64_t>();
    const Json& values = e.at("embedding");
    if (dimension <= 0 || static_cast<std::int64_t>(values.size()) != dimension) {
      reject("embedding has " + std::to_string(values.size()) + " values but dimension is " +
             std::to_string(dimension));
      continue;
    }
    std::vector<float> embedding;
    embedding.reserve(values.size());
    bool finite = true;
    for (const Json& v : values) {
      if (!v.is_number() || !std::isfinite(v.get<double>())) {
        finite = false;
        break;
      }
      embedding.push_back(v.get<float>());
    }
    if (!finite) {
      reject("embedding holds a value that is not a finite number");
      continue;
    }
    if (fingerprint != embedder_->fingerprint()) {
      stale_[key] = e;
      ++report.stale;
      continue;
    }
    if (dimension != embedder_->dimension()) {
      reject("dimension " + std::to_string(dimension) + " differs from the embedder's " +
             std::to_string(embedder_->dimension()));
      continue;
    }
    cache_[key] = CacheEntry{text, std::move(embedding)};
    ++report.loaded;
  }
  return report;
}

Status EmbeddingRouter::SaveCache(const std::string& path) const {
  std::map<std::string, Json> all = stale_;
  for (const auto& [key, entry] : cache_) {
    Json e = Json::object();
    e["key"] = key;
    e["fingerprint"] = embedder_->fingerprint();
    e["text"] = entry.text;
    e["dimension"] = entry.embedding.size();
    e["embedding"] = entry.embedding;
    all[key] = std::move(e);
  }
  Json json = Json::object();
  json["format"] = kCacheFormat;
  json["entries"] = Json::array();
  for (auto& [key, e] : all) json["entries"].push_back(std::move(e));
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) return MakeError(tmp, ": cannot open for writing");
    f << json.dump(1) << '\n';
    if (!f.flush()) return MakeError(tmp, ": write failed");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return MakeError(path, ": cannot replace the cache file: ", ec.message());
  return Ok();
}

Result<std::vector<RankedExpert>> Select(std::span<const RankedExpert> ranked, std::int64_t top_k,
                                         double threshold) {
  if (top_k < 1) return MakeError("router: top_k must be at least 1, got ", top_k);
  if (ranked.empty()) return MakeError("router: no ranked experts to select from");
  std::vector<RankedExpert> out = {ranked[0]};
  for (std::size_t i = 1; i < ranked.size() && static_cast<std::int64_t>(i) < top_k; ++i) {
    if (!(ranked[i].probability >= threshold)) break;
    out.push_back(ranked[i]);
  }
  return out;
}

}  // namespace fgnet::router
