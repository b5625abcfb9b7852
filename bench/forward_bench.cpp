// forward_bench: speed of Gemma3Model::Forward on random BF16 weights of the exact Gemma 3 270M
// shapes (hidden 640, intermediate 2048, 18 layers, 4 heads / 1 kv head of 256, vocab 262144,
// window 512, layers 5/11/17 global, tied embeddings).
//
// Reports, for the given thread count:
//   * the machine's read bandwidth (all threads streaming a fresh 1 GiB buffer, and the weights
//     themselves; sampled before and after the model runs, the weights also between decode
//     steps), the reference for the decode figure;
//   * prefill: tokens/s of one Forward of --prefill tokens (default 512) on an empty cache,
//     logits of the last token only;
//   * decode: tokens/s of batch-1 steps after a --prompt token prompt (default 128), and the
//     achieved weight bandwidth = bytes of weights read per token / time per token.
// Output: a markdown table, then one JSON line. With --kernels 1, first a table of the main
// kernels alone (GEMV bandwidth, GEMM GFLOP/s, attention) on the same shapes.
//
// Usage: forward_bench [--threads N] [--prefill N] [--prompt N] [--decode N] [--reps N]
//                      [--kernels 0|1] [--no-avx512 1] [--no-avx2 1]
// --no-avx512 / --no-avx2 keep the dispatcher off those instruction sets, to measure the
// kernels a CPU without them would run.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "apps/fgnet/machine_info.h"
#include "apps/fgnet/mem_bandwidth.h"
#include "backend/cpu/aligned.h"
#include "backend/cpu/attention.h"
#include "backend/cpu/matmul.h"
#include "backend/cpu/ops.h"
#include "hwy/targets.h"
#include "model/gemma3_model.h"
#include "model/synth.h"

namespace fgnet {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Random BF16 tensors in one arena.
class RandomWeights {
 public:
  explicit RandomWeights(const Gemma3Config& c) {
    const std::int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
    const std::int64_t QD = c.q_dim(), KVD = c.kv_dim(), HD = c.head_dim;
    std::vector<std::vector<std::int64_t>> shapes = {{V, H}, {H}};
    for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
      for (auto s : std::vector<std::vector<std::int64_t>>{{H},
                                                           {QD, H},
                                                           {KVD, H},
                                                           {KVD, H},
                                                           {H, QD},
                                                           {HD},
                                                           {HD},
                                                           {H},
                                                           {H},
                                                           {I, H},
                                                           {I, H},
                                                           {H, I},
                                                           {H}}) {
        shapes.push_back(s);
      }
    }
    std::size_t total = 0;
    for (const auto& s : shapes) total += Elements(s);
    arena_.resize(total);
    // xorshift: uniform bf16 values in about [-0.06, 0.06] (no denormals, no overflow); norm
    // weights (rank 1) zero.
    std::uint64_t state = 0x9E3779B97F4A7C15ull;
    std::size_t offset = 0;
    std::vector<TensorView> views;
    for (const auto& s : shapes) {
      const std::size_t n = Elements(s);
      std::uint16_t* p = arena_.data() + offset;
      if (s.size() == 1) {
        std::memset(p, 0, n * 2);
      } else {
        for (std::size_t i = 0; i < n; ++i) {
          state ^= state << 13;
          state ^= state >> 7;
          state ^= state << 17;
          const float v = (static_cast<float>(state >> 40) / 16777216.0f - 0.5f) * 0.12f;
          p[i] = F32ToBF16(v);
        }
      }
      views.push_back(TensorView{DType::kBF16, s, p});
      offset += n;
    }
    std::size_t i = 0;
    weights_.embed_tokens = views[i++];
    weights_.norm = views[i++];
    weights_.lm_head = weights_.embed_tokens;
    for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
      Gemma3LayerWeights w;
      w.input_layernorm = views[i++];
      w.q_proj = views[i++];
      w.k_proj = views[i++];
      w.v_proj = views[i++];
      w.o_proj = views[i++];
      w.q_norm = views[i++];
      w.k_norm = views[i++];
      w.post_attention_layernorm = views[i++];
      w.pre_feedforward_layernorm = views[i++];
      w.gate_proj = views[i++];
      w.up_proj = views[i++];
      w.down_proj = views[i++];
      w.post_feedforward_layernorm = views[i++];
      weights_.layers.push_back(w);
    }
  }
  const Gemma3Weights& weights() const { return weights_; }
  const void* arena_data() const { return arena_.data(); }
  std::size_t arena_bytes() const { return arena_.size() * sizeof(std::uint16_t); }

  // Bytes of weights one decode step reads: every layer matrix plus the (tied) output matrix;
  // the embedding gather reads one row.
  std::size_t DecodeBytesPerToken() const {
    std::size_t bytes = weights_.lm_head.num_bytes() + weights_.norm.num_bytes();
    for (const auto& w : weights_.layers) {
      for (const TensorView* t :
           {&w.q_proj, &w.k_proj, &w.v_proj, &w.o_proj, &w.gate_proj, &w.up_proj, &w.down_proj,
            &w.input_layernorm, &w.post_attention_layernorm, &w.pre_feedforward_layernorm,
            &w.post_feedforward_layernorm, &w.q_norm, &w.k_norm}) {
        bytes += t->num_bytes();
      }
    }
    return bytes + static_cast<std::size_t>(weights_.embed_tokens.dim(1)) * 2;
  }

 private:
  static std::size_t Elements(const std::vector<std::int64_t>& s) {
    std::size_t n = 1;
    for (auto d : s) n *= static_cast<std::size_t>(d);
    return n;
  }
  cpu::AlignedVector<std::uint16_t> arena_;
  Gemma3Weights weights_;
};

// Read bandwidth of all pool threads streaming `words` 64-bit words at `data` (each thread a
// contiguous part), one sample per run, bytes/s.
void ReadBandwidth(const std::uint64_t* data, std::size_t words, ThreadPool& pool, int reps,
                   std::vector<double>* samples) {
  const std::size_t threads = pool.num_threads();
  const std::size_t per = words / threads;
  std::vector<std::uint64_t> sinks(threads, 0);
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    pool.ParallelFor(threads, 1, [&](std::size_t begin, std::size_t end, std::size_t thread) {
      for (std::size_t part = begin; part < end; ++part) {
        sinks[thread] += cli::SumWords(data + part * per, per);
      }
    });
    const double s = Seconds(t0, Clock::now());
    samples->push_back(static_cast<double>(per * threads * 8) / s);
  }
  std::uint64_t x = 0;
  for (auto v : sinks) x += v;
  if (x == 42) std::puts("");  // keeps the loads
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median seconds of `reps` runs of fn().
template <class F>
double TimeIt(int reps, const F& fn) {
  std::vector<double> s;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    fn();
    s.push_back(Seconds(t0, Clock::now()));
  }
  return Median(s);
}

void KernelTable(const Gemma3Config& c, const Gemma3Weights& w, ThreadPool& pool, int reps) {
  cpu::Workspace ws;
  const std::size_t H = 640, I = 2048, QD = 1024, V = 262144, n = 512;
  std::vector<float> x(n * I, 0.01f), y(n * V / 64 + n * I);
  std::printf("| kernel | time | rate |\n|---|---|---|\n");
  {
    const cpu::WeightMatrix m = cpu::WeightMatrix::FromTensor(w.lm_head);
    std::vector<float> logits(V);
    const double s =
        TimeIt(reps * 3, [&] { cpu::MatMul(x.data(), 1, H, m, logits.data(), V, pool, ws); });
    std::printf("| GEMV output projection [262144, 640] bf16 | %.2f ms | %.1f GB/s |\n", s * 1e3,
                static_cast<double>(m.num_bytes()) / s / 1e9);
  }
  {
    // Every layer matrix once, as a decode step reads them.
    std::size_t bytes = 0;
    for (const auto& l : w.layers) {
      for (const TensorView* t :
           {&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.gate_proj, &l.up_proj, &l.down_proj}) {
        bytes += t->num_bytes();
      }
    }
    const double s = TimeIt(reps * 3, [&] {
      for (const auto& l : w.layers) {
        for (const TensorView* t :
             {&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.gate_proj, &l.up_proj, &l.down_proj}) {
          const cpu::WeightMatrix m = cpu::WeightMatrix::FromTensor(*t);
          cpu::MatMul(x.data(), 1, m.cols, m, y.data(), m.rows, pool, ws);
        }
      }
    });
    std::printf("| GEMV all layer matrices (126 calls) bf16 | %.2f ms | %.1f GB/s |\n", s * 1e3,
                static_cast<double>(bytes) / s / 1e9);
  }
  const auto gemm = [&](const char* name, const TensorView& t) {
    const cpu::WeightMatrix m = cpu::WeightMatrix::FromTensor(t);
    const double s =
        TimeIt(reps, [&] { cpu::MatMul(x.data(), n, m.cols, m, y.data(), m.rows, pool, ws); });
    std::printf("| GEMM %zu x %s [%zu, %zu] bf16 | %.2f ms | %.1f GFLOP/s |\n", n, name, m.rows,
                m.cols, s * 1e3, 2.0 * static_cast<double>(n * m.rows * m.cols) / s / 1e9);
  };
  gemm("q_proj", w.layers[0].q_proj);
  gemm("gate_proj", w.layers[0].gate_proj);
  gemm("down_proj", w.layers[0].down_proj);
  gemm("k_proj", w.layers[0].k_proj);
  {
    std::vector<float> q(n * QD, 0.01f), k(n * 256, 0.02f), v(n * 256, 0.03f), out(n * QD);
    for (std::size_t i = 0; i < q.size(); ++i) q[i] = static_cast<float>(i % 17) * 0.01f;
    const cpu::KVSpan span{k.data(), v.data(), 256, 0, n};
    cpu::AttentionParams p;
    p.heads = 4;
    p.kv_heads = 1;
    p.head_dim = 256;
    p.scale = 0.0625f;
    p.window = c.sliding_window;
    const double s = TimeIt(reps, [&] {
      cpu::Attention(q.data(), n, 0, std::span(&span, 1), p, out.data(), pool, ws);
    });
    const double flops = 4.0 * 4 * 256 * (n * (n + 1) / 2.0);
    std::printf("| attention prefill %zu (one layer, causal) | %.2f ms | %.1f GFLOP/s |\n", n,
                s * 1e3, flops / s / 1e9);
  }
  std::printf("\n");
}

int Main(int argc, char** argv) {
  std::size_t threads = 2;
  std::size_t prefill = 512, prompt = 128, decode = 64;
  int reps = 3;
  bool kernels = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const std::size_t value = std::strtoull(argv[i + 1], nullptr, 10);
    if (flag == "--threads") {
      threads = value;
    } else if (flag == "--prefill") {
      prefill = value;
    } else if (flag == "--prompt") {
      prompt = value;
    } else if (flag == "--decode") {
      decode = value;
    } else if (flag == "--reps") {
      reps = static_cast<int>(value);
    } else if (flag == "--kernels") {
      kernels = value != 0;
    } else if (flag == "--no-avx512") {
      if (value != 0) hwy::DisableTargets(HWY_AVX3 | HWY_AVX3_DL);
    } else if (flag == "--no-avx2") {
      if (value != 0) hwy::DisableTargets(HWY_AVX3 | HWY_AVX3_DL | HWY_AVX2);
    } else {
      std::fprintf(stderr, "forward_bench: unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  const Gemma3Config config = Gemma3_270MConfig();
  std::fprintf(stderr, "forward_bench: making random BF16 weights of the 270M shapes...\n");
  const RandomWeights rw(config);
  auto model = Gemma3Model::Create(config, rw.weights());
  if (!model.ok()) {
    std::fprintf(stderr, "forward_bench: %s\n", model.error().message().c_str());
    return 1;
  }
  ThreadPool pool(threads);

  // Machine read bandwidth, sampled before and after the model runs (median of all samples), on
  // a fresh 1 GiB buffer and on the weights themselves (the memory a decode step reads).
  cpu::AlignedVector<std::uint64_t> stream(std::size_t{1} << 27);  // 1 GiB
  for (std::size_t i = 0; i < stream.size(); ++i) stream[i] = i * 0x9E3779B97F4A7C15ull;
  std::vector<double> bw_samples, weight_bw_samples;
  const auto probe = [&] {
    ReadBandwidth(stream.data(), stream.size(), pool, 3, &bw_samples);
    ReadBandwidth(reinterpret_cast<const std::uint64_t*>(rw.arena_data()), rw.arena_bytes() / 8,
                  pool, 3, &weight_bw_samples);
  };
  probe();
  if (kernels) KernelTable(config, rw.weights(), pool, reps);

  std::vector<std::int32_t> tokens(std::max(prefill, prompt + decode));
  for (std::size_t i = 0; i < tokens.size(); ++i)
    tokens[i] = static_cast<std::int32_t>((i * 7919 + 13) % 262144);
  std::vector<float> logits;

  // Prefill.
  // One cache, cleared between runs, as a server reuses its caches; the first run (which also
  // faults in the cache and scratch pages) is a warm-up.
  std::vector<double> prefill_s;
  KVCache prefill_kv = model->NewKVCache(static_cast<std::int64_t>(prefill + 1));
  for (int r = 0; r <= reps; ++r) {
    KVCache& kv = prefill_kv;
    kv.Clear();
    const auto t0 = Clock::now();
    const Status s =
        model->Forward(std::span(tokens).first(prefill), kv, pool, LogitsMode::kLast, &logits);
    if (r > 0) prefill_s.push_back(Seconds(t0, Clock::now()));
    if (!s.ok()) {
      std::fprintf(stderr, "forward_bench: %s\n", s.error().message().c_str());
      return 1;
    }
  }
  const double prefill_tps = static_cast<double>(prefill) / Median(prefill_s);

  // Decode after a prompt.
  std::vector<double> step_s;
  KVCache kv = model->NewKVCache(static_cast<std::int64_t>(prompt + decode + 1));
  if (!model->Forward(std::span(tokens).first(prompt), kv, pool, LogitsMode::kLast, &logits).ok())
    return 1;
  for (std::size_t i = 0; i < decode; ++i) {
    // The memory bandwidth of this kind of machine drifts within seconds: sample the weights'
    // read bandwidth between the steps too.
    if (i % 8 == 0) {
      ReadBandwidth(reinterpret_cast<const std::uint64_t*>(rw.arena_data()), rw.arena_bytes() / 8,
                    pool, 1, &weight_bw_samples);
    }
    const auto t0 = Clock::now();
    const Status s = model->Forward(std::span(tokens).subspan(prompt + i, 1), kv, pool,
                                    LogitsMode::kLast, &logits);
    step_s.push_back(Seconds(t0, Clock::now()));
    if (!s.ok()) return 1;
  }
  probe();
  stream = {};
  const double machine_bw = Median(bw_samples);
  const double weights_read_bw = Median(weight_bw_samples);
  const double step = Median(step_s);
  const double decode_tps = 1.0 / step;
  const double bytes = static_cast<double>(rw.DecodeBytesPerToken());
  const double weight_bw = bytes / step;

  const std::string cpu = cli::DescribeMachine().cpu_model;
  std::printf("| metric | value |\n|---|---|\n");
  std::printf("| machine | %s, %zu threads, kernels %s |\n", cpu.c_str(), threads,
              cpu::ActiveTargetName());
  std::printf("| commit | %s |\n", FGNET_BENCH_COMMIT);
  std::printf("| read bandwidth, all threads: fresh 1 GiB / the weights | %.1f / %.1f GB/s |\n",
              machine_bw / 1e9, weights_read_bw / 1e9);
  std::printf("| prefill %zu tokens | %.1f tok/s (%.1f ms, median of %d after a warm-up) |\n",
              prefill, prefill_tps, Median(prefill_s) * 1e3, reps);
  std::printf("| decode after %zu-token prompt | %.1f tok/s (%.2f ms/token, median of %zu) |\n",
              prompt, decode_tps, step * 1e3, decode);
  std::printf("| weights read per token | %.1f MB |\n", bytes / 1e6);
  std::printf(
      "| decode weight bandwidth | %.1f GB/s = %.0f%% of the weights' read bandwidth, %.0f%% of "
      "the fresh buffer's |\n",
      weight_bw / 1e9, 100.0 * weight_bw / weights_read_bw, 100.0 * weight_bw / machine_bw);
  std::printf(
      "{\"bench\":\"forward\",\"cpu\":\"%s\",\"threads\":%zu,\"target\":\"%s\",\"commit\":\"%s\","
      "\"read_bw_gbs\":%.2f,\"weights_read_bw_gbs\":%.2f,\"prefill_tokens\":%zu,\"prefill_tps\":%."
      "1f,\"prompt\":%zu,"
      "\"decode_tps\":%.2f,\"decode_ms\":%.3f,\"weight_bytes_per_token\":%.0f,\"decode_bw_gbs\":%."
      "2f}\n",
      cpu.c_str(), threads, cpu::ActiveTargetName(), FGNET_BENCH_COMMIT, machine_bw / 1e9,
      weights_read_bw / 1e9, prefill, prefill_tps, prompt, decode_tps, step * 1e3, bytes,
      weight_bw / 1e9);
  return 0;
}

}  // namespace
}  // namespace fgnet

int main(int argc, char** argv) { return fgnet::Main(argc, argv); }
