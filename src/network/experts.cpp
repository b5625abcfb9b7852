// Experts files: parsing and validation (the schema is documented in docs/network-spec.md).
#include <cmath>
#include <filesystem>
#include <map>

#include "network/spec.h"
#include "network/spec_reader.h"

namespace fgnet::network {
namespace {

using internal::Child;
using internal::DidYouMean;
using internal::Index;
using internal::JsonTypeName;
using internal::SpecReader;

bool IsExpertIdChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

std::string ResolvePath(const std::string& path, const std::string& base_dir) {
  std::filesystem::path p(path);
  if (p.is_absolute() || base_dir.empty()) return p.lexically_normal().string();
  return (std::filesystem::path(base_dir) / p).lexically_normal().string();
}

void ReadAdapter(SpecReader& reader, const Json& json, const std::string& path,
                 const std::string& base_dir, std::vector<ExpertAdapter>* out) {
  if (!reader.IsObject(json, path)) return;
  reader.CheckKeys(json, path, {"path", "scale"});
  ExpertAdapter adapter;
  std::string file;
  if (reader.Require(json, "path", path) && reader.GetString(json, "path", path, &file)) {
    if (file.empty()) reader.Add(Child(path, "path"), "must not be empty");
  }
  double scale = 1.0;
  if (reader.GetNumber(json, "scale", path, &scale)) {
    reader.CheckRange(std::isfinite(static_cast<float>(scale)), Child(path, "scale"),
                      json.at("scale"), "a finite float");
  }
  adapter.path = file.empty() ? file : ResolvePath(file, base_dir);
  adapter.scale = static_cast<float>(scale);
  out->push_back(std::move(adapter));
}

void ReadStrings(SpecReader& reader, const Json& object, std::string_view key,
                 const std::string& path, std::vector<std::string>* out) {
  const auto it = object.find(key);
  if (it == object.end()) return;
  const std::string here = Child(path, key);
  if (!it->is_array()) {
    reader.Add(here, "expected an array of strings, got " + JsonTypeName(*it));
    return;
  }
  for (std::size_t i = 0; i < it->size(); ++i) {
    const Json& item = (*it)[i];
    if (!item.is_string()) {
      reader.Add(Index(here, i), "expected a string, got " + JsonTypeName(item));
      continue;
    }
    out->push_back(item.get<std::string>());
  }
}

void ReadExpert(SpecReader& reader, const Json& json, const std::string& path,
                const std::string& base_dir, const std::map<std::string, std::string>& domains,
                Expert* out) {
  reader.CheckKeys(
      json, path,
      {"id", "adapters", "adapter", "role", "domain", "description", "exemplars", "sampling"});
  if (reader.Require(json, "id", path) && reader.GetString(json, "id", path, &out->id)) {
    if (out->id.empty()) {
      reader.Add(Child(path, "id"), "must not be empty");
    } else {
      for (char c : out->id) {
        if (!IsExpertIdChar(c)) {
          reader.Add(Child(path, "id"), "'" + out->id + "' has characters outside [A-Za-z0-9_.-]");
          break;
        }
      }
    }
  }
  if (json.contains("adapter") && json.contains("adapters")) {
    reader.Add(path, "give either 'adapter' or 'adapters', not both");
  }
  std::string single;
  if (reader.GetString(json, "adapter", path, &single)) {
    if (single.empty()) {
      reader.Add(Child(path, "adapter"), "must not be empty");
    } else {
      out->adapters.push_back({ResolvePath(single, base_dir), 1.0f});
    }
  }
  if (const auto it = json.find("adapters"); it != json.end()) {
    const std::string here = Child(path, "adapters");
    if (!it->is_array()) {
      reader.Add(here, "expected an array, got " + JsonTypeName(*it));
    } else {
      for (std::size_t i = 0; i < it->size(); ++i) {
        ReadAdapter(reader, (*it)[i], Index(here, i), base_dir, &out->adapters);
      }
    }
  }
  reader.GetString(json, "role", path, &out->role);
  if (reader.GetString(json, "domain", path, &out->domain) && !out->domain.empty() &&
      domains.count(out->domain) == 0) {
    std::vector<std::string> names;
    for (const auto& [name, text] : domains) names.push_back(name);
    reader.Add(Child(path, "domain"), "domain '" + out->domain + "' is not a key of $.domains" +
                                          DidYouMean(out->domain, names));
  }
  reader.GetString(json, "description", path, &out->description);
  ReadStrings(reader, json, "exemplars", path, &out->exemplars);
  if (const auto it = json.find("sampling"); it != json.end()) {
    const std::string here = Child(path, "sampling");
    if (reader.IsObject(*it, here)) {
      reader.CheckKeys(
          *it, here,
          {"temperature", "top_p", "top_k", "min_p", "repetition_penalty", "seed", "max_tokens"});
      internal::ReadSampling(reader, *it, here, &out->sampling);
    }
  }
}

}  // namespace

Result<ExpertSet> ParseExperts(const Json& json, std::string_view source,
                               const std::string& base_dir) {
  SpecReader reader(source);
  ExpertSet set;
  set.source = std::string(source);
  if (!reader.IsObject(json, "$")) return reader.ToError();
  reader.CheckKeys(json, "$", {"version", "system_prompt", "domains", "experts"});
  std::int64_t version = 0;
  if (reader.Require(json, "version", "$") && reader.GetInt(json, "version", "$", &version) &&
      version != 1) {
    reader.Add("$.version",
               "unsupported version " + std::to_string(version) + " (this build reads version 1)");
  }
  reader.GetString(json, "system_prompt", "$", &set.system_prompt);
  if (const auto it = json.find("domains"); it != json.end()) {
    if (reader.IsObject(*it, "$.domains")) {
      for (const auto& item : it->items()) {
        if (!item.value().is_string()) {
          reader.Add(Child("$.domains", item.key()),
                     "expected a string, got " + JsonTypeName(item.value()));
          continue;
        }
        set.domains[item.key()] = item.value().get<std::string>();
      }
    }
  }
  const auto it = json.find("experts");
  if (it == json.end()) {
    reader.Add("$.experts", "required");
  } else if (!it->is_array()) {
    reader.Add("$.experts", "expected an array, got " + JsonTypeName(*it));
  } else {
    std::map<std::string, std::size_t> seen;
    for (std::size_t i = 0; i < it->size(); ++i) {
      const std::string path = Index("$.experts", i);
      const Json& item = (*it)[i];
      if (!reader.IsObject(item, path)) continue;
      Expert expert;
      ReadExpert(reader, item, path, base_dir, set.domains, &expert);
      if (!expert.id.empty()) {
        const auto [where, inserted] = seen.emplace(expert.id, i);
        if (!inserted) {
          reader.Add(Child(path, "id"), "duplicate expert id '" + expert.id + "' (also " +
                                            Index("$.experts", where->second) + ")");
        }
      }
      set.experts.push_back(std::move(expert));
    }
  }
  if (!reader.ok()) return reader.ToError();
  return set;
}

Result<ExpertSet> LoadExperts(const std::string& path) {
  FGNET_ASSIGN_OR_RETURN(Json json, ReadJsonFile(path));
  return ParseExperts(json, path, std::filesystem::path(path).parent_path().string());
}

}  // namespace fgnet::network
