#!/usr/bin/env python3
"""Makes the fixtures of fgnet's model-io tests (tests/fixtures/model_io/).

1. config_cases.json: how transformers resolves a set of Gemma 3 config.json files (both the
   4.x and the 5.x forms, nested multimodal configs, absent keys that fall back to the class
   defaults). Each case holds the input config and either the resolved text-model values or the
   error transformers raised.
2. checkpoints.tar: tiny random checkpoints written by save_pretrained (a tied text model in f32,
   an untied sharded one in bf16, a multimodal one in bf16) plus, per checkpoint, a manifest of
   every tensor (dtype, shape, first values, float64 sum) read back with safetensors.
3. tying.json: whether Gemma3ForConditionalGeneration ties lm_head to the embedding for each
   combination of the top-level and the text_config tie_word_embeddings.

Run where torch, transformers (5.x) and safetensors are installed:
    python3 tools/make_model_io_fixtures.py --out DIR
`--list` prints the config cases without importing torch or transformers.
"""
import argparse
import json
import os
import sys
import tarfile
import tempfile
import traceback

SLIDING = "sliding_attention"
FULL = "full_attention"


def layer_pattern(n, period=6):
    return [SLIDING if (i + 1) % period else FULL for i in range(n)]


def base_270m():
    return {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "vocab_size": 262144,
        "hidden_size": 640,
        "intermediate_size": 2048,
        "num_hidden_layers": 18,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 256,
        "max_position_embeddings": 32768,
        "sliding_window": 512,
        "query_pre_attn_scalar": 256,
        "rms_norm_eps": 1e-06,
        "hidden_activation": "gelu_pytorch_tanh",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "attn_logit_softcapping": None,
        "final_logit_softcapping": None,
        "bos_token_id": 2,
        "eos_token_id": 1,
        "pad_token_id": 0,
        "initializer_range": 0.02,
        "use_cache": True,
        "use_bidirectional_attention": False,
    }


def hf4_270m():
    c = base_270m()
    c.update({
        "_sliding_window_pattern": 6,
        "layer_types": layer_pattern(18),
        "rope_local_base_freq": 10000.0,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.55.0",
    })
    return c


def hf5_270m():
    c = base_270m()
    c.update({
        "layer_types": layer_pattern(18),
        "rope_parameters": {
            FULL: {"rope_type": "default", "rope_theta": 1000000.0},
            SLIDING: {"rope_type": "default", "rope_theta": 10000.0},
        },
        "dtype": "bfloat16",
        "tie_word_embeddings": True,
        "transformers_version": "5.0.0",
    })
    return c


def mm_4b():
    return {
        "architectures": ["Gemma3ForConditionalGeneration"],
        "boi_token_index": 255999,
        "eoi_token_index": 256000,
        "eos_token_id": [1, 106],
        "image_token_index": 262144,
        "initializer_range": 0.02,
        "mm_tokens_per_image": 256,
        "model_type": "gemma3",
        "text_config": {
            "hidden_size": 2560,
            "intermediate_size": 10240,
            "model_type": "gemma3_text",
            "num_hidden_layers": 34,
            "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
            "sliding_window": 1024,
        },
        "torch_dtype": "bfloat16",
        "vision_config": {
            "hidden_size": 1152,
            "image_size": 896,
            "intermediate_size": 4304,
            "model_type": "siglip_vision_model",
            "num_attention_heads": 16,
            "num_hidden_layers": 27,
            "patch_size": 14,
            "vision_use_head": False,
        },
    }


def text(**kw):
    c = {"model_type": "gemma3_text"}
    c.update(kw)
    return c


def config_cases():
    """(name, config dict) pairs; each is resolved by transformers."""
    cases = [
        ("hf4_270m", hf4_270m()),
        ("hf5_270m", hf5_270m()),
        ("minimal_text", text()),
        ("pattern_3", text(num_hidden_layers=7, sliding_window_pattern=3)),
        ("pattern_1", text(num_hidden_layers=3, sliding_window_pattern=1)),
        ("underscore_pattern_ignored", text(num_hidden_layers=4, _sliding_window_pattern=2)),
        ("pattern_ignored_when_layer_types", text(num_hidden_layers=3, sliding_window_pattern=2,
                                                  layer_types=[FULL, FULL, SLIDING])),
        ("hf4_rope_scaling_linear", text(rope_theta=1000000.0, rope_local_base_freq=10000.0,
                                         rope_scaling={"rope_type": "linear", "factor": 8.0})),
        ("hf4_rope_scaling_type_key", text(rope_scaling={"type": "linear", "factor": 4.0})),
        ("hf4_rope_scaling_default", text(rope_scaling={"rope_type": "default"})),
        ("hf4_theta_only", text(rope_theta=2000000.0)),
        ("hf4_local_only", text(rope_local_base_freq=5000.0)),
        ("hf5_linear_global", text(rope_parameters={
            FULL: {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
            SLIDING: {"rope_type": "default", "rope_theta": 10000.0}})),
        ("hf5_linear_local", text(rope_parameters={
            FULL: {"rope_type": "default", "rope_theta": 1000000.0},
            SLIDING: {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}})),
        ("hf5_full_only", text(rope_parameters={FULL: {"rope_type": "default", "rope_theta": 500000.0}})),
        ("hf5_full_only_with_local_freq", text(rope_local_base_freq=20000.0, rope_parameters={
            FULL: {"rope_type": "default", "rope_theta": 500000.0}})),
        ("hf5_params_win_over_legacy", text(rope_theta=3.0e6, rope_local_base_freq=3.0e4, rope_parameters={
            FULL: {"rope_type": "default", "rope_theta": 1.0e6},
            SLIDING: {"rope_type": "default", "rope_theta": 1.0e4}})),
        ("hf5_params_without_theta", text(rope_theta=3.0e6, rope_parameters={
            FULL: {"rope_type": "default"}, SLIDING: {"rope_type": "default"}})),
        ("hf5_params_plus_rope_scaling", text(rope_scaling={"rope_type": "linear", "factor": 2.0},
                                              rope_parameters={
            FULL: {"rope_type": "default", "rope_theta": 1.0e6},
            SLIDING: {"rope_type": "default", "rope_theta": 1.0e4}})),
        ("hf5_rope_type_from_type_key", text(rope_parameters={
            FULL: {"type": "linear", "factor": 3.0, "rope_theta": 1.0e6},
            SLIDING: {"rope_type": "default", "rope_theta": 1.0e4}})),
        ("flat_rope_parameters", text(rope_parameters={"rope_type": "linear", "factor": 2.0,
                                                       "rope_theta": 1.0e6})),
        ("rope_type_yarn", text(rope_parameters={
            FULL: {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1.0e6,
                   "original_max_position_embeddings": 8192},
            SLIDING: {"rope_type": "default", "rope_theta": 1.0e4}})),
        ("softcaps", text(final_logit_softcapping=30.0, attn_logit_softcapping=50.0)),
        ("softcaps_null", text(final_logit_softcapping=None, attn_logit_softcapping=None)),
        ("eos_list", text(eos_token_id=[1, 106])),
        ("eos_null", text(eos_token_id=None)),
        ("ids_null", text(bos_token_id=None, pad_token_id=None)),
        ("hidden_act_only", text(hidden_act="gelu")),
        ("hidden_activation_gelu", text(hidden_activation="gelu")),
        ("untied", text(tie_word_embeddings=False)),
        ("kv_heads_default", text(num_attention_heads=16)),
        ("head_dim_not_derived", text(hidden_size=640, num_attention_heads=4)),
        ("bidirectional", text(use_bidirectional_attention=True, sliding_window=512)),
        ("attention_bias", text(attention_bias=True)),
        ("query_pre_attn_scalar_float", text(query_pre_attn_scalar=168.0)),
        ("sliding_window_null", text(sliding_window=None)),
        ("layer_types_wrong_length", text(num_hidden_layers=3, layer_types=[SLIDING, FULL])),
        ("layer_types_unknown_value", text(num_hidden_layers=2, layer_types=[SLIDING, "chunked_attention"])),
        ("mm_4b", mm_4b()),
        ("mm_no_text_config", {"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"]}),
        ("mm_top_tie_false", {"model_type": "gemma3", "tie_word_embeddings": False,
                              "text_config": {"model_type": "gemma3_text"}}),
        ("mm_text_tie_false", {"model_type": "gemma3",
                               "text_config": {"model_type": "gemma3_text", "tie_word_embeddings": False}}),
        ("mm_text_eos", {"model_type": "gemma3", "eos_token_id": [1, 106],
                         "text_config": {"model_type": "gemma3_text", "eos_token_id": 7}}),
        ("mm_top_level_text_keys", {"model_type": "gemma3", "hidden_size": 640,
                                    "text_config": {"model_type": "gemma3_text"}}),
    ]
    return cases


TEXT_KEYS = [
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "max_position_embeddings", "sliding_window", "layer_types",
    "query_pre_attn_scalar", "rms_norm_eps", "final_logit_softcapping", "attn_logit_softcapping",
    "hidden_activation", "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id",
    "attention_bias", "use_bidirectional_attention",
]


def jsonable(v):
    try:
        json.dumps(v)
        return v
    except TypeError:
        return repr(v)


def resolve_case(config, tmp):
    from transformers import AutoConfig

    d = tempfile.mkdtemp(dir=tmp)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f)
    cfg = AutoConfig.from_pretrained(d)
    out = {"class": type(cfg).__name__}
    t = cfg.text_config if getattr(cfg, "model_type", "") == "gemma3" else cfg
    out["text_class"] = type(t).__name__
    r = {}
    for k in TEXT_KEYS:
        r[k] = jsonable(getattr(t, k, "<absent>"))
    r["rope_parameters"] = jsonable(getattr(t, "rope_parameters", "<absent>"))
    out["text"] = r
    if t is not cfg:
        out["outer"] = {k: jsonable(getattr(cfg, k, "<absent>"))
                        for k in ("tie_word_embeddings", "eos_token_id", "bos_token_id", "pad_token_id")}
    return out


def make_config_cases(tmp):
    import transformers

    result = {"transformers_version": transformers.__version__, "cases": []}
    for name, config in config_cases():
        entry = {"name": name, "config": config}
        try:
            entry["resolved"] = resolve_case(config, tmp)
        except Exception as e:  # noqa: BLE001 - the error is the fixture
            entry["error"] = "%s: %s" % (type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        result["cases"].append(entry)
    return result


def tiny_text_kwargs():
    return dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=128,
                sliding_window=4, layer_types=[SLIDING, SLIDING, FULL], query_pre_attn_scalar=8,
                rope_parameters={FULL: {"rope_type": "default", "rope_theta": 1000000.0},
                                 SLIDING: {"rope_type": "default", "rope_theta": 10000.0}})


def randomize(model, seed):
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_((torch.rand(p.shape, generator=g) * 2 - 1).to(p.dtype))


def manifest(d):
    import torch
    from safetensors import safe_open

    out = {}
    for fn in sorted(os.listdir(d)):
        if not fn.endswith(".safetensors"):
            continue
        with safe_open(os.path.join(d, fn), framework="pt") as f:
            for name in f.keys():
                t = f.get_tensor(name)
                flat = t.reshape(-1)
                out[name] = {
                    "file": fn,
                    "dtype": {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}.get(
                        t.dtype, str(t.dtype)),
                    "shape": list(t.shape),
                    "first": [float(x) for x in flat[:4].to(torch.float64)],
                    "sum": float(flat.to(torch.float64).sum()),
                }
    return out


def make_checkpoints(root):
    import torch
    from transformers import (Gemma3Config, Gemma3ForCausalLM, Gemma3ForConditionalGeneration,
                              Gemma3TextConfig)

    made = {}
    # 1. tied text model, f32, one file.
    cfg = Gemma3TextConfig(**tiny_text_kwargs(), final_logit_softcapping=30.0)
    m = Gemma3ForCausalLM(cfg)
    randomize(m, 1)
    d = os.path.join(root, "causal_tied_f32")
    m.save_pretrained(d)
    made["causal_tied_f32"] = d
    # 2. untied text model, bf16, sharded.
    cfg = Gemma3TextConfig(**tiny_text_kwargs(), tie_word_embeddings=False)
    m = Gemma3ForCausalLM(cfg)
    randomize(m, 2)
    m = m.to(torch.bfloat16)
    d = os.path.join(root, "causal_untied_bf16_sharded")
    m.save_pretrained(d, max_shard_size=3000)
    made["causal_untied_bf16_sharded"] = d
    # 3. multimodal, bf16, one file.
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  image_size=28, patch_size=14, model_type="siglip_vision_model", vision_use_head=False)
    cfg = Gemma3Config(text_config=tiny_text_kwargs(), vision_config=vision, mm_tokens_per_image=4,
                       image_token_index=5, boi_token_index=6, eoi_token_index=7)
    m = Gemma3ForConditionalGeneration(cfg)
    randomize(m, 3)
    m = m.to(torch.bfloat16)
    d = os.path.join(root, "mm_bf16")
    m.save_pretrained(d)
    made["mm_bf16"] = d
    for name, d in made.items():
        with open(os.path.join(d, "manifest.json"), "w") as f:
            json.dump(manifest(d), f, indent=1, sort_keys=True)
    return made


def tying(tmp):
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    out = []
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  image_size=28, patch_size=14, model_type="siglip_vision_model", vision_use_head=False)
    for top in (None, True, False):
        for txt in (None, True, False):
            tk = tiny_text_kwargs()
            if txt is not None:
                tk["tie_word_embeddings"] = txt
            kw = dict(text_config=tk, vision_config=vision, mm_tokens_per_image=4, image_token_index=5,
                      boi_token_index=6, eoi_token_index=7)
            if top is not None:
                kw["tie_word_embeddings"] = top
            entry = {"top": top, "text": txt}
            try:
                m = Gemma3ForConditionalGeneration(Gemma3Config(**kw))
                emb = m.get_input_embeddings().weight
                entry["tied_after_init"] = m.lm_head.weight.data_ptr() == emb.data_ptr()
                d = tempfile.mkdtemp(dir=tmp)
                m.save_pretrained(d)
                from safetensors import safe_open
                with safe_open(os.path.join(d, "model.safetensors"), framework="pt") as f:
                    entry["saved_lm_head"] = "lm_head.weight" in list(f.keys())
                with open(os.path.join(d, "config.json")) as f:
                    saved = json.load(f)
                entry["saved_top_tie"] = saved.get("tie_word_embeddings", "<absent>")
                entry["saved_text_tie"] = saved.get("text_config", {}).get("tie_word_embeddings", "<absent>")
                m2 = Gemma3ForConditionalGeneration.from_pretrained(d)
                entry["tied_after_load"] = (m2.lm_head.weight.data_ptr()
                                            == m2.get_input_embeddings().weight.data_ptr())
            except Exception as e:  # noqa: BLE001
                entry["error"] = "%s: %s" % (type(e).__name__, traceback.format_exc().splitlines()[-1])
            out.append(entry)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    if args.list:
        for name, config in config_cases():
            print(name, json.dumps(config, sort_keys=True)[:100])
        return 0
    os.makedirs(args.out, exist_ok=True)
    tmp = tempfile.mkdtemp()
    status = 0
    steps = [
        ("config_cases.json", lambda: make_config_cases(tmp)),
        ("tying.json", lambda: tying(tmp)),
    ]
    for fn, step in steps:
        try:
            with open(os.path.join(args.out, fn), "w") as f:
                json.dump(step(), f, indent=1)
            print("wrote", fn, flush=True)
        except Exception:  # noqa: BLE001
            traceback.print_exc()
            status = 1
    try:
        root = os.path.join(tmp, "ckpt")
        made = make_checkpoints(root)
        with tarfile.open(os.path.join(args.out, "checkpoints.tar"), "w") as tar:
            for name, d in sorted(made.items()):
                tar.add(d, arcname=name)
                print(name, sorted(os.listdir(d)), flush=True)
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
