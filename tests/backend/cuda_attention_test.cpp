// The CUDA paged attention (backend/cuda/attention.h) against reference::Attention over the same
// blocks, on random inputs with NaN-poisoned outputs and NaN in every KV float a kernel must not
// use: every regime (tiles, splits merged by the combine kernel or in clusters), f32 and bf16
// blocks (attention over bf16 ones equals the reference over the rounded values), and argument
// errors. Skipped where no CUDA device is present (CI); run on a GPU machine. The q/k norm, RoPE
// and KV write are tested in cuda_kv_write_test.cpp, the perf mode (FGNET_CUDA_PERF=1) is in
// cuda_attention_perf_test.cpp.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
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
