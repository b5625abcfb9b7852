// SIMD attention (see attention.h). Compiled once per Highway target.
//
// Two regimes:
//   * few queries (decode): one work item per (query, kv head, slice of the visible keys), for
//     all query heads sharing the kv head, so each key and value row is read once; scores are
//     dot products, then exponentials relative to the slice's max, then a weighted sum of the
//     value rows; the slices' partial results are merged with their maxima and sums (long
//     contexts thus spread over all threads);
//   * a chunk of queries (prefill): one work item per (kv head, block of queries). Keys of the
//     block's visible range are packed into panels and the GEMM micro-kernel computes the scores
//     of all query heads sharing that kv head; rows are masked, softcapped and softmaxed; then
//     the probabilities times the packed values are accumulated into the output. For each panel
//     of keys only the rows (queries) that see one of its keys are computed, so the masked-out
//     triangle near the diagonal and beyond the window costs little.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "backend/cpu/attention.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
// Per-target code below.
#include <algorithm>
#include <cmath>
#include <utility>

#include "backend/cpu/attention.h"
#include "backend/cpu/gemm-inl.h"
#include "backend/cpu/vec-inl.h"
#include "util/status.h"

HWY_BEFORE_NAMESPACE();
namespace fgnet::cpu::HWY_NAMESPACE {

// From this many queries on, the blocked GEMM regime is used.
inline constexpr std::size_t kMinQueriesForGemm = 4;
// Decode regime: a query's keys are cut into slices of at least kMinSliceKeys keys (so that
// threads share long ranges) and at most kMaxSliceKeys (bounding the scores per thread).
inline constexpr std::size_t kMinSliceKeys = 256;
inline constexpr std::size_t kMaxSliceKeys = 4096;
// Most queries per block, and the budget of score floats per thread that bounds it.
inline constexpr std::size_t kMaxQueryBlock = 64;
inline constexpr std::size_t kScoreBudget = std::size_t{1} << 20;
// Keys per packed value chunk in the P . V product.
inline constexpr std::size_t kValueChunk = 128;

struct Geometry {
  const KVSpan* spans;
  std::size_t num_spans;
  std::int64_t kv_first;   // first position held
  std::int64_t first_pos;  // position of query 0
  const AttentionParams* p;
  std::size_t group;  // query heads per kv head
  std::size_t q_dim;

  // First position a query at `pos` sees.
  std::int64_t VisibleFrom(std::int64_t pos) const {
    const std::int64_t lo = p->window > 0 ? pos - p->window + 1 : kv_first;
    return std::max(lo, kv_first);
  }
};

// Calls f(span, first index in span, count, position of that first key) for every run of keys
// with positions in [lo, hi] that lies within one span, in position order, in runs of at most
// `max_run` keys.
template <class F>
HWY_INLINE void ForEachKeyRun(const Geometry& g, std::int64_t lo, std::int64_t hi,
                              std::size_t max_run, const F& f) {
  for (std::size_t s = 0; s < g.num_spans; ++s) {
    const KVSpan& span = g.spans[s];
    const std::int64_t s_lo = std::max(lo, span.first_pos);
    const std::int64_t s_hi =
        std::min(hi, span.first_pos + static_cast<std::int64_t>(span.count) - 1);
    for (std::int64_t a = s_lo; a <= s_hi; a += static_cast<std::int64_t>(max_run)) {
      const std::size_t count = static_cast<std::size_t>(
          std::min<std::int64_t>(static_cast<std::int64_t>(max_run), s_hi - a + 1));
      f(span, static_cast<std::size_t>(a - span.first_pos), count, a);
    }
  }
}

// out[hh * ldo] = key . q[hh * hd] for hh < group: one key against the query heads of its group.
HWY_INLINE void DotGroup(const float* key, const float* q, std::size_t group, std::size_t hd,
                         float* out, std::size_t ldo) {
  std::size_t hh = 0;
  for (; hh + 4 <= group; hh += 4) DotTokens<4>(key, q + hh * hd, hd, hd, out + hh * ldo, ldo);
  switch (group - hh) {
    case 3:
      DotTokens<3>(key, q + hh * hd, hd, hd, out + hh * ldo, ldo);
      break;
    case 2:
      DotTokens<2>(key, q + hh * hd, hd, hd, out + hh * ldo, ldo);
      break;
    case 1:
      DotTokens<1>(key, q + hh * hd, hd, hd, out + hh * ldo, ldo);
      break;
    default:
      break;
  }
}

// Floats of one partial result: the unnormalised output, its max and its sum.
HWY_INLINE std::size_t PartialFloats(std::size_t head_dim) { return head_dim + 2; }

// Decode regime: query t against the keys with positions [a, b] (a slice of its visible range),
// for every query head of kv head `kvh` at once, so that each key and value row is read once
// per group. Writes, per head hh of the group, a partial result at part + hh * PartialFloats:
// o = sum_i exp(s_i - m) v_i, then m, then sum_i exp(s_i - m). `scores`: group * (b - a + 1).
void AttendSlice(const Geometry& g, const float* q, std::size_t t, std::size_t kvh, std::int64_t a,
                 std::int64_t b, float* part, float* scores) {
  const AttentionParams& p = *g.p;
  const DF d;
  const std::size_t L = hn::Lanes(d);
  const std::size_t hd = p.head_dim;
  const std::size_t kv_off = kvh * hd;
  const std::size_t count = static_cast<std::size_t>(b - a + 1);
  const float* qg = q + t * g.q_dim + kvh * g.group * hd;
  ForEachKeyRun(g, a, b, count,
                [&](const KVSpan& span, std::size_t i0, std::size_t n, std::int64_t key_pos) {
                  const float* k = span.keys + i0 * span.stride + kv_off;
                  float* s = scores + (key_pos - a);
                  for (std::size_t i = 0; i < n; ++i) {
                    DotGroup(k + i * span.stride, qg, g.group, hd, s + i, count);
                  }
                });
  const std::size_t pf = PartialFloats(hd);
  for (std::size_t hh = 0; hh < g.group; ++hh) {
    float* o = part + hh * pf;
    o[hd] = ScoresToExp(scores + hh * count, count, p.scale, p.softcap, &o[hd + 1]);
    std::memset(o, 0, hd * sizeof(float));
  }
  ForEachKeyRun(
      g, a, b, count, [&](const KVSpan& span, std::size_t i0, std::size_t n, std::int64_t key_pos) {
        const float* v = span.values + i0 * span.stride + kv_off;
        const std::size_t c0 = static_cast<std::size_t>(key_pos - a);
        for (std::size_t i = 0; i < n; ++i) {
          const float* vr = v + i * span.stride;
          for (std::size_t hh = 0; hh < g.group; ++hh) {
            const float e = scores[hh * count + c0 + i];
            const VF w = hn::Set(d, e);
            float* o = part + hh * pf;
            std::size_t j = 0;
            for (; j + L <= hd; j += L) {
              hn::StoreU(hn::MulAdd(w, hn::LoadU(d, vr + j), hn::LoadU(d, o + j)), d, o + j);
            }
            for (; j < hd; ++j) o[j] += e * vr[j];
          }
        }
      });
}

// The rows [first, second) of a block whose queries (row r at position pos0 + r) see at least one
// key with position in [a, b].
HWY_INLINE std::pair<std::size_t, std::size_t> RowsSeeing(const Geometry& g, std::int64_t pos0,
                                                          std::size_t rows, std::int64_t a,
                                                          std::int64_t b) {
  // Causal: pos >= a. Window: pos - window + 1 <= b.
  const std::int64_t r_lo = std::max<std::int64_t>(0, a - pos0);
  std::int64_t r_hi = static_cast<std::int64_t>(rows);
  if (g.p->window > 0) r_hi = std::min(r_hi, b + g.p->window - pos0);
  r_hi = std::max(r_hi, r_lo);
  return {static_cast<std::size_t>(std::min<std::int64_t>(r_lo, static_cast<std::int64_t>(rows))),
          static_cast<std::size_t>(std::min<std::int64_t>(r_hi, static_cast<std::int64_t>(rows)))};
}

// Queries [t0, t1) of every query head of kv head `kvh`.
void AttendBlock(const Geometry& g, const float* q, std::size_t t0, std::size_t t1, std::size_t kvh,
                 float* out, float* scores, float* panel) {
  const AttentionParams& p = *g.p;
  const std::size_t hd = p.head_dim;
  const std::size_t nr = PanelWidth();
  const std::size_t rows = t1 - t0;
  const std::int64_t pos0 = g.first_pos + static_cast<std::int64_t>(t0);
  const std::int64_t lo = g.VisibleFrom(pos0);
  const std::int64_t hi = g.first_pos + static_cast<std::int64_t>(t1) - 1;
  const std::size_t width = static_cast<std::size_t>(hi - lo + 1);
  const std::size_t kv_off = kvh * hd;
  const std::size_t h_first = kvh * g.group;
  // Scores of head h_first + hh, query t0 + r, key position lo + c at
  // scores[(hh * rows + r) * width + c].
  ForEachKeyRun(
      g, lo, hi, nr, [&](const KVSpan& span, std::size_t i0, std::size_t n, std::int64_t key_pos) {
        const auto [r0, r1] =
            RowsSeeing(g, pos0, rows, key_pos, key_pos + static_cast<std::int64_t>(n) - 1);
        if (r0 == r1) return;
        PackTransposed(span.keys + i0 * span.stride + kv_off, span.stride, n, hd, panel,
                       /*scratch=*/nullptr);
        for (std::size_t hh = 0; hh < g.group; ++hh) {
          const float* a = q + (t0 + r0) * g.q_dim + (h_first + hh) * hd;
          float* c = scores + (hh * rows + r0) * width + static_cast<std::size_t>(key_pos - lo);
          PanelGemm(a, g.q_dim, r1 - r0, panel, hd, c, width, n, /*accumulate=*/false);
        }
      });
  for (std::size_t hh = 0; hh < g.group; ++hh) {
    for (std::size_t r = 0; r < rows; ++r) {
      float* s = scores + (hh * rows + r) * width;
      const std::int64_t pos = pos0 + static_cast<std::int64_t>(r);
      const std::size_t c0 = static_cast<std::size_t>(g.VisibleFrom(pos) - lo);
      const std::size_t c1 = static_cast<std::size_t>(pos - lo) + 1;
      ScoresToProbs(s + c0, c1 - c0, p.scale, p.softcap);
      std::memset(s, 0, c0 * sizeof(float));
      std::memset(s + c1, 0, (width - c1) * sizeof(float));
    }
  }
  // Rows that see none of a chunk's keys skip it, so the output starts at zero.
  for (std::size_t hh = 0; hh < g.group; ++hh) {
    for (std::size_t r = 0; r < rows; ++r) {
      std::memset(out + (t0 + r) * g.q_dim + (h_first + hh) * hd, 0, hd * sizeof(float));
    }
  }
  ForEachKeyRun(
      g, lo, hi, kValueChunk,
      [&](const KVSpan& span, std::size_t i0, std::size_t n, std::int64_t key_pos) {
        const auto [r0, r1] =
            RowsSeeing(g, pos0, rows, key_pos, key_pos + static_cast<std::int64_t>(n) - 1);
        if (r0 == r1) return;
        for (std::size_t j0 = 0; j0 < hd; j0 += nr) {
          const std::size_t ncols = std::min(nr, hd - j0);
          PackKN(span.values + i0 * span.stride + kv_off + j0, span.stride, ncols, n, panel);
          for (std::size_t hh = 0; hh < g.group; ++hh) {
            const float* a =
                scores + (hh * rows + r0) * width + static_cast<std::size_t>(key_pos - lo);
            float* c = out + (t0 + r0) * g.q_dim + (h_first + hh) * hd + j0;
            PanelGemm(a, width, r1 - r0, panel, n, c, g.q_dim, ncols, /*accumulate=*/true);
          }
        }
      });
}

// One Attention call, shared by the work items.
struct AttentionJob {
  Geometry g;
  const float* q;
  std::size_t n;
  float* out;
  Workspace* ws;
  std::size_t max_keys;  // widest visible key range of any query
  // Chunk regime.
  std::size_t block, blocks, panel_floats, score_floats;

  // Decode regime: item = (query * kv_heads + kv head) * slices + slice.
  std::size_t slices;
  float* partials;  // [items, group, PartialFloats]

  // Slice s of the visible range of query t: positions [a, b].
  std::pair<std::int64_t, std::int64_t> Slice(std::size_t t, std::size_t s) const {
    const std::int64_t pos = g.first_pos + static_cast<std::int64_t>(t);
    const std::int64_t lo = g.VisibleFrom(pos);
    const std::int64_t count = pos - lo + 1;
    const auto k = static_cast<std::int64_t>(slices);
    const auto si = static_cast<std::int64_t>(s);
    return {lo + count * si / k, lo + count * (si + 1) / k - 1};
  }

  void RunSlices(std::size_t begin, std::size_t end, std::size_t thread) const {
    const std::size_t max_slice = (max_keys + slices - 1) / slices + 1;
    float* scores = ws->ForThread(thread, g.group * max_slice);
    for (std::size_t item = begin; item < end; ++item) {
      const std::size_t s = item % slices;
      const std::size_t kvh = (item / slices) % g.p->kv_heads;
      const std::size_t t = item / slices / g.p->kv_heads;
      const auto [a, b] = Slice(t, s);
      AttendSlice(g, q, t, kvh, a, b, partials + item * g.group * PartialFloats(g.p->head_dim),
                  scores);
    }
  }

  // Combines the slices' partial results into the output.
  void MergeSlices() const {
    const std::size_t hd = g.p->head_dim;
    const std::size_t pf = PartialFloats(hd);
    for (std::size_t tk = 0; tk < n * g.p->kv_heads; ++tk) {
      const std::size_t t = tk / g.p->kv_heads;
      const std::size_t kvh = tk % g.p->kv_heads;
      for (std::size_t hh = 0; hh < g.group; ++hh) {
        const auto part = [&](std::size_t s) {
          return partials + ((tk * slices + s) * g.group + hh) * pf;
        };
        float m = part(0)[hd];
        for (std::size_t s = 1; s < slices; ++s) m = std::max(m, part(s)[hd]);
        float sum = 0.0f;
        for (std::size_t s = 0; s < slices; ++s) sum += std::exp(part(s)[hd] - m) * part(s)[hd + 1];
        float* o = out + t * g.q_dim + (kvh * g.group + hh) * hd;
        for (std::size_t j = 0; j < hd; ++j) o[j] = 0.0f;
        for (std::size_t s = 0; s < slices; ++s) {
          const float w = std::exp(part(s)[hd] - m) / sum;
          for (std::size_t j = 0; j < hd; ++j) o[j] += w * part(s)[j];
        }
      }
    }
  }
  // Chunk regime: item = block-from-the-end * kv_heads + kv head.
  void RunBlocks(std::size_t begin, std::size_t end, std::size_t thread) const {
    float* buffer = ws->ForThread(thread, panel_floats + score_floats);
    for (std::size_t item = begin; item < end; ++item) {
      // Later blocks see more keys: hand them out first.
      const std::size_t b = blocks - 1 - item / g.p->kv_heads;
      const std::size_t kvh = item % g.p->kv_heads;
      const std::size_t t0 = b * block;
      const std::size_t t1 = std::min(n, t0 + block);
      AttendBlock(g, q, t0, t1, kvh, out, buffer + panel_floats, buffer);
    }
  }
};

void AttentionImpl(const float* q, std::size_t n, std::int64_t first_pos, const KVSpan* spans,
                   std::size_t num_spans, const AttentionParams* p, float* out, ThreadPool* pool,
                   Workspace* ws) {
  AttentionJob job;
  Geometry& g = job.g;
  g.spans = spans;
  g.num_spans = num_spans;
  g.kv_first = spans[0].first_pos;
  g.first_pos = first_pos;
  g.p = p;
  g.group = p->heads / p->kv_heads;
  g.q_dim = p->heads * p->head_dim;
  job.q = q;
  job.n = n;
  job.out = out;
  job.ws = ws;
  ws->Reserve(pool->num_threads());
  const std::int64_t last_pos = first_pos + static_cast<std::int64_t>(n) - 1;
  job.max_keys = static_cast<std::size_t>(last_pos - g.VisibleFrom(first_pos) + 1);

  // The closures hold one reference, so std::function stores them without allocating.
  if (n < kMinQueriesForGemm) {
    // Enough slices of the key range to give every thread work, and slices short enough to keep
    // the scores small; never more slices than the first query (the shortest range) has keys.
    const std::size_t threads = pool->num_threads();
    const std::size_t groups = n * p->kv_heads;
    const std::size_t min_keys = static_cast<std::size_t>(first_pos - g.VisibleFrom(first_pos) + 1);
    std::size_t slices = std::min((job.max_keys + kMinSliceKeys - 1) / kMinSliceKeys,
                                  (threads + groups - 1) / groups);
    slices = std::max(slices, (job.max_keys + kMaxSliceKeys - 1) / kMaxSliceKeys);
    job.slices = std::clamp<std::size_t>(slices, 1, min_keys);
    const std::size_t items = groups * job.slices;
    job.partials = ws->Shared(items * g.group * PartialFloats(p->head_dim));
    pool->ParallelFor(items, 1, [&job](std::size_t begin, std::size_t end, std::size_t thread) {
      job.RunSlices(begin, end, thread);
    });
    job.MergeSlices();
    return;
  }

  // Widest score row of a block of `b` queries.
  const auto max_width = [&job, p](std::size_t b) {
    if (p->window <= 0) return job.max_keys;
    return std::min(job.max_keys, static_cast<std::size_t>(p->window) - 1 + b);
  };
  std::size_t block = std::min<std::size_t>(kMaxQueryBlock, n);
  while (block > kMR && g.group * block * max_width(block) > kScoreBudget) block /= 2;
  job.block = block;
  job.blocks = (n + block - 1) / block;
  job.panel_floats = std::max(p->head_dim, kValueChunk) * PanelWidth();
  job.score_floats = g.group * block * max_width(block);
  pool->ParallelFor(job.blocks * p->kv_heads, 1,
                    [&job](std::size_t begin, std::size_t end, std::size_t thread) {
                      job.RunBlocks(begin, end, thread);
                    });
}

}  // namespace fgnet::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace fgnet::cpu {

HWY_EXPORT(AttentionImpl);

void Attention(const float* q, std::size_t n, std::int64_t first_pos, std::span<const KVSpan> kv,
               const AttentionParams& params, float* out, ThreadPool& pool, Workspace& ws) {
  if (n == 0) return;
  FGNET_CHECK(!kv.empty());
  FGNET_CHECK_GT(params.kv_heads, 0u);
  FGNET_CHECK_EQ(params.heads % params.kv_heads, 0u);
  FGNET_CHECK_GT(params.head_dim, 0u);
  for (std::size_t s = 1; s < kv.size(); ++s) {
    FGNET_CHECK_EQ(kv[s].first_pos,
                   kv[s - 1].first_pos + static_cast<std::int64_t>(kv[s - 1].count));
  }
  const std::int64_t kv_first = kv.front().first_pos;
  const std::int64_t kv_end = kv.back().first_pos + static_cast<std::int64_t>(kv.back().count);
  // The last query must see itself; the first must find every key it may see.
  FGNET_CHECK_LE(first_pos + static_cast<std::int64_t>(n), kv_end);
  const std::int64_t needed =
      params.window > 0 ? std::max<std::int64_t>(0, first_pos - params.window + 1) : 0;
  FGNET_CHECK_LE(kv_first, needed);
  HWY_DYNAMIC_DISPATCH(AttentionImpl)
  (q, n, first_pos, kv.data(), kv.size(), &params, out, &pool, &ws);
}

}  // namespace fgnet::cpu
#endif  // HWY_ONCE
