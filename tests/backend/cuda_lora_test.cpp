// The grouped LoRA kernels (LoraApply, LoraShrink, LoraExpand) and the adapters' epilogue of
// the GEMV products against double-accumulation references, with outputs filled with random
// values (the kernels accumulate into them). Skipped where no CUDA device is present (CI); run on
// a GPU machine.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "backend/cuda/device.h"
#include "backend/cuda/matmul.h"
#include "cuda_matmul_support.h"

namespace fgnet::cuda {
namespace {

struct HostGroup {
  std::int32_t rank;
  std::vector<std::int32_t> rows;
  std::vector<float> scales;
};

struct LoraCase {
  std::size_t in, out, ldx, ldy, batch;  // batch: rows of x and y
  std::vector<HostGroup> groups;
};

// Applies the groups on the device to y (random, poisoned nowhere: every row must keep its value
// unless a group updates it) and compares with the double reference, launching blocks for all
// rows of each group and for only as many as the largest group has (`group_rows`).
void CheckLora(const LoraCase& c, Uniform& rng) {
  const std::vector<float> x = rng.Floats(c.batch * c.ldx);
  const std::vector<float> y0 = rng.Floats(c.batch * c.ldy, 2.0f);
  std::vector<std::vector<float>> a, b;
  std::vector<std::int32_t> row_index;
  std::vector<float> row_scale;
  std::int32_t max_rank = 0;
  for (const HostGroup& g : c.groups) {
    a.push_back(rng.Floats(static_cast<std::size_t>(g.rank) * c.in, 0.05f));
    b.push_back(rng.Floats(c.out * static_cast<std::size_t>(g.rank), 0.05f));
    row_index.insert(row_index.end(), g.rows.begin(), g.rows.end());
    row_scale.insert(row_scale.end(), g.scales.begin(), g.scales.end());
    max_rank = std::max(max_rank, g.rank);
  }
  auto up = [](const auto& v) {
    auto d = DeviceBuffer<typename std::decay_t<decltype(v)>::value_type>::FromHost(v);
    EXPECT_TRUE(d.ok());
    return std::move(*d);
  };
  std::vector<DeviceBuffer<float>> d_a, d_b;
  std::vector<LoraGroup> groups;
  std::int32_t first = 0;
  for (std::size_t i = 0; i < c.groups.size(); ++i) {
    d_a.push_back(up(a[i]));
    d_b.push_back(up(b[i]));
    const auto count = static_cast<std::int32_t>(c.groups[i].rows.size());
    groups.push_back({.a = d_a.back().data(),
                      .b = d_b.back().data(),
                      .rank = c.groups[i].rank,
                      .first = first,
                      .count = count});
    first += count;
  }
  const auto total_rows = static_cast<std::int32_t>(row_index.size());
  auto d_groups = DeviceBuffer<LoraGroup>::FromHost(groups);
  ASSERT_TRUE(d_groups.ok());
  DeviceBuffer<float> d_x = up(x);
  DeviceBuffer<std::int32_t> d_rows = up(row_index);
  DeviceBuffer<float> d_scales = up(row_scale);
  // Launches for all rows of each group, and for the most rows a group has.
  std::int32_t group_rows = 0;
  for (const LoraGroup& g : groups) group_rows = std::max(group_rows, g.count);
  std::vector<std::vector<float>> results;
  for (const std::int32_t rows_a_group : {0, group_rows}) {
    DeviceBuffer<float> d_y = up(y0);
    DeviceBuffer<float> d_ws =
        up(std::vector<float>(static_cast<std::size_t>(max_rank) * total_rows, std::nanf("")));
    const Status s = LoraApply(d_x.data(), c.ldx, c.in, d_y.data(), c.ldy, c.out, d_groups->data(),
                               static_cast<std::int32_t>(groups.size()), max_rank, d_rows.data(),
                               d_scales.data(), total_rows, d_ws.data(), nullptr, rows_a_group);
    ASSERT_TRUE(s.ok()) << s.error().message();
    auto got = d_y.ToHost();
    ASSERT_TRUE(got.ok());
    results.push_back(std::move(*got));
  }

  std::vector<double> want(y0.begin(), y0.end());
  std::vector<double> mag(y0.size());
  for (std::size_t i = 0; i < y0.size(); ++i) mag[i] = std::fabs(y0[i]);
  for (std::size_t gi = 0; gi < c.groups.size(); ++gi) {
    const HostGroup& g = c.groups[gi];
    for (std::size_t j = 0; j < g.rows.size(); ++j) {
      const std::size_t row = static_cast<std::size_t>(g.rows[j]);
      std::vector<double> t(static_cast<std::size_t>(g.rank)), tmag(t.size());
      for (std::size_t q = 0; q < t.size(); ++q) {
        for (std::size_t k = 0; k < c.in; ++k) {
          const double term = static_cast<double>(a[gi][q * c.in + k]) * x[row * c.ldx + k];
          t[q] += term;
          tmag[q] += std::fabs(term);
        }
      }
      for (std::size_t o = 0; o < c.out; ++o) {
        double sum = 0, m = 0;
        for (std::size_t q = 0; q < t.size(); ++q) {
          sum += b[gi][o * t.size() + q] * t[q];
          m += std::fabs(b[gi][o * t.size() + q]) * tmag[q];
        }
        want[row * c.ldy + o] += g.scales[j] * sum;
        mag[row * c.ldy + o] += std::fabs(g.scales[j]) * m;
      }
    }
  }
  for (const std::vector<float>& got : results) {
    for (std::size_t i = 0; i < want.size(); ++i) {
      ASSERT_NEAR(got[i], want[i], 1e-5 * mag[i] + 1e-30)
          << "row " << i / c.ldy << " column " << i % c.ldy;
    }
  }
}

std::vector<float> Scales(std::size_t n, float first, float step) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = first + step * static_cast<float>(i);
  return v;
}

TEST_F(CudaMatMulTest, LoraApplyMatchesTheReference) {
  // 24 rows; rows 21 and 23 are in no group (their y must stay as it was, columns past `out` too);
  // rows 0..19 are in a rank-16 group, the even rows also in a rank-1 group, some rows in a rank-2
  // group; the last group holds row 5 twice.
  const std::vector<HostGroup> groups = {
      {16, Range(0, 20), Scales(20, 0.5f, 0.1f)},
      {1, Range(0, 24, 2), Scales(12, 2.0f, -0.25f)},
      {2, {3, 22, 7, 20, 11, 5, 0, 13, 17}, Scales(9, 1.0f, 0.5f)},
      {16, {5, 9, 5}, {0.25f, 1.0f, -1.0f}},
  };
  // The shrink stages up to 2048 columns of x at a time: 4096 takes two spans, and 4099 (rows not
  // 16-byte aligned) three.
  const Shape shapes[] = {{640, 1024}, {640, 256}, {1024, 640}, {640, 2048},
                          {2048, 640}, {4096, 64}, {4099, 72}};
  for (const Shape& s : shapes) {
    SCOPED_TRACE(testing::Message() << "in " << s.in << " out " << s.out);
    CheckLora({.in = s.in,
               .out = s.out,
               .ldx = s.in + 8,
               .ldy = s.out + 3,
               .batch = 24,
               .groups = groups},
              rng_);
  }
}

// The adapters' updates in the GEMV epilogue (one LoraShrink of the sites sharing x, then the
// fused products with a LoraEpilogue), and by one LoraShrink and one LoraExpand of several sites,
// against the products followed by LoraApply per site: the
// same bits for rows with one adapter, within rounding for the row that mixes two (whose separate
// updates are added atomically in no fixed order). Three adapters of ranks 16, 4 and 2 (the second
// leaves the k site alone), the last row with none; q/k/v through MatMulMany, gate/up through
// MatMulGeGLU.
TEST_F(CudaMatMulTest, LoraEpilogueEqualsTheSeparateUpdates) {
  const std::size_t in = 640, n_ff = 2048;
  const std::vector<std::size_t> qkv = {1024, 256, 256};
  const std::int32_t ranks[3] = {16, 4, 2};
  const std::int32_t max_rank = 16;
  std::vector<DeviceBuffer<std::uint16_t>> d_w;
  for (std::size_t out : {qkv[0], qkv[1], qkv[2], n_ff, n_ff})
    d_w.push_back(Upload(rng_.BF16(out * in)));
  // A and B per (site, adapter): sites 0-2 q/k/v, 3-4 gate/up.
  const std::size_t site_out[5] = {qkv[0], qkv[1], qkv[2], n_ff, n_ff};
  std::vector<DeviceBuffer<float>> d_ab;
  std::vector<std::array<std::pair<const float*, const float*>, 3>> ab(5);
  for (std::size_t site = 0; site < 5; ++site) {
    for (std::size_t g = 0; g < 3; ++g) {
      d_ab.push_back(Upload(rng_.Floats(static_cast<std::size_t>(ranks[g]) * in, 0.05f)));
      const float* a = d_ab.back().data();
      d_ab.push_back(
          Upload(rng_.Floats(site_out[site] * static_cast<std::size_t>(ranks[g]), 0.05f)));
      ab[site][g] = {a, d_ab.back().data()};
    }
  }
  for (std::size_t rows : {1u, 5u, 13u, 16u}) {
    SCOPED_TRACE(rows);
    // Entries: row r under adapter r % 3, row 0 also under adapter 1; the last row (of several)
    // under none.
    std::vector<std::vector<std::int32_t>> members(3);
    std::vector<std::vector<float>> scales(3);
    for (std::size_t r = 0; r < rows; ++r) {
      if (rows > 1 && r == rows - 1) continue;
      members[r % 3].push_back(static_cast<std::int32_t>(r));
      scales[r % 3].push_back(0.5f + 0.25f * static_cast<float>(r % 4));
    }
    members[1].push_back(0);
    scales[1].push_back(-0.75f);
    std::vector<std::int32_t> lora_rows, entry_adapter, first(3);
    std::vector<float> entry_scale;
    for (std::size_t g = 0; g < 3; ++g) {
      first[g] = static_cast<std::int32_t>(lora_rows.size());
      lora_rows.insert(lora_rows.end(), members[g].begin(), members[g].end());
      entry_scale.insert(entry_scale.end(), scales[g].begin(), scales[g].end());
      entry_adapter.insert(entry_adapter.end(), members[g].size(), static_cast<std::int32_t>(g));
    }
    const std::int32_t per_row = 2;
    std::vector<std::int32_t> row_entries(rows * per_row, -1);
    for (std::size_t i = 0; i < lora_rows.size(); ++i) {
      std::int32_t* slot = &row_entries[static_cast<std::size_t>(lora_rows[i]) * per_row];
      (slot[0] < 0 ? slot[0] : slot[1]) = static_cast<std::int32_t>(i);
    }
    std::vector<LoraGroup> groups;
    for (std::size_t site = 0; site < 5; ++site) {
      for (std::size_t g = 0; g < 3; ++g) {
        const bool absent = site == 1 && g == 1;
        groups.push_back({absent ? nullptr : ab[site][g].first,
                          absent ? nullptr : ab[site][g].second, absent ? 0 : ranks[g], first[g],
                          static_cast<std::int32_t>(members[g].size())});
      }
    }
    const auto total = static_cast<std::int32_t>(lora_rows.size());
    DeviceBuffer<LoraGroup> d_groups = Upload(groups);
    DeviceBuffer<std::int32_t> d_rows = Upload(lora_rows), d_entries = Upload(row_entries),
                               d_adapter = Upload(entry_adapter);
    DeviceBuffer<float> d_scale = Upload(entry_scale);
    const std::size_t slot = static_cast<std::size_t>(max_rank) * static_cast<std::size_t>(total);
    DeviceBuffer<float> d_ws = Upload(std::vector<float>(3 * slot, std::nanf("")));
    const std::vector<float> x = rng_.Floats(rows * in);
    DeviceBuffer<float> d_x = Upload(x);
    LoraEpilogue epilogue;
    epilogue.rows = {d_entries.data(), per_row, d_adapter.data(), d_scale.data(), max_rank};
    const auto nan = [&](std::size_t count) {
      return Upload(std::vector<float>(count, std::nanf("")));
    };

    // q/k/v.
    ASSERT_TRUE(LoraShrink(d_x.data(), in, in, d_groups.data(), 9, 3, max_rank, d_rows.data(),
                           total, d_ws.data())
                    .ok());
    std::vector<DeviceBuffer<float>> fused, separate;
    std::vector<MatMulContext::MatMulOutput> fused_out, separate_out;
    for (std::size_t i = 0; i < 3; ++i) {
      fused.push_back(nan(rows * qkv[i]));
      separate.push_back(nan(rows * qkv[i]));
      fused_out.push_back({d_w[i].data(), qkv[i], fused.back().data()});
      separate_out.push_back({d_w[i].data(), qkv[i], separate.back().data()});
      epilogue.sites[i] = {d_groups.data() + 3 * i, d_ws.data() + i * slot};
    }
    ASSERT_TRUE(ctx_->MatMulMany(d_x.data(), rows, in, fused_out, &epilogue).ok());
    ASSERT_TRUE(ctx_->MatMulMany(d_x.data(), rows, in, separate_out).ok());
    DeviceBuffer<float> d_ws2 = nan(slot);
    for (std::size_t i = 0; i < 3; ++i) {
      ASSERT_TRUE(LoraApply(d_x.data(), in, in, separate[i].data(), qkv[i], qkv[i],
                            d_groups.data() + 3 * i, 3, max_rank, d_rows.data(), d_scale.data(),
                            total, d_ws2.data())
                      .ok());
    }
    const auto compare = [&](const std::vector<float>& got, const std::vector<float>& want,
                             std::size_t out, float rel, const char* what) {
      for (std::size_t r = 0; r < rows; ++r) {
        for (std::size_t o = 0; o < out; ++o) {
          const float g = got[r * out + o], w = want[r * out + o];
          if (r == 0 || rel > 0) {
            ASSERT_NEAR(g, w, (r == 0 ? 1e-5f : rel) * (1.0f + std::fabs(w)))
                << what << " row " << r << " output " << o;
          } else {
            ASSERT_EQ(g, w) << what << " row " << r << " output " << o;
          }
        }
      }
    };
    for (std::size_t i = 0; i < 3; ++i) {
      compare(Download(fused[i]), Download(separate[i]), qkv[i], 0.0f, "q/k/v");
    }
    // The same three sites' updates by one LoraShrink and one LoraExpand after plain products.
    std::vector<DeviceBuffer<float>> grouped;
    std::vector<MatMulContext::MatMulOutput> grouped_out;
    std::vector<LoraExpandSite> expand_sites;
    for (std::size_t i = 0; i < 3; ++i) {
      grouped.push_back(nan(rows * qkv[i]));
      grouped_out.push_back({d_w[i].data(), qkv[i], grouped.back().data()});
      expand_sites.push_back({grouped.back().data(), qkv[i], qkv[i]});
    }
    ASSERT_TRUE(ctx_->MatMulMany(d_x.data(), rows, in, grouped_out).ok());
    DeviceBuffer<float> d_ws3 = nan(3 * slot);
    ASSERT_TRUE(LoraShrink(d_x.data(), in, in, d_groups.data(), 9, 3, max_rank, d_rows.data(),
                           total, d_ws3.data())
                    .ok());
    ASSERT_TRUE(LoraExpand(expand_sites, d_groups.data(), 3, max_rank, d_rows.data(),
                           d_scale.data(), total, d_ws3.data())
                    .ok());
    for (std::size_t i = 0; i < 3; ++i) {
      compare(Download(grouped[i]), Download(separate[i]), qkv[i], 0.0f, "q/k/v grouped");
    }

    // gate/up, and the GeGLU.
    ASSERT_TRUE(LoraShrink(d_x.data(), in, in, d_groups.data() + 9, 6, 3, max_rank, d_rows.data(),
                           total, d_ws.data())
                    .ok());
    epilogue.sites[0] = {d_groups.data() + 9, d_ws.data()};
    epilogue.sites[1] = {d_groups.data() + 12, d_ws.data() + slot};
    DeviceBuffer<float> d_out = nan(rows * n_ff), d_up = nan(rows * n_ff);
    ASSERT_TRUE(ctx_->MatMulGeGLU(d_x.data(), rows, in, d_w[3].data(), d_w[4].data(), n_ff,
                                  d_out.data(), d_up.data(), &epilogue)
                    .ok());
    DeviceBuffer<float> d_g = nan(rows * n_ff), d_u = nan(rows * n_ff), d_ref = nan(rows * n_ff);
    ASSERT_TRUE(ctx_->MatMul(d_x.data(), rows, in, d_w[3].data(), n_ff, d_g.data()).ok());
    ASSERT_TRUE(ctx_->MatMul(d_x.data(), rows, in, d_w[4].data(), n_ff, d_u.data()).ok());
    for (const auto& [y, site] : {std::pair{d_g.data(), 3}, std::pair{d_u.data(), 4}}) {
      ASSERT_TRUE(LoraApply(d_x.data(), in, in, y, n_ff, n_ff, d_groups.data() + 3 * site, 3,
                            max_rank, d_rows.data(), d_scale.data(), total, d_ws2.data())
                      .ok());
    }
    ASSERT_TRUE(GeluTanhMul(d_g.data(), d_u.data(), rows * n_ff, d_ref.data()).ok());
    compare(Download(d_out), Download(d_ref), n_ff, 1e-6f, "GeGLU");
  }
}

// LoraShrinkOfResidual equals RMSNormAddToNorm then LoraShrink bit for bit: the normalised rows,
// the new residual rows and the shrink's results, for the q/k/v sites of three adapters (one
// without an update at k, a row in two groups, the last row in none), up to groups of more rows
// than a shrink block takes.
TEST_F(CudaMatMulTest, LoraShrinkOfResidualEqualsTheNormThenTheShrink) {
  const std::size_t in = 640;
  const std::int32_t ranks[3] = {16, 4, 2};
  const std::int32_t max_rank = 16;
  std::vector<DeviceBuffer<float>> d_a;
  std::vector<const float*> a(9);
  for (std::size_t i = 0; i < 9; ++i) {
    d_a.push_back(Upload(rng_.Floats(static_cast<std::size_t>(ranks[i % 3]) * in, 0.05f)));
    a[i] = d_a.back().data();
  }
  const DeviceBuffer<float> post = Upload(rng_.Floats(in, 0.5f)),
                            pre = Upload(rng_.Floats(in, 0.5f));
  // Passes of 1 to 40 rows, and one of 16 rows of which each group has one (a decode pass's
  // distinct adapters).
  struct Pass {
    std::size_t rows;
    bool one_each;
  };
  for (const auto [rows, one_each] :
       {Pass{1, false}, Pass{5, false}, Pass{16, false}, Pass{40, false}, Pass{16, true}}) {
    SCOPED_TRACE(testing::Message() << rows << (one_each ? " rows, one a group" : " rows"));
    std::vector<std::int32_t> lora_rows, first(3), count(3);
    for (std::int32_t g = 0; g < 3; ++g) {
      first[g] = static_cast<std::int32_t>(lora_rows.size());
      for (std::size_t r = 0; r < rows; ++r) {
        const bool last = rows > 1 && r == rows - 1;
        const bool in_group = one_each
                                  ? static_cast<std::int32_t>(r) == 4 * g + 1
                                  : static_cast<std::int32_t>(r % 3) == g || (g == 1 && r == 0);
        if (!last && in_group) lora_rows.push_back(static_cast<std::int32_t>(r));
      }
      count[g] = static_cast<std::int32_t>(lora_rows.size()) - first[g];
    }
    std::vector<LoraGroup> groups;
    for (std::size_t site = 0; site < 3; ++site) {
      for (std::size_t g = 0; g < 3; ++g) {
        const bool absent = site == 1 && g == 1;
        groups.push_back({absent ? nullptr : a[site * 3 + g], absent ? nullptr : a[site * 3 + g],
                          absent ? 0 : ranks[g], first[g], count[g]});
      }
    }
    const auto total = static_cast<std::int32_t>(lora_rows.size());
    const DeviceBuffer<LoraGroup> d_groups = Upload(groups);
    const DeviceBuffer<std::int32_t> d_rows = Upload(lora_rows);
    const std::vector<float> delta = rng_.Floats(rows * in),
                             residual = rng_.Floats(rows * in, 3.0f);
    const DeviceBuffer<float> d_delta = Upload(delta);
    const std::size_t t_floats = 3 * static_cast<std::size_t>(max_rank) * lora_rows.size();
    const auto nan = [this](std::size_t n) { return Upload(std::vector<float>(n, std::nanf(""))); };
    // The two calls.
    DeviceBuffer<float> r1 = Upload(residual), h1 = nan(rows * in), t1 = nan(t_floats);
    ASSERT_TRUE(RMSNormAddToNorm(d_delta.data(), rows, in, post.data(), 1e-6f, r1.data(),
                                 pre.data(), h1.data())
                    .ok());
    ASSERT_TRUE(LoraShrink(h1.data(), in, in, d_groups.data(), 9, 3, max_rank, d_rows.data(), total,
                           t1.data())
                    .ok());
    // One, launching blocks for all rows of each group and for the most rows a group has.
    const std::int32_t most = *std::max_element(count.begin(), count.end());
    for (const std::int32_t group_rows : {0, most}) {
      SCOPED_TRACE(group_rows);
      DeviceBuffer<float> r2 = Upload(residual), u2 = nan(rows * in), h2 = nan(rows * in),
                          t2 = nan(t_floats);
      const ResidualInput input{d_delta.data(), r2.data(),  u2.data(),
                                post.data(),    pre.data(), 1e-6f};
      const Status s =
          LoraShrinkOfResidual(input, rows, in, h2.data(), d_groups.data(), 9, 3, max_rank,
                               d_rows.data(), total, t2.data(), nullptr, group_rows);
      ASSERT_TRUE(s.ok()) << s.error().message();
      const auto same = [](const std::vector<float>& x, const std::vector<float>& y) {
        return x.size() == y.size() &&
               std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
      };
      EXPECT_TRUE(same(Download(h2), Download(h1)));
      EXPECT_TRUE(same(Download(u2), Download(r1)));
      EXPECT_TRUE(same(Download(r2), residual));  // read, not written
      // The shrink's slots hold results where a group has a rank row (NaN elsewhere in both).
      EXPECT_TRUE(same(Download(t2), Download(t1)));
    }
  }
  // Arguments it does not take.
  DeviceBuffer<float> x = Upload(rng_.Floats(in)), y = Upload(rng_.Floats(in));
  const ResidualInput in_place{x.data(), y.data(), y.data(), post.data(), pre.data(), 1e-6f};
  EXPECT_FALSE(
      LoraShrinkOfResidual(in_place, 1, in, x.data(), nullptr, 1, 1, 16, nullptr, 1, nullptr).ok());
  const ResidualInput wide{x.data(), y.data(), x.data(), post.data(), pre.data(), 1e-6f};
  EXPECT_FALSE(
      LoraShrinkOfResidual(wide, 1, 1024, y.data(), nullptr, 1, 1, 16, nullptr, 1, nullptr).ok());
}

TEST_F(CudaMatMulTest, LoraApplyHandlesLargeGroups) {
  // A prefill-sized group (more rows than one block takes) beside single-row groups.
  const std::vector<HostGroup> groups = {
      {8, Range(0, 300), Scales(300, 1.0f, 0.0f)},
      {4, {299}, {0.5f}},
      {16, {7}, {2.0f}},
  };
  CheckLora({.in = 640, .out = 2048, .ldx = 640, .ldy = 2048, .batch = 300, .groups = groups},
            rng_);
}

// A decode pass's distinct adapters: every group one row, which the launches sized by the most
// rows a group has take with the one-row instances of the shrink. Ranks 16, 32 (two chunks of B
// an expand thread), 3 (B rows not 16-byte loads) and 1; inputs of each span instance, and one
// wider than a span.
TEST_F(CudaMatMulTest, LoraApplyWithOneRowAGroup) {
  const std::vector<HostGroup> groups = {
      {16, {4}, {0.5f}}, {32, {0}, {1.0f}}, {3, {2}, {-2.0f}}, {1, {5}, {0.25f}}, {16, {1}, {1.5f}},
  };
  const Shape shapes[] = {{640, 1024}, {1024, 640}, {2048, 640}, {300, 2048}, {4099, 72}};
  for (const Shape& s : shapes) {
    SCOPED_TRACE(testing::Message() << "in " << s.in << " out " << s.out);
    CheckLora(
        {.in = s.in, .out = s.out, .ldx = s.in, .ldy = s.out + 1, .batch = 6, .groups = groups},
        rng_);
  }
}

}  // namespace
}  // namespace fgnet::cuda
