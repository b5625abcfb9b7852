// CUDA kernels of the attention block over paged KV (the layout of kv/block_pool.h): q/k norm
// fused with RoPE, the write of fresh keys and values into their blocks, and causal attention
// with an optional sliding window, GQA/MQA heads and optional softcapping, split over the keys
// (flash-decoding) when a pass has few query rows.
//
// A pass holds the rows of several sequences. Keys and values of every position a row may see,
// its own included, are in the blocks when attention runs (WriteKV first), so the kernels never
// distinguish cached from fresh positions. Activations and softmax are f32; keys and values are
// f32 or bf16 in the blocks (PagedLayer::dtype; bf16 ones are rounded to nearest even as they are
// written, and read back exactly).
// All pointers are device pointers; each call launches on `stream` and returns the launch's
// error. Inputs are trusted (the model checks them): every block a row's visible positions fall
// in exists in its table.
// Thread-safety: reentrant; calls on one stream are ordered by the stream.
#pragma once

#include <cstddef>
#include <cstdint>

#include "backend/cuda/ops.h"
#include "tensor/dtype.h"
#include "util/status.h"

namespace fgnet::cuda {

// Where the KV blocks of one layer live. A block holds, for each of the `group_layers` layers of
// its group, keys [block_size][row] then, after all the group's keys, values likewise: the key of
// position p (block table entry b = table[p / block_size], offset o = p % block_size) for layer
// slot s is at element b * block_elements + (s * block_size + o) * row of `memory`, its value
// block_elements / 2 further. row = kv_heads * head_dim.
struct PagedLayer {
  void* memory = nullptr;
  DType dtype = DType::kF32;  // of the elements: kF32 or kBF16
  std::int64_t block_elements = 0;
  std::int64_t block_size = 0;
  std::int64_t slot = 0;  // the layer's index within its group
  std::int64_t row = 0;
};

// The rows of a pass and the block tables of their sequences (for one layer group).
struct PassRows {
  std::int32_t rows = 0;
  const std::int32_t* row_seq = nullptr;  // [rows] the sequence of each row (0 .. num_seqs - 1)
  const std::int32_t* row_pos = nullptr;  // [rows] the position of each row
  // [num_seqs] offset into `tables` of each sequence's block table (entries for blocks
  // 0, 1, ... of the sequence; -1 for blocks not held).
  const std::int32_t* seq_table = nullptr;
  const std::int32_t* tables = nullptr;
  std::int32_t num_seqs = 0;
  std::int32_t max_pos = 0;  // the largest row_pos (sizes the split over keys)
};

struct AttentionShape {
  std::int32_t heads = 0;     // query heads
  std::int32_t kv_heads = 0;  // divides heads; query head h uses kv head h / (heads / kv_heads)
  std::int32_t head_dim = 0;  // a multiple of 32, at most 256
  float scale = 1.0f;         // scores = (q . k) * scale
  float softcap = 0.0f;       // > 0: scores = softcap * tanh(scores / softcap)
  std::int32_t window = 0;    // > 0: a row at p sees keys k with p - window < k <= p
};

// In place on q [rows, heads * head_dim] and k [rows, kv_heads * head_dim]: each head's RMSNorm
// with the f32 factors q_scale / k_scale [head_dim] (1 + w), then rotary embedding (NeoX
// half-split pairs) at row_pos[r] with the f32 inverse frequencies inv_freq [head_dim / 2]. The
// angle is f32(pos) * inv_freq rounded to f32 and its cos/sin are correctly rounded, as
// cpu::RopeTable computes them.
Status QKNormRope(float* q, float* k, std::int32_t rows, std::int32_t heads, std::int32_t kv_heads,
                  std::int32_t head_dim, const float* q_scale, const float* k_scale, float eps,
                  const float* inv_freq, const std::int32_t* row_pos, Stream stream = nullptr);

// Stores k and v [rows, layer.row] at each row's position in its sequence's blocks.
Status WriteKV(const float* k, const float* v, const PassRows& pass, const PagedLayer& layer,
               Stream stream = nullptr);

// QKNormRope (at pass.row_pos) followed by WriteKV of the normalised, rotated k and of v
// [rows, layer.row] (layer.row = kv_heads * head_dim), in one launch; the results (q, k and the
// blocks) are bit-identical to the two calls. With `planes` (PagedAttentionPlanes), each row's key
// and value also go there split into BF16 terms, as PagedAttention's own split would write them.
// On sm_90+ the launch may overlap the end of the stream's previous kernel (programmatic
// dependent launch); it reads nothing before that kernel completes.
Status QKNormRopeWriteKV(float* q, float* k, const float* v, const PassRows& pass,
                         const PagedLayer& layer, std::int32_t heads, std::int32_t kv_heads,
                         std::int32_t head_dim, const float* q_scale, const float* k_scale,
                         float eps, const float* inv_freq, Stream stream = nullptr,
                         std::uint16_t* planes = nullptr);

// Floats of workspace PagedAttention needs for a pass: its split-K partial results and, for a pass
// of one sequence with several tiles of rows, room for its keys and values split into bf16 terms
// (positions 0 .. max_pos; used with f32 keys).
std::size_t PagedAttentionWorkspace(const PassRows& pass, const AttentionShape& shape);

// Where in `workspace` PagedAttention takes a pass's f32 keys and values split into BF16 terms
// (a pass of one sequence with several tiles of rows, on a device that runs tiles), or null when
// it splits none: position p's key and value of kv head h at (p * kv_heads + h) * 4 * head_dim
// elements, as k hi, v hi, k lo, v lo of head_dim each (hi = bf16(x), lo = bf16(x - hi)).
std::uint16_t* PagedAttentionPlanes(const PassRows& pass, const PagedLayer& layer,
                                    const AttentionShape& shape, float* workspace);

// What a PagedAttention call may do beyond its output.
struct AttentionExtras {
  // out also written here as two BF16 terms, hi [rows, heads * head_dim] then lo
  // (RMSNormAddToNormSplit's split), by the kernels that write it: a next product's input
  // (MatMulContext::InputTerms).
  std::uint16_t* out_terms = nullptr;
  // The rows' own keys and values are in PagedAttentionPlanes already (QKNormRopeWriteKV wrote
  // them there): only the positions before them are split. The rows of the pass's sequence have
  // distinct positions (as every pass's rows do).
  bool rows_split = false;
};

// out [rows, heads * head_dim] = softmax(q k^T) v for q [rows, heads * head_dim], each row
// attending to the positions of its sequence it may see (causal, within the window).
// `workspace` holds PagedAttentionWorkspace() floats.
Status PagedAttention(const float* q, const PassRows& pass, const PagedLayer& layer,
                      const AttentionShape& shape, float* out, float* workspace,
                      Stream stream = nullptr, const AttentionExtras& extras = {});

}  // namespace fgnet::cuda
