#include "model/lora.h"

#include <cmath>
#include <cstring>

#include "util/sha256.h"

namespace fgnet {

std::string_view LoraModuleName(LoraModule m) {
  switch (m) {
    case LoraModule::kQ:
      return "q_proj";
    case LoraModule::kK:
      return "k_proj";
    case LoraModule::kV:
      return "v_proj";
    case LoraModule::kO:
      return "o_proj";
    case LoraModule::kGate:
      return "gate_proj";
    case LoraModule::kUp:
      return "up_proj";
    case LoraModule::kDown:
      return "down_proj";
  }
  return "?";
}

std::optional<LoraModule> ParseLoraModuleName(std::string_view name) {
  for (LoraModule m : kAllLoraModules) {
    if (name == LoraModuleName(m)) return m;
  }
  return std::nullopt;
}

std::string_view LoraModulePath(LoraModule m) {
  switch (m) {
    case LoraModule::kQ:
      return "self_attn.q_proj";
    case LoraModule::kK:
      return "self_attn.k_proj";
    case LoraModule::kV:
      return "self_attn.v_proj";
    case LoraModule::kO:
      return "self_attn.o_proj";
    case LoraModule::kGate:
      return "mlp.gate_proj";
    case LoraModule::kUp:
      return "mlp.up_proj";
    case LoraModule::kDown:
      return "mlp.down_proj";
  }
  return "?";
}

std::pair<std::int64_t, std::int64_t> LoraModuleShape(const Gemma3Config& c, LoraModule m) {
  switch (m) {
    case LoraModule::kQ:
      return {c.q_dim(), c.hidden_size};
    case LoraModule::kK:
    case LoraModule::kV:
      return {c.kv_dim(), c.hidden_size};
    case LoraModule::kO:
      return {c.hidden_size, c.q_dim()};
    case LoraModule::kGate:
    case LoraModule::kUp:
      return {c.intermediate_size, c.hidden_size};
    case LoraModule::kDown:
      return {c.hidden_size, c.intermediate_size};
  }
  return {0, 0};
}

std::uint64_t LoraAdapter::num_parameters() const {
  std::uint64_t total = 0;
  for (const auto& layer : layers) {
    for (const LoraLayer& m : layer) total += m.a.size() + m.b.size();
  }
  return total;
}

std::vector<std::string> LoraAdapter::adapted_modules() const {
  std::vector<std::string> names;
  for (LoraModule m : kAllLoraModules) {
    for (const auto& layer : layers) {
      if (layer[static_cast<std::size_t>(m)].active()) {
        names.emplace_back(LoraModuleName(m));
        break;
      }
    }
  }
  return names;
}

std::string LoraContentHash(const LoraAdapter& adapter) {
  Sha256 h;
  h.Update("fgnet-lora/1");
  const auto put_u64 = [&h](std::uint64_t v) { h.Update(&v, sizeof(v)); };
  for (std::size_t l = 0; l < adapter.layers.size(); ++l) {
    for (std::size_t m = 0; m < kNumLoraModules; ++m) {
      const LoraLayer& layer = adapter.layers[l][m];
      if (!layer.active()) continue;
      put_u64(l);
      put_u64(m);
      put_u64(layer.rank);
      h.Update(&layer.scale, sizeof(float));
      put_u64(layer.a.size());
      h.Update(layer.a.data(), layer.a.size() * sizeof(float));
      put_u64(layer.b.size());
      h.Update(layer.b.data(), layer.b.size() * sizeof(float));
    }
  }
  const auto& tokens = adapter.config.alora_invocation_tokens;
  put_u64(tokens.size());
  h.Update(tokens.data(), tokens.size() * sizeof(std::int32_t));
  return h.FinishHex();
}

Status ValidateLoraAdapter(const LoraAdapter& adapter, const Gemma3Config& base) {
  if (static_cast<std::int64_t>(adapter.layers.size()) != base.num_hidden_layers) {
    return MakeError(adapter.path, ": the adapter has ", adapter.layers.size(),
                     " layers but the base model has ", base.num_hidden_layers);
  }
  for (std::size_t l = 0; l < adapter.layers.size(); ++l) {
    for (LoraModule m : kAllLoraModules) {
      const LoraLayer& layer = adapter.at(l, m);
      if (!layer.active()) continue;
      const auto [out, in] = LoraModuleShape(base, m);
      const std::size_t r = layer.rank;
      if (layer.a.size() != r * static_cast<std::size_t>(in) ||
          layer.b.size() != static_cast<std::size_t>(out) * r) {
        return MakeError(adapter.path, ": layer ", l, " ", LoraModuleName(m), ": A has ",
                         layer.a.size(), " and B ", layer.b.size(), " values but rank ", r,
                         " on the base's [", out, ", ", in, "] weight needs ",
                         r * static_cast<std::size_t>(in), " and ",
                         static_cast<std::size_t>(out) * r);
      }
      if (!std::isfinite(layer.scale)) {
        return MakeError(adapter.path, ": layer ", l, " ", LoraModuleName(m),
                         ": the scale is not finite");
      }
    }
  }
  return Ok();
}

std::optional<std::int64_t> AloraStart(std::span<const std::int32_t> tokens,
                                       std::span<const std::int32_t> invocation) {
  if (invocation.empty()) return 0;
  if (invocation.size() > tokens.size()) return std::nullopt;
  for (std::size_t start = tokens.size() - invocation.size() + 1; start-- > 0;) {
    if (std::memcmp(tokens.data() + start, invocation.data(),
                    invocation.size() * sizeof(std::int32_t)) == 0) {
      return static_cast<std::int64_t>(start);
    }
  }
  return std::nullopt;
}

}  // namespace fgnet
