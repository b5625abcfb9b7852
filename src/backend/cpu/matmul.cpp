// SIMD matmul (see matmul.h). Compiled once per Highway target via foreach_target.h.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "backend/cpu/matmul.cpp"
#include <atomic>

#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
// Per-target code below.
#include "backend/cpu/gemm-inl.h"
#include "backend/cpu/matmul.h"
#include "backend/cpu/quant-inl.h"
#include "util/status.h"

HWY_BEFORE_NAMESPACE();
namespace fgnet::cpu::HWY_NAMESPACE {

// Below this many tokens, weight rows are streamed and dotted with each token (decode regime);
// from it on, weight panels are packed and the register-blocked micro-kernel runs.
inline constexpr std::size_t kMinTokensForPacking = 12;
// Weight rows per work item in the streaming regime.
inline constexpr std::size_t kStreamRowsPerItem = 32;
inline constexpr std::size_t kMaxOutputs = 8;

// y[t, r] for rows [r0, r1) of w and every token t. Rows are read one after the other, so the
// matrix is a sequential stream that the hardware prefetcher follows at full bandwidth
// (interleaving several adjacent rows measured at half the bandwidth); with one token, the two
// halves of the run are read side by side as two streams; with more, each row is dotted with up
// to four tokens at a time, and further tokens reuse it from L1.
template <typename T>
void StreamRows(const float* x, std::size_t n, std::size_t ldx, const T* w, std::size_t K,
                std::size_t r0, std::size_t r1, float* y, std::size_t ldy) {
  if (n == 1) {
    // Decode: the two halves of the run as two sequential streams.
    const std::size_t half = (r1 - r0) / 2;
    for (std::size_t i = 0; i < half; ++i) {
      const std::size_t ra = r0 + i;
      const std::size_t rb = r0 + half + i;
      DotRowPair(w + ra * K, w + rb * K, x, K, y + ra, y + rb);
    }
    if (r0 + 2 * half < r1) y[r1 - 1] = Dot1(w + (r1 - 1) * K, x, K);
    return;
  }
  for (std::size_t r = r0; r < r1; ++r) {
    const T* row = w + r * K;
    std::size_t t = 0;
    for (; t + 4 <= n; t += 4) DotTokens<4>(row, x + t * ldx, ldx, K, y + t * ldy + r, ldy);
    switch (n - t) {
      case 3:
        DotTokens<3>(row, x + t * ldx, ldx, K, y + t * ldy + r, ldy);
        break;
      case 2:
        DotTokens<2>(row, x + t * ldx, ldx, K, y + t * ldy + r, ldy);
        break;
      case 1:
        DotTokens<1>(row, x + t * ldx, ldx, K, y + t * ldy + r, ldy);
        break;
      default:
        break;
    }
  }
}

// y[t, j0 .. j0 + PanelWidth()) for every token t: packs the panel of rows starting at j0
// (`panel` and `scratch`: K * PanelWidth() floats each), then runs the micro-kernel over x.
template <typename T>
void PackedRows(const float* x, std::size_t n, std::size_t ldx, const T* w, std::size_t rows,
                std::size_t K, std::size_t j0, float* panel, float* scratch, float* y,
                std::size_t ldy) {
  const std::size_t nr = PanelWidth();
  const std::size_t ncols = std::min(nr, rows - j0);
  PackTransposed(w + j0 * K, K, ncols, K, panel, scratch);
  PanelGemm(x, ldx, n, panel, K, y + j0, ldy, ncols, /*accumulate=*/false);
}

// StreamRows for quantized rows (`row_bytes` apart): the same two-stream / token-group scheme,
// each block decoded in registers. `xsums`: the tokens' SubBlockSums.
template <class Q>
void StreamQuantRows(const float* x, std::size_t n, std::size_t ldx, const float* xsums,
                     const std::uint8_t* w, std::size_t row_bytes, std::size_t K, std::size_t r0,
                     std::size_t r1, float* y, std::size_t ldy) {
  if (n == 1) {
    const std::size_t half = (r1 - r0) / 2;
    for (std::size_t i = 0; i < half; ++i) {
      const std::size_t ra = r0 + i;
      const std::size_t rb = r0 + half + i;
      QuantDotRowPair<Q>(w + ra * row_bytes, w + rb * row_bytes, x, xsums, K, y + ra, y + rb);
    }
    if (r0 + 2 * half < r1) {
      QuantDotTokens<1, Q>(w + (r1 - 1) * row_bytes, x, 0, xsums, K, y + r1 - 1, 0);
    }
    return;
  }
  const std::size_t lds = K / 32;
  for (std::size_t r = r0; r < r1; ++r) {
    const std::uint8_t* row = w + r * row_bytes;
    std::size_t t = 0;
    for (; t + 4 <= n; t += 4) {
      QuantDotTokens<4, Q>(row, x + t * ldx, ldx, xsums + t * lds, K, y + t * ldy + r, ldy);
    }
    switch (n - t) {
      case 3:
        QuantDotTokens<3, Q>(row, x + t * ldx, ldx, xsums + t * lds, K, y + t * ldy + r, ldy);
        break;
      case 2:
        QuantDotTokens<2, Q>(row, x + t * ldx, ldx, xsums + t * lds, K, y + t * ldy + r, ldy);
        break;
      case 1:
        QuantDotTokens<1, Q>(row, x + t * ldx, ldx, xsums + t * lds, K, y + t * ldy + r, ldy);
        break;
      default:
        break;
    }
  }
}

// PackedRows for quantized rows: the panel's rows are dequantized one after the other into
// `scratch` (one sequential stream, as BF16 rows are widened), then packed from there.
template <class Q>
void PackedQuantRows(const float* x, std::size_t n, std::size_t ldx, const std::uint8_t* w,
                     std::size_t row_bytes, std::size_t rows, std::size_t K, std::size_t j0,
                     float* panel, float* scratch, float* y, std::size_t ldy) {
  const std::size_t nr = PanelWidth();
  const std::size_t ncols = std::min(nr, rows - j0);
  for (std::size_t r = 0; r < ncols; ++r) {
    DequantRowScaled<Q>(w + (j0 + r) * row_bytes, K, 1.0f, scratch + r * K);
  }
  PackTransposed(scratch, K, ncols, K, panel, /*scratch=*/nullptr);
  PanelGemm(x, ldx, n, panel, K, y + j0, ldy, ncols, /*accumulate=*/false);
}

// One MatMulMany call: work items of all outputs numbered consecutively, output o owning items
// [first[o], first[o + 1]).
struct MatMulJob {
  const float* x;
  std::size_t n, ldx, K;
  const MatMulOutput* outs;
  bool packed;
  bool needs_xsums;  // streaming regime with a quantized output (see SubBlockSums)
  std::size_t unit_rows;
  std::size_t num_outs;
  std::size_t first[kMaxOutputs + 1];
  Workspace* ws;
  std::size_t threads;
  std::atomic<std::size_t> next{0};

  template <typename T>
  void Item(const WeightMatrix& w, std::size_t r0, float* y, std::size_t ldy, float* panel) const {
    const T* wt = static_cast<const T*>(w.data);
    if (packed) {
      PackedRows(x, n, ldx, wt, w.rows, K, r0, panel, panel + K * PanelWidth(), y, ldy);
    } else {
      StreamRows(x, n, ldx, wt, K, r0, std::min(w.rows, r0 + unit_rows), y, ldy);
    }
  }

  template <class Q>
  void QuantItem(const WeightMatrix& w, std::size_t r0, float* y, std::size_t ldy, float* panel,
                 const float* xsums) const {
    const auto* wt = static_cast<const std::uint8_t*>(w.data);
    const std::size_t row_bytes = DTypeRowBytes(Q::kType, K);
    if (packed) {
      PackedQuantRows<Q>(x, n, ldx, wt, row_bytes, w.rows, K, r0, panel, panel + K * PanelWidth(),
                         y, ldy);
    } else {
      StreamQuantRows<Q>(x, n, ldx, xsums, wt, row_bytes, K, r0, std::min(w.rows, r0 + unit_rows),
                         y, ldy);
    }
  }

  // Claims the next run of items: large runs first (long sequential streams), single items at
  // the end (so that no thread idles while another finishes a long run). Returns false when
  // every item is taken.
  bool Claim(std::size_t* begin, std::size_t* end) {
    const std::size_t total = first[num_outs];
    std::size_t cur = next.load(std::memory_order_relaxed);
    std::size_t take = 0;
    do {
      if (cur >= total) return false;
      take = std::max<std::size_t>(1, (total - cur) / (2 * threads));
    } while (!next.compare_exchange_weak(cur, cur + take, std::memory_order_relaxed));
    *begin = cur;
    *end = cur + take;
    return true;
  }

  void Run(std::size_t thread) {
    float* panel = packed ? ws->ForThread(thread, 2 * K * PanelWidth()) : nullptr;
    float* xsums = nullptr;
    std::size_t begin = 0, end = 0;
    std::size_t o = 0;
    while (Claim(&begin, &end)) {
      if (needs_xsums && xsums == nullptr) {
        // Once per thread that takes part (cheap: n * K additions).
        xsums = ws->ForThread(thread, n * (K / 32));
        SubBlockSums(x, n, ldx, K, xsums);
      }
      for (std::size_t item = begin; item < end; ++item) RunItem(item, panel, xsums, o);
    }
  }

  // `o`: a hint for the output of the item (items come in increasing order per thread).
  void RunItem(std::size_t item, float* panel, const float* xsums, std::size_t& o) const {
    while (item >= first[o + 1]) ++o;
    const WeightMatrix& w = *outs[o].w;
    const std::size_t r0 = (item - first[o]) * unit_rows;
    switch (w.dtype) {
      case DType::kF32:
        Item<float>(w, r0, outs[o].y, outs[o].ldy, panel);
        break;
      case DType::kBF16:
        Item<hwy::bfloat16_t>(w, r0, outs[o].y, outs[o].ldy, panel);
        break;
      case DType::kF16:
        Item<hwy::float16_t>(w, r0, outs[o].y, outs[o].ldy, panel);
        break;
      case DType::kQ8_0:
        QuantItem<Q8_0Decoder>(w, r0, outs[o].y, outs[o].ldy, panel, xsums);
        break;
      case DType::kQ4_0:
        QuantItem<Q4_0Decoder>(w, r0, outs[o].y, outs[o].ldy, panel, xsums);
        break;
      case DType::kQ4_K:
        QuantItem<Q4_KDecoder>(w, r0, outs[o].y, outs[o].ldy, panel, xsums);
        break;
      case DType::kQ6_K:
        QuantItem<Q6_KDecoder>(w, r0, outs[o].y, outs[o].ldy, panel, xsums);
        break;
    }
  }
};

void MatMulManyImpl(const float* x, std::size_t n, std::size_t ldx, const MatMulOutput* outs,
                    std::size_t num_outs, ThreadPool* pool, Workspace* ws) {
  FGNET_CHECK_LE(num_outs, kMaxOutputs);
  MatMulJob job;
  job.x = x;
  job.n = n;
  job.ldx = ldx;
  job.K = outs[0].w->cols;
  job.outs = outs;
  job.packed = n >= kMinTokensForPacking;
  // Only Q4_0 and Q4_K use the sums, but every quantized kernel gets a valid pointer; they cost
  // n * K additions per thread, next to rows * K multiply-adds.
  job.needs_xsums = false;
  for (std::size_t o = 0; o < num_outs && !job.packed; ++o) {
    job.needs_xsums = job.needs_xsums || IsQuantized(outs[o].w->dtype);
  }
  job.unit_rows = job.packed ? PanelWidth() : kStreamRowsPerItem;
  job.first[0] = 0;
  for (std::size_t o = 0; o < num_outs; ++o) {
    job.first[o + 1] = job.first[o] + (outs[o].w->rows + job.unit_rows - 1) / job.unit_rows;
  }
  job.num_outs = num_outs;
  job.ws = ws;
  job.threads = pool->num_threads();
  if (job.packed || job.needs_xsums) ws->Reserve(job.threads);
  // One pool item per thread; the job hands out the work itself (see Claim). The closure holds
  // one reference, so std::function stores it without allocating.
  pool->ParallelFor(
      job.threads, 1,
      [&job](std::size_t /*begin*/, std::size_t /*end*/, std::size_t thread) { job.Run(thread); });
}

std::size_t GemmPanelFloatsImpl(std::size_t K) { return K * PanelWidth(); }

void StreamF32Impl(const float* x, std::size_t n, std::size_t ldx, const float* w, std::size_t rows,
                   std::size_t K, float* y, std::size_t ldy) {
  StreamRows(x, n, ldx, w, K, 0, rows, y, ldy);
}

void GemmF32Impl(const float* a, std::size_t lda, std::size_t M, const float* b, std::size_t ldb,
                 bool b_is_kn, std::size_t K, std::size_t N, float* c, std::size_t ldc,
                 bool accumulate, float* panel) {
  const std::size_t nr = PanelWidth();
  for (std::size_t j0 = 0; j0 < N; j0 += nr) {
    const std::size_t ncols = std::min(nr, N - j0);
    if (b_is_kn) {
      PackKN(b + j0, ldb, ncols, K, panel);
    } else {
      PackTransposed(b + j0 * ldb, ldb, ncols, K, panel, /*scratch=*/nullptr);
    }
    PanelGemm(a, lda, M, panel, K, c + j0, ldc, ncols, accumulate);
  }
}

}  // namespace fgnet::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace fgnet::cpu {

HWY_EXPORT(MatMulManyImpl);
HWY_EXPORT(GemmF32Impl);
HWY_EXPORT(GemmPanelFloatsImpl);
HWY_EXPORT(StreamF32Impl);

WeightMatrix WeightMatrix::FromTensor(const TensorView& t) {
  FGNET_CHECK_EQ(t.rank(), 2);
  return WeightMatrix{t.dtype, t.data, static_cast<std::size_t>(t.dim(0)),
                      static_cast<std::size_t>(t.dim(1))};
}

void MatMulMany(const float* x, std::size_t n, std::size_t ldx, std::span<const MatMulOutput> outs,
                ThreadPool& pool, Workspace& ws) {
  if (n == 0 || outs.empty()) return;
  for (const MatMulOutput& o : outs) {
    FGNET_CHECK(o.w != nullptr && o.y != nullptr);
    FGNET_CHECK_EQ(o.w->cols, outs[0].w->cols);
    FGNET_CHECK_GE(ldx, o.w->cols);
    FGNET_CHECK_GE(o.ldy, o.w->rows);
    FGNET_CHECK_EQ(o.w->cols % DTypeBlockElements(o.w->dtype), 0u);
  }
  HWY_DYNAMIC_DISPATCH(MatMulManyImpl)(x, n, ldx, outs.data(), outs.size(), &pool, &ws);
}

void MatMul(const float* x, std::size_t n, std::size_t ldx, const WeightMatrix& w, float* y,
            std::size_t ldy, ThreadPool& pool, Workspace& ws) {
  const MatMulOutput out{&w, y, ldy};
  MatMulMany(x, n, ldx, std::span<const MatMulOutput>(&out, 1), pool, ws);
}

void GemmF32(const float* a, std::size_t lda, std::size_t M, const float* b, std::size_t ldb,
             bool b_is_kn, std::size_t K, std::size_t N, float* c, std::size_t ldc, bool accumulate,
             Workspace& ws) {
  if (M == 0 || N == 0) return;
  ws.Reserve(1);
  float* panel = ws.ForThread(0, GemmPanelFloats(K));
  HWY_DYNAMIC_DISPATCH(GemmF32Impl)(a, lda, M, b, ldb, b_is_kn, K, N, c, ldc, accumulate, panel);
}

std::size_t GemmPanelFloats(std::size_t K) { return HWY_DYNAMIC_DISPATCH(GemmPanelFloatsImpl)(K); }

void MatMulF32OnThread(const float* x, std::size_t n, std::size_t ldx, const float* w,
                       std::size_t rows, std::size_t K, float* y, std::size_t ldy, float* panel) {
  if (n == 0 || rows == 0) return;
  if (n < kOnThreadPackingTokens) {
    HWY_DYNAMIC_DISPATCH(StreamF32Impl)(x, n, ldx, w, rows, K, y, ldy);
  } else {
    GemmF32WithPanel(x, ldx, n, w, K, /*b_is_kn=*/false, K, rows, y, ldy, /*accumulate=*/false,
                     panel);
  }
}

void GemmF32WithPanel(const float* a, std::size_t lda, std::size_t M, const float* b,
                      std::size_t ldb, bool b_is_kn, std::size_t K, std::size_t N, float* c,
                      std::size_t ldc, bool accumulate, float* panel) {
  if (M == 0 || N == 0) return;
  HWY_DYNAMIC_DISPATCH(GemmF32Impl)(a, lda, M, b, ldb, b_is_kn, K, N, c, ldc, accumulate, panel);
}

}  // namespace fgnet::cpu
#endif  // HWY_ONCE
