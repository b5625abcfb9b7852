// A paged KV pool on the host for the CUDA attention and KV-write tests (cuda_attention_test.cpp,
// cuda_kv_write_test.cpp): the rows of a pass (PagedCase), blocks of a pool in shuffled order
// with NaN wherever a kernel must not read (HostPool, BuildPool), where a row's key lies, and its
// keys and values rounded to bf16.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "cuda_attention_support.h"
#include "tensor/dtype.h"

namespace fgnet::cuda {

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
inline HostPool BuildPool(const PagedCase& c, std::mt19937& rng) {
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
inline std::int64_t KeyAt(const PagedCase& c, const HostPool& pool, int r) {
  const int p = c.row_pos[r];
  const std::int64_t b = pool.tables[pool.seq_table[c.row_seq[r]] + p / c.block_size];
  return b * c.block_elements() +
         (std::int64_t{c.slot} * c.block_size + p % c.block_size) * c.row();
}

// Rounds the pool's keys and values to bf16 (NaN stays NaN); returns their bf16 bits.
inline std::vector<std::uint16_t> RoundToBF16(HostPool* pool) {
  std::vector<std::uint16_t> bits(pool->memory.size());
  for (std::size_t i = 0; i < bits.size(); ++i) {
    bits[i] = F32ToBF16(pool->memory[i]);
    pool->memory[i] = BF16ToF32(bits[i]);
  }
  return bits;
}

struct HeadShape {
  int heads, kv_heads, head_dim;
};

}  // namespace fgnet::cuda
