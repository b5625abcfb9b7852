// CUDA matrix products of the forward pass: y = x W^T for f32 activations x [rows, in] and BF16
// weights W [out, in] (row-major, as checkpoints store them), f32 results; and the grouped LoRA
// updates of a pass whose rows use different adapters.
//
// Few rows (decode) run a GEMV kernel that streams W once at memory bandwidth: up to 4 rows it
// multiplies the f32 activations by the BF16 weights exactly with f32 FMAs; from 5 to 16 rows on
// tensor cores (mma.sync), the activations split into two BF16 terms, x = hi + lo to about 2^-17
// relative, with f32 accumulation. More rows (prefill) call cuBLAS (BF16 inputs, f32
// accumulation) on the same two terms, one product per term. Results are within about 2^-16 of
// the exact f32 products, so that the CPU backend's f32-activation results (and a transformers
// float32 run) are matched closely and a row's result barely depends on how many rows share its
// pass (on the GEMV paths not at all within one kernel: its sums take the same steps whatever the
// rows beside it).
// Thread-safety: a MatMulContext is used by one thread (one stream) at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "backend/cuda/ops.h"
#include "backend/cuda/quant_matmul.h"
#include "util/status.h"

namespace fgnet::cuda {

// One adapter's share of a grouped LoRA update at one linear layer: rows
// rows[first .. first + count) of the pass (row indices in `row_index`) get
// y[row] += scale[i] * B (A x[row]), A [rank, in], B [out, rank], f32, on the device.
struct LoraGroup {
  const float* a = nullptr;
  const float* b = nullptr;
  std::int32_t rank = 0;
  std::int32_t first = 0;  // into row_index / row_scale
  std::int32_t count = 0;
};

// The adapters' updates of a GEMV product, added in its epilogue (BGMV style: no launch of their
// own): for row r of the product, the entries row_entries[r * per_row ..] (up to per_row, -1
// ends the list) are rows of a LoraShrink result t [entries, max_rank], each with its adapter
// (entry_adapter, an index into a site's groups) and scale (entry_scale); output o of row r gets
// the sum over its entries of scale * (B[o, :] . t[entry, :]), B that of the adapter's group at
// the product's site (a group of rank 0: no update). All device memory.
struct LoraRows {
  const std::int32_t* row_entries = nullptr;
  std::int32_t per_row = 0;
  const std::int32_t* entry_adapter = nullptr;
  const float* entry_scale = nullptr;
  std::int32_t max_rank = 0;
};
// One product's site: its groups, indexed by adapter, and its shrink result.
struct LoraSite {
  const LoraGroup* groups = nullptr;
  const float* t = nullptr;
};
// The epilogue of one fused call: the rows, and the site of each output (MatMulMany: output i;
// MatMulGeGLU: 0 the gate, 1 the up product).
struct LoraEpilogue {
  LoraRows rows;
  LoraSite sites[4];
};

// A cuBLAS handle bound to a stream, and the workspace of the BF16 path.
class MatMulContext {
 public:
  static Result<MatMulContext> Create(Stream stream = nullptr);
  MatMulContext(MatMulContext&&) noexcept;
  MatMulContext& operator=(MatMulContext&&) noexcept;
  ~MatMulContext();

  // BF16 products of up to kMaxGemvRows rows take the GEMV path, from kMinTensorCoreRows rows on
  // tensor cores (past 4 rows the f32 FMAs' reads of the activations, not W's, bound the GEMV;
  // on an H200, per layer of the 270M model at 8 rows: q/k/v 4.20 -> 3.03 us, gate/up 5.49 ->
  // 4.10, and the output matrix 153 -> 108 us). Repacked quantized matrices take their GEMV up to
  // kMaxQuantGemvRows rows.
  static constexpr std::size_t kMaxGemvRows = 16;
  static constexpr std::size_t kMinTensorCoreRows = 5;
  static constexpr std::size_t kMaxQuantGemvRows = 8;
  static constexpr bool TakesGemv(std::size_t rows) { return rows <= kMaxGemvRows; }

  // y [rows, out] = x [rows, in] W^T (accumulate: y += x W^T). `in` must be a multiple of 8.
  Status MatMul(const float* x, std::size_t rows, std::size_t in, const std::uint16_t* w_bf16,
                std::size_t out, float* y, bool accumulate = false);

  // y [rows, w.rows] = x [rows, w.cols] w^T (or +=) for a repacked quantized matrix
  // (quant_matmul.h). Up to kMaxQuantGemvRows rows: the quantized GEMV. More rows: slices of w are
  // dequantized to f32 in the context's workspace (it grows to at most 32 MiB, bumping
  // generation()) and multiplied by cuBLAS in f32, neither side rounded to BF16.
  Status MatMul(const float* x, std::size_t rows, const QuantMatrix& w, float* y,
                bool accumulate = false);

  // The quantized products of up to kMaxOutputs matrices of one layout and input size with the
  // same x (q/k/v, gate/up), each y_i equal to what MatMul computes for it alone: one GEMV launch
  // up to kMaxQuantGemvRows rows, else MatMul's many-row path per matrix.
  Status MatMulMany(const float* x, std::size_t rows, std::span<const QuantProduct> products,
                    bool accumulate = false);

  // One product of MatMulMany: y [rows, out] = x W^T, W [out, in] BF16 (16-byte aligned).
  struct MatMulOutput {
    const std::uint16_t* w;
    std::size_t out;
    float* y;
  };

  // Outputs MatMulMany takes.
  static constexpr std::size_t kMaxOutputs = 4;

  // y_i = x [rows, in] W_i^T for up to kMaxOutputs products of the same x (q/k/v). On the GEMV
  // path (TakesGemv): one launch over the rows of all W_i, each y_i equal to what MatMul computes
  // for it alone. More rows: x split into its two BF16 terms once, then cuBLAS products per
  // output, except that two consecutive outputs of one size whose weights and outputs lie one
  // after the other (k and v, as the model places them) run as one strided batched product per
  // term, which cuBLAS may sum in another order than MatMul's (within the same 2^-16). `in` must be
  // a multiple of 8; the y_i must not overlap x or each other. With `lora`, the adapters' updates
  // are added to each y_i in the same launch (the GEMV path only: an error when a product would
  // take cuBLAS). With `residual` (x null), the input is that residual input's rows, and its
  // `updated` buffer gets the new residual (the GEMV path only, as `lora`): RMSNormAddToNorm and
  // the products in one launch.
  Status MatMulMany(const float* x, std::size_t rows, std::size_t in,
                    std::span<const MatMulOutput> outputs, const LoraEpilogue* lora = nullptr,
                    const ResidualInput* residual = nullptr);

  // out [rows, n] = gelu_tanh(x W_gate^T) * (x W_up^T), W_gate and W_up [n, in] BF16, gelu_tanh(g)
  // = 0.5 g (1 + tanh(0.7978845608028654 (g + 0.044715 g^3))) in f32 as GeluTanhMul computes it.
  // On the GEMV path (TakesGemv): one launch computing gate and up row o together (each product
  // as MatMul computes it). Else the cuBLAS products: the gate into `out`, the up into
  // `up_scratch` [rows, n] when given, else into the context's workspace (which grows as needed
  // and then bumps generation()), as one batched product per term when W_up and the up products
  // lie after W_gate and `out` as MatMulMany's pairs do; then GeluTanhMul, which also leaves
  // out's two BF16 terms for a next product of out (InputTerms). `in` must be a multiple of 8;
  // `out` and `up_scratch` must not overlap x or each other. With `lora` (the GEMV path only),
  // the adapters' updates are added to the gate and up products before the GeGLU; with
  // `residual` (x null; the GEMV path only), the input is that residual input's rows, as in
  // MatMulMany. `terms_only` (for a next product that reads nothing else of out): the cuBLAS path
  // writes out's terms and not its f32 values, leaving the gate products in `out`.
  Status MatMulGeGLU(const float* x, std::size_t rows, std::size_t in, const std::uint16_t* w_gate,
                     const std::uint16_t* w_up, std::size_t n, float* out,
                     float* up_scratch = nullptr, const LoraEpilogue* lora = nullptr,
                     const ResidualInput* residual = nullptr, bool terms_only = false);

  // The two BF16 terms of a many-row product's input x [rows, in] (hi, then lo at rows * in: the
  // split the cuBLAS path makes), for the kernel that produces x to write beside it
  // (RMSNormAddToNormSplit). The next call of this context, when it is a many-row product of x,
  // takes them instead of splitting x itself; any other call forgets them. Grows the context's
  // workspace as needed (bumping generation()).
  Result<std::uint16_t*> InputTerms(const float* x, std::size_t rows, std::size_t in);

  // Both are usable inside CUDA stream capture (MatMul too): the GEMV path neither allocates nor
  // synchronises; the cuBLAS path does only when its workspace grows, so each many-row shape is
  // run once outside capture first.

  Stream stream() const;

  // Bytes of device memory the context holds: cuBLAS's workspace and the many-row paths' buffers.
  std::size_t device_bytes() const;

  // Increases whenever the context's device memory moves (its BF16 workspace grows), so that a
  // caller knows when CUDA graphs that captured MatMul calls are stale.
  std::uint64_t generation() const;

 private:
  struct Impl;
  explicit MatMulContext(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The grouped shrink (t = A x) and expand (y += s B t) of every group at one site, in two
// launches whatever the number of groups. `group_rows`, where set, is the most rows a group has
// (every group's count at most that; 0: total_rows): the launches take blocks for that many rows
// of each group (a decode pass of one row an adapter launches a block a group, not total_rows / 8).
// The same holds for LoraShrink, LoraShrinkOfResidual and LoraExpand. groups [num_groups],
// row_index / row_scale [total rows] and `workspace` (max_rank * total rows floats) are device
// memory. A row may appear in several groups (a weighted mix of adapters); their updates add up.
Status LoraApply(const float* x, std::size_t ldx, std::size_t in, float* y, std::size_t ldy,
                 std::size_t out, const LoraGroup* groups, std::int32_t num_groups,
                 std::int32_t max_rank, const std::int32_t* row_index, const float* row_scale,
                 std::int32_t total_rows, float* workspace, Stream stream = nullptr,
                 std::int32_t group_rows = 0);

// The shrinks of several sites that share x (q/k/v; gate/up) in one launch: groups [num_groups]
// are `slots` consecutive runs of groups_per_slot, run s writing its t = A x into slot s of
// `workspace` (slot s at s * total_rows * max_rank floats) as LoraApply's shrink does.
Status LoraShrink(const float* x, std::size_t ldx, std::size_t in, const LoraGroup* groups,
                  std::int32_t num_groups, std::int32_t groups_per_slot, std::int32_t max_rank,
                  const std::int32_t* row_index, std::int32_t total_rows, float* workspace,
                  Stream stream = nullptr, std::int32_t group_rows = 0);

// RMSNormAddToNorm of the residual input's `rows` rows of `in` values (into `normed` [rows, in],
// and the new residual rows into residual.updated, which must not be residual.residual), and
// LoraShrink of the result as x, in one launch: the shrink's blocks normalise their rows
// themselves (the same bits). in must be a multiple of 4, at most kMaxShrinkOfResidualIn; every
// array 16-byte aligned. For a layer whose products of that input carry adapters (they read
// `normed`).
inline constexpr std::size_t kMaxShrinkOfResidualIn = 768;
Status LoraShrinkOfResidual(const ResidualInput& residual, std::size_t rows, std::size_t in,
                            float* normed, const LoraGroup* groups, std::int32_t num_groups,
                            std::int32_t groups_per_slot, std::int32_t max_rank,
                            const std::int32_t* row_index, std::int32_t total_rows,
                            float* workspace, Stream stream = nullptr, std::int32_t group_rows = 0);

// The expands of several sites that share their groups' rows (q/k/v; gate/up) in one launch, after
// a LoraShrink of the same runs of groups: run s of groups_per_slot groups adds
// scale * B t (t from slot s of `workspace`) to sites[s].y, as LoraApply's expand does. At most 4
// sites.
struct LoraExpandSite {
  float* y;
  std::size_t ldy;
  std::size_t out;
};
Status LoraExpand(std::span<const LoraExpandSite> sites, const LoraGroup* groups,
                  std::int32_t groups_per_slot, std::int32_t max_rank,
                  const std::int32_t* row_index, const float* row_scale, std::int32_t total_rows,
                  const float* workspace, Stream stream = nullptr, std::int32_t group_rows = 0);

}  // namespace fgnet::cuda
