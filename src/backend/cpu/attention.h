// Causal self-attention of a chunk of queries against cached and fresh keys/values, with an
// optional sliding window, grouped-query (GQA) / multi-query (MQA) heads and optional logit
// softcapping. Softmax in f32.
//
// Keys and values are given as KVSpans in increasing, contiguous position order (e.g. the two
// halves of a wrapped ring buffer followed by the chunk's own fresh keys), so a cache never has
// to hold a chunk's keys before the chunk's queries have used them.
// Thread-safety: reentrant given distinct Workspaces and outputs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "backend/cpu/workspace.h"
#include "util/thread_pool.h"

namespace fgnet::cpu {

// Keys and values of positions first_pos .. first_pos + count - 1. Position first_pos + i of kv
// head h sits at keys + i * stride + h * head_dim (values likewise).
struct KVSpan {
  const float* keys = nullptr;
  const float* values = nullptr;
  std::size_t stride = 0;
  std::int64_t first_pos = 0;
  std::size_t count = 0;
};

struct AttentionParams {
  std::size_t heads = 0;     // query heads
  std::size_t kv_heads = 0;  // divides heads; query head h uses kv head h / (heads / kv_heads)
  std::size_t head_dim = 0;
  float scale = 1.0f;       // scores = (q . k) * scale
  float softcap = 0.0f;     // > 0: scores = softcap * tanh(scores / softcap), before the mask
  std::int64_t window = 0;  // > 0: a query at p sees keys k with p - window < k <= p
};

// q: [n, heads * head_dim], queries at positions first_pos .. first_pos + n - 1.
// out: [n, heads * head_dim]. Every query must find its own position in `kv`, and `kv` must
// hold every earlier position the query may see (FGNET_CHECKed).
void Attention(const float* q, std::size_t n, std::int64_t first_pos, std::span<const KVSpan> kv,
               const AttentionParams& params, float* out, ThreadPool& pool, Workspace& ws);

}  // namespace fgnet::cpu
