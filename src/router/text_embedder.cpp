#include "router/text_embedder.h"

#include <cmath>
#include <sstream>
#include <utility>

namespace fgnet::router {

std::string_view PoolingName(Pooling pooling) {
  return pooling == Pooling::kMean ? "mean" : "last";
}

Result<Pooling> ParsePooling(std::string_view name) {
  if (name == "mean") return Pooling::kMean;
  if (name == "last") return Pooling::kLast;
  return MakeError("pooling '", name, "' is not one of: mean, last");
}

bool NormalizeL2(std::span<float> v) {
  double sum = 0.0;
  for (float x : v) sum += static_cast<double>(x) * static_cast<double>(x);
  const double norm = std::sqrt(sum);
  if (!(norm > 0.0) || !std::isfinite(norm)) return false;
  for (float& x : v) x = static_cast<float>(static_cast<double>(x) / norm);
  return true;
}

Result<TextEmbedder> TextEmbedder::Create(const Gemma3Model& model, const Tokenizer& tokenizer,
                                          ThreadPool& pool, std::string base_hash,
                                          EmbedderOptions options) {
  const Gemma3Config& c = model.config();
  const std::int64_t layers = c.num_hidden_layers;
  if (options.index < -(layers + 1) || options.index > layers) {
    return MakeError("embedder: layer index ", options.index, " is out of range [", -(layers + 1),
                     ", ", layers, "] for a model of ", layers, " layers");
  }
  if (options.max_tokens < 2) {
    return MakeError("embedder: max_tokens must be at least 2, got ", options.max_tokens);
  }
  if (options.adapter != nullptr) {
    FGNET_TRY(ValidateLoraAdapter(*options.adapter, c));
    if (!std::isfinite(options.adapter_scale)) {
      return MakeError("embedder: routing adapter '", options.adapter->name,
                       "' has a non-finite scale");
    }
  }
  TextEmbedder e;
  if (c.bos_token_id >= 0 && c.bos_token_id < c.vocab_size) {
    e.bos_ = static_cast<std::int32_t>(c.bos_token_id);
  } else if (auto id = tokenizer.TokenId("<bos>")) {
    e.bos_ = *id;
  } else {
    return MakeError("embedder: neither the model config nor the tokenizer names a <bos> token");
  }
  e.model_ = &model;
  e.tokenizer_ = &tokenizer;
  e.pool_ = &pool;
  e.options_ = options;
  e.resolved_index_ = options.index < 0 ? options.index + layers + 1 : options.index;
  e.dimension_ = c.hidden_size;
  std::ostringstream fp;
  fp << "fgnet.embed/1 base=" << base_hash
     << " adapter=" << (options.adapter != nullptr ? options.adapter->content_hash : "none");
  if (options.adapter != nullptr) fp << " adapter_scale=" << options.adapter_scale;
  fp << " index=" << e.resolved_index_ << " pooling=" << PoolingName(options.pooling)
     << " max_tokens=" << options.max_tokens << " dim=" << e.dimension_;
  e.fingerprint_ = fp.str();
  e.mutex_ = std::make_unique<std::mutex>();
  return e;
}

std::vector<std::int32_t> TextEmbedder::Tokens(std::string_view text) const {
  std::vector<std::int32_t> ids = {bos_};
  const std::vector<std::int32_t> encoded = tokenizer_->Encode(text);
  const std::size_t room = static_cast<std::size_t>(options_.max_tokens) - 1;
  ids.insert(ids.end(), encoded.begin(),
             encoded.begin() + static_cast<std::ptrdiff_t>(std::min(room, encoded.size())));
  return ids;
}

Result<std::vector<float>> TextEmbedder::Embed(std::string_view text) const {
  if (text.find_first_not_of(" \t\r\n") == std::string_view::npos)
    return MakeError("embedder: the text is empty");
  const std::vector<std::int32_t> ids = Tokens(text);
  if (ids.size() < 2) return MakeError("embedder: the text encodes to no tokens");
  AdapterUse use{options_.adapter, options_.adapter_scale, 0};
  const std::span<const AdapterUse> adapters = options_.adapter != nullptr
                                                   ? std::span<const AdapterUse>(&use, 1)
                                                   : std::span<const AdapterUse>();
  std::vector<float> states;
  {
    const std::lock_guard<std::mutex> lock(*mutex_);
    FGNET_TRY(model_->HiddenStates(ids, resolved_index_, *pool_, &states, adapters));
  }
  const auto dim = static_cast<std::size_t>(dimension_);
  std::vector<float> out(dim, 0.0f);
  if (options_.pooling == Pooling::kLast) {
    const float* row = states.data() + (ids.size() - 1) * dim;
    out.assign(row, row + dim);
  } else {
    std::vector<double> sum(dim, 0.0);
    for (std::size_t t = 1; t < ids.size(); ++t) {
      for (std::size_t j = 0; j < dim; ++j) sum[j] += states[t * dim + j];
    }
    const double n = static_cast<double>(ids.size() - 1);
    for (std::size_t j = 0; j < dim; ++j) out[j] = static_cast<float>(sum[j] / n);
  }
  if (!NormalizeL2(out))
    return MakeError("embedder: the pooled hidden state has a zero or non-finite norm");
  return out;
}

}  // namespace fgnet::router
