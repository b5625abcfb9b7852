// The model on a chosen device: device names, CreateModel's errors, and the CUDA forward pass
// against the CPU one on small random checkpoints (paged KV in both, chunked prefill, decoding
// past the sliding window, GQA, softcapping, mixed-adapter batches with an activated adapter,
// copy-on-write of shared blocks). The CUDA comparisons skip where no GPU is present.
//
// Tolerance: the GPU's matrix products carry the f32 activations as two BF16 terms on the cuBLAS
// path (backend/cuda/matmul.h) and sum in another order, so its logits must agree with the CPU's
// (and transformers' float32 ones) to within kLogitTolerance of the logit scale, and give the
// same greedy continuations.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/quant.h"
#include "device/create_model.h"
#include "forward_reference.h"
#include "kv/block_pool.h"
#include "kv/paged_sequence.h"
#include "model/checkpoint.h"
#include "model/gemma3_model.h"
#include "model/synth.h"
#include "util/json.h"
#include "util/npy.h"

namespace fgnet {
namespace {

constexpr float kLogitTolerance = 1e-3f;

Gemma3Config SmallConfig(std::int64_t heads, std::int64_t kv_heads, std::int64_t head_dim) {
  Gemma3Config c;
  c.vocab_size = 211;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_hidden_layers = 6;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  c.head_dim = head_dim;
  c.max_position_embeddings = 4096;
  c.sliding_window = 9;
  c.layer_types = {LayerType::kSliding, LayerType::kSliding, LayerType::kGlobal,
                   LayerType::kSliding, LayerType::kSliding, LayerType::kGlobal};
  c.query_pre_attn_scalar = static_cast<double>(head_dim);
  c.rms_norm_eps = 1e-6;
  return c;
}

TEST(DeviceTest, ParsesDeviceNames) {
  EXPECT_EQ(*ParseDevice("cpu"), Device::Cpu());
  EXPECT_EQ(*ParseDevice("cuda"), Device::Cuda(0));
  EXPECT_EQ(*ParseDevice("cuda:3"), Device::Cuda(3));
  EXPECT_EQ(Device::Cuda(2).ToString(), "cuda:2");
  for (const char* bad : {"gpu", "cuda:", "cuda:x", "cuda:-1", "cuda:1x", "CPU", ""}) {
    auto d = ParseDevice(bad);
    ASSERT_FALSE(d.ok()) << bad;
    EXPECT_EQ(d.error().message(),
              "device '" + std::string(bad) + "' is not one of cpu, cuda, cuda:N");
  }
}

TEST(DeviceTest, HostMemoryCopiesWithin) {
  auto memory = AllocateHostMemory(64);
  auto* bytes = static_cast<unsigned char*>(memory->data());
  for (int i = 0; i < 64; ++i) bytes[i] = static_cast<unsigned char>(i);
  memory->Copy(32, 0, 16);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(bytes[32 + i], i);
  EXPECT_EQ(memory->device(), Device::Cpu());
}

TEST(DeviceTest, CpuModelsComeFromCreateModel) {
  const testing::RandomCheckpoint ckpt(SmallConfig(4, 2, 32), DType::kBF16, 1);
  auto model = CreateModel(ckpt.config(), ckpt.weights(), Device::Cpu());
  ASSERT_TRUE(model.ok()) << model.error().message();
  EXPECT_EQ((*model)->device(), Device::Cpu());
  EXPECT_EQ((*model)->device_name(), "cpu");
  ASSERT_FALSE(DescribeDevices().empty());
  EXPECT_EQ(DescribeDevices()[0], "cpu");
}

TEST(DeviceTest, AMissingGpuIsAnError) {
  const testing::RandomCheckpoint ckpt(SmallConfig(4, 2, 32), DType::kBF16, 1);
  auto model = CreateModel(ckpt.config(), ckpt.weights(), Device::Cuda(999));
  ASSERT_FALSE(model.ok());
  const std::string& message = model.error().message();
  EXPECT_TRUE(message.starts_with("device cuda:999")) << message;
}

// One forward of three tokens on `seq`.
Status ForwardThreeTokens(const Model& model, kv::PagedSequence& seq) {
  if (!seq.Reserve(3)) return MakeError("no blocks for 3 positions");
  const std::vector<std::int32_t> ids = {1, 2, 3};
  std::vector<float> logits;
  const SequenceStep step{ids, &seq, LogitsMode::kLast, &logits, {}};
  ThreadPool threads(1);
  ForwardScratch scratch;
  return model.ForwardBatch(std::span<const SequenceStep>(&step, 1), threads, scratch);
}

TEST(DeviceTest, TheCpuModelRefusesKVInAnotherDevicesMemory) {
  const testing::RandomCheckpoint ckpt(SmallConfig(4, 2, 32), DType::kBF16, 1);
  auto model = Gemma3Model::Create(ckpt.config(), ckpt.weights());
  ASSERT_TRUE(model.ok());
  // Host memory labelled as a GPU's: the CPU model must refuse it before touching it.
  class ForeignMemory final : public Memory {
   public:
    explicit ForeignMemory(std::size_t bytes) : host_(AllocateHostMemory(bytes)) {}
    void* data() const override { return host_->data(); }
    std::size_t bytes() const override { return host_->bytes(); }
    Device device() const override { return Device::Cuda(0); }
    void Copy(std::size_t to, std::size_t from, std::size_t bytes) override {
      host_->Copy(to, from, bytes);
    }

   private:
    std::unique_ptr<Memory> host_;
  };
  const kv::KVLayout layout = kv::KVLayout::ForConfig(ckpt.config(), 4);
  kv::BlockPool pool(layout, 16, std::make_unique<ForeignMemory>(layout.block_bytes() * 16));
  kv::PagedSequence seq(pool);
  const Status s = ForwardThreeTokens(*model, seq);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message(),
            "Forward: the KV cache is in cuda:0 memory but the model runs on cpu");
  EXPECT_EQ(seq.length(), 0);
}

// A bf16 pool holds what only a GPU reads: the CPU model refuses it before touching it.
TEST(DeviceTest, TheCpuModelRefusesBf16KV) {
  const testing::RandomCheckpoint ckpt(SmallConfig(4, 2, 32), DType::kBF16, 1);
  auto model = Gemma3Model::Create(ckpt.config(), ckpt.weights());
  ASSERT_TRUE(model.ok());
  EXPECT_FALSE(model->SupportsKVType(DType::kBF16));
  const kv::KVLayout layout = kv::KVLayout::ForConfig(ckpt.config(), 4, DType::kBF16);
  EXPECT_EQ(2 * layout.block_bytes(), kv::KVLayout::ForConfig(ckpt.config(), 4).block_bytes());
  kv::BlockPool pool(layout, 16);
  kv::PagedSequence seq(pool);
  const Status s = ForwardThreeTokens(*model, seq);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message(),
            "Forward: the KV cache holds BF16 keys and values; the CPU backend keeps them in F32");
  EXPECT_EQ(seq.length(), 0);
}

// --- CUDA against the CPU
// -------------------------------------------------------------------------

// One backend's model, block pool and sequences.
struct Backend {
  std::unique_ptr<Model> model;
  std::unique_ptr<kv::BlockPool> pool;
  std::vector<std::unique_ptr<kv::PagedSequence>> seqs;
  ThreadPool threads{2};
  ForwardScratch scratch;

  Backend(std::unique_ptr<Model> m, std::int64_t block_size, std::int64_t blocks,
          DType kv_dtype = DType::kF32)
      : model(std::move(m)) {
    const kv::KVLayout layout = kv::KVLayout::ForConfig(model->config(), block_size, kv_dtype);
    auto memory = model->AllocateKV(layout.block_bytes() * static_cast<std::size_t>(blocks));
    FGNET_CHECK(memory.ok());
    pool = std::make_unique<kv::BlockPool>(layout, blocks, std::move(*memory));
  }
  kv::PagedSequence& NewSequence() {
    seqs.push_back(std::make_unique<kv::PagedSequence>(*pool));
    return *seqs.back();
  }
  // Runs one step per sequence (tokens[i] on seqs[i]) and returns each step's logits.
  std::vector<std::vector<float>> Step(const std::vector<std::vector<std::int32_t>>& tokens,
                                       const std::vector<std::vector<AdapterUse>>& adapters,
                                       LogitsMode mode = LogitsMode::kLast) {
    std::vector<std::vector<float>> logits(tokens.size());
    std::vector<SequenceStep> steps;
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      FGNET_CHECK(seqs[i]->Reserve(static_cast<std::int64_t>(tokens[i].size())));
      steps.push_back({tokens[i], seqs[i].get(), mode, &logits[i], adapters[i]});
    }
    const Status s = model->ForwardBatch(steps, threads, scratch);
    EXPECT_TRUE(s.ok()) << s.error().message();
    for (auto& seq : seqs) seq->Trim();
    return logits;
  }
};

class CudaModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (DescribeDevices().size() < 2) GTEST_SKIP() << "no CUDA device";
  }

  // CPU and CUDA backends of one checkpoint.
  static std::pair<std::unique_ptr<Backend>, std::unique_ptr<Backend>> Both(
      const testing::RandomCheckpoint& ckpt, std::int64_t block_size = 4,
      std::int64_t blocks = 512) {
    auto cpu = CreateModel(ckpt.config(), ckpt.weights(), Device::Cpu());
    auto gpu = CreateModel(ckpt.config(), ckpt.weights(), Device::Cuda(0));
    EXPECT_TRUE(gpu.ok()) << gpu.error().message();
    return {std::make_unique<Backend>(std::move(*cpu), block_size, blocks),
            std::make_unique<Backend>(std::move(*gpu), block_size, blocks)};
  }
};

// Largest |a - b| relative to the largest |a|.
float MaxRelativeDifference(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float scale = 1e-6f, diff = 0.0f;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) {
    scale = std::max(scale, std::fabs(a[i]));
    diff = std::max(diff, std::fabs(a[i] - b[i]));
    if (!std::isfinite(b[i])) return INFINITY;
  }
  return diff / scale;
}

std::int32_t Argmax(const std::vector<float>& v, std::size_t offset = 0, std::size_t n = 0) {
  if (n == 0) n = v.size() - offset;
  return static_cast<std::int32_t>(
      std::max_element(v.begin() + static_cast<std::ptrdiff_t>(offset),
                       v.begin() + static_cast<std::ptrdiff_t>(offset + n)) -
      v.begin() - static_cast<std::ptrdiff_t>(offset));
}

// Prefill in chunks, then greedy decoding past the sliding window, for several shapes.
TEST_F(CudaModelTest, GreedyDecodingMatchesTheCpu) {
  struct Shape {
    std::int64_t heads, kv_heads, head_dim;
    bool softcap;
  };
  for (const Shape& shape : {Shape{4, 1, 32, false}, Shape{4, 2, 64, true}, Shape{2, 2, 128, false},
                             Shape{4, 1, 256, false}}) {
    SCOPED_TRACE("heads " + std::to_string(shape.heads) + "/" + std::to_string(shape.kv_heads) +
                 " head_dim " + std::to_string(shape.head_dim));
    Gemma3Config config = SmallConfig(shape.heads, shape.kv_heads, shape.head_dim);
    if (shape.softcap) {
      config.final_logit_softcapping = 30.0;
      config.attn_logit_softcapping = 50.0;
    }
    const testing::RandomCheckpoint ckpt(config, DType::kBF16, 7);
    auto [cpu, gpu] = Both(ckpt);
    cpu->NewSequence();
    gpu->NewSequence();
    const std::vector<std::int32_t> prompt = testing::RandomTokens(23, config.vocab_size, 11);
    // Chunks of 10, 10 and 3 tokens, the last with logits of every token.
    const std::vector<std::vector<AdapterUse>> none(1);
    for (std::size_t at = 0; at < prompt.size(); at += 10) {
      const std::vector<std::int32_t> chunk(
          prompt.begin() + static_cast<std::ptrdiff_t>(at),
          prompt.begin() + static_cast<std::ptrdiff_t>(std::min(at + 10, prompt.size())));
      const auto a = cpu->Step({chunk}, none, LogitsMode::kAll);
      const auto b = gpu->Step({chunk}, none, LogitsMode::kAll);
      EXPECT_LT(MaxRelativeDifference(a[0], b[0]), kLogitTolerance) << "chunk at " << at;
    }
    std::int32_t next_cpu = 0, next_gpu = 0;
    {
      const auto a = cpu->Step({{prompt.back()}}, none);
      const auto b = gpu->Step({{prompt.back()}}, none);
      next_cpu = Argmax(a[0]);
      next_gpu = Argmax(b[0]);
    }
    for (int t = 0; t < 24; ++t) {
      ASSERT_EQ(next_cpu, next_gpu) << "token " << t;
      // Alternate full logits with argmax-only steps on the GPU (both replayed as graphs).
      if (t % 2 == 1) {
        const auto a = cpu->Step({{next_cpu}}, none);
        std::int32_t token = -1;
        const std::vector<std::int32_t> ids = {next_gpu};
        ASSERT_TRUE(gpu->seqs[0]->Reserve(1));
        std::vector<float> unused;
        SequenceStep step{ids, gpu->seqs[0].get(), LogitsMode::kArgmax, nullptr, {}, &token};
        const Status s = gpu->model->ForwardBatch(std::span<const SequenceStep>(&step, 1),
                                                  gpu->threads, gpu->scratch);
        ASSERT_TRUE(s.ok()) << s.error().message();
        next_cpu = Argmax(a[0]);
        next_gpu = token;
        continue;
      }
      const auto a = cpu->Step({{next_cpu}}, none);
      const auto b = gpu->Step({{next_gpu}}, none);
      EXPECT_LT(MaxRelativeDifference(a[0], b[0]), kLogitTolerance) << "token " << t;
      next_cpu = Argmax(a[0]);
      next_gpu = Argmax(b[0]);
    }
    if (std::getenv("FGNET_CUDA_GRAPHS") == nullptr) {
      EXPECT_GT(gpu->model->graph_launches(), 0u);
    }
  }
}

// `t` (a float matrix) stored as `type`, its bytes in `storage`.
TensorView QuantizedCopy(const TensorView& t, DType type,
                         std::vector<std::vector<std::uint8_t>>& storage) {
  const auto rows = static_cast<std::size_t>(t.shape[0]);
  const auto cols = static_cast<std::size_t>(t.shape[1]);
  const std::size_t row_bytes = DTypeRowBytes(type, cols);
  const std::size_t src_row_bytes = DTypeRowBytes(t.dtype, cols);
  std::vector<std::uint8_t>& bytes = storage.emplace_back(rows * row_bytes);
  std::vector<float> row(cols);
  for (std::size_t r = 0; r < rows; ++r) {
    cpu::DequantizeRow(t.dtype, static_cast<const std::uint8_t*>(t.data) + r * src_row_bytes, cols,
                       row.data());
    cpu::QuantizeRow(type, row.data(), cols, bytes.data() + r * row_bytes);
  }
  return TensorView{type, t.shape, bytes.data()};
}

// Block-quantized checkpoints run on the GPU from their repacked blocks: every quantized type,
// as prefill (the dequantize + f32 cuBLAS path) and decode (the quantized GEMV), against the CPU
// model on the same quantized weights.
TEST_F(CudaModelTest, QuantizedCheckpointsMatchTheCpu) {
  Gemma3Config config = SmallConfig(4, 1, 64);
  config.hidden_size = 256;  // rows of whole 256-element blocks for Q4_K and Q6_K
  config.intermediate_size = 512;
  const testing::RandomCheckpoint ckpt(config, DType::kBF16, 21);
  struct Case {
    DType linear, embedding;
  };
  for (const Case& q : {Case{DType::kQ8_0, DType::kQ8_0}, Case{DType::kQ4_0, DType::kQ8_0},
                        Case{DType::kQ4_K, DType::kQ6_K}}) {
    SCOPED_TRACE(std::string(DTypeName(q.linear)) + " / " + std::string(DTypeName(q.embedding)));
    std::vector<std::vector<std::uint8_t>> storage;
    Gemma3Weights w = ckpt.weights();
    w.embed_tokens = QuantizedCopy(w.embed_tokens, q.embedding, storage);
    w.lm_head = w.embed_tokens;
    for (Gemma3LayerWeights& l : w.layers) {
      for (TensorView* m :
           {&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.gate_proj, &l.up_proj, &l.down_proj}) {
        *m = QuantizedCopy(*m, q.linear, storage);
      }
    }
    auto cpu_model = CreateModel(config, w, Device::Cpu());
    auto gpu_model = CreateModel(config, w, Device::Cuda(0));
    ASSERT_TRUE(cpu_model.ok()) << cpu_model.error().message();
    ASSERT_TRUE(gpu_model.ok()) << gpu_model.error().message();
    Backend cpu(std::move(*cpu_model), 4, 256), gpu(std::move(*gpu_model), 4, 256);
    cpu.NewSequence();
    gpu.NewSequence();
    const std::vector<std::vector<AdapterUse>> none(1);
    const std::vector<std::int32_t> prompt = testing::RandomTokens(19, config.vocab_size, 3);
    const auto a = cpu.Step({prompt}, none, LogitsMode::kAll);
    const auto b = gpu.Step({prompt}, none, LogitsMode::kAll);
    EXPECT_LT(MaxRelativeDifference(a[0], b[0]), kLogitTolerance) << "prefill";
    const auto vocab = static_cast<std::size_t>(config.vocab_size);
    std::int32_t next_cpu = Argmax(a[0], (prompt.size() - 1) * vocab, vocab);
    std::int32_t next_gpu = Argmax(b[0], (prompt.size() - 1) * vocab, vocab);
    for (int t = 0; t < 16; ++t) {
      ASSERT_EQ(next_cpu, next_gpu) << "token " << t;
      const auto x = cpu.Step({{next_cpu}}, none);
      const auto y = gpu.Step({{next_gpu}}, none);
      EXPECT_LT(MaxRelativeDifference(x[0], y[0]), kLogitTolerance) << "token " << t;
      next_cpu = Argmax(x[0]);
      next_gpu = Argmax(y[0]);
    }
  }
}

// Several sequences of different lengths and adapter sets in one batch: plain adapters, a mix,
// and an activated adapter starting inside the prompt; decode and prefill rows mixed.
TEST_F(CudaModelTest, MixedAdapterBatchesMatchTheCpu) {
  const Gemma3Config config = SmallConfig(4, 1, 32);
  const testing::RandomCheckpoint ckpt(config, DType::kBF16, 3);
  const LoraAdapter a = RandomLoraAdapter(config, 4, 1, "a", 0.2f);
  const LoraAdapter b = RandomLoraAdapter(config, 16, 2, "b", 0.1f);
  const LoraAdapter c = RandomLoraAdapter(config, 2, 3, "c", 0.3f);
  const std::vector<std::vector<AdapterUse>> sets = {
      {}, {{&a, 1.0f, 0}}, {{&a, 0.5f, 0}, {&b, 0.5f, 0}}, {{&c, 1.0f, 6}}, {{&b, 0.8f, 0}}};
  auto [cpu, gpu] = Both(ckpt);
  std::vector<std::vector<std::int32_t>> prompts;
  for (std::size_t i = 0; i < sets.size(); ++i) {
    cpu->NewSequence();
    gpu->NewSequence();
    prompts.push_back(testing::RandomTokens(5 + 4 * i, config.vocab_size, 40 + i));
  }
  auto want = cpu->Step(prompts, sets);
  auto got = gpu->Step(prompts, sets);
  for (int t = 0; t < 12; ++t) {
    std::vector<std::vector<std::int32_t>> next(sets.size());
    for (std::size_t i = 0; i < sets.size(); ++i) {
      EXPECT_LT(MaxRelativeDifference(want[i], got[i]), kLogitTolerance)
          << "sequence " << i << " step " << t;
      ASSERT_EQ(Argmax(want[i]), Argmax(got[i])) << "sequence " << i << " step " << t;
      next[i] = {Argmax(want[i])};
      // Every third step, sequence 0 takes a chunk of several tokens instead (a prefill row
      // block beside decode rows).
      if (i == 0 && t % 3 == 0) next[i] = {next[i][0], 7, 8};
    }
    want = cpu->Step(next, sets);
    got = gpu->Step(next, sets);
  }
}

// bf16 keys and values: the GPU model follows the CPU (f32 keys and values) to within their
// rounding, through a chunked prompt and decoding past the sliding window (the CPU's tokens fed
// to both), and a forked sequence copies its bf16 block on write.
TEST_F(CudaModelTest, Bf16KeysAndValuesFollowTheCpu) {
  constexpr float kBf16KVTolerance = 2e-2f;  // of the logit scale
  for (const std::int64_t head_dim : {64, 256}) {
    SCOPED_TRACE(head_dim);
    const Gemma3Config config = SmallConfig(4, 1, head_dim);
    const testing::RandomCheckpoint ckpt(config, DType::kBF16, 9);
    auto cpu_model = CreateModel(ckpt.config(), ckpt.weights(), Device::Cpu());
    auto gpu_model = CreateModel(ckpt.config(), ckpt.weights(), Device::Cuda(0));
    ASSERT_TRUE(gpu_model.ok()) << gpu_model.error().message();
    ASSERT_TRUE((*gpu_model)->SupportsKVType(DType::kBF16));
    Backend cpu(std::move(*cpu_model), 4, 512);
    Backend gpu(std::move(*gpu_model), 4, 512, DType::kBF16);
    cpu.NewSequence();
    gpu.NewSequence();
    const std::vector<std::vector<AdapterUse>> one(1), two(2);
    const std::vector<std::int32_t> prompt = testing::RandomTokens(23, config.vocab_size, 3);
    float worst = 0.0f;
    for (std::size_t at = 0; at < prompt.size(); at += 10) {
      const std::vector<std::int32_t> chunk(
          prompt.begin() + static_cast<std::ptrdiff_t>(at),
          prompt.begin() + static_cast<std::ptrdiff_t>(std::min(at + 10, prompt.size())));
      const float d = MaxRelativeDifference(cpu.Step({chunk}, one, LogitsMode::kAll)[0],
                                            gpu.Step({chunk}, one, LogitsMode::kAll)[0]);
      worst = std::max(worst, d);
    }
    std::int32_t next = prompt.back();
    for (int t = 0; t < 24; ++t) {
      const auto a = cpu.Step({{next}}, one);
      const auto b = gpu.Step({{next}}, one);
      worst = std::max(worst, MaxRelativeDifference(a[0], b[0]));
      next = Argmax(a[0]);
    }
    for (Backend* be : {&cpu, &gpu}) {
      be->seqs.push_back(std::make_unique<kv::PagedSequence>(be->seqs[0]->Fork()));
    }
    const auto want = cpu.Step({{3, 4}, {5}}, two);
    const auto got = gpu.Step({{3, 4}, {5}}, two);
    for (std::size_t i = 0; i < 2; ++i)
      worst = std::max(worst, MaxRelativeDifference(want[i], got[i]));
    std::printf("bf16 KV, head_dim %lld: max |logit difference| / max |logit| = %.3g\n",
                static_cast<long long>(head_dim), worst);
    EXPECT_LT(worst, kBf16KVTolerance);
  }
}

// A forked sequence shares its blocks; writing the partial last block copies it on the GPU.
TEST_F(CudaModelTest, ForkedSequencesCopyOnWriteOnTheGpu) {
  const Gemma3Config config = SmallConfig(4, 2, 32);
  const testing::RandomCheckpoint ckpt(config, DType::kBF16, 5);
  auto [cpu, gpu] = Both(ckpt, /*block_size=*/8);
  const std::vector<std::int32_t> prompt = testing::RandomTokens(13, config.vocab_size, 2);
  const std::vector<std::vector<AdapterUse>> one(1), two(2);
  for (Backend* be : {cpu.get(), gpu.get()}) {
    be->NewSequence();
    be->Step({prompt}, one);
    be->seqs.push_back(std::make_unique<kv::PagedSequence>(be->seqs[0]->Fork()));
  }
  // The two continue differently from the shared 13 positions.
  const auto want = cpu->Step({{3, 4}, {5}}, two);
  const auto got = gpu->Step({{3, 4}, {5}}, two);
  for (std::size_t i = 0; i < 2; ++i) {
    EXPECT_LT(MaxRelativeDifference(want[i], got[i]), kLogitTolerance) << i;
    EXPECT_EQ(Argmax(want[i]), Argmax(got[i])) << i;
  }
}

// transformers' own logits (tests/fixtures/parity/mqa_bf16_v4: MQA, head_dim 32, a sliding window
// shorter than the prompt, BF16 weights; see tools/README.md) against the GPU forward pass: every
// prompt logit within kLogitTolerance of the logit scale, and transformers' 40-token greedy
// continuation reproduced token by token (each step a decode pass, replayed as a graph).
TEST_F(CudaModelTest, MatchesTransformersOnTheParityFixture) {
  const std::string dir = std::string(FGNET_TEST_DATA_DIR) + "/parity/mqa_bf16_v4";
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.error().message();
  auto model = CreateModel(ckpt->config(), ckpt->weights(), Device::Cuda(0));
  ASSERT_TRUE(model.ok()) << model.error().message();
  Backend gpu(std::move(*model), 16, 256);
  gpu.NewSequence();
  const std::int64_t vocab = ckpt->config().vocab_size;
  auto prompt_json = ReadJsonFile(dir + "/prompt.json");
  auto greedy_json = ReadJsonFile(dir + "/greedy.json");
  ASSERT_TRUE(prompt_json.ok() && greedy_json.ok());
  const auto prompt = prompt_json->at("input_ids").get<std::vector<std::int32_t>>();
  const auto generated = greedy_json->at("generated_ids").get<std::vector<std::int32_t>>();
  auto want = ReadNpy(dir + "/logits.npy");
  ASSERT_TRUE(want.ok()) << want.error().message();
  auto floats = want->AsFloat32();
  ASSERT_TRUE(floats.ok()) << floats.error().message();
  const std::vector<float>& want_logits = *floats;
  ASSERT_EQ(want_logits.size(), prompt.size() * static_cast<std::size_t>(vocab));
  const std::vector<std::vector<AdapterUse>> none(1);
  const auto got = gpu.Step({prompt}, none, LogitsMode::kAll);
  const float diff = MaxRelativeDifference(want_logits, got[0]);
  std::printf("transformers vs cuda: max |difference| / max |logit| = %.3g\n", diff);
  EXPECT_LT(diff, kLogitTolerance);
  std::int32_t next = Argmax(got[0], (prompt.size() - 1) * static_cast<std::size_t>(vocab),
                             static_cast<std::size_t>(vocab));
  for (std::size_t t = 0; t < generated.size(); ++t) {
    ASSERT_EQ(next, generated[t]) << "token " << t;
    next = Argmax(gpu.Step({{next}}, none)[0]);
  }
}

// A kTop result (top-k 40 at temperature 0.8) against the top of the row it was selected from.
void ExpectTopOfRow(const std::vector<TopLogit>& top, const std::vector<float>& row, int step) {
  std::vector<TopLogit> want;
  SelectTopLogits(row, &want);
  ASSERT_TRUE(TopIsComplete(want, 40, 0.8f));
  ASSERT_EQ(top.size(), want.size()) << "step " << step;
  for (std::size_t k = 0; k < want.size(); ++k) {
    EXPECT_EQ(top[k].id, want[k].id) << "step " << step << " rank " << k;
    EXPECT_EQ(top[k].logit, want[k].logit) << "step " << step << " rank " << k;
  }
}

// Greedy (LogitsMode::kArgmax) and top-k (kTop) steps select on the GPU, every other step under a
// LogitsFilter (a grammar's bitset, a repetition penalty): exactly what the host makes of the
// logits of an identical row (a forked sequence fed the same token in the same pass).
TEST_F(CudaModelTest, SelectionOnTheGpuIsTheHostsSelectionOfTheRow) {
  const Gemma3Config config = SmallConfig(4, 1, 32);
  const testing::RandomCheckpoint ckpt(config, DType::kBF16, 17);
  auto [cpu, gpu] = Both(ckpt);
  gpu->NewSequence();
  const std::vector<std::vector<AdapterUse>> one(1);
  gpu->Step({testing::RandomTokens(9, config.vocab_size, 5)}, one);
  for (int k = 0; k < 2; ++k)
    gpu->seqs.push_back(std::make_unique<kv::PagedSequence>(gpu->seqs[0]->Fork()));
  std::mt19937_64 rng(3);
  std::vector<std::uint64_t> allowed(LogitsFilterWords(config.vocab_size));
  std::vector<std::int32_t> seen;
  for (int t = 0; t < 8; ++t) {  // several steps: the later ones replay graphs
    for (std::uint64_t& w : allowed) w = rng() | rng();  // three quarters of the tokens
    seen.push_back(
        static_cast<std::int32_t>(rng() % static_cast<std::uint64_t>(config.vocab_size)));
    LogitsFilter filter;
    if (t % 2 == 1) {
      filter.allowed = allowed;
      filter.penalized = seen;
      filter.repetition_penalty = 1.5f;
    }
    const std::vector<std::int32_t> token = {static_cast<std::int32_t>(5 + t)};
    std::vector<float> full, fallback;
    std::vector<TopLogit> top;
    std::int32_t unused = -1, greedy = -1;
    for (auto& seq : gpu->seqs) ASSERT_TRUE(seq->Reserve(1));
    SequenceStep steps[3] = {{token, gpu->seqs[0].get(), LogitsMode::kLast, &full, {}, &unused},
                             {token, gpu->seqs[1].get(), LogitsMode::kArgmax, nullptr, {}, &greedy},
                             {token, gpu->seqs[2].get(), LogitsMode::kTop, &fallback, {}, &unused}};
    steps[1].filter = filter;
    steps[2].filter = filter;
    steps[2].top = &top;
    steps[2].top_k = 40;
    steps[2].top_temperature = 0.8f;
    const Status s = gpu->model->ForwardBatch(steps, gpu->threads, gpu->scratch);
    ASSERT_TRUE(s.ok()) << s.error().message();
    ApplyLogitsFilter(full, filter);
    EXPECT_EQ(greedy, Argmax(full)) << "step " << t;
    ExpectTopOfRow(top, full, t);
  }
  (void)cpu;
}

TEST_F(CudaModelTest, ErrorsLeaveTheCacheUnchanged) {
  const Gemma3Config config = SmallConfig(4, 1, 32);
  const testing::RandomCheckpoint ckpt(config, DType::kBF16, 9);
  auto [cpu, gpu] = Both(ckpt);
  kv::PagedSequence& seq = gpu->NewSequence();
  ASSERT_TRUE(seq.Reserve(2));
  const std::vector<std::int32_t> bad = {1, 100000};
  std::vector<float> logits;
  const SequenceStep step{bad, &seq, LogitsMode::kLast, &logits, {}};
  const Status s =
      gpu->model->ForwardBatch(std::span<const SequenceStep>(&step, 1), gpu->threads, gpu->scratch);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message(), "Forward: token id 100000 at index 1 is out of range [0, 211)");
  EXPECT_EQ(seq.length(), 0);
  // A CPU-memory sequence is refused by the GPU model.
  kv::PagedSequence& host_seq = cpu->NewSequence();
  ASSERT_TRUE(host_seq.Reserve(1));
  const std::vector<std::int32_t> one = {1};
  const SequenceStep host_step{one, &host_seq, LogitsMode::kLast, &logits, {}};
  const Status h = gpu->model->ForwardBatch(std::span<const SequenceStep>(&host_step, 1),
                                            gpu->threads, gpu->scratch);
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.error().message(),
            "Forward: the KV cache is in cpu memory but the model runs on cuda:0");
}

}  // namespace
}  // namespace fgnet
