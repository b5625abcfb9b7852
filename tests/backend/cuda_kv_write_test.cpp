// The CUDA kernels that prepare a pass's keys and values (backend/cuda/attention.h, kv_write.cu)
// against the CPU references: q/k norm + RoPE against reference::RMSNorm / cpu::RopeTable /
// reference::RoPE, and the KV write against a host copy of the blocks, on random inputs with
// NaN-poisoned outputs and NaN in every KV float a kernel must not touch. QKNormRopeWriteKV is
// compared bit for bit with QKNormRope then WriteKV; blocks of bf16 keys and values hold the f32
// results rounded to nearest even. Skipped where no CUDA device is present (CI); run on a GPU
// machine.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "backend/cpu/ops.h"
#include "backend/cpu/reference.h"
#include "backend/cuda/attention.h"
#include "backend/cuda/device.h"
#include "cuda_attention_support.h"
#include "cuda_paged_case.h"
#include "tensor/dtype.h"

namespace fgnet::cuda {
namespace {

void ExpectNear(const std::vector<float>& got, const std::vector<float>& want, float rel) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], rel * (1.0f + std::fabs(want[i]))) << "at " << i;
  }
}

class CudaKVWriteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  }
  std::mt19937 rng_{4321};
};

// ----------------------------------------------------------------------------------------------
// QKNormRope

TEST_F(CudaKVWriteTest, QKNormRopeMatchesTheReference) {
  struct Case {
    int heads, kv_heads, head_dim;
    double theta;
  };
  for (const Case& c : {Case{4, 1, 256, 1e6}, Case{3, 2, 64, 1e4}, Case{8, 8, 32, 1e4}}) {
    SCOPED_TRACE(testing::Message() << c.heads << "/" << c.kv_heads << "/" << c.head_dim);
    const std::vector<std::int32_t> pos = {0, 1, 17, 511, 4095, 30000};
    const int rows = static_cast<int>(pos.size());
    const std::size_t D = static_cast<std::size_t>(c.head_dim);
    std::vector<float> q = Random(rng_, rows * c.heads * D, 2.0f);
    std::vector<float> k = Random(rng_, rows * c.kv_heads * D, 0.5f);
    const std::vector<float> q_scale = Random(rng_, D);
    const std::vector<float> k_scale = Random(rng_, D);
    std::vector<float> inv_freq(D / 2);
    cpu::RopeInvFreq(c.theta, 1.0, D, inv_freq.data());
    const float eps = 1e-6f;

    DeviceBuffer<float> d_q = Upload(q), d_k = Upload(k), d_qs = Upload(q_scale),
                        d_ks = Upload(k_scale), d_inv = Upload(inv_freq);
    DeviceBuffer<std::int32_t> d_pos = Upload(pos);
    ASSERT_TRUE(QKNormRope(d_q.data(), d_k.data(), rows, c.heads, c.kv_heads, c.head_dim,
                           d_qs.data(), d_ks.data(), eps, d_inv.data(), d_pos.data())
                    .ok());
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

    cpu::reference::RMSNorm(q.data(), rows * c.heads, D, q_scale.data(), eps, q.data());
    cpu::reference::RMSNorm(k.data(), rows * c.kv_heads, D, k_scale.data(), eps, k.data());
    std::vector<float> cos(D / 2), sin(D / 2);
    for (int r = 0; r < rows; ++r) {
      cpu::RopeTable(inv_freq.data(), D / 2, pos[r], 1, cos.data(), sin.data());
      cpu::reference::RoPE(q.data() + r * c.heads * D, 1, c.heads, D, cos.data(), sin.data());
      cpu::reference::RoPE(k.data() + r * c.kv_heads * D, 1, c.kv_heads, D, cos.data(), sin.data());
    }
    ExpectNear(Download(d_q), q, 1e-5f);
    ExpectNear(Download(d_k), k, 1e-5f);
  }
}

// ----------------------------------------------------------------------------------------------
// WriteKV

TEST_F(CudaKVWriteTest, WriteKVStoresEachRowInItsBlockOnly) {
  PagedCase c;
  c.kv_heads = 2;
  c.head_dim = 64;
  c.group_layers = 3;
  c.slot = 2;
  c.AddRows(0, 5, 1);
  c.AddRows(1, 30, 20);
  c.AddRows(2, 0, 3);
  HostPool pool = BuildPool(c, rng_);
  std::fill(pool.memory.begin(), pool.memory.end(), std::nanf(""));
  const std::vector<float> k = Random(rng_, c.rows() * c.row());
  const std::vector<float> v = Random(rng_, c.rows() * c.row());
  DeviceBuffer<float> memory = Upload(pool.memory), d_k = Upload(k), d_v = Upload(v);
  DeviceBuffer<std::int32_t> d_seq = Upload(c.row_seq), d_pos = Upload(c.row_pos),
                             d_seq_table = Upload(pool.seq_table), d_tables = Upload(pool.tables);
  const PassRows pass{.rows = c.rows(),
                      .row_seq = d_seq.data(),
                      .row_pos = d_pos.data(),
                      .seq_table = d_seq_table.data(),
                      .tables = d_tables.data(),
                      .num_seqs = c.num_seqs,
                      .max_pos = pool.max_pos};
  const PagedLayer layer{.memory = memory.data(),
                         .block_elements = c.block_elements(),
                         .block_size = c.block_size,
                         .slot = c.slot,
                         .row = c.row()};
  ASSERT_TRUE(WriteKV(d_k.data(), d_v.data(), pass, layer).ok());
  for (int r = 0; r < c.rows(); ++r) {
    float* key = pool.memory.data() + KeyAt(c, pool, r);
    std::copy(k.begin() + r * c.row(), k.begin() + (r + 1) * c.row(), key);
    std::copy(v.begin() + r * c.row(), v.begin() + (r + 1) * c.row(), key + c.block_elements() / 2);
  }
  const std::vector<float> got = Download(memory);
  ASSERT_EQ(got.size(), pool.memory.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(pool.memory[i])) {
      ASSERT_TRUE(std::isnan(got[i])) << "written outside the rows' places at " << i;
    } else {
      ASSERT_EQ(got[i], pool.memory[i]) << "at " << i;
    }
  }
}

// The KV-write kernels on a case's random inputs (q, k, v, norm factors, RoPE frequencies),
// uploaded with the pass's rows and block tables.
class KVWriteInputs {
 public:
  KVWriteInputs(const PagedCase& c, const HostPool& pool, std::mt19937& rng)
      : c_(c),
        q_(Random(rng, c.rows() * c.heads * static_cast<std::size_t>(c.head_dim), 2.0f)),
        k_(Random(rng, c.rows() * c.row(), 0.5f)),
        v_(Random(rng, c.rows() * c.row())),
        d_v_(Upload(v_)),
        d_qs_(Upload(Random(rng, static_cast<std::size_t>(c.head_dim)))),
        d_ks_(Upload(Random(rng, static_cast<std::size_t>(c.head_dim)))),
        d_seq_(Upload(c.row_seq)),
        d_pos_(Upload(c.row_pos)),
        d_seq_table_(Upload(pool.seq_table)),
        d_tables_(Upload(pool.tables)),
        pass_{.rows = c.rows(),
              .row_seq = d_seq_.data(),
              .row_pos = d_pos_.data(),
              .seq_table = d_seq_table_.data(),
              .tables = d_tables_.data(),
              .num_seqs = c.num_seqs,
              .max_pos = pool.max_pos} {
    std::vector<float> inv_freq(static_cast<std::size_t>(c.head_dim) / 2);
    cpu::RopeInvFreq(1e6, 1.0, static_cast<std::size_t>(c.head_dim), inv_freq.data());
    d_inv_ = Upload(inv_freq);
  }

  const std::vector<float>& k() const { return k_; }
  const std::vector<float>& v() const { return v_; }

  // QKNormRope then WriteKV into `two_calls`, and QKNormRopeWriteKV into `fused` (the blocks of
  // `layer`'s shape and type): q and k after each, {q two calls, k two calls, q fused, k fused}.
  // With `planes`, QKNormRopeWriteKV splits the rows' keys and values there too.
  std::array<std::vector<float>, 4> Both(PagedLayer layer, void* two_calls, void* fused,
                                         std::uint16_t* planes = nullptr) {
    DeviceBuffer<float> q1 = Upload(q_), k1 = Upload(k_), q2 = Upload(q_), k2 = Upload(k_);
    layer.memory = two_calls;
    EXPECT_TRUE(QKNormRope(q1.data(), k1.data(), c_.rows(), c_.heads, c_.kv_heads, c_.head_dim,
                           d_qs_.data(), d_ks_.data(), 1e-6f, d_inv_.data(), d_pos_.data())
                    .ok());
    EXPECT_TRUE(WriteKV(k1.data(), d_v_.data(), pass_, layer).ok());
    layer.memory = fused;
    const Status s = QKNormRopeWriteKV(q2.data(), k2.data(), d_v_.data(), pass_, layer, c_.heads,
                                       c_.kv_heads, c_.head_dim, d_qs_.data(), d_ks_.data(), 1e-6f,
                                       d_inv_.data(), nullptr, planes);
    EXPECT_TRUE(s.ok()) << s.error().message();
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    return {Download(q1), Download(k1), Download(q2), Download(k2)};
  }

 private:
  const PagedCase& c_;
  std::vector<float> q_, k_, v_;
  DeviceBuffer<float> d_v_, d_qs_, d_ks_, d_inv_;
  DeviceBuffer<std::int32_t> d_seq_, d_pos_, d_seq_table_, d_tables_;
  PassRows pass_;
};

// QKNormRopeWriteKV equals QKNormRope then WriteKV bit for bit: q, k and every float of the blocks.
TEST_F(CudaKVWriteTest, QKNormRopeWriteKVEqualsTheTwoCalls) {
  auto same_bits = [](const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](float x, float y) {
             return std::memcmp(&x, &y, sizeof(float)) == 0;
           });
  };
  for (const HeadShape& h : {HeadShape{4, 1, 256}, HeadShape{6, 2, 96}, HeadShape{4, 4, 32}}) {
    SCOPED_TRACE(testing::Message() << h.heads << "/" << h.kv_heads << "/" << h.head_dim);
    PagedCase c;
    c.heads = h.heads;
    c.kv_heads = h.kv_heads;
    c.head_dim = h.head_dim;
    c.group_layers = 3;
    c.slot = 1;
    c.AddRows(0, 4095, 1);
    c.AddRows(1, 30, 20);
    c.AddRows(2, 0, 3);
    c.AddRows(3, 517, 1);
    HostPool pool = BuildPool(c, rng_);
    std::fill(pool.memory.begin(), pool.memory.end(), std::nanf(""));
    KVWriteInputs in(c, pool, rng_);
    DeviceBuffer<float> mem1 = Upload(pool.memory), mem2 = Upload(pool.memory);
    const PagedLayer layer{.block_elements = c.block_elements(),
                           .block_size = c.block_size,
                           .slot = c.slot,
                           .row = c.row()};
    // The rows' positions are distinct: each has its own planes.
    const std::size_t one = 4 * static_cast<std::size_t>(c.row());  // a position's planes
    DeviceBuffer<std::uint16_t> planes =
        Upload(std::vector<std::uint16_t>((pool.max_pos + 1) * one, 0x7fc1));
    const auto [q1, k1, got_q, got_k] = in.Both(layer, mem1.data(), mem2.data(), planes.data());
    EXPECT_TRUE(same_bits(got_q, q1));
    EXPECT_TRUE(same_bits(got_k, k1));
    EXPECT_TRUE(same_bits(Download(mem2), Download(mem1)));
    // And it did the work: k differs from its input, and its rows are in the blocks.
    EXPECT_FALSE(same_bits(got_k, in.k()));
    const std::vector<float> mem = Download(mem2);
    const float* key = mem.data() + KeyAt(c, pool, 0);
    EXPECT_TRUE(same_bits(std::vector<float>(key, key + c.row()),
                          std::vector<float>(got_k.begin(), got_k.begin() + c.row())));
    EXPECT_TRUE(same_bits(
        std::vector<float>(key + c.block_elements() / 2, key + c.block_elements() / 2 + c.row()),
        std::vector<float>(in.v().begin(), in.v().begin() + c.row())));
    // The planes: each row's key and value as in the blocks, split (k hi, v hi, k lo, v lo a kv
    // head), at its position.
    const std::vector<std::uint16_t> split = Download(planes);
    const auto d = static_cast<std::size_t>(c.head_dim);
    for (int r = 0; r < c.rows(); ++r) {
      const float* kr = mem.data() + KeyAt(c, pool, r);
      for (int kvh = 0; kvh < c.kv_heads; ++kvh) {
        const std::uint16_t* at = split.data() + c.row_pos[r] * one + kvh * 4 * d;
        for (std::size_t i = 0; i < d; ++i) {
          for (int half = 0; half < 2; ++half) {
            const float x = kr[half * (c.block_elements() / 2) + kvh * d + i];
            const std::uint16_t hi = F32ToBF16(x);
            ASSERT_EQ(at[half * d + i], hi) << "row " << r << " kv head " << kvh << " dim " << i;
            ASSERT_EQ(at[(2 + half) * d + i], F32ToBF16(x - BF16ToF32(hi)))
                << "row " << r << " kv head " << kvh << " dim " << i;
          }
        }
      }
    }
  }
}

// Into bf16 blocks, QKNormRopeWriteKV and QKNormRope + WriteKV store the same bits: each row's
// normalised, rotated key and its value rounded to nearest even, and nothing else.
TEST_F(CudaKVWriteTest, Bf16BlocksHoldTheRoundedKeysAndValues) {
  PagedCase c;
  c.heads = 6;
  c.kv_heads = 2;
  c.head_dim = 96;
  c.group_layers = 3;
  c.slot = 2;
  c.AddRows(0, 4095, 1);
  c.AddRows(1, 30, 20);
  c.AddRows(2, 0, 3);
  const HostPool pool = BuildPool(c, rng_);
  KVWriteInputs in(c, pool, rng_);
  constexpr std::uint16_t kNaN = 0x7fc0;
  const std::vector<std::uint16_t> blank(pool.memory.size(), kNaN);
  DeviceBuffer<std::uint16_t> mem1 = Upload(blank), mem2 = Upload(blank);
  const PagedLayer layer{.dtype = DType::kBF16,
                         .block_elements = c.block_elements(),
                         .block_size = c.block_size,
                         .slot = c.slot,
                         .row = c.row()};
  const auto [q1, k1, q2, got_k] = in.Both(layer, mem1.data(), mem2.data());
  std::vector<std::uint16_t> want = blank;
  for (int r = 0; r < c.rows(); ++r) {
    const std::int64_t at = KeyAt(c, pool, r);
    for (std::int64_t i = 0; i < c.row(); ++i) {
      want[at + i] = F32ToBF16(got_k[r * c.row() + i]);
      want[at + c.block_elements() / 2 + i] = F32ToBF16(in.v()[r * c.row() + i]);
    }
  }
  for (const DeviceBuffer<std::uint16_t>* mem : {&mem1, &mem2}) {
    auto got = mem->ToHost();
    ASSERT_TRUE(got.ok());
    ASSERT_EQ(got->size(), want.size());
    for (std::size_t i = 0; i < want.size(); ++i) ASSERT_EQ((*got)[i], want[i]) << "at " << i;
  }
  EXPECT_EQ(q2, q1);
  EXPECT_EQ(got_k, k1);
}

}  // namespace
}  // namespace fgnet::cuda
