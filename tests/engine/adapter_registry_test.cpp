// AdapterRegistry: identity by content hash, names as aliases, unloading while in use, memory
// accounting, and validation against the base.

#include "engine/adapter_registry.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

namespace fgnet {
namespace {

Gemma3Config Base() {
  Gemma3Config c;
  c.vocab_size = 50;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 8;
  c.layer_types = {LayerType::kSliding, LayerType::kGlobal};
  return c;
}

// An adapter on q_proj of layer 0 whose values depend on `seed`.
LoraAdapter Adapter(const Gemma3Config& c, float seed, std::string name) {
  LoraAdapter a;
  a.name = std::move(name);
  a.path = "/adapters/" + a.name;
  a.layers.resize(static_cast<std::size_t>(c.num_hidden_layers));
  LoraLayer& q = a.layers[0][static_cast<std::size_t>(LoraModule::kQ)];
  q.rank = 2;
  q.scale = 1.0f;
  q.a.assign(2 * static_cast<std::size_t>(c.hidden_size), seed);
  q.b.assign(static_cast<std::size_t>(c.q_dim()) * 2, -seed);
  return a;
}

TEST(AdapterRegistryTest, KeysAdaptersByContentAndNamesAreAliases) {
  AdapterRegistry registry(Base());
  auto a = registry.Add(Adapter(Base(), 0.5f, "math"));
  ASSERT_TRUE(a.ok()) << a.error().message();
  EXPECT_EQ((*a)->content_hash, LoraContentHash(**a));
  EXPECT_EQ((*a)->content_hash.size(), 64u);
  // The same content under another name: one entry with two names.
  auto same = registry.Add(Adapter(Base(), 0.5f, "algebra"));
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->get(), a->get());
  EXPECT_EQ(registry.size(), 1u);
  ASSERT_EQ(registry.List().size(), 1u);
  EXPECT_EQ(registry.List()[0].names, (std::vector<std::string>{"algebra", "math"}));
  // Found by either name, the full hash, or a 12-digit prefix of it.
  EXPECT_EQ(registry.Find("math").get(), a->get());
  EXPECT_EQ(registry.Find("algebra").get(), a->get());
  EXPECT_EQ(registry.Find((*a)->content_hash).get(), a->get());
  EXPECT_EQ(registry.Find((*a)->content_hash.substr(0, 12)).get(), a->get());
  EXPECT_EQ(registry.Find((*a)->content_hash.substr(0, 6)), nullptr);
  EXPECT_EQ(registry.Find("code"), nullptr);
}

TEST(AdapterRegistryTest, ANameCannotPointAtTwoAdapters) {
  AdapterRegistry registry(Base());
  ASSERT_TRUE(registry.Add(Adapter(Base(), 0.5f, "math")).ok());
  auto other = registry.Add(Adapter(Base(), 0.25f, "math"));
  ASSERT_FALSE(other.ok());
  EXPECT_NE(other.error().message().find("already used by another adapter"), std::string::npos);
  // Under a fresh name it is a second adapter.
  ASSERT_TRUE(registry.Add(Adapter(Base(), 0.25f, "code")).ok());
  EXPECT_EQ(registry.size(), 2u);
}

TEST(AdapterRegistryTest, UnloadKeepsAdaptersInUseAlive) {
  AdapterRegistry registry(Base());
  auto a = registry.Add(Adapter(Base(), 0.5f, "math"));
  ASSERT_TRUE(a.ok());
  std::shared_ptr<const LoraAdapter> in_use = *a;
  const std::uint64_t bytes = in_use->num_bytes();
  EXPECT_EQ(bytes, (2u * 16u + 16u * 2u) * sizeof(float));
  EXPECT_EQ(registry.total_bytes(), bytes);
  ASSERT_TRUE(registry.Unload("math").ok());
  EXPECT_EQ(registry.size(), 0u);
  EXPECT_EQ(registry.total_bytes(), 0u);
  EXPECT_EQ(registry.Find("math"), nullptr);
  EXPECT_EQ(in_use->layers[0][0].a[0], 0.5f);  // still alive for its user
  const Status again = registry.Unload("math");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().message(), "no adapter 'math' is loaded");
}

TEST(AdapterRegistryTest, RejectsAdaptersForAnotherBase) {
  AdapterRegistry registry(Base());
  Gemma3Config wider = Base();
  wider.hidden_size = 32;
  auto bad = registry.Add(Adapter(wider, 0.5f, "wide"));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("q_proj"), std::string::npos) << bad.error().message();
  EXPECT_EQ(registry.size(), 0u);
}

TEST(AdapterRegistryTest, ConcurrentAddsAndFindsAreSafe) {
  AdapterRegistry registry(Base());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&registry, t] {
      for (int i = 0; i < 20; ++i) {
        const std::string name = std::to_string(t * 1000 + i);
        ASSERT_TRUE(registry.Add(Adapter(Base(), static_cast<float>(t * 100 + i + 1), name)).ok());
        ASSERT_NE(registry.Find(name), nullptr);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(registry.size(), 80u);
}

}  // namespace
}  // namespace fgnet
