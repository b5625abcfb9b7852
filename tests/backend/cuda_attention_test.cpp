// The CUDA attention kernels (backend/cuda/attention.h) against the CPU references: q/k norm +
// RoPE against reference::RMSNorm / cpu::RopeTable / reference::RoPE, the KV write against a host
// copy of the blocks, and paged attention against reference::Attention over the same blocks, on
// random inputs with NaN-poisoned outputs and NaN in every KV float a kernel must not use.
// Skipped where no CUDA device is present (CI); run on a GPU machine.
//
// QKNormRopeWriteKV is compared bit for bit with QKNormRope then WriteKV. Blocks of bf16 keys and
// values hold the f32 results rounded to nearest even, and attention over them equals the
// reference over the rounded values.
// The perf mode (FGNET_CUDA_PERF=1) is in cuda_attention_perf_test.cpp.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/ops.h"
#include "backend/cpu/reference.h"
#include "backend/cuda/attention.h"
#include "backend/cuda/device.h"
#include "cuda_attention_support.h"
#include "tensor/dtype.h"

namespace fgnet::cuda {
namespace {

void ExpectNear(const std::vector<float>& got, const std::vector<float>& want, float rel) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], rel * (1.0f + std::fabs(want[i]))) << "at " << i;
  }
}

// Non-fatal: reports how many elements differ and the worst one (row, head, dim).
void ExpectClose(const std::vector<float>& got, const std::vector<float>& want, float rel,
                 std::size_t head_dim, std::size_t heads) {
  ASSERT_EQ(got.size(), want.size());
  std::size_t bad = 0, worst = 0;
  float worst_excess = -1.0f;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const float tol = rel * (1.0f + std::fabs(want[i]));
    const float err = std::fabs(got[i] - want[i]);
    const float excess = std::isnan(err) ? INFINITY : err - tol;
    if (excess > 0.0f) ++bad;
    if (excess > worst_excess) {
      worst_excess = excess;
      worst = i;
    }
  }
  EXPECT_EQ(bad, 0u) << bad << " of " << got.size() << " differ; worst at row "
                     << worst / (head_dim * heads) << " head " << worst / head_dim % heads
                     << " dim " << worst % head_dim << ": got " << got[worst] << ", want "
                     << want[worst];
}

class CudaAttentionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  }
  std::mt19937 rng_{4321};
};

// ----------------------------------------------------------------------------------------------
// QKNormRope

TEST_F(CudaAttentionTest, QKNormRopeMatchesTheReference) {
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
// Paged KV on the host: blocks of a pool in shuffled order, NaN everywhere except the key and
// value rows of the tested layer slot at the positions each sequence holds.

struct PagedCase {
  int heads = 4;
  int kv_heads = 1;
  int head_dim = 256;
  int window = 0;
  float softcap = 0.0f;
  int block_size = 16;
  int group_layers = 2;
  int slot = 1;
  std::vector<std::int32_t> row_seq;
  std::vector<std::int32_t> row_pos;
  int num_seqs = 0;

  // Appends rows at positions first .. first + n - 1 of sequence seq.
  void AddRows(int seq, int first, int n) {
    for (int i = 0; i < n; ++i) {
      row_seq.push_back(seq);
      row_pos.push_back(first + i);
    }
    num_seqs = std::max(num_seqs, seq + 1);
  }
  int rows() const { return static_cast<int>(row_seq.size()); }
  std::int64_t row() const { return std::int64_t{kv_heads} * head_dim; }
  std::int64_t block_elements() const {
    return 2 * std::int64_t{group_layers} * block_size * row();
  }
  float scale() const { return 2.0f / std::sqrt(static_cast<float>(head_dim)); }
};

struct HostPool {
  std::vector<float> memory;
  std::vector<std::int32_t> seq_table;
  std::vector<std::int32_t> tables;
  std::int32_t max_pos = 0;
};

// Sequence s holds positions 0 .. its largest row position; with a window, blocks before every
// row's window are not held (-1).
HostPool BuildPool(const PagedCase& c, std::mt19937& rng) {
  HostPool pool;
  std::vector<int> length(c.num_seqs, 0), lo(c.num_seqs, 1 << 30);
  for (int r = 0; r < c.rows(); ++r) {
    const int s = c.row_seq[r];
    length[s] = std::max(length[s], c.row_pos[r] + 1);
    lo[s] = std::min(lo[s], VisibleFrom(c.row_pos[r], c.window));
    pool.max_pos = std::max(pool.max_pos, c.row_pos[r]);
  }
  struct Held {
    int seq, index;
  };
  std::vector<Held> held;
  for (int s = 0; s < c.num_seqs; ++s) {
    pool.seq_table.push_back(static_cast<std::int32_t>(pool.tables.size()));
    const int blocks = (length[s] + c.block_size - 1) / c.block_size;
    for (int j = 0; j < blocks; ++j) {
      const bool outside = c.window > 0 && (j + 1) * c.block_size - 1 < lo[s];
      pool.tables.push_back(outside ? -1 : static_cast<std::int32_t>(held.size()));
      if (!outside) held.push_back({s, j});
    }
  }
  // Shuffle the block ids (3 spare blocks stay NaN).
  std::vector<std::int32_t> ids(held.size() + 3);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  for (std::int32_t& t : pool.tables) {
    if (t >= 0) t = ids[static_cast<std::size_t>(t)];
  }
  pool.memory.assign(ids.size() * static_cast<std::size_t>(c.block_elements()), std::nanf(""));
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (int s = 0; s < c.num_seqs; ++s) {
    const int blocks = (length[s] + c.block_size - 1) / c.block_size;
    for (int j = 0; j < blocks; ++j) {
      const std::int32_t b = pool.tables[pool.seq_table[s] + j];
      if (b < 0) continue;
      for (int o = 0; o < c.block_size && j * c.block_size + o < length[s]; ++o) {
        float* key = pool.memory.data() + b * c.block_elements() +
                     (std::int64_t{c.slot} * c.block_size + o) * c.row();
        for (std::int64_t i = 0; i < c.row(); ++i) {
          key[i] = d(rng);
          key[c.block_elements() / 2 + i] = d(rng);
        }
      }
    }
  }
  return pool;
}

// Offset in a pool's memory of row r's key (its value is block_elements / 2 further).
std::int64_t KeyAt(const PagedCase& c, const HostPool& pool, int r) {
  const int p = c.row_pos[r];
  const std::int64_t b = pool.tables[pool.seq_table[c.row_seq[r]] + p / c.block_size];
  return b * c.block_elements() +
         (std::int64_t{c.slot} * c.block_size + p % c.block_size) * c.row();
}

// Rounds the pool's keys and values to bf16 (NaN stays NaN); returns their bf16 bits.
std::vector<std::uint16_t> RoundToBF16(HostPool* pool) {
  std::vector<std::uint16_t> bits(pool->memory.size());
  for (std::size_t i = 0; i < bits.size(); ++i) {
    bits[i] = F32ToBF16(pool->memory[i]);
    pool->memory[i] = BF16ToF32(bits[i]);
  }
  return bits;
}

cpu::AttentionParams Params(const PagedCase& c) {
  return {.heads = static_cast<std::size_t>(c.heads),
          .kv_heads = static_cast<std::size_t>(c.kv_heads),
          .head_dim = static_cast<std::size_t>(c.head_dim),
          .scale = c.scale(),
          .softcap = c.softcap,
          .window = c.window};
}

AttentionShape Shape(const PagedCase& c) {
  return {.heads = c.heads,
          .kv_heads = c.kv_heads,
          .head_dim = c.head_dim,
          .scale = c.scale(),
          .softcap = c.softcap,
          .window = c.window};
}

std::vector<float> ReferenceAttention(const PagedCase& c, const HostPool& pool,
                                      const std::vector<float>& q) {
  const std::size_t q_dim = static_cast<std::size_t>(c.heads) * c.head_dim;
  std::vector<float> out(q.size());
  for (int r = 0; r < c.rows(); ++r) {
    const int pos = c.row_pos[r];
    std::vector<cpu::KVSpan> spans;
    for (int p = VisibleFrom(pos, c.window); p <= pos;) {
      const int o = p % c.block_size;
      const std::int32_t b = pool.tables[pool.seq_table[c.row_seq[r]] + p / c.block_size];
      const int count = std::min(c.block_size - o, pos - p + 1);
      const float* key = pool.memory.data() + b * c.block_elements() +
                         (std::int64_t{c.slot} * c.block_size + o) * c.row();
      spans.push_back({.keys = key,
                       .values = key + c.block_elements() / 2,
                       .stride = static_cast<std::size_t>(c.row()),
                       .first_pos = p,
                       .count = static_cast<std::size_t>(count)});
      p += count;
    }
    cpu::reference::Attention(q.data() + r * q_dim, 1, pos, spans, Params(c),
                              out.data() + r * q_dim);
  }
  return out;
}

// Uploads the pool (as f32, or as bf16 when `kv` says so: the pool's values must then be bf16
// values, see RoundToBF16) and runs PagedAttention on rows [first, first + n) of the case.
class DevicePass {
 public:
  DevicePass(const PagedCase& c, HostPool pool, DType kv = DType::kF32)
      : c_(c), kv_(kv), seq_table_(Upload(pool.seq_table)), tables_(Upload(pool.tables)) {
    if (kv == DType::kBF16) {
      bf16_ = Upload(RoundToBF16(&pool));
    } else {
      memory_ = Upload(pool.memory);
    }
  }

  // max_pos < 0: the rows' largest position; else a larger bound (as a pass rounded up for graph
  // reuse gives), whose slices beyond a row's position are empty. Runs twice, the second time
  // with the output's terms, and checks that they are the output's split.
  std::vector<float> Run(const std::vector<float>& q, int first, int n, int max_pos = -1) {
    const std::size_t size = static_cast<std::size_t>(n) * c_.heads * c_.head_dim;
    const std::vector<float> got = Call(q, first, n, max_pos);
    DeviceBuffer<std::uint16_t> terms = Upload(std::vector<std::uint16_t>(2 * size, 0x7fc1));
    EXPECT_EQ(Call(q, first, n, max_pos, {.out_terms = terms.data()}), got);
    const std::vector<std::uint16_t> split = Download(terms);
    for (std::size_t i = 0; i < got.size(); ++i) {
      const std::uint16_t hi = F32ToBF16(got[i]);
      const std::uint16_t lo = F32ToBF16(got[i] - BF16ToF32(hi));
      if (split[i] != hi || split[got.size() + i] != lo) {
        ADD_FAILURE() << "terms at " << i << " of " << got[i] << ": " << split[i] << ", "
                      << split[got.size() + i] << " instead of " << hi << ", " << lo;
        break;
      }
    }
    return got;
  }

  // PagedAttention on rows [first, first + n) (max_pos as Run's). The workspace is poisoned,
  // except that with `row_planes` the split planes (PagedAttentionPlanes) of the rows' positions
  // hold them: for each row in order and kv head, k hi, v hi, k lo, v lo of head_dim each.
  std::vector<float> Call(const std::vector<float>& q, int first, int n, int max_pos,
                          const AttentionExtras& extras = {},
                          const std::vector<std::uint16_t>& row_planes = {}) {
    const std::size_t q_dim = static_cast<std::size_t>(c_.heads) * c_.head_dim;
    const std::vector<std::int32_t> seq(c_.row_seq.begin() + first, c_.row_seq.begin() + first + n);
    const std::vector<std::int32_t> pos(c_.row_pos.begin() + first, c_.row_pos.begin() + first + n);
    DeviceBuffer<std::int32_t> d_seq = Upload(seq), d_pos = Upload(pos);
    DeviceBuffer<float> d_q =
        Upload(std::vector<float>(q.begin() + first * q_dim, q.begin() + (first + n) * q_dim));
    PassRows pass{.rows = n,
                  .row_seq = d_seq.data(),
                  .row_pos = d_pos.data(),
                  .seq_table = seq_table_.data(),
                  .tables = tables_.data(),
                  .num_seqs = c_.num_seqs,
                  .max_pos = std::max(max_pos, *std::max_element(pos.begin(), pos.end()))};
    const PagedLayer layer{.memory = kv_ == DType::kBF16 ? static_cast<void*>(bf16_.data())
                                                         : static_cast<void*>(memory_.data()),
                           .dtype = kv_,
                           .block_elements = c_.block_elements(),
                           .block_size = c_.block_size,
                           .slot = c_.slot,
                           .row = c_.row()};
    DeviceBuffer<float> ws = Poisoned(PagedAttentionWorkspace(pass, Shape(c_)));
    if (!row_planes.empty()) {
      const std::uint16_t* at = PagedAttentionPlanes(pass, layer, Shape(c_), ws.data());
      EXPECT_NE(at, nullptr);
      if (at == nullptr) return {};
      const std::size_t one = 4 * static_cast<std::size_t>(c_.row());  // a position's planes
      for (int r = 0; r < n; ++r) {
        EXPECT_EQ(
            cudaMemcpy(const_cast<std::uint16_t*>(at) + pos[r] * one, row_planes.data() + r * one,
                       one * sizeof(std::uint16_t), cudaMemcpyHostToDevice),
            cudaSuccess);
      }
    }
    DeviceBuffer<float> out = Poisoned(n * q_dim);
    const Status s =
        PagedAttention(d_q.data(), pass, layer, Shape(c_), out.data(), ws.data(), nullptr, extras);
    EXPECT_TRUE(s.ok()) << s.error().message();
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    return Download(out);
  }

 private:
  const PagedCase& c_;
  DType kv_;
  DeviceBuffer<float> memory_;
  DeviceBuffer<std::uint16_t> bf16_;
  DeviceBuffer<std::int32_t> seq_table_;
  DeviceBuffer<std::int32_t> tables_;
};

struct HeadShape {
  int heads, kv_heads, head_dim;
};
constexpr HeadShape kShapes[] = {{4, 1, 256}, {4, 2, 64}, {4, 4, 32},
                                 {4, 1, 128}, {6, 2, 96}, {8, 1, 64}};

// A case of heads `h` and `window`, without rows yet.
PagedCase CaseOf(const HeadShape& h, int window) {
  PagedCase c;
  c.heads = h.heads;
  c.kv_heads = h.kv_heads;
  c.head_dim = h.head_dim;
  c.window = window;
  return c;
}

// What a trace names of a case's heads and window.
std::string Describe(const HeadShape& h, int window) {
  return "heads " + std::to_string(h.heads) + " kv_heads " + std::to_string(h.kv_heads) +
         " head_dim " + std::to_string(h.head_dim) + " window " + std::to_string(window);
}

// Decode rows of several sequences and prefill chunks in one pass: every regime (tiles of one
// sequence, rows of mixed tiles, one and several slices per row).
PagedCase MixedCase(const HeadShape& h, int window, float softcap) {
  PagedCase c = CaseOf(h, window);
  c.softcap = softcap;
  c.AddRows(0, 700, 1);
  c.AddRows(1, 150, 70);
  c.AddRows(2, 3, 1);
  c.AddRows(3, 1500, 1);
  c.AddRows(4, 0, 37);  // a prompt from its first position
  c.AddRows(5, 64, 1);
  return c;
}

TEST_F(CudaAttentionTest, PagedAttentionMatchesTheReference) {
  for (const HeadShape& h : kShapes) {
    for (int window : {0, 40}) {
      for (float softcap : {0.0f, 5.0f}) {
        SCOPED_TRACE(testing::Message() << Describe(h, window) << " softcap " << softcap);
        const PagedCase c = MixedCase(h, window, softcap);
        const HostPool pool = BuildPool(c, rng_);
        const std::vector<float> q =
            Random(rng_, static_cast<std::size_t>(c.rows()) * c.heads * c.head_dim);
        const std::vector<float> want = ReferenceAttention(c, pool, q);
        DevicePass pass(c, pool);
        // The whole pass, then its decode rows alone (more slices per row).
        const std::size_t hd = static_cast<std::size_t>(c.head_dim);
        const std::size_t nh = static_cast<std::size_t>(c.heads);
        ExpectClose(pass.Run(q, 0, c.rows()), want, 1e-4f, hd, nh);
        const std::size_t q_dim = static_cast<std::size_t>(c.heads) * c.head_dim;
        for (int r : {0, 71, 72}) {
          SCOPED_TRACE(r);
          ExpectClose(pass.Run(q, r, 1),
                      std::vector<float>(want.begin() + r * q_dim, want.begin() + (r + 1) * q_dim),
                      1e-4f, hd, nh);
        }
      }
    }
  }
}

// The whole pass of case `c` (blocks of random keys and values, rounded to bf16 for bf16 blocks)
// against the reference over the same values.
void ExpectPassMatchesReference(const PagedCase& c, std::mt19937& rng, DType dtype = DType::kF32) {
  HostPool pool = BuildPool(c, rng);
  if (dtype == DType::kBF16) RoundToBF16(&pool);
  const std::vector<float> q =
      Random(rng, static_cast<std::size_t>(c.rows()) * c.heads * c.head_dim);
  DevicePass pass(c, pool, dtype);
  ExpectClose(pass.Run(q, 0, c.rows()), ReferenceAttention(c, pool, q), 1e-4f,
              static_cast<std::size_t>(c.head_dim), static_cast<std::size_t>(c.heads));
}

// Blocks of bf16 keys and values: every regime of both kernels reads them as the f32 values they
// stand for.
TEST_F(CudaAttentionTest, PagedAttentionOverBf16BlocksMatchesTheReference) {
  for (const HeadShape& h : {HeadShape{4, 1, 256}, HeadShape{6, 2, 96}, HeadShape{8, 1, 64}}) {
    for (int window : {0, 40}) {
      SCOPED_TRACE(Describe(h, window));
      const PagedCase c = MixedCase(h, window, 0.0f);
      HostPool pool = BuildPool(c, rng_);
      RoundToBF16(&pool);
      const std::vector<float> q =
          Random(rng_, static_cast<std::size_t>(c.rows()) * c.heads * c.head_dim);
      const std::vector<float> want = ReferenceAttention(c, pool, q);
      DevicePass pass(c, pool, DType::kBF16);
      const std::size_t hd = static_cast<std::size_t>(c.head_dim);
      const std::size_t nh = static_cast<std::size_t>(c.heads);
      ExpectClose(pass.Run(q, 0, c.rows()), want, 1e-4f, hd, nh);
      const std::size_t q_dim = nh * hd;
      for (int r : {0, 72}) {
        SCOPED_TRACE(r);
        ExpectClose(pass.Run(q, r, 1),
                    std::vector<float>(want.begin() + r * q_dim, want.begin() + (r + 1) * q_dim),
                    1e-4f, hd, nh);
      }
    }
  }
  PagedCase c;  // a long prompt: tiles cut into slices
  c.window = 300;
  c.AddRows(0, 0, 600);
  ExpectPassMatchesReference(c, rng_, DType::kBF16);
}

// A row's output does not depend on the other rows of its pass (nor on the kernel that the pass's
// composition selects): the pass at once equals every row alone.
TEST_F(CudaAttentionTest, PagedAttentionRowsAreIndependentOfTheirPass) {
  const PagedCase c = MixedCase({4, 1, 256}, 0, 0.0f);
  const HostPool pool = BuildPool(c, rng_);
  const std::vector<float> q =
      Random(rng_, static_cast<std::size_t>(c.rows()) * c.heads * c.head_dim);
  DevicePass pass(c, pool);
  const std::vector<float> all = pass.Run(q, 0, c.rows());
  const std::size_t q_dim = static_cast<std::size_t>(c.heads) * c.head_dim;
  for (int r = 0; r < c.rows(); ++r) {
    SCOPED_TRACE(r);
    ExpectClose(pass.Run(q, r, 1),
                std::vector<float>(all.begin() + r * q_dim, all.begin() + (r + 1) * q_dim), 3e-5f,
                static_cast<std::size_t>(c.head_dim), static_cast<std::size_t>(c.heads));
  }
}

// Long prompts of one sequence, from its first position and after a prefix: the tiles' key ranges
// are cut into slices, and their f32 keys are split once for all tiles.
TEST_F(CudaAttentionTest, LongPrefillMatchesTheReference) {
  for (const HeadShape& h : {HeadShape{4, 1, 256}, HeadShape{6, 2, 96}, HeadShape{8, 1, 64}}) {
    for (int window : {0, 300}) {
      for (int first : {0, 333}) {
        SCOPED_TRACE(Describe(h, window) + " first " + std::to_string(first));
        PagedCase c = CaseOf(h, window);
        c.AddRows(0, first, 600);
        ExpectPassMatchesReference(c, rng_);
      }
    }
  }
}

// With rows_split, a prompt's attention takes its rows' keys and values from the split planes
// that QKNormRopeWriteKV writes beside the blocks, and splits only the positions before them:
// planes holding other keys and values for the rows give the output of blocks that hold those.
TEST_F(CudaAttentionTest, SplitRowsAreTakenFromThePlanes) {
  for (const HeadShape& h : {HeadShape{4, 1, 256}, HeadShape{6, 2, 96}}) {
    for (int window : {0, 300}) {
      for (int first : {0, 333}) {
        SCOPED_TRACE(Describe(h, window) + " first " + std::to_string(first));
        PagedCase c = CaseOf(h, window);
        c.AddRows(0, first, 600);
        HostPool pool = BuildPool(c, rng_);
        const std::vector<float> q =
            Random(rng_, static_cast<std::size_t>(c.rows()) * c.heads * c.head_dim);
        // The rows' other keys and values, split as the planes hold them.
        HostPool other = pool;
        std::vector<std::uint16_t> planes;
        const auto d = static_cast<std::size_t>(c.head_dim);
        for (int r = 0; r < c.rows(); ++r) {
          float* key = other.memory.data() + KeyAt(c, pool, r);
          float* value = key + c.block_elements() / 2;
          for (std::int64_t i = 0; i < c.row(); ++i) {
            key[i] = 0.5f * key[i] + 0.25f;
            value[i] = -value[i];
          }
          for (int kvh = 0; kvh < c.kv_heads; ++kvh) {
            std::vector<std::uint16_t> one(4 * d);
            for (std::size_t i = 0; i < d; ++i) {
              for (int half = 0; half < 2; ++half) {  // 0: key, 1: value
                const float x = (half == 0 ? key : value)[kvh * d + i];
                const std::uint16_t hi = F32ToBF16(x);
                one[half * d + i] = hi;
                one[(2 + half) * d + i] = F32ToBF16(x - BF16ToF32(hi));
              }
            }
            planes.insert(planes.end(), one.begin(), one.end());
          }
        }
        const std::vector<float> want = DevicePass(c, other).Call(q, 0, c.rows(), -1);
        const std::vector<float> got =
            DevicePass(c, pool).Call(q, 0, c.rows(), -1, {.rows_split = true}, planes);
        EXPECT_EQ(got, want);
        EXPECT_NE(got, DevicePass(c, pool).Call(q, 0, c.rows(), -1));
      }
    }
  }
}

// A prompt's remainder after a cached prefix (16 rows of one sequence): little work goes to the
// split regime (a sliding layer, a short context), more to a tile.
TEST_F(CudaAttentionTest, PromptRemaindersMatchTheReference) {
  struct Remainder {
    int first, window;
  };
  for (const Remainder& r : {Remainder{600, 0}, Remainder{2048, 512}, Remainder{2048, 0}}) {
    SCOPED_TRACE(testing::Message() << "first " << r.first << " window " << r.window);
    PagedCase c;
    c.window = r.window;
    c.AddRows(0, r.first, 16);
    ExpectPassMatchesReference(c, rng_);
  }
}

// Decode passes of 1 to 64 rows (one per sequence) at contexts from a few keys to 4096, with the
// pass's max_pos as given and rounded up to a multiple of 256: every split of the keys (one slice,
// a few, many) and the merge of slices.
TEST_F(CudaAttentionTest, DecodeRowsMatchTheReference) {
  for (const HeadShape& h : {HeadShape{4, 1, 256}, HeadShape{8, 1, 64}, HeadShape{4, 2, 128}}) {
    for (int window : {0, 512}) {
      for (int rows : {1, 4, 16, 64}) {
        SCOPED_TRACE(Describe(h, window) + " rows " + std::to_string(rows));
        PagedCase c = CaseOf(h, window);
        c.group_layers = 1;
        c.slot = 0;
        std::uniform_int_distribution<int> len(0, rows > 16 ? 1100 : 4200);
        for (int r = 0; r < rows; ++r) {
          const int pos = r == 0 ? 4095 : r == 1 ? 0 : r == 2 ? 255 : r == 3 ? 511 : len(rng_);
          c.AddRows(r, pos, 1);
        }
        const HostPool pool = BuildPool(c, rng_);
        const std::vector<float> q =
            Random(rng_, static_cast<std::size_t>(c.rows()) * c.heads * c.head_dim);
        const std::vector<float> want = ReferenceAttention(c, pool, q);
        DevicePass pass(c, pool);
        const std::size_t hd = static_cast<std::size_t>(c.head_dim);
        const std::size_t nh = static_cast<std::size_t>(c.heads);
        ExpectClose(pass.Run(q, 0, c.rows()), want, 1e-4f, hd, nh);
        ExpectClose(pass.Run(q, 0, c.rows(), (pool.max_pos / 256 + 1) * 256 - 1), want, 1e-4f, hd,
                    nh);
        if (rows == 4) {
          // Each row alone, at small contexts too (the pass's max_pos rounded up).
          const std::size_t q_dim = nh * hd;
          for (int r = 1; r < rows; ++r) {
            SCOPED_TRACE(r);
            ExpectClose(
                pass.Run(q, r, 1, 255),
                std::vector<float>(want.begin() + r * q_dim, want.begin() + (r + 1) * q_dim), 1e-4f,
                hd, nh);
          }
        }
      }
    }
  }
}

// Decode rows whose keys take at most 16 slices (on sm_90, their CTAs merge them as a cluster, of
// CTAs of 8 warps for up to 8 (row, kv head) pairs, else 4): rows alone of 1 (a cluster of one
// CTA), 2 and 7 slices and two with more keys than such slices take, a pass of 4 rows that take
// from 1 to 16 of its slices and one of 16 rows.
TEST_F(CudaAttentionTest, DecodeRowsOfFewSlicesMatchTheReference) {
  for (const HeadShape& h : {HeadShape{4, 1, 256}, HeadShape{8, 1, 64}, HeadShape{6, 2, 96}}) {
    for (int window : {0, 512}) {
      for (DType dtype : {DType::kF32, DType::kBF16}) {
        SCOPED_TRACE(Describe(h, window) + " " + std::string(DTypeName(dtype)));
        PagedCase c = CaseOf(h, window);
        c.group_layers = 1;
        c.slot = 0;
        const std::vector<int> alone = {20, 40, 200, 700, 1100};
        for (int pos : alone) c.AddRows(c.num_seqs, pos, 1);
        for (int pos : {3, 40, 300, window > 0 ? 1000 : 500}) c.AddRows(c.num_seqs, pos, 1);
        for (int r = 0; r < 16; ++r) c.AddRows(c.num_seqs, 32 * r + 7, 1);
        HostPool pool = BuildPool(c, rng_);
        if (dtype == DType::kBF16) RoundToBF16(&pool);
        const std::vector<float> q =
            Random(rng_, static_cast<std::size_t>(c.rows()) * c.heads * c.head_dim);
        const std::vector<float> want = ReferenceAttention(c, pool, q);
        DevicePass pass(c, pool, dtype);
        const std::size_t hd = static_cast<std::size_t>(c.head_dim);
        const std::size_t nh = static_cast<std::size_t>(c.heads);
        const std::size_t q_dim = nh * hd;
        const auto rows = [&](int first, int count) {
          return std::vector<float>(want.begin() + first * q_dim,
                                    want.begin() + (first + count) * q_dim);
        };
        for (int r = 0; r < static_cast<int>(alone.size()); ++r) {
          SCOPED_TRACE(alone[r]);
          ExpectClose(pass.Run(q, r, 1), rows(r, 1), 1e-4f, hd, nh);
        }
        const int first = static_cast<int>(alone.size());
        ExpectClose(pass.Run(q, first, 4), rows(first, 4), 1e-4f, hd, nh);
        ExpectClose(pass.Run(q, first + 4, 16), rows(first + 4, 16), 1e-4f, hd, nh);
      }
    }
  }
}

// ----------------------------------------------------------------------------------------------
// WriteKV

TEST_F(CudaAttentionTest, WriteKVStoresEachRowInItsBlockOnly) {
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
TEST_F(CudaAttentionTest, QKNormRopeWriteKVEqualsTheTwoCalls) {
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
TEST_F(CudaAttentionTest, Bf16BlocksHoldTheRoundedKeysAndValues) {
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

// ----------------------------------------------------------------------------------------------
// Argument errors are found before anything touches a device.

TEST(CudaAttentionArgumentsTest, UnsupportedShapesAreErrors) {
  const PassRows pass{.rows = 1, .num_seqs = 1, .max_pos = 0};
  PagedLayer layer{.block_elements = 2 * 16 * 48, .block_size = 16, .slot = 0, .row = 48};
  AttentionShape shape{.heads = 4, .kv_heads = 1, .head_dim = 48};
  Status s = PagedAttention(nullptr, pass, layer, shape, nullptr, nullptr);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message(),
            "cuda::PagedAttention: head_dim 48 is not supported (a multiple of 32, at most 256)");
  shape.head_dim = 288;
  EXPECT_FALSE(PagedAttention(nullptr, pass, layer, shape, nullptr, nullptr).ok());
  shape = {.heads = 6, .kv_heads = 4, .head_dim = 64};
  s = PagedAttention(nullptr, pass, layer, shape, nullptr, nullptr);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message(),
            "cuda::PagedAttention: heads 6 is not a positive multiple of kv_heads 4");
  shape = {.heads = 4, .kv_heads = 2, .head_dim = 64};
  s = PagedAttention(nullptr, pass, layer, shape, nullptr, nullptr);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message(),
            "cuda::PagedAttention: layer row 48 is not kv_heads 2 * head_dim 64");
  EXPECT_EQ(PagedAttentionWorkspace(pass, {.heads = 4, .kv_heads = 1, .head_dim = 48}), 0u);
  s = QKNormRope(nullptr, nullptr, 1, 4, 1, 33, nullptr, nullptr, 1e-6f, nullptr, nullptr);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message(),
            "cuda::QKNormRope: heads 4, kv_heads 1, head_dim 33 are not supported (head_dim even, "
            "at most 8192)");
  layer.slot = 1;
  EXPECT_FALSE(WriteKV(nullptr, nullptr, pass, layer).ok());
  layer.slot = 0;
  s = QKNormRopeWriteKV(nullptr, nullptr, nullptr, pass, layer, 4, 1, 64, nullptr, nullptr, 1e-6f,
                        nullptr);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message(),
            "cuda::QKNormRopeWriteKV: layer row 48 is not kv_heads 1 * "
            "head_dim 64");
  layer.slot = 1;
  EXPECT_FALSE(QKNormRopeWriteKV(nullptr, nullptr, nullptr, pass, layer, 4, 1, 48, nullptr, nullptr,
                                 1e-6f, nullptr)
                   .ok());
  s = WriteKV(nullptr, nullptr, pass, layer);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(
      s.error().message(),
      "cuda::WriteKV: layer block_size 16, row 48, slot 1 do not fit blocks of 1536 elements");
  layer.slot = 0;
  layer.dtype = DType::kF16;
  s = WriteKV(nullptr, nullptr, pass, layer);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message(),
            "cuda::WriteKV: keys and values of type F16 are not supported (F32 or BF16)");
  // Split keys are of f32 blocks.
  layer.dtype = DType::kBF16;
  std::uint16_t planes[1] = {};
  s = QKNormRopeWriteKV(nullptr, nullptr, nullptr, pass, layer, 4, 1, 48, nullptr, nullptr, 1e-6f,
                        nullptr, nullptr, planes);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message(),
            "cuda::QKNormRopeWriteKV: split keys are for f32 blocks, not BF16");
}

TEST(CudaAttentionArgumentsTest, EmptyPassesDoNothing) {
  const PassRows pass{};
  const PagedLayer layer{.block_elements = 2 * 16 * 64, .block_size = 16, .slot = 0, .row = 64};
  const AttentionShape shape{.heads = 4, .kv_heads = 1, .head_dim = 64};
  EXPECT_TRUE(PagedAttention(nullptr, pass, layer, shape, nullptr, nullptr).ok());
  EXPECT_EQ(PagedAttentionWorkspace(pass, shape), 0u);
  EXPECT_TRUE(WriteKV(nullptr, nullptr, pass, layer).ok());
  EXPECT_TRUE(
      QKNormRope(nullptr, nullptr, 0, 4, 1, 64, nullptr, nullptr, 1e-6f, nullptr, nullptr).ok());
  EXPECT_TRUE(QKNormRopeWriteKV(nullptr, nullptr, nullptr, pass, layer, 4, 1, 64, nullptr, nullptr,
                                1e-6f, nullptr)
                  .ok());
}

}  // namespace
}  // namespace fgnet::cuda
