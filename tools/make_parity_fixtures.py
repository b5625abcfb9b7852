#!/usr/bin/env python3
"""Builds the forward-pass parity fixtures of fgnet: small random Gemma 3 checkpoints and the
outputs of Hugging Face transformers on them.

Each fixture is a directory <out>/<name>/ holding
  config.json, model.safetensors, generation_config.json   the checkpoint
  prompt.json       {"input_ids": [...]}
  logits.npy        float32 [n_prompt, vocab]: logits at every prompt position
  greedy.json       {"prompt_ids", "generated_ids", ...}: a greedy continuation made by
                    model.generate(do_sample=False) with no end-of-sequence stop
  logits_full.npy   float32 [n_prompt + n_new, vocab]: logits of one forward pass over
                    prompt + continuation
and <out>/manifest.json summarises them.

References are computed on the CPU in float32 with attn_implementation="eager", after loading the
saved checkpoint back from disk (so they describe exactly the stored weights, widened to f32).
Every fixture is also recomputed by an independent float64 NumPy forward pass written from the
Gemma 3 description, once as believed and once with each uncertain convention flipped (sliding
window bound, attention softcapping, RoPE scaling, embedding-scale rounding); the table printed
at the end shows which conventions transformers actually follows.

Needs torch, transformers (5.x), safetensors and numpy. Usage:
  python3 tools/make_parity_fixtures.py --out tests/fixtures/parity [--sources sources.txt]
  python3 tools/make_parity_fixtures.py --dry-run     # print the fixture specs (no torch needed)
"""

import argparse
import copy
import json
import math
import os
import shutil
import sys
import tempfile
import traceback

from parity_specs import (SPECS, generation_config_json, print_specs, resolve, v4_config_json,
                          v5_text_kwargs)

TARGET_LOGIT_STD = 4.0  # logits spread of several units
MIN_MARGIN = 0.02  # smallest top-1 / top-2 gap accepted along the greedy path
MIN_DISTINCT = 6  # fewest distinct tokens accepted in the continuation
MAX_PROMPT_TRIES = 25
MAX_WEIGHT_TRIES = 3

# --------------------------------------------------------------------------------------------
# Everything below needs torch / transformers / numpy.
# --------------------------------------------------------------------------------------------

LOG = []


def log(*parts):
    line = " ".join(str(p) for p in parts)
    print(line, flush=True)
    LOG.append(line)


def load_causal_lm(path, torch):
    from transformers import Gemma3ForCausalLM
    try:
        model = Gemma3ForCausalLM.from_pretrained(
            path, dtype=torch.float32, attn_implementation="eager")
    except TypeError:
        model = Gemma3ForCausalLM.from_pretrained(
            path, torch_dtype=torch.float32, attn_implementation="eager")
    model.eval()
    for p in model.parameters():
        assert p.dtype == torch.float32, p.dtype
    return model


def randomize_text_params(named_params, spec, gen, torch):
    """Overwrites every language-model parameter with N(mean, std) values of a useful size.
    Norm weights w are random too, so (1 + w) is exercised."""
    r = resolve(spec)
    hidden = r["hidden_size"]
    for name, p in named_params:
        if p.dim() == 1:
            if name.endswith("q_norm.weight") or name.endswith("k_norm.weight"):
                mean, std = spec["qk_norm_mean"], 0.3
            elif ".layers." in name:
                mean, std = 0.0, 0.3
            else:  # the final norm; rescaled later to reach TARGET_LOGIT_STD
                mean, std = 0.0, 0.2
            vals = mean + std * torch.randn(p.shape, generator=gen, dtype=torch.float64)
        elif "embed_tokens" in name or name.endswith("lm_head.weight"):
            # Token vectors of RMS 0.5 after the sqrt(hidden) scale: the embedding then does not
            # dominate the residual stream (which would make a tied model repeat its input).
            vals = torch.randn(p.shape, generator=gen, dtype=torch.float64) * (0.5 / math.sqrt(hidden))
        else:
            fan_in = p.shape[1]
            vals = torch.randn(p.shape, generator=gen, dtype=torch.float64) / math.sqrt(fan_in)
        with torch.no_grad():
            p.copy_(vals.to(p.dtype))


def find_final_norm(named_params):
    for name, p in named_params:
        if name.endswith("norm.weight") and ".layers." not in name and "vision" not in name \
                and "projector" not in name:
            return name, p
    raise RuntimeError("final norm weight not found")


def rescale_final_norm(model_fwd, final_norm, sample_ids, torch):
    """Scales (1 + w) of the final norm so that logits (before any softcap) have std
    TARGET_LOGIT_STD on a sample sequence."""
    with torch.no_grad():
        one_plus = 1.0 + final_norm.double()
        logits = model_fwd(sample_ids, no_cap=True)
        std = float(logits.double().std())
        factor = TARGET_LOGIT_STD / max(std, 1e-6)
        final_norm.copy_((one_plus * factor - 1.0).to(final_norm.dtype))
    return std, factor


def causal_logits(model, ids, torch, no_cap=False):
    with torch.no_grad():
        saved = model.config.final_logit_softcapping
        if no_cap:
            model.config.final_logit_softcapping = None
        try:
            out = model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False)
        finally:
            model.config.final_logit_softcapping = saved
        return out.logits[0].float()


def greedy_generate(model, prompt, n_new, torch):
    from transformers import GenerationConfig
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    gc = GenerationConfig(
        do_sample=False, max_new_tokens=n_new, min_new_tokens=0, eos_token_id=None,
        pad_token_id=0, bos_token_id=2, num_beams=1, return_dict_in_generate=True,
        output_logits=True)
    ids = torch.tensor([prompt], dtype=torch.long)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                             generation_config=gc)
    seq = out.sequences[0].tolist()
    assert seq[:len(prompt)] == prompt
    new = seq[len(prompt):]
    step_logits = torch.stack([l[0].float() for l in out.logits]) if out.logits else None
    return new, step_logits


def top2_margins(logits_rows, torch):
    top = torch.topk(logits_rows.double(), 2, dim=-1).values
    return (top[:, 0] - top[:, 1])



def load_text_weights_f64(path, prefix, torch):
    """Reads model.safetensors and returns the text-model tensors as float64 arrays, renamed
    from `prefix` to 'model.'."""
    from safetensors.torch import load_file
    sd = load_file(path)
    W = {}
    for name, t in sd.items():
        if name.startswith(prefix):
            W["model." + name[len(prefix):]] = t.to(torch.float64).numpy()
        elif name == "lm_head.weight":
            W[name] = t.to(torch.float64).numpy()
    return W, sd


PROBES = [
    ("as believed", {}),
    ("window sees w+1 keys", {"window_inclusive": True}),
    ("attention softcap applied", {"attn_cap": True}),
    ("no rope linear scaling", {"rope_scaling": False}),
    ("embed scale rounded to bf16", {"embed_bf16": True}),
    ("no final softcap", {"final_cap": False}),
    ("no sliding window at all", {"sliding": False}),
]


# ----------------------------------- fixture building --------------------------------------

def build_text_model(spec, torch):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig
    cfg = Gemma3TextConfig(**v5_text_kwargs(spec))
    model = Gemma3ForCausalLM(cfg).to(torch.float32)
    model.eval()
    return model


def build_mm_model(spec, torch):
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration
    text = v5_text_kwargs(spec)
    cfg = Gemma3Config(
        text_config=text, vision_config=dict(spec["vision"]),
        mm_tokens_per_image=spec["mm_tokens_per_image"], tie_word_embeddings=True)
    model = Gemma3ForConditionalGeneration(cfg).to(torch.float32)
    model.eval()
    return model


def tdtype(name, torch):
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def make_fixture(spec, out_root, torch, np, tv):
    """Builds one fixture directory; returns its manifest entry."""
    from gemma3_reference import bf16_round, manual_forward
    name = spec["name"]
    r = resolve(spec)
    out_dir = os.path.join(out_root, name)
    vocab = r["vocab_size"]
    n_prompt, n_new = spec["n_prompt"], spec["n_new"]
    entry = {"name": name, "form": spec["form"], "dtype": spec["dtype"], "resolved": r}
    log("=" * 90)
    log("fixture", name, "form", spec["form"], "dtype", spec["dtype"])

    for weight_try in range(MAX_WEIGHT_TRIES):
        torch.manual_seed(spec["seed"] + 7919 * weight_try)
        gen = torch.Generator().manual_seed(spec["seed"] + 7919 * weight_try)
        if spec["form"] == "mm":
            mm = build_mm_model(spec, torch)
            lm_named = [(n, p) for n, p in mm.named_parameters()
                        if ".language_model." in n or n.startswith("language_model.")
                        or n.startswith("lm_head")]
            randomize_text_params(lm_named, spec, gen, torch)
            final_name, final_norm = find_final_norm(lm_named)

            def fwd(ids, no_cap=False, _m=mm):
                saved = _m.config.text_config.final_logit_softcapping
                if no_cap:
                    _m.config.text_config.final_logit_softcapping = None
                try:
                    return _m(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
                finally:
                    _m.config.text_config.final_logit_softcapping = saved
            model_to_save = mm
        else:
            model = build_text_model(spec, torch)
            named = list(model.named_parameters())
            randomize_text_params(named, spec, gen, torch)
            final_name, final_norm = find_final_norm(named)

            def fwd(ids, no_cap=False, _m=model):
                return causal_logits(_m, ids, torch, no_cap=no_cap)
            model_to_save = model
        sample = torch.randint(3, vocab, (48,), generator=gen).tolist()
        std0, factor = rescale_final_norm(fwd, final_norm, sample, torch)
        log("  weights try %d: final norm %s: logit std %.3f -> x%.3f" %
            (weight_try, final_name, std0, factor))

        # Save in the stored dtype, then reload from disk for the references.
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        model_to_save.to(tdtype(spec["dtype"], torch))
        model_to_save.save_pretrained(out_dir)
        written_cfg = json.load(open(os.path.join(out_dir, "config.json")))
        entry["config_as_saved_by_transformers"] = written_cfg
        st = os.path.join(out_dir, "model.safetensors")
        if not os.path.exists(st):
            raise RuntimeError("save_pretrained wrote no model.safetensors: %s" %
                               sorted(os.listdir(out_dir)))

        if spec["form"] == "v4":
            with open(os.path.join(out_dir, "config.json"), "w") as f:
                json.dump(v4_config_json(spec, tv), f, indent=2)
                f.write("\n")
        if spec["form"] == "mm":
            # transformers writes text_config as a diff against Gemma3TextConfig's defaults;
            # record the keys it left out, then write them back so the file is self-contained.
            full_text = mm.config.text_config.to_dict()
            saved_text = written_cfg.get("text_config", {})
            keep = ("model_type", "vocab_size", "hidden_size", "intermediate_size",
                    "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                    "head_dim", "query_pre_attn_scalar", "sliding_window", "layer_types",
                    "rope_parameters", "rms_norm_eps", "hidden_activation",
                    "final_logit_softcapping", "attn_logit_softcapping",
                    "max_position_embeddings", "tie_word_embeddings", "bos_token_id",
                    "eos_token_id", "pad_token_id")
            omitted = [k for k in keep if k not in saved_text]
            entry["text_config_keys_omitted_by_save_pretrained"] = omitted
            log("  save_pretrained's text_config omits:", omitted)
            cfg_out = dict(written_cfg)
            text_out = dict(saved_text)
            for k in keep:
                if k in full_text:
                    text_out[k] = full_text[k]
            cfg_out["text_config"] = dict(sorted(text_out.items()))
            with open(os.path.join(out_dir, "config.json"), "w") as f:
                json.dump(cfg_out, f, indent=2)
                f.write("\n")
        with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
            json.dump(generation_config_json(spec, tv), f, indent=2)
            f.write("\n")

        # Tensor names and dtypes as stored.
        from safetensors import safe_open
        with safe_open(st, framework="pt") as f:
            keys = sorted(f.keys())
            dtypes = sorted({str(f.get_slice(k).get_dtype()) for k in keys})
        entry["tensor_count"] = len(keys)
        entry["tensor_dtypes"] = dtypes
        entry["tensor_names_sample"] = keys[:6] + keys[-6:]
        log("  %d tensors, dtypes %s; e.g. %s" % (len(keys), dtypes, keys[:3] + keys[-3:]))

        # Reference model, loaded back from disk in float32.
        if spec["form"] == "mm":
            prefixes = sorted({k.split("layers.")[0] for k in keys if ".layers." in k})
            log("  layer-tensor prefixes:", prefixes)
            lm_prefix = [p for p in prefixes if "language_model" in p]
            if len(lm_prefix) != 1:
                raise RuntimeError("cannot find the language model prefix in %s" % prefixes)
            lm_prefix = lm_prefix[0]
            entry["language_model_prefix"] = lm_prefix
            W, raw = load_text_weights_f64(st, lm_prefix, torch)
            ref_dir = tempfile.mkdtemp()
            from transformers import AutoConfig, Gemma3ForCausalLM
            # The text config as transformers parses the committed config.json.
            tcfg = AutoConfig.from_pretrained(out_dir).text_config
            log("  parsed text_config class", type(tcfg).__name__)
            lm = Gemma3ForCausalLM(tcfg)
            sd = {"model." + k[len(lm_prefix):]: v for k, v in raw.items()
                  if k.startswith(lm_prefix)}
            if "lm_head.weight" in raw:
                sd["lm_head.weight"] = raw["lm_head.weight"]
            missing, unexpected = lm.load_state_dict(sd, strict=False)
            log("  CausalLM load: missing", list(missing), "unexpected", list(unexpected))
            if unexpected or any(m != "lm_head.weight" for m in missing):
                raise RuntimeError("language model weights do not map onto Gemma3ForCausalLM")
            try:
                lm.tie_weights()
            except Exception as e:  # noqa: BLE001
                log("  tie_weights():", repr(e)[:200])
            lm.to(tdtype(spec["dtype"], torch)).save_pretrained(ref_dir)
            model = load_causal_lm(ref_dir, torch)
            shutil.rmtree(ref_dir)
        else:
            W, _ = load_text_weights_f64(st, "model.", torch)
            model = load_causal_lm(out_dir, torch)
        lc = model.config
        log("  loaded config: layer_types", lc.layer_types)
        log("  loaded config: rope_parameters", getattr(lc, "rope_parameters", None))
        log("  loaded config: sliding_window", lc.sliding_window, "qpas", lc.query_pre_attn_scalar,
            "caps", lc.final_logit_softcapping, lc.attn_logit_softcapping,
            "tie", lc.tie_word_embeddings)
        if list(lc.layer_types) != r["layer_types"]:
            raise RuntimeError("transformers resolved layer_types %s, expected %s" %
                               (lc.layer_types, r["layer_types"]))
        rp = getattr(lc, "rope_parameters", None) or {}
        if rp:
            got = (rp["full_attention"]["rope_theta"], rp["sliding_attention"]["rope_theta"])
            if got != (r["theta_global"], r["theta_local"]):
                raise RuntimeError("transformers resolved rope thetas %s, expected %s" %
                                   (got, (r["theta_global"], r["theta_local"])))

        # Pick a prompt whose greedy path has clear argmax margins and some variety.
        best = None
        pgen = torch.Generator().manual_seed(spec["seed"] * 31 + weight_try)
        for prompt_try in range(MAX_PROMPT_TRIES):
            prompt = [2] + torch.randint(3, vocab, (n_prompt - 1,), generator=pgen).tolist()
            new, step_logits = greedy_generate(model, prompt, n_new, torch)
            if len(new) != n_new:
                raise RuntimeError("generate stopped after %d tokens" % len(new))
            full = causal_logits(model, prompt + new, torch)
            rows = full[n_prompt - 1:n_prompt - 1 + n_new]
            margin = float(top2_margins(rows, torch).min())
            distinct = len(set(new))
            argmax_path = rows.argmax(dim=-1).tolist()
            score = (margin >= MIN_MARGIN and distinct >= MIN_DISTINCT and argmax_path == new,
                     min(margin, 1.0) + 0.1 * distinct)
            if best is None or score > best[0]:
                best = (score, prompt, new, step_logits, full, margin, distinct, argmax_path)
            if score[0]:
                break
        score, prompt, new, step_logits, full, margin, distinct, argmax_path = best
        log("  prompt try %d: min top-2 margin %.4f, %d distinct of %d new tokens" %
            (prompt_try, margin, distinct, n_new))
        if score[0]:
            break
        log("  not accepted; trying other weights")
    entry["accepted"] = bool(score[0])
    if not score[0]:
        log("  WARNING: no weights/prompt met the margin/variety targets; keeping the best")

    # References.
    logits = causal_logits(model, prompt, torch)
    np.save(os.path.join(out_dir, "logits.npy"), logits.numpy().astype("<f4"))
    np.save(os.path.join(out_dir, "logits_full.npy"), full.numpy().astype("<f4"))
    with open(os.path.join(out_dir, "prompt.json"), "w") as f:
        json.dump({"input_ids": prompt}, f)
        f.write("\n")
    with open(os.path.join(out_dir, "greedy.json"), "w") as f:
        json.dump({"prompt_ids": prompt, "generated_ids": new,
                   "min_top2_margin": round(margin, 6)}, f)
        f.write("\n")

    # Consistency inside transformers.
    prefix_vs_full = float((full[:n_prompt] - logits).abs().max())
    gen_vs_full = float((step_logits - full[n_prompt - 1:n_prompt - 1 + n_new]).abs().max()) \
        if step_logits is not None else float("nan")
    entry.update({
        "n_prompt": n_prompt, "n_new": n_new, "prompt_ids": prompt, "generated_ids": new,
        "distinct_new_tokens": distinct, "min_top2_margin": margin,
        "logit_min": float(full.min()), "logit_max": float(full.max()),
        "logit_std": float(full.double().std()), "max_abs_logit": float(full.abs().max()),
        "prompt_logits_vs_full_forward_max_diff": prefix_vs_full,
        "generate_step_logits_vs_full_forward_max_diff": gen_vs_full,
        "greedy_equals_full_forward_argmax": argmax_path == new,
    })
    log("  logits: min %.3f max %.3f std %.3f max|.| %.3f" %
        (entry["logit_min"], entry["logit_max"], entry["logit_std"], entry["max_abs_logit"]))
    log("  prompt logits vs full-sequence forward: max diff %.3g" % prefix_vs_full)
    log("  generate() per-step logits (KV cache) vs full forward: max diff %.3g" % gen_vs_full)
    log("  greedy ids:", new)

    # The multimodal class itself on the same ids (text only), and CausalLM.from_pretrained
    # pointed straight at the multimodal directory.
    if spec["form"] == "mm":
        try:
            from transformers import Gemma3ForConditionalGeneration
            mm2 = Gemma3ForConditionalGeneration.from_pretrained(
                out_dir, dtype=torch.float32, attn_implementation="eager").eval()
            with torch.no_grad():
                ml = mm2(input_ids=torch.tensor([prompt + new]), use_cache=False).logits[0]
            entry["mm_class_vs_causal_lm_max_diff"] = float((ml.float() - full).abs().max())
            log("  Gemma3ForConditionalGeneration vs Gemma3ForCausalLM: max diff %.3g" %
                entry["mm_class_vs_causal_lm_max_diff"])
        except Exception as e:  # noqa: BLE001 - a probe only
            log("  multimodal class probe failed:", repr(e)[:300])
        try:
            direct = load_causal_lm(out_dir, torch)
            dl = causal_logits(direct, prompt + new, torch)
            entry["causal_lm_from_mm_dir_max_diff"] = float((dl - full).abs().max())
            log("  Gemma3ForCausalLM.from_pretrained(mm dir) vs reference: max diff %.3g" %
                entry["causal_lm_from_mm_dir_max_diff"])
        except Exception as e:  # noqa: BLE001 - a probe only
            log("  Gemma3ForCausalLM.from_pretrained(mm dir) failed:", repr(e)[:300])

    # Independent float64 forward with each convention flipped.
    seq = prompt + new
    ref = full.double().numpy()
    probes = {}
    for label, opts in PROBES:
        try:
            m = manual_forward(W, r, seq, **opts)
            d = float(np.abs(m - ref).max())
        except Exception as e:  # noqa: BLE001
            d = float("nan")
            log("  probe", label, "failed:", repr(e)[:200])
        probes[label] = d
        log("  float64 forward, %-30s max |diff| vs transformers = %.3g" % (label, d))
    entry["float64_probes"] = probes

    # Embedding scale when the model runs in its stored half-precision dtype.
    if spec["dtype"] != "float32" and spec["form"] != "mm":
        try:
            from transformers import Gemma3ForCausalLM
            hm = Gemma3ForCausalLM.from_pretrained(out_dir, dtype=tdtype(spec["dtype"], torch))
            emb = hm.model.embed_tokens
            dt = tdtype(spec["dtype"], torch)
            ids_t = torch.tensor([prompt])
            s32 = torch.tensor(math.sqrt(r["hidden_size"]), dtype=torch.float32)
            s_low = s32.to(dt)
            with torch.no_grad():
                got = emb(ids_t)
                rows = emb.weight[ids_t].float()
                hyp_low = (rows * s_low.float()).to(dt)
                hyp_f32 = (rows * s32).to(dt)
            fl = float((got == hyp_low).float().mean())
            ff = float((got == hyp_f32).float().mean())
            entry["embed_scale_probe"] = {"scale_f32": float(s32), "scale_in_dtype": float(s_low),
                                          "match_scale_in_dtype": fl, "match_scale_f32": ff}
            log("  embed scale when run in %s: outputs match scale cast to %s (%.6f) in %.1f%%, "
                "f32 scale (%.6f) in %.1f%%" % (spec["dtype"], spec["dtype"], float(s_low),
                                                100 * fl, float(s32), 100 * ff))
        except Exception as e:  # noqa: BLE001
            log("  embed-scale probe failed:", repr(e)[:300])

    sizes = {f: os.path.getsize(os.path.join(out_dir, f)) for f in sorted(os.listdir(out_dir))}
    entry["file_sizes"] = sizes
    log("  files:", sizes)
    return entry


def probe_window_directly(torch):
    """One sliding layer, window w: changes one input token at a time and reports which earlier
    positions move the logits at position P, for a full forward and for a one-token decode
    step after a cached prefill, with the eager and the sdpa attention."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig
    spec = copy.deepcopy(SPECS[1])
    spec["text"]["num_hidden_layers"] = 1
    spec["text"]["layer_types"] = ["sliding_attention"]
    spec["text"]["attn_logit_softcapping"] = None
    w = spec["text"]["sliding_window"]
    vocab = spec["text"]["vocab_size"]
    torch.manual_seed(5)
    gen = torch.Generator().manual_seed(5)
    model = Gemma3ForCausalLM(Gemma3TextConfig(**v5_text_kwargs(spec)))
    randomize_text_params(list(model.named_parameters()), spec, gen, torch)
    tmp = tempfile.mkdtemp()
    model.save_pretrained(tmp)
    ids = torch.randint(3, vocab, (1, 20), generator=gen)
    P = 15
    result = {}
    for impl in ("eager", "sdpa"):
        try:
            m = Gemma3ForCausalLM.from_pretrained(tmp, dtype=torch.float32,
                                                  attn_implementation=impl).eval()
        except Exception as e:  # noqa: BLE001
            log("  window probe: cannot load with", impl, repr(e)[:200])
            continue
        for path in ("full forward", "cached decode"):
            def at_p(t):
                with torch.no_grad():
                    if path == "full forward":
                        return m(input_ids=t[:, :P + 1], use_cache=False).logits[0, P]
                    out = m(input_ids=t[:, :P], use_cache=True)
                    step = m(input_ids=t[:, P:P + 1], past_key_values=out.past_key_values,
                             use_cache=True)
                    return step.logits[0, -1]
            base = at_p(ids)
            moved = []
            for k in range(0, P + 1):
                t2 = ids.clone()
                t2[0, k] = (t2[0, k] + 1 - 3) % (vocab - 3) + 3
                if float((at_p(t2) - base).abs().max()) > 0:
                    moved.append(k)
            seen = (min(moved), max(moved)) if moved else None
            key = "%s, %s" % (impl, path)
            result[key] = {"positions_that_matter": moved, "count": len(moved)}
            log("  window probe (w=%d, P=%d) %-24s: positions that change logits[P]: %s "
                "(%d keys)" % (w, P, key, seen, len(moved)))
    shutil.rmtree(tmp)
    return result


def probe_v4_rope_scaling():
    """How transformers 5 reads 4.x keys: rope_theta, rope_local_base_freq, a linear
    rope_scaling and sliding_window_pattern, without layer_types."""
    from transformers import Gemma3TextConfig
    kwargs = v5_text_kwargs(SPECS[0])
    for k in ("layer_types", "rope_parameters"):
        kwargs.pop(k)
    kwargs.update(rope_theta=123456.0, rope_local_base_freq=4321.0, sliding_window_pattern=3,
                  rope_scaling={"rope_type": "linear", "factor": 8.0})
    cfg = Gemma3TextConfig(**kwargs)
    log("  4.x keys -> layer_types", cfg.layer_types)
    log("  4.x keys -> rope_parameters", cfg.rope_parameters)
    return {"layer_types": list(cfg.layer_types), "rope_parameters": cfg.rope_parameters}


def dump_sources(path):
    import inspect
    targets = [
        ("transformers.models.gemma3.modeling_gemma3", "Gemma3Attention.forward"),
        ("transformers.models.gemma3.modeling_gemma3", "eager_attention_forward"),
        ("transformers.models.gemma3.modeling_gemma3", "Gemma3TextScaledWordEmbedding"),
        ("transformers.models.gemma3.modeling_gemma3", "Gemma3RMSNorm"),
        ("transformers.models.gemma3.modeling_gemma3", "Gemma3RotaryEmbedding"),
        ("transformers.models.gemma3.modeling_gemma3", "Gemma3ForCausalLM.forward"),
        ("transformers.models.gemma3.modeling_gemma3", "Gemma3TextModel.forward"),
        ("transformers.models.gemma3.modeling_gemma3", "Gemma3ForConditionalGeneration"),
        ("transformers.models.gemma3.configuration_gemma3", "Gemma3TextConfig"),
        ("transformers.masking_utils", "sliding_window_overlay"),
        ("transformers.masking_utils", "sliding_window_causal_mask_function"),
        ("transformers.masking_utils", "causal_mask_function"),
        ("transformers.modeling_rope_utils", "_compute_linear_scaling_rope_parameters"),
        ("transformers.cache_utils", "DynamicSlidingWindowLayer"),
    ]
    import importlib
    with open(path, "w") as f:
        for mod_name, attr in targets:
            f.write("#" * 100 + "\n# %s.%s\n" % (mod_name, attr))
            try:
                obj = importlib.import_module(mod_name)
                for part in attr.split("."):
                    obj = getattr(obj, part)
                f.write(inspect.getsource(obj))
            except Exception as e:  # noqa: BLE001
                f.write("unavailable: %r\n" % (e,))
        for mod_name in ("transformers.models.gemma3.modeling_gemma3",):
            try:
                mod = importlib.import_module(mod_name)
                f.write("#" * 100 + "\n# checkpoint conversion attributes\n")
                for cls_name in ("Gemma3ForConditionalGeneration", "Gemma3Model",
                                 "Gemma3ForCausalLM"):
                    cls = getattr(mod, cls_name)
                    for a in ("_checkpoint_conversion_mapping", "_tied_weights_keys",
                              "base_model_prefix"):
                        f.write("%s.%s = %r\n" % (cls_name, a, getattr(cls, a, None)))
            except Exception as e:  # noqa: BLE001
                f.write("unavailable: %r\n" % (e,))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/fixtures/parity")
    ap.add_argument("--only", nargs="*", help="fixture names to build (default: all)")
    ap.add_argument("--sources", help="also write the relevant transformers sources here")
    ap.add_argument("--log", help="also write the log here")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    if args.dry_run:
        print_specs()
        return 0

    import numpy as np
    import torch
    import transformers

    torch.set_num_threads(4)
    tv = transformers.__version__
    log("torch", torch.__version__, "transformers", tv, "numpy", np.__version__)
    if args.sources:
        dump_sources(args.sources)
    os.makedirs(args.out, exist_ok=True)
    manifest = {"transformers_version": tv, "torch_version": torch.__version__,
                "generator": "tools/make_parity_fixtures.py", "fixtures": []}
    failures = 0
    log("=" * 90)
    try:
        manifest["window_probe"] = probe_window_directly(torch)
    except Exception:  # noqa: BLE001 - a probe only
        log("window probe failed")
        log(traceback.format_exc())
    try:
        manifest["v4_keys_probe"] = probe_v4_rope_scaling()
    except Exception:  # noqa: BLE001 - a probe only
        log("4.x keys probe failed")
        log(traceback.format_exc())
    for spec in SPECS:
        if args.only and spec["name"] not in args.only:
            continue
        try:
            manifest["fixtures"].append(make_fixture(copy.deepcopy(spec), args.out, torch, np,
                                                     tv))
        except Exception:  # noqa: BLE001 - keep building the others, report at the end
            failures += 1
            log("FAILED", spec["name"])
            log(traceback.format_exc())
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")

    log("=" * 90)
    log("summary")
    for e in manifest["fixtures"]:
        log("%-12s max|logit| %6.2f std %5.2f margin %.4f distinct %2d gen-vs-full %.2g "
            "accepted %s" % (e["name"], e["max_abs_logit"], e["logit_std"],
                             e["min_top2_margin"], e["distinct_new_tokens"],
                             e["generate_step_logits_vs_full_forward_max_diff"], e["accepted"]))
        log("             float64 probes: " + ", ".join(
            "%s=%.2g" % (k, v) for k, v in e["float64_probes"].items()))
    total = 0
    for root, _, files in os.walk(args.out):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    log("total fixture bytes:", total, "failures:", failures)
    if args.log:
        with open(args.log, "w") as f:
            f.write("\n".join(LOG) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
