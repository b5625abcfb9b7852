// Text embeddings from the base model: the text is encoded with <bos> first, run through the
// model (optionally with a routing LoRA adapter) up to the chosen hidden-state index
// (Gemma3Model::HiddenStates numbering: 0 the scaled embeddings .. L the final-normed output,
// negative from the end), pooled over the text's tokens, and L2-normalised.
//
// Pooling: kMean averages the hidden states of the text's tokens (the <bos> position, which is
// the same for every text, is left out); kLast takes the last token's. Texts longer than
// max_tokens tokens (counting <bos>) are truncated to their first max_tokens - 1 text tokens.
//
// Thread-safety: Embed may be called from several threads; calls are serialised by a mutex so
// that the one ThreadPool the embedder was given is never driven by two threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "model/gemma3_model.h"
#include "model/lora.h"
#include "tokenizer/tokenizer.h"
#include "util/status.h"
#include "util/thread_pool.h"

namespace fgnet::router {

enum class Pooling : std::uint8_t { kMean, kLast };
std::string_view PoolingName(Pooling pooling);
// "mean" or "last"; an error names the accepted values.
Result<Pooling> ParsePooling(std::string_view name);

struct EmbedderOptions {
  std::int64_t index = -1;  // hidden-state index (HiddenStates numbering)
  Pooling pooling = Pooling::kMean;
  std::int64_t max_tokens = 256;  // >= 2; longer texts are truncated
  // A routing adapter applied to every position (as an AdapterUse with this scale); null: none.
  // Must outlive the embedder.
  const LoraAdapter* adapter = nullptr;
  float adapter_scale = 1.0f;
};

class TextEmbedder {
 public:
  // `model`, `tokenizer` and `pool` must outlive the embedder. `base_hash` identifies the base
  // model's weights (Checkpoint::content_hash()). Errors: an index outside the model's range,
  // max_tokens < 2, an adapter made for another model or with a non-finite scale, no <bos> id.
  static Result<TextEmbedder> Create(const Gemma3Model& model, const Tokenizer& tokenizer,
                                     ThreadPool& pool, std::string base_hash,
                                     EmbedderOptions options);

  TextEmbedder(TextEmbedder&&) noexcept = default;
  TextEmbedder& operator=(TextEmbedder&&) noexcept = default;
  ~TextEmbedder() = default;

  // The L2-normalised embedding [hidden_size] of `text`. Errors: an empty (or all-whitespace)
  // text, a model error, a zero or non-finite pooled vector.
  Result<std::vector<float>> Embed(std::string_view text) const;

  // The token ids Embed runs: <bos>, then the text's tokens, truncated to max_tokens in all.
  std::vector<std::int32_t> Tokens(std::string_view text) const;

  std::int64_t dimension() const { return dimension_; }
  const EmbedderOptions& options() const { return options_; }
  // The index as a non-negative number (0 .. num_hidden_layers).
  std::int64_t resolved_index() const { return resolved_index_; }
  // One line naming everything besides the text that determines an embedding: format version,
  // base hash, adapter content hash and scale, resolved index, pooling and max_tokens.
  const std::string& fingerprint() const { return fingerprint_; }

 private:
  TextEmbedder() = default;

  const Gemma3Model* model_ = nullptr;
  const Tokenizer* tokenizer_ = nullptr;
  ThreadPool* pool_ = nullptr;
  EmbedderOptions options_;
  std::int64_t resolved_index_ = 0;
  std::int64_t dimension_ = 0;
  std::int32_t bos_ = 0;
  std::string fingerprint_;
  std::unique_ptr<std::mutex> mutex_;  // held by pointer so that the embedder can move
};

// Scales `v` to unit L2 norm; false (v unchanged) when its norm is zero or not finite.
bool NormalizeL2(std::span<float> v);

}  // namespace fgnet::router
