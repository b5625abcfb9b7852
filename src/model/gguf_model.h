// Gemma 3 models in GGUF files, as llama.cpp's converter (convert_hf_to_gguf.py) writes them.
//
// Reading: general.architecture must be "gemma3" (and general.type, when present, "model").
// The config comes from the gemma3.* metadata:
//   context_length -> max_position_embeddings       embedding_length -> hidden_size
//   block_count -> num_hidden_layers                feed_forward_length -> intermediate_size
//   attention.head_count -> num_attention_heads     attention.head_count_kv -> num_key_value_heads
//   attention.key_length -> head_dim (attention.value_length, when present, must equal it)
//   attention.layer_norm_rms_epsilon -> rms_norm_eps
//   rope.freq_base -> the global layers' RoPE theta
//   attention.sliding_window -> sliding_window (absent or 0: every layer attends globally)
//   rope.scaling.type / rope.scaling.factor (or the older rope.scale_linear) -> linear RoPE
//     scaling of the global layers (llama.cpp never scales the sliding layers)
//   final_logit_softcapping, attn_logit_softcapping -> the softcaps (absent or 0: none)
//   tokenizer.ggml.bos_token_id / eos_token_id / padding_token_id -> the token ids
// and vocab_size from the rows of token_embd.weight (tokenizer.ggml.tokens, when present, must
// have as many entries); the embeddings are tied unless output.weight is present.
// What GGUF does not carry takes the values llama.cpp assumes for gemma3 (llama-model.cpp):
//   - every 6th layer is global, the others slide (llama.cpp's set_swa_pattern(6): layer i slides
//     iff i % 6 < 5, the same as transformers' (i + 1) % 6 != 0);
//   - the sliding layers' RoPE theta is 10000 and unscaled;
//   - query_pre_attn_scalar is head_dim, except for the 62-layer (27B) model, where llama.cpp
//     uses embedding_length / head_count (integer division), as Google's config does;
//   - rope.freq_base defaults to 10000 when absent, as in llama.cpp;
//   - the MLP activation is gelu (tanh approximation).
// Configs that depart from these assumptions (the small test models) are written with extra keys
// that llama.cpp ignores and fgnet reads back: gemma3.rope.freq_base_swa (f32),
// gemma3.attention.sliding_window_pattern (a u32 period, or one bool per layer, true = sliding,
// as other llama.cpp architectures write it), fgnet.query_pre_attn_scalar (f32),
// fgnet.rope_scaling_local (f32) and fgnet.eos_token_ids (i32 array, when there is not exactly
// one eos id). f32 values are read as the shortest decimal that rounds to them (1e-6, not
// 9.99999997e-7).
//
// Tensors are renamed to the Hugging Face names ("model." prefix): token_embd -> embed_tokens,
// output_norm -> norm, output -> lm_head, and per layer N, blk.N.{attn_norm -> input_layernorm,
// attn_q/attn_k/attn_v/attn_output -> self_attn.{q,k,v,o}_proj, attn_q_norm/attn_k_norm ->
// self_attn.{q,k}_norm, post_attention_norm -> post_attention_layernorm, ffn_norm ->
// pre_feedforward_layernorm, ffn_gate/ffn_up/ffn_down -> mlp.{gate,up,down}_proj, post_ffw_norm
// -> post_feedforward_layernorm} (llama.cpp's LLM_ARCH_GEMMA3 tensor names). Other tensors are
// kept under their GGUF names and left unbound. Norms are stored as 1 + w (the converter adds
// 1 to every "*norm.weight"), so the checkpoint has norms_include_one set. Every expected tensor
// is checked for presence and shape against the metadata before binding, with errors naming
// the GGUF tensor and keys. Side files (tokenizer.json, ...) are looked for in the file's
// directory. fgnet.content_hash, when present, is the content hash of the model the file was
// written from (see Checkpoint::content_hash()). quantization() is "none" without quantized
// tensors, else fgnet.quantization (the scheme fgnet recorded: "q8_0", "q4_0", "q4_k"), else the
// scheme llama.cpp's general.file_type names (MOSTLY_Q4_0 "q4_0", MOSTLY_Q8_0 "q8_0",
// MOSTLY_Q4_K_S/M "q4_k", MOSTLY_Q6_K "q6_k"), else the quantized type of most of the layers'
// bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "model/checkpoint.h"
#include "model/gguf.h"
#include "util/status.h"

namespace fgnet {

// Opens a gemma3 GGUF file. Errors name the file and the key or tensor at fault.
Result<Checkpoint> OpenGgufCheckpoint(const std::string& path);

// A llama.cpp layer tensor name "blk.N.<tensor>.weight" -> (N, "<tensor>"); nullopt for other
// names (token_embd.weight, ...).
std::optional<std::pair<std::int64_t, std::string_view>> ParseLayerName(std::string_view name);

// The config a gemma3 GGUF file describes (see above); vocab_size comes from token_embd.weight.
Result<Gemma3Config> Gemma3ConfigFromGguf(const GgufFile& file);

struct GgufWriteOptions {
  // general.name; empty: the name of the checkpoint's file or directory.
  std::string name;
  // Stores every float matrix (embeddings and projections) as this type (F32, F16 or BF16);
  // quantized matrices are kept as they are. nullopt: keep every tensor's stored type.
  std::optional<DType> float_dtype;
  std::uint32_t alignment = kGgufDefaultAlignment;
  // Further metadata, set after (and over) the model's, e.g. tokenizer.ggml.* keys.
  std::vector<std::pair<std::string, GgufValue>> extra_metadata;
};

// Writes `ck` as a gemma3 GGUF file the way llama.cpp's converter would: its metadata keys and
// types (u32 sizes, f32 floats), general.name, general.file_type (that of ck.quantization()'s
// scheme: q8_0 MOSTLY_Q8_0, q4_0 MOSTLY_Q4_0, q4_k MOSTLY_Q4_K_M; else from the type of most of
// the layers' matrix bytes) and, when a tensor is quantized, general.quantization_version 2 and
// fgnet.quantization = ck.quantization(), the tensors under llama.cpp's names
// in their stored type (see float_dtype), norms as f32 1 + w, output.weight only when the
// embeddings are untied; plus the extra keys above where the config departs from llama.cpp's
// assumptions, and fgnet.content_hash = ck.content_hash(). Tensors outside the text model are
// not written. The vocabulary is not embedded (pass tokenizer.ggml.* in extra_metadata).
Status WriteGemma3Gguf(const Checkpoint& ck, const std::string& path,
                       const GgufWriteOptions& options = {});

}  // namespace fgnet
