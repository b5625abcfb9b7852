// A small handmade tokenizer.json in Gemma 3's configuration, for tests that check exact BPE
// behaviour and load-time validation without the 33 MB npm file.
//   vocab: <pad> <eos> <bos> <unk>, <0x00>..<0xFF> (ids 4..259), then ▁ a b c ab bc abc ▁a aa \n
//          \n\n <start_of_turn> (ids 260..271)
//   merges, by rank: a+b, b+c, ab+c, ▁+a, a+a
#pragma once

#include <cstdio>
#include <string>

#include "util/json.h"

namespace fgnet::testing {

inline Json MiniTokenizerJson() {
  Json vocab = Json::object();
  const char* head[] = {"<pad>", "<eos>", "<bos>", "<unk>"};
  int id = 0;
  for (const char* t : head) vocab[t] = id++;
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab[name] = id++;
  }
  const char* tail[] = {"\u2581", "a",       "b",  "c",  "ab",   "bc",
                        "abc",    "\u2581a", "aa", "\n", "\n\n", "<start_of_turn>"};
  for (const char* t : tail) vocab[t] = id++;
  Json merges =
      Json::array({Json::array({"a", "b"}), Json::array({"b", "c"}), Json::array({"ab", "c"}),
                   Json::array({"\u2581", "a"}), Json::array({"a", "a"})});
  auto added = [](int token_id, const char* content, bool special) {
    return Json{{"id", token_id},  {"content", content},  {"single_word", false}, {"lstrip", false},
                {"rstrip", false}, {"normalized", false}, {"special", special}};
  };
  Json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] =
      Json::array({added(0, "<pad>", true), added(1, "<eos>", true), added(2, "<bos>", true),
                   added(3, "<unk>", true), added(269, "\n", false), added(270, "\n\n", false),
                   added(271, "<start_of_turn>", true)});
  j["normalizer"] = {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}};
  j["pre_tokenizer"] = {{"type", "Split"},
                        {"pattern", {{"String", " "}}},
                        {"behavior", "MergedWithPrevious"},
                        {"invert", false}};
  j["post_processor"] = nullptr;
  j["decoder"] = {
      {"type", "Sequence"},
      {"decoders",
       Json::array({{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
                    {{"type", "ByteFallback"}},
                    {{"type", "Fuse"}}})}};
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", "<unk>"},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", true},
                {"byte_fallback", true},
                {"ignore_merges", false},
                {"vocab", vocab},
                {"merges", merges}};
  return j;
}

}  // namespace fgnet::testing
