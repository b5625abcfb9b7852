// Internal to the network layer: reading JSON documents field by field while collecting every
// problem with its JSON path, for the experts file and network spec parsers.
//
// A SpecReader accumulates problems ("source: $.a.b[2]: message"); the typed getters report a
// wrong type and return false, and return false without a report when the key is absent.
// Thread-safety: a SpecReader is used by one thread.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "network/spec.h"
#include "util/json.h"
#include "util/status.h"

namespace fgnet::network::internal {

// " (did you mean 'x'?)" for the candidate closest to `word` when it is close enough, else "".
std::string DidYouMean(std::string_view word, const std::vector<std::string>& candidates);

// The path of a member or an element: Child("$.a", "b") = "$.a.b" ("$.a[\"b c\"]" for keys that
// are not identifiers), Index("$.a", 2) = "$.a[2]".
std::string Child(const std::string& path, std::string_view key);
std::string Index(const std::string& path, std::size_t index);

// "null", "a boolean", "a number", "a string", "an array" or "an object".
std::string JsonTypeName(const Json& value);

class SpecReader {
 public:
  explicit SpecReader(std::string_view source) : source_(source) {}

  void Add(const std::string& path, const std::string& message);
  bool ok() const { return problems_.empty(); }
  // Every problem, one per line.
  Error ToError() const;

  // Reports "expected an object" unless `value` is one.
  bool IsObject(const Json& value, const std::string& path);
  // Reports every key of `object` outside `allowed`, with a suggestion.
  void CheckKeys(const Json& object, const std::string& path,
                 std::initializer_list<std::string_view> allowed);
  // Reports "required" when `key` is absent.
  bool Require(const Json& object, std::string_view key, const std::string& path);

  // Typed members of `object` (an object). Absent: false, no report. Wrong type: false, reported.
  bool GetString(const Json& object, std::string_view key, const std::string& path,
                 std::string* out);
  bool GetBool(const Json& object, std::string_view key, const std::string& path, bool* out);
  bool GetNumber(const Json& object, std::string_view key, const std::string& path, double* out);
  bool GetInt(const Json& object, std::string_view key, const std::string& path, std::int64_t* out);
  // An integer that also fits in int32 (reported otherwise).
  bool GetInt32(const Json& object, std::string_view key, const std::string& path,
                std::int32_t* out);
  bool GetUint64(const Json& object, std::string_view key, const std::string& path,
                 std::uint64_t* out);
  // One of `names` (reported with a suggestion otherwise); *index is its position.
  bool GetEnum(const Json& object, std::string_view key, const std::string& path,
               const std::vector<std::string>& names, int* index);

  // Reports "<value> is not <range>" at path unless `ok`.
  void CheckRange(bool ok, const std::string& path, const Json& value, std::string_view range);

 private:
  std::string source_;
  std::vector<std::string> problems_;
};

// Sampling settings read from `object` (the keys temperature, top_p, top_k, min_p,
// repetition_penalty, seed and max_tokens; other keys are left to the caller), with their ranges.
void ReadSampling(SpecReader& reader, const Json& object, const std::string& path,
                  SamplingOverrides* out);
// Writes the set fields of `sampling` into `object`.
void WriteSampling(const SamplingOverrides& sampling, Json* object);

// The graph rules of spec.topology (spec_topology.cpp). edge_ok[i]: edge i names two existing,
// distinct nodes and is not a duplicate; the graph rules are checked only when every edge and
// node id is sound, so that one mistake is not reported twice.
void CheckTopology(SpecReader& reader, const NetworkSpec& spec, const std::vector<bool>& edge_ok);

// A float as the shortest decimal that reads back to it (0.2f -> 0.2, not 0.200000003).
Json FloatToJson(float value);

}  // namespace fgnet::network::internal
