// A small random model, adapters and engine for the serving tests.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "device/create_model.h"
#include "engine/adapter_registry.h"
#include "engine/engine.h"
#include "forward_reference.h"
#include "model/gemma3_model.h"
#include "model/synth.h"
#include "util/rng.h"

namespace fgnet::testing {

inline Gemma3Config ServingTestConfig() {
  Gemma3Config c;
  c.vocab_size = 97;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 32;  // the smallest head the CUDA kernels take, so the suite also runs there
  c.max_position_embeddings = 512;
  c.sliding_window = 7;
  c.layer_types = {LayerType::kSliding, LayerType::kSliding, LayerType::kSliding,
                   LayerType::kGlobal};
  c.query_pre_attn_scalar = 16.0;
  c.rms_norm_eps = 1e-6;
  return c;
}

// The device the serving tests run the engine on: FGNET_TEST_DEVICE ("cuda:0", ...) when set,
// else the CPU. On a GPU, logits are compared with the CPU model within LogitTolerance().
inline Device TestDevice() {
  const char* text = std::getenv("FGNET_TEST_DEVICE");
  if (text == nullptr || *text == 0) return Device::Cpu();
  auto device = ParseDevice(text);
  FGNET_CHECK(device.ok());
  return *device;
}

// The model, three adapters ("a", "b": plain; "act": activated by the tokens {5, 6}) and a
// registry holding them.
class ServingFixture {
 public:
  ServingFixture() : ckpt_(ServingTestConfig(), DType::kF32, 3), registry_(ServingTestConfig()) {
    auto m = Gemma3Model::Create(ckpt_.config(), ckpt_.weights());
    FGNET_CHECK(m.ok());
    model_ = std::make_unique<Gemma3Model>(std::move(*m));
    if (!TestDevice().is_cpu()) {
      auto on_device = CreateModel(ckpt_.config(), ckpt_.weights(), TestDevice());
      if (!on_device.ok()) std::fprintf(stderr, "%s\n", on_device.error().message().c_str());
      FGNET_CHECK(on_device.ok());
      engine_model_ = std::move(*on_device);
    }
    for (const auto& [name, seed] : {std::pair<std::string, int>{"a", 1}, {"b", 2}, {"act", 3}}) {
      LoraAdapter adapter =
          RandomLoraAdapter(ServingTestConfig(), 4, static_cast<std::uint64_t>(seed), name, 0.2f);
      if (name == "act") {
        adapter.config.alora_invocation_tokens = {5, 6};
        adapter.content_hash = LoraContentHash(adapter);
      }
      FGNET_CHECK(registry_.Add(std::move(adapter)).ok());
    }
  }

  std::unique_ptr<Engine> NewEngine(EngineOptions options = {}) {
    if (options.threads == 0) options.threads = 2;
    auto engine = Engine::Create(engine_model(), "test-base", nullptr, &registry_, options);
    FGNET_CHECK(engine.ok());
    return std::move(*engine);
  }

  // The CPU model (the reference), and the model the engines run.
  const Gemma3Model& model() const { return *model_; }
  const Model& engine_model() const {
    return engine_model_ != nullptr ? *engine_model_ : static_cast<const Model&>(*model_);
  }
  // How far engine logits may be from the CPU model's, relative to the largest logit of the row
  // (at least 1): on a GPU this F32 checkpoint's weights are held as BF16 (1.2e-3 measured on an
  // H100) and sums run in another order.
  float LogitTolerance() const { return engine_model_ != nullptr ? 5e-3f : 1e-4f; }
  AdapterRegistry& registry() { return registry_; }

 private:
  RandomCheckpoint ckpt_;
  std::unique_ptr<Gemma3Model> model_;
  std::unique_ptr<Model> engine_model_;
  AdapterRegistry registry_;
};

inline std::vector<std::int32_t> Ids(std::size_t n, std::uint64_t seed, std::int32_t vocab = 97) {
  return RandomTokens(n, vocab, seed);
}

}  // namespace fgnet::testing
