"""Specifications of fgnet's forward-pass parity fixtures (pure Python, no dependencies).

Each spec names a small Gemma 3 text model, the config.json form it is written in ("v4": the
transformers 4.x keys rope_theta / rope_local_base_freq / sliding_window_pattern; "v5":
rope_parameters and layer_types; "mm": a multimodal Gemma3ForConditionalGeneration config whose
text model sits under text_config), its stored dtype and the prompt / continuation lengths.
resolve() derives the numbers the forward pass uses from a spec alone, independently of how
transformers parses the config. Run this file to print every spec and its config.
"""

import json

COMMON = {
    "model_type": "gemma3_text",
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-6,
    "hidden_activation": "gelu_pytorch_tanh",
    "bos_token_id": 2,
    "eos_token_id": 1,
    "pad_token_id": 0,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "use_cache": True,
}

SPECS = [
    {
        # 4 query heads sharing 1 kv head; head_dim * heads != hidden; scale from
        # query_pre_attn_scalar 20 (not head_dim); window 8 < prompt 40; 7 layers so the 5+1
        # pattern wraps (layer 5 global, layer 6 sliding again); BF16 on disk; 4.x config form.
        "name": "mqa_bf16_v4",
        "form": "v4",
        "dtype": "bfloat16",
        "seed": 1001,
        "n_prompt": 40,
        "n_new": 40,
        "text": {
            "vocab_size": 256,
            "hidden_size": 48,
            "intermediate_size": 72,
            "num_hidden_layers": 7,
            "num_attention_heads": 4,
            "num_key_value_heads": 1,
            "head_dim": 32,
            "query_pre_attn_scalar": 20,
            "sliding_window": 8,
            "sliding_window_pattern": 6,
            "rope_theta": 100000.0,
            "rope_local_base_freq": 1000.0,
            "final_logit_softcapping": None,
            "attn_logit_softcapping": None,
            "tie_word_embeddings": True,
        },
        "qk_norm_mean": 0.0,
    },
    {
        # GQA 4/2; explicit irregular layer_types (first layer global, last sliding); 5.x
        # rope_parameters with linear scaling on full-attention layers only; final softcap set;
        # F32 on disk.
        "name": "gqa_f32_v5",
        "form": "v5",
        "dtype": "float32",
        "seed": 2002,
        "n_prompt": 32,
        "n_new": 40,
        "text": {
            "vocab_size": 256,
            "hidden_size": 40,
            "intermediate_size": 56,
            "num_hidden_layers": 5,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "query_pre_attn_scalar": 16,
            "sliding_window": 6,
            "layer_types": [
                "full_attention",
                "sliding_attention",
                "sliding_attention",
                "full_attention",
                "sliding_attention",
            ],
            "rope_parameters": {
                "full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 50000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 5000.0},
            },
            "final_logit_softcapping": 30.0,
            # transformers 5.x ignores attn_logit_softcapping for Gemma 3 (fgnet applies it when
            # set, and tests that against its own reference): leave it unset here so that the
            # transformers logits are the reference for exactly this config.
            "attn_logit_softcapping": None,
            "tie_word_embeddings": True,
        },
        # Larger q/k norm weights make attention scores big enough for softcapping to matter.
        "qk_norm_mean": 1.0,
    },
    {
        # A multimodal Gemma3ForConditionalGeneration checkpoint (tiny SigLIP tower included);
        # the reference is the language model alone, loaded into Gemma3ForCausalLM.
        "name": "nested_mm",
        "form": "mm",
        "dtype": "bfloat16",
        "seed": 3003,
        "n_prompt": 24,
        "n_new": 40,
        "text": {
            "vocab_size": 256,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 6,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "query_pre_attn_scalar": 16,
            "sliding_window": 5,
            "layer_types": [
                "sliding_attention",
                "sliding_attention",
                "full_attention",
                "sliding_attention",
                "sliding_attention",
                "full_attention",
            ],
            "rope_parameters": {
                "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            },
            "final_logit_softcapping": None,
            "attn_logit_softcapping": None,
            "tie_word_embeddings": True,
        },
        "vision": {
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 28,
            "patch_size": 14,
        },
        "mm_tokens_per_image": 4,
        "qk_norm_mean": 0.0,
    },
    {
        # Untied output matrix (lm_head.weight), full multi-head attention (2/2), a vocabulary that
        # is no power of two, window 4 (shorter than a prefill chunk of 5), F16 on disk, eos list.
        "name": "untied_f16",
        "form": "v5",
        "dtype": "float16",
        "seed": 4004,
        "n_prompt": 20,
        "n_new": 40,
        "text": {
            "vocab_size": 320,
            "hidden_size": 32,
            "intermediate_size": 48,
            "num_hidden_layers": 3,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "query_pre_attn_scalar": 16,
            "sliding_window": 4,
            "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
            "rope_parameters": {
                "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            },
            "final_logit_softcapping": None,
            "attn_logit_softcapping": None,
            "tie_word_embeddings": False,
            "eos_token_id": [1, 106],
        },
        "qk_norm_mean": 0.0,
    },
]



def v4_layer_types(num_layers, pattern):
    """transformers' reading of the 4.x key sliding_window_pattern: layer i is global when
    (i + 1) % pattern == 0."""
    return [
        "sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(num_layers)
    ]


def resolve(spec):
    """The numbers the forward pass uses, derived from the spec alone (independently of how
    transformers parses the config)."""
    t = dict(COMMON)
    t.update(spec["text"])
    r = {k: t[k] for k in (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "head_dim", "query_pre_attn_scalar",
        "sliding_window", "rms_norm_eps", "final_logit_softcapping", "attn_logit_softcapping",
        "tie_word_embeddings")}
    if "layer_types" in t:
        r["layer_types"] = list(t["layer_types"])
    else:
        r["layer_types"] = v4_layer_types(t["num_hidden_layers"], t["sliding_window_pattern"])
    if "rope_parameters" in t:
        rp = t["rope_parameters"]
        r["theta_global"] = rp["full_attention"]["rope_theta"]
        r["theta_local"] = rp["sliding_attention"]["rope_theta"]
        r["factor_global"] = rp["full_attention"].get("factor", 1.0) \
            if rp["full_attention"]["rope_type"] == "linear" else 1.0
        r["factor_local"] = rp["sliding_attention"].get("factor", 1.0) \
            if rp["sliding_attention"]["rope_type"] == "linear" else 1.0
    else:
        r["theta_global"] = t["rope_theta"]
        r["theta_local"] = t["rope_local_base_freq"]
        r["factor_global"] = 1.0
        r["factor_local"] = 1.0
    return r


def v5_text_kwargs(spec):
    """Keyword arguments for transformers' Gemma3TextConfig (5.x form)."""
    t = dict(COMMON)
    t.update(spec["text"])
    r = resolve(spec)
    t.pop("model_type", None)
    t.pop("sliding_window_pattern", None)
    t.pop("rope_theta", None)
    t.pop("rope_local_base_freq", None)
    t["layer_types"] = r["layer_types"]
    if "rope_parameters" not in t:
        t["rope_parameters"] = {
            "full_attention": {"rope_type": "default", "rope_theta": r["theta_global"]},
            "sliding_attention": {"rope_type": "default", "rope_theta": r["theta_local"]},
        }
    return t


def v4_config_json(spec, transformers_version):
    """config.json in the form transformers 4.x writes for Gemma3ForCausalLM."""
    t = dict(COMMON)
    t.update(spec["text"])
    cfg = {"architectures": ["Gemma3ForCausalLM"]}
    for k in ("attention_bias", "attention_dropout", "attn_logit_softcapping", "bos_token_id",
              "eos_token_id", "final_logit_softcapping", "head_dim", "hidden_activation",
              "hidden_size", "initializer_range", "intermediate_size", "max_position_embeddings",
              "model_type", "num_attention_heads", "num_hidden_layers", "num_key_value_heads",
              "pad_token_id", "query_pre_attn_scalar", "rms_norm_eps", "rope_local_base_freq",
              "rope_theta", "sliding_window", "sliding_window_pattern", "tie_word_embeddings",
              "use_cache", "vocab_size"):
        cfg[k] = t[k]
    cfg["rope_scaling"] = None
    cfg["torch_dtype"] = spec["dtype"]
    cfg["transformers_version"] = transformers_version
    return dict(sorted(cfg.items()))


def generation_config_json(spec, transformers_version):
    t = dict(COMMON)
    t.update(spec["text"])
    return {
        "bos_token_id": t["bos_token_id"],
        "eos_token_id": t["eos_token_id"],
        "pad_token_id": t["pad_token_id"],
        "transformers_version": transformers_version,
    }


def print_specs():
    for spec in SPECS:
        print("==", spec["name"])
        print(json.dumps(resolve(spec), indent=1))
        if spec["form"] == "v4":
            print(json.dumps(v4_config_json(spec, "4.x"), indent=1))
        else:
            print(json.dumps(v5_text_kwargs(spec), indent=1))



if __name__ == "__main__":
    print_specs()
