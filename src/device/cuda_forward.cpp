// The kernels of a CUDA forward pass, in order (CudaModel::Impl::Enqueue), and when a pass adds
// the adapters' updates in its products' epilogue.
#include <algorithm>
#include <array>
#include <initializer_list>
#include <span>
#include <utility>

#include "device/cuda_model_impl.h"

namespace fgnet {

using cuda_model_internal::ActivationLayout;
using cuda_model_internal::kLogitRows;
using cuda_model_internal::kMaxStagedRows;
using cuda_model_internal::LogitsLayout;
using cuda_model_internal::PassShape;
using cuda_model_internal::StagingLayout;

Status CudaModel::Impl::Enqueue(const PassShape& shape, const kv::BlockPool& pool,
                                std::size_t c) const {
  const cudaStream_t stream = state->stream;
  const kv::KVLayout& layout = pool.layout();
  const auto groups = static_cast<std::size_t>(layout.num_groups());
  const StagingLayout& sl = staging_layout;
  const ActivationLayout al = ActivationLayout::For(c, hidden, q_dim, kv_dim, intermediate);
  const auto buffer = [&](ActivationLayout::Buffer b) {
    return activations.as<float>() + al.at[b];
  };
  // x: the residual stream, which moves to x_next wherever a product stages a residual input.
  float *x = buffer(ActivationLayout::kX), *x_next = buffer(ActivationLayout::kXNext),
        *h = buffer(ActivationLayout::kH), *q = buffer(ActivationLayout::kQ),
        *k = buffer(ActivationLayout::kK), *v = buffer(ActivationLayout::kV),
        *attn = buffer(ActivationLayout::kAttn), *o = buffer(ActivationLayout::kO),
        *gate = buffer(ActivationLayout::kGate), *up = buffer(ActivationLayout::kUp);
  std::vector<cuda::PassRows> pass(groups);
  for (std::size_t g = 0; g < groups; ++g) {
    cuda::PassRows& p = pass[g];
    p.rows = shape.rows;
    p.row_seq = staging.as<std::int32_t>(sl.row_seq);
    p.row_pos = staging.as<std::int32_t>(sl.row_pos);
    p.seq_table = staging.as<std::int32_t>(sl.seq_table) + g * static_cast<std::size_t>(shape.seqs);
    p.tables = staging.as<std::int32_t>(sl.tables_at);
    p.num_seqs = shape.seqs;
    p.max_pos = shape.max_pos;
  }
  const std::int32_t* d_lora_rows = staging.as<std::int32_t>(sl.lora_rows_at);
  const float* d_lora_scales = staging.as<float>(sl.lora_scales);
  const cuda::LoraGroup* d_lora_groups = staging.as<cuda::LoraGroup>(sl.lora_groups_at);
  const auto apply_lora = [&](std::size_t layer, LoraModule module, const float* in,
                              std::size_t ldx, std::size_t in_dim, float* out,
                              std::size_t out_dim) -> Status {
    const std::size_t site = layer * kNumLoraModules + static_cast<std::size_t>(module);
    if (shape.site_count.empty() || shape.site_count[site] == 0) return Ok();
    return cuda::LoraApply(in, ldx, in_dim, out, out_dim, out_dim,
                           d_lora_groups + shape.site_first[site], shape.site_count[site],
                           shape.site_rank[site], d_lora_rows, d_lora_scales, shape.lora_rows,
                           lora_ws.as<float>(), stream, shape.lora_group_rows);
  };
  const auto has_lora = [&](std::size_t layer, LoraModule module) {
    const std::size_t site = layer * kNumLoraModules + static_cast<std::size_t>(module);
    return !shape.site_count.empty() && shape.site_count[site] > 0;
  };
  // Whether an adapter touches one of `modules` of a layer.
  const auto any_lora = [&](std::size_t layer, std::initializer_list<LoraModule> modules) {
    return std::any_of(modules.begin(), modules.end(),
                       [&](LoraModule module) { return has_lora(layer, module); });
  };
  // The shrink of the consecutive sites `modules` of a layer that share `in`, into slot i of
  // lora_ws for the i-th (a site's groups are one per adapter, so those of consecutive sites
  // follow each other); nothing when no adapter touches them.
  const auto n_adapters = static_cast<std::int32_t>(shape.lora_adapters);
  const std::size_t slot_floats =
      static_cast<std::size_t>(shape.max_rank) * static_cast<std::size_t>(shape.lora_rows);
  // With `residual` (in null), the shrink's input is that residual input normalised, which the
  // launch also writes to `normed` (LoraShrinkOfResidual).
  const auto shrink_sites = [&](std::size_t layer, std::initializer_list<LoraModule> modules,
                                const float* in, std::size_t in_dim,
                                const cuda::ResidualInput* residual = nullptr,
                                float* normed = nullptr) -> Status {
    if (!any_lora(layer, modules)) return Ok();
    const std::size_t first = layer * kNumLoraModules + static_cast<std::size_t>(*modules.begin());
    const cuda::LoraGroup* site_groups = d_lora_groups + shape.site_first[first];
    const std::int32_t num_groups = static_cast<std::int32_t>(modules.size()) * n_adapters;
    if (residual != nullptr) {
      return cuda::LoraShrinkOfResidual(*residual, c, in_dim, normed, site_groups, num_groups,
                                        n_adapters, shape.max_rank, d_lora_rows, shape.lora_rows,
                                        lora_ws.as<float>(), stream, shape.lora_group_rows);
    }
    return cuda::LoraShrink(in, in_dim, in_dim, site_groups, num_groups, n_adapters, shape.max_rank,
                            d_lora_rows, shape.lora_rows, lora_ws.as<float>(), stream,
                            shape.lora_group_rows);
  };
  // The many-row path: the shrink, then one expand of all the sites into their outputs `sites`.
  const auto apply_lora_many = [&](std::size_t layer, std::initializer_list<LoraModule> modules,
                                   const float* in, std::size_t in_dim,
                                   std::initializer_list<cuda::LoraExpandSite> sites) -> Status {
    if (!any_lora(layer, modules)) return Ok();
    FGNET_TRY(shrink_sites(layer, modules, in, in_dim));
    const std::size_t first = layer * kNumLoraModules + static_cast<std::size_t>(*modules.begin());
    return cuda::LoraExpand(std::span(sites.begin(), sites.size()),
                            d_lora_groups + shape.site_first[first], n_adapters, shape.max_rank,
                            d_lora_rows, d_lora_scales, shape.lora_rows, lora_ws.as<float>(),
                            stream, shape.lora_group_rows);
  };
  // The epilogue path: the shrink, then `epilogue` names each site's groups and shrink result
  // (none where no adapter touches the module) for the products to add. With `residual`, `in` is
  // h, which the shrink's launch writes as that residual input normalised (shrink_sites).
  const auto shrink = [&](std::size_t layer, std::initializer_list<LoraModule> modules,
                          const float* in, std::size_t in_dim, cuda::LoraEpilogue* epilogue,
                          const cuda::ResidualInput* residual = nullptr) -> Status {
    epilogue->rows = {staging.as<std::int32_t>(sl.row_entries_at), shape.lora_per_row,
                      staging.as<std::int32_t>(sl.entry_adapter_at), d_lora_scales, shape.max_rank};
    std::size_t slot = 0;
    for (LoraModule module : modules) {
      const std::size_t site = layer * kNumLoraModules + static_cast<std::size_t>(module);
      epilogue->sites[slot] = has_lora(layer, module)
                                  ? cuda::LoraSite{d_lora_groups + shape.site_first[site],
                                                   lora_ws.as<float>() + slot * slot_floats}
                                  : cuda::LoraSite{};
      ++slot;
    }
    if (residual != nullptr) return shrink_sites(layer, modules, nullptr, in_dim, residual, h);
    return shrink_sites(layer, modules, in, in_dim);
  };
  cuda::MatMulContext& mm = *matmul;
  const auto product = [&mm](const float* in_x, std::size_t rows, std::size_t in,
                             const DeviceMatrix& w, std::size_t out, float* y) -> Status {
    if (w.quantized()) return mm.MatMul(in_x, rows, w.quant, y);
    return mm.MatMul(in_x, rows, in, w.bf16, out, y);
  };
  // Products of one x: in one launch where the matrices allow (all BF16, or all quantized alike),
  // else one by one.
  const auto products = [&](const float* in_x, std::size_t rows, std::size_t in,
                            std::initializer_list<std::pair<const DeviceMatrix*, float*>> outs,
                            std::initializer_list<std::size_t> sizes) -> Status {
    const DeviceMatrix& first = *outs.begin()->first;
    bool alike = true;
    for (const auto& [matrix, dst] : outs) {
      alike = alike && matrix->quantized() == first.quantized() &&
              (!matrix->quantized() || matrix->quant.layout == first.quant.layout);
    }
    if (alike && first.quantized()) {
      std::array<cuda::QuantProduct, cuda::MatMulContext::kMaxOutputs> quant{};
      std::size_t n = 0;
      for (const auto& [matrix, dst] : outs) quant[n++] = {&matrix->quant, dst};
      return mm.MatMulMany(in_x, rows, std::span(quant.data(), n));
    }
    if (alike) {
      std::array<cuda::MatMulContext::MatMulOutput, cuda::MatMulContext::kMaxOutputs> bf16{};
      std::size_t n = 0;
      auto size = sizes.begin();
      for (const auto& [matrix, dst] : outs) bf16[n++] = {matrix->bf16, *size++, dst};
      return mm.MatMulMany(in_x, rows, in, std::span(bf16.data(), n));
    }
    auto size = sizes.begin();
    for (const auto& [matrix, dst] : outs)
      FGNET_TRY(product(in_x, rows, in, *matrix, *size++, dst));
    return Ok();
  };

  // y = in W^T with the adapters' updates at (layer, module): in the product's epilogue, or by
  // LoraApply after it.
  const auto adapted_product = [&](std::size_t layer, LoraModule module, const float* in,
                                   std::size_t in_dim, const DeviceMatrix& w, std::size_t out_dim,
                                   float* y) -> Status {
    if (shape.lora_epilogue) {
      cuda::LoraEpilogue epilogue;
      FGNET_TRY(shrink(layer, {module}, in, in_dim, &epilogue));
      const cuda::MatMulContext::MatMulOutput out[] = {{w.bf16, out_dim, y}};
      return mm.MatMulMany(in, c, in_dim, out, &epilogue);
    }
    FGNET_TRY(product(in, c, in_dim, w, out_dim, y));
    return apply_lora(layer, module, in, in_dim, in_dim, y, out_dim);
  };

  // The residual update a layer's products leave for the next product of h (delta null: none),
  // and where it goes. `plain`: that product is of BF16 matrices without adapters, so that it
  // reads h only as its input. Then the update goes into the product's staging of its input
  // (`staged`, the residual moving to the other buffer) when the product is one GEMV launch; else
  // through h by RMSNormAddToNorm in place, which writes a many-row product's BF16 terms of h,
  // and of h nothing else where the product is plain.
  cuda::ResidualInput pending;
  cuda::ResidualInput staged;
  const auto settle = [&](bool plain, const cuda::ResidualInput** input) -> Status {
    *input = nullptr;
    if (pending.delta == nullptr) return Ok();
    if (plain && c <= kMaxStagedRows) {
      staged = pending;
      staged.residual = x;
      staged.updated = x_next;
      std::swap(x, x_next);
      *input = &staged;
    } else {
      std::uint16_t* terms = nullptr;
      float* y = h;
      if (!cuda::MatMulContext::TakesGemv(c)) {
        FGNET_ASSIGN_OR_RETURN(terms, mm.InputTerms(h, c, hidden));
        if (plain && hidden % 4 == 0) y = nullptr;
      }
      FGNET_TRY(cuda::RMSNormAddToNormSplit(pending.delta, c, hidden, pending.post, eps, x,
                                            pending.pre, y, terms, stream));
    }
    pending = {};
    return Ok();
  };
  // The pending residual update as the residual input of the epilogue path's shrink of the
  // products of h at `modules` (LoraShrinkOfResidual: the norm kernel's work in the shrink's
  // launch), the residual moving to the other buffer; none (delta null) where there is no update,
  // no adapter at those modules, or rows the shrink does not normalise.
  const auto shrink_input = [&](std::size_t layer, std::initializer_list<LoraModule> modules) {
    cuda::ResidualInput r;
    if (pending.delta == nullptr || !shape.lora_epilogue || !any_lora(layer, modules) ||
        hidden % 4 != 0 || hidden > cuda::kMaxShrinkOfResidualIn) {
      return r;
    }
    r = pending;
    r.residual = x;
    r.updated = x_next;
    std::swap(x, x_next);
    pending = {};
    return r;
  };
  // Whether the products of h by `matrices` at `modules` are plain: BF16, without adapters.
  const auto plain = [&](std::size_t layer, std::initializer_list<LoraModule> modules,
                         std::initializer_list<const DeviceMatrix*> matrices) {
    return !any_lora(layer, modules) &&
           std::none_of(matrices.begin(), matrices.end(),
                        [](const DeviceMatrix* m) { return m->quantized(); });
  };

  const std::int32_t* ids = staging.as<std::int32_t>(sl.ids);
  if (embed.quantized()) {
    FGNET_TRY(cuda::EmbedRowsQuant(embed.quant, ids, c, embed_scale, x, stream));
  } else {
    FGNET_TRY(cuda::EmbedRows(DType::kBF16, embed.bf16, hidden, ids, c, embed_scale, x, stream));
  }
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const LayerWeights& w = layers[l];
    const int r = w.sliding ? 0 : 1;
    const auto group = static_cast<std::size_t>(layout.layer_group[l]);
    const cuda::PagedLayer paged{pool.memory().data(),
                                 layout.dtype,
                                 static_cast<std::int64_t>(layout.block_elements()),
                                 layout.block_size,
                                 layout.layer_slot[l],
                                 layout.row};
    // h = the input norm of x (for layer 0), or the previous layer's residual update.
    if (l == 0) FGNET_TRY(cuda::RMSNorm(x, c, hidden, w.input_norm, eps, h, nullptr, stream));
    const cuda::ResidualInput* input = nullptr;
    cuda::ResidualInput normed = shrink_input(l, {LoraModule::kQ, LoraModule::kK, LoraModule::kV});
    FGNET_TRY(settle(plain(l, {LoraModule::kQ, LoraModule::kK, LoraModule::kV}, {&w.q, &w.k, &w.v}),
                     &input));
    cuda::LoraEpilogue epilogue;
    const cuda::MatMulContext::MatMulOutput qkv[] = {
        {w.q.bf16, q_dim, q}, {w.k.bf16, kv_dim, k}, {w.v.bf16, kv_dim, v}};
    if (input != nullptr) {
      FGNET_TRY(mm.MatMulMany(nullptr, c, hidden, qkv, nullptr, input));
    } else if (shape.lora_epilogue) {
      FGNET_TRY(shrink(l, {LoraModule::kQ, LoraModule::kK, LoraModule::kV}, h, hidden, &epilogue,
                       normed.delta != nullptr ? &normed : nullptr));
      FGNET_TRY(mm.MatMulMany(h, c, hidden, qkv, &epilogue));
    } else {
      FGNET_TRY(products(h, c, hidden, {{&w.q, q}, {&w.k, k}, {&w.v, v}}, {q_dim, kv_dim, kv_dim}));
      FGNET_TRY(apply_lora_many(l, {LoraModule::kQ, LoraModule::kK, LoraModule::kV}, h, hidden,
                                {{q, q_dim, q_dim}, {k, kv_dim, kv_dim}, {v, kv_dim, kv_dim}}));
    }
    // The rows' keys and values go split into the attention's workspace too, where it takes
    // them so (a prompt's f32 keys).
    std::uint16_t* planes =
        cuda::PagedAttentionPlanes(pass[group], paged, attention[r], attention_ws.as<float>());
    FGNET_TRY(cuda::QKNormRopeWriteKV(q, k, v, pass[group], paged, attention[r].heads,
                                      attention[r].kv_heads, attention[r].head_dim, w.q_norm,
                                      w.k_norm, eps, inv_freq[r], stream, planes));
    // A many-row o product of BF16 weights takes the attention's output as two BF16 terms,
    // written by the attention kernels beside it.
    cuda::AttentionExtras extras{.rows_split = planes != nullptr};
    if (!cuda::MatMulContext::TakesGemv(c) && !w.o.quantized()) {
      FGNET_ASSIGN_OR_RETURN(extras.out_terms, mm.InputTerms(attn, c, q_dim));
    }
    FGNET_TRY(cuda::PagedAttention(q, pass[group], paged, attention[r], attn,
                                   attention_ws.as<float>(), stream, extras));
    FGNET_TRY(adapted_product(l, LoraModule::kO, attn, q_dim, w.o, hidden, o));
    pending = {o, nullptr, nullptr, w.post_attention_norm, w.pre_feedforward_norm, eps};
    normed = shrink_input(l, {LoraModule::kGate, LoraModule::kUp});
    FGNET_TRY(settle(plain(l, {LoraModule::kGate, LoraModule::kUp}, {&w.gate, &w.up}), &input));
    if (input != nullptr) {
      FGNET_TRY(mm.MatMulGeGLU(nullptr, c, hidden, w.gate.bf16, w.up.bf16, intermediate, gate, up,
                               nullptr, input));
    } else if (shape.lora_epilogue) {
      FGNET_TRY(shrink(l, {LoraModule::kGate, LoraModule::kUp}, h, hidden, &epilogue,
                       normed.delta != nullptr ? &normed : nullptr));
      FGNET_TRY(
          mm.MatMulGeGLU(h, c, hidden, w.gate.bf16, w.up.bf16, intermediate, gate, up, &epilogue));
    } else if (has_lora(l, LoraModule::kGate) || has_lora(l, LoraModule::kUp) ||
               w.gate.quantized() || w.up.quantized()) {
      // The products, adapters' updates to them, then the GeGLU.
      FGNET_TRY(
          products(h, c, hidden, {{&w.gate, gate}, {&w.up, up}}, {intermediate, intermediate}));
      FGNET_TRY(
          apply_lora_many(l, {LoraModule::kGate, LoraModule::kUp}, h, hidden,
                          {{gate, intermediate, intermediate}, {up, intermediate, intermediate}}));
      // A many-row down product of BF16 weights takes the result's two BF16 terms, written
      // beside it.
      std::uint16_t* terms = nullptr;
      if (!cuda::MatMulContext::TakesGemv(c) && !w.down.quantized()) {
        FGNET_ASSIGN_OR_RETURN(terms, mm.InputTerms(gate, c, intermediate));
      }
      FGNET_TRY(cuda::GeluTanhMulSplit(gate, up, c * intermediate, gate, terms, stream));
    } else {
      // The down product reads only its terms of the result when it is plain.
      const bool terms_only = plain(l, {LoraModule::kDown}, {&w.down});
      FGNET_TRY(mm.MatMulGeGLU(h, c, hidden, w.gate.bf16, w.up.bf16, intermediate, gate, up,
                               nullptr, nullptr, terms_only));
    }
    FGNET_TRY(adapted_product(l, LoraModule::kDown, gate, intermediate, w.down, hidden, o));
    if (l + 1 < layers.size()) {
      pending = {o, nullptr, nullptr, w.post_feedforward_norm, layers[l + 1].input_norm, eps};
    } else {
      FGNET_TRY(cuda::RMSNormAddTo(o, c, hidden, w.post_feedforward_norm, eps, x, stream));
    }
  }

  // Logits, kLogitRows rows at a time. Rows that only want their argmax never leave the GPU:
  // their ids do (4 bytes a row). A pass with more logit rows than one chunk (a kAll prefill)
  // copies each chunk out as it goes, synchronising; a graph pass has a single chunk.
  const auto n_logits = static_cast<std::size_t>(shape.logit_rows);
  if (n_logits == 0) return Ok();
  const std::size_t chunk = std::min(kLogitRows, n_logits);
  const LogitsLayout ll = LogitsLayout::For(chunk, vocab);
  const std::size_t ids_at = ll.ids;
  for (std::size_t first = 0; first < n_logits; first += chunk) {
    const std::size_t n = std::min(chunk, n_logits - first);
    FGNET_TRY(cuda::RMSNorm(x, n, hidden, final_norm, eps, h,
                            staging.as<std::int32_t>(sl.logit_rows) + first, stream));
    FGNET_TRY(product(h, n, hidden, lm_head, vocab, logits.as<float>()));
    if (final_softcap > 0.0f)
      FGNET_TRY(cuda::Softcap(logits.as<float>(), n * vocab, final_softcap, stream));
    if (shape.filter) {
      FGNET_TRY(cuda::FilterRows(logits.as<float>(), n, vocab,
                                 staging.as<cuda::RowFilter>(sl.filters) + first,
                                 staging.as<std::uint64_t>(sl.words_at),
                                 staging.as<std::int32_t>(sl.penalized_at), stream));
    }
    if (shape.argmax) {
      FGNET_TRY(cuda::ArgmaxRows(logits.as<float>(), n, vocab, logits.as<std::int32_t>(ids_at),
                                 logits.as<char>(ll.workspace), stream));
      FGNET_TRY(cuda::CudaCheck(
          cudaMemcpyAsync(host_logits.as<std::int32_t>(ids_at), logits.as<std::int32_t>(ids_at),
                          n * sizeof(std::int32_t), cudaMemcpyDeviceToHost, stream),
          "cudaMemcpyAsync (sampled ids)"));
    }
    if (shape.top) {
      FGNET_TRY(cuda::TopRows(logits.as<float>(), n, vocab, logits.as<float>(ll.top_values),
                              logits.as<std::int32_t>(ll.top_ids), logits.as<char>(ll.workspace),
                              stream));
      FGNET_TRY(cuda::CudaCheck(
          cudaMemcpyAsync(host_logits.as<char>(ll.top_values), logits.as<char>(ll.top_values),
                          ll.workspace - ll.top_values, cudaMemcpyDeviceToHost, stream),
          "cudaMemcpyAsync (largest logits)"));
    }
    if (shape.full) {
      FGNET_TRY(cuda::CudaCheck(
          cudaMemcpyAsync(host_logits.as<float>(), logits.as<float>(), n * vocab * sizeof(float),
                          cudaMemcpyDeviceToHost, stream),
          "cudaMemcpyAsync (logits)"));
    }
    if (n_logits > chunk) {
      // Several chunks (never in a graph): hand each one out before the next overwrites it.
      FGNET_TRY(cuda::CudaCheck(cudaStreamSynchronize(stream), "forward pass"));
      for (std::size_t i = 0; i < n; ++i) FGNET_TRY(Deliver(host.logit_dest[first + i], i, ll));
    }
  }
  return Ok();
}

}  // namespace fgnet
