#!/usr/bin/env python3
"""Builds the LoRA reference fixtures of fgnet: small PEFT adapters on the random parity bases of
tests/fixtures/parity and the outputs of peft on them.

Each adapter fixture is a directory <out>/<name>/ holding
  adapter_config.json, adapter_model.safetensors   the adapter, as peft's save_pretrained wrote it
  fixture.json          everything a test needs: the base, the prompt ids, the expected ranks and
                        scales per module, the greedy continuation, the reference files and the
                        probes' results (see FIXTURE_JSON_DOC below)
  logits_unmerged.npy   float32 [n_prompt, vocab]: peft's logits with the adapter unmerged
  logits_merged.npy     float32 [n_prompt, vocab]: the same after merge_and_unload() (not for aLoRA,
                        which peft cannot merge)
  greedy_step_logits.npy  float32 [n_new, vocab]: the logits generate() produced at each step of the
                        greedy continuation (with the adapter unmerged)
and <out>/merges/ holds reference logits of two adapters merged in delta space (linear and TIES,
the latter computed with peft's own merge_utils.ties on the dense deltas). <out>/manifest.json
records versions and the probes of peft's matching rules and aLoRA semantics.

References are computed on the CPU in float32 with attn_implementation="eager", after loading the
saved adapter back from disk with PeftModel.from_pretrained onto a float32 base (so they describe
exactly the stored adapter, widened to f32).

Needs torch, transformers (5.x), peft, safetensors and numpy. Usage:
  python3 tools/make_lora_fixtures.py --bases tests/fixtures/parity --out tests/fixtures/lora \
      [--log log.txt] [--source-dump peft_source.txt] [--tar fixtures.tar.gz]
  python3 tools/make_lora_fixtures.py --dry-run     # print the specs and prompts (no torch needed)
"""

import argparse
import copy
import dataclasses
import inspect
import json
import math
import os
import random
import re
import shutil
import sys
import tarfile
import tempfile
import traceback

FIXTURE_JSON_DOC = {
    "name": "fixture name (the directory name)",
    "base": "the base checkpoint, relative to tests/fixtures (e.g. parity/gqa_f32_v5)",
    "base_class": "Gemma3ForCausalLM or Gemma3ForConditionalGeneration (what peft wrapped)",
    "adapter_dtype": "dtype of the stored lora_A / lora_B tensors",
    "lora_config": "the LoraConfig arguments the adapter was made with",
    "expected": "per adapted module {layer, module, rank, alpha, scale}; scale = alpha / r, or "
                "alpha / sqrt(r) with use_rslora, as peft's module.scaling holds it",
    "prompt_ids": "the prompt the logits are for (bos first)",
    "logits_unmerged": "file: float32 [n_prompt, vocab]",
    "logits_merged": "file or null: float32 [n_prompt, vocab] after merge_and_unload()",
    "generated_ids": "greedy continuation of prompt_ids, adapter unmerged",
    "greedy_step_logits": "file: float32 [n_new, vocab], the logits of each generate() step",
    "alora": "aLoRA only: invocation tokens, start position, other prompts and the probes",
}

N_NEW = 12              # greedy tokens per fixture
MIN_MARGIN = 0.02       # smallest top-1 / top-2 gap accepted along the greedy path
MAX_PROMPT_TRIES = 20
DELTA_MAGNITUDE = 0.35  # s * B A has element std DELTA_MAGNITUDE / sqrt(in_features)

# The bases, as tools/make_parity_fixtures.py made them.
BASES = {
    "gqa_f32_v5": {"form": "causal", "vocab": 256},
    "mqa_bf16_v4": {"form": "causal", "vocab": 256},
    "untied_f16": {"form": "causal", "vocab": 320},
    "nested_mm": {"form": "mm", "vocab": 256},
}

ALORA_INVOCATION = [17, 93, 41]

SPECS = [
    {
        "name": "attn_qkvo",
        "what": "q/k/v/o on every layer, one rank and alpha, F32",
        "base": "gqa_f32_v5", "seed": 101, "dtype": "float32",
        "lora": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
    },
    {
        "name": "all_linear_rslora",
        "what": "all-linear, rsLoRA, rank_pattern and alpha_pattern with overlapping keys, BF16",
        "base": "mqa_bf16_v4", "seed": 202, "dtype": "bfloat16",
        # Keys are given in sorted order, the order they have after a save/load round trip
        # (adapter_config.json is written with sorted keys), so the in-memory and reloaded
        # adapters agree. "down_proj" comes before "layers.3.mlp.down_proj": if the first
        # matching key wins, layer 3's down_proj gets rank 2, not 6. "layers.2.self_attn.o_proj"
        # comes before "o_proj": layer 2's o_proj gets alpha 12, the others 5.
        "lora": {
            "r": 4, "lora_alpha": 6, "use_rslora": True, "target_modules": "all-linear",
            "rank_pattern": {"down_proj": 2, "layers.3.mlp.down_proj": 6,
                             "layers\\.[56]\\.self_attn\\.v_proj": 8, "q_proj": 3},
            "alpha_pattern": {"k_proj": 3, "layers.2.self_attn.o_proj": 12, "o_proj": 5},
        },
    },
    {
        "name": "mlp_layers",
        "what": "gate/up/down on layers 0 and 2 of 3 (layers_to_transform + layers_pattern), F16",
        "base": "untied_f16", "seed": 303, "dtype": "float16",
        "lora": {"r": 3, "lora_alpha": 5, "target_modules": ["gate_proj", "up_proj", "down_proj"],
                 "layers_to_transform": [0, 2], "layers_pattern": "layers"},
    },
    {
        "name": "alora",
        "what": "activated LoRA on all seven projections with a 3-token invocation sequence",
        "base": "gqa_f32_v5", "seed": 404, "dtype": "float32",
        "lora": {"r": 4, "lora_alpha": 4,
                 "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                    "up_proj", "down_proj"],
                 "alora_invocation_tokens": ALORA_INVOCATION},
    },
    {
        "name": "regex_mm",
        "what": "regex target_modules on a Gemma3ForConditionalGeneration base (text model only)",
        "base": "nested_mm", "seed": 505, "dtype": "float32",
        "lora": {"r": 2, "lora_alpha": 4,
                 "target_modules": r".*\.language_model\..*\.(q_proj|o_proj|up_proj)"},
    },
    {
        "name": "attn_qvo_second",
        "what": "a second adapter on gqa_f32_v5 (q/v/o, rank 2) for the merge references",
        "base": "gqa_f32_v5", "seed": 606, "dtype": "float32",
        "lora": {"r": 2, "lora_alpha": 3, "target_modules": ["q_proj", "v_proj", "o_proj"]},
    },
]

MERGES = {
    "name": "merges", "base": "gqa_f32_v5",
    "adapters": [["attn_qkvo", 0.7], ["attn_qvo_second", 0.5]],
    "ties_density": 0.5,
}

MODULE_PATHS = {
    "q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
    "o_proj": "self_attn.o_proj", "gate_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj",
    "down_proj": "mlp.down_proj",
}

LOG = []


def log(*parts):
    line = " ".join(str(p) for p in parts)
    print(line, flush=True)
    LOG.append(line)


# ------------------------------- pure-python helpers ---------------------------------------

def last_occurrence(tokens, pattern):
    """Start of the last occurrence of `pattern` in `tokens`, or None."""
    n = len(pattern)
    for start in range(len(tokens) - n, -1, -1):
        if tokens[start:start + n] == pattern:
            return start
    return None


def contains(tokens, pattern):
    return last_occurrence(tokens, pattern) is not None


def alora_prompts(vocab, seed):
    """Prompts for the aLoRA fixture: the invocation twice (the last occurrence counts), and
    once with no invocation at all. Random ids avoid the invocation's tokens."""
    rng = random.Random(seed)
    avoid = set(ALORA_INVOCATION)

    def rand(n):
        out = []
        while len(out) < n:
            t = rng.randrange(3, vocab)
            if t not in avoid:
                out.append(t)
        return out
    twice = [2] + rand(7) + ALORA_INVOCATION + rand(9) + ALORA_INVOCATION + rand(2)
    none = [2] + rand(20)
    assert last_occurrence(twice, ALORA_INVOCATION) == len(twice) - 2 - len(ALORA_INVOCATION)
    assert not contains(none, ALORA_INVOCATION)
    return twice, none


def expected_modules(spec, num_layers):
    """The (layer, module, rank, alpha, scale) peft is expected to create, following the
    matching rules as fgnet implements them (checked against peft's saved tensors)."""
    cfg = spec["lora"]
    tm = cfg["target_modules"]
    out = []
    for layer in range(num_layers):
        for name, path in MODULE_PATHS.items():
            key = ("model.language_model." if BASES[spec["base"]]["form"] == "mm" else "model.") + \
                "layers.%d.%s" % (layer, path)
            if tm == "all-linear":
                hit = True
            elif isinstance(tm, str):
                hit = re.fullmatch(tm, key) is not None
            else:
                hit = key in tm or any(key.endswith("." + t) for t in tm)
                ltt = cfg.get("layers_to_transform")
                if hit and ltt is not None:
                    pat = cfg.get("layers_pattern")
                    m = re.match(r".*\.%s\.(\d+)\." % pat if pat else r".*\.[^.]*\.(\d+)\.", key)
                    idx = int(m.group(1)) if m else None
                    hit = idx is not None and (idx == ltt if isinstance(ltt, int) else idx in ltt)
            if not hit:
                continue
            r = pattern_value(cfg.get("rank_pattern", {}), key, cfg["r"])
            alpha = pattern_value(cfg.get("alpha_pattern", {}), key, cfg["lora_alpha"])
            scale = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
            out.append({"layer": layer, "module": name, "key": key, "rank": r, "alpha": alpha,
                        "scale": scale})
    return out


def pattern_value(pattern, key, default):
    """First key (in order) p with re.match(r"(.*\\.)?(p)$", key), as peft's get_pattern_key."""
    for p, v in pattern.items():
        if re.match(r"(.*\.)?(%s)$" % p, key):
            return v
    return default


def print_specs():
    for s in SPECS:
        print(json.dumps(s))
        base = BASES[s["base"]]
        layers = {"gqa_f32_v5": 5, "mqa_bf16_v4": 7, "untied_f16": 3, "nested_mm": 6}[s["base"]]
        for m in expected_modules(s, layers):
            print("   ", m)
        _ = base
    print(json.dumps(MERGES))
    twice, none = alora_prompts(256, 404)
    print("aLoRA prompt (twice):", twice, "start", last_occurrence(twice, ALORA_INVOCATION))
    print("aLoRA prompt (none):", none)


# ---------------------------- everything below needs torch ---------------------------------

def base_dir(args, name):
    return os.path.join(args.bases, name)


def load_base(args, name, torch):
    from transformers import Gemma3ForCausalLM, Gemma3ForConditionalGeneration
    cls = Gemma3ForConditionalGeneration if BASES[name]["form"] == "mm" else Gemma3ForCausalLM
    model = cls.from_pretrained(base_dir(args, name), dtype=torch.float32,
                                attn_implementation="eager")
    model.eval()
    for p in model.parameters():
        assert p.dtype == torch.float32, p.dtype
    return model


def prompt_of(args, name):
    with open(os.path.join(base_dir(args, name), "prompt.json")) as f:
        return json.load(f)["input_ids"]


def forward_logits(model, ids, torch, **kwargs):
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False, **kwargs)
    return out.logits[0].float()


def greedy(model, prompt, n_new, torch):
    from transformers import GenerationConfig
    gc = GenerationConfig(do_sample=False, max_new_tokens=n_new, min_new_tokens=0,
                          eos_token_id=None, pad_token_id=0, bos_token_id=2, num_beams=1,
                          return_dict_in_generate=True, output_logits=True)
    ids = torch.tensor([prompt], dtype=torch.long)
    try:
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 generation_config=gc)
    except Exception:  # noqa: BLE001
        log("  generate() failed; greedy by full forward passes instead:\n" +
            traceback.format_exc()[-400:])
        seq = list(prompt)
        rows = []
        for _ in range(n_new):
            row = forward_logits(model, seq, torch)[-1]
            rows.append(row)
            seq.append(int(row.argmax()))
        return seq[len(prompt):], torch.stack(rows)
    seq = out.sequences[0].tolist()
    assert seq[:len(prompt)] == prompt
    steps = torch.stack([l[0] for l in out.logits]).float()
    return seq[len(prompt):], steps


def min_margin(rows, torch):
    top = torch.topk(rows.double(), 2, dim=-1).values
    return float((top[:, 0] - top[:, 1]).min())


def lora_layers(model):
    from peft.tuners.lora import LoraLayer
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            yield name, module


def strip_key(name):
    for prefix in ("base_model.model.",):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def randomize_adapter(pm, seed, torch):
    gen = torch.Generator().manual_seed(seed)
    for name, module in sorted(lora_layers(pm), key=lambda kv: kv[0]):
        a = module.lora_A["default"].weight
        b = module.lora_B["default"].weight
        r, fan_in = a.shape
        s = module.scaling["default"]
        with torch.no_grad():
            a.copy_(torch.randn(a.shape, generator=gen, dtype=torch.float64) / math.sqrt(fan_in))
            b_std = DELTA_MAGNITUDE / (s * math.sqrt(r))
            b.copy_(torch.randn(b.shape, generator=gen, dtype=torch.float64) * b_std)


def tdtype(name, torch):
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def make_lora_config(spec_lora):
    from peft import LoraConfig
    kwargs = dict(spec_lora)
    kwargs.update(init_lora_weights=False, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    return LoraConfig(**kwargs)


def build_and_save(args, spec, out_dir, torch):
    """Creates the adapter with random A and B, saves it as peft does; returns info."""
    from peft import get_peft_model
    base = load_base(args, spec["base"], torch)
    pm = get_peft_model(base, make_lora_config(spec["lora"]))
    randomize_adapter(pm, spec["seed"], torch)
    if spec["dtype"] != "float32":
        for _, module in lora_layers(pm):
            for holder in (module.lora_A["default"], module.lora_B["default"]):
                holder.weight.data = holder.weight.data.to(tdtype(spec["dtype"], torch))
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    pm.save_pretrained(out_dir)
    readme = os.path.join(out_dir, "README.md")
    if os.path.exists(readme):
        os.remove(readme)
    info = {"target_modules_in_memory": sorted(pm.peft_config["default"].target_modules)
            if not isinstance(pm.peft_config["default"].target_modules, str)
            else pm.peft_config["default"].target_modules}
    return info


def load_adapter(args, spec, adapter_dir, torch):
    from peft import PeftModel
    base = load_base(args, spec["base"], torch)
    pm = PeftModel.from_pretrained(base, adapter_dir, is_trainable=False)
    pm.eval()
    cast = False
    for _, module in lora_layers(pm):
        for holder in (module.lora_A["default"], module.lora_B["default"]):
            if holder.weight.dtype != torch.float32:
                holder.weight.data = holder.weight.data.float()
                cast = True
    return pm, cast


def module_table(pm):
    rows = []
    for name, module in lora_layers(pm):
        key = strip_key(name)
        m = re.search(r"layers\.(\d+)\.(self_attn|mlp)\.(\w+)$", key)
        rows.append({"key": key, "layer": int(m.group(1)) if m else None,
                     "module": m.group(3) if m else None,
                     "rank": int(module.r["default"]),
                     "alpha": float(module.lora_alpha["default"]),
                     "scale": float(module.scaling["default"])})
    rows.sort(key=lambda r: (r["layer"] if r["layer"] is not None else -1, r["key"]))
    return rows


def save_npy(path, tensor, np):
    np.save(path, tensor.detach().cpu().numpy().astype("<f4"))


def choose_prompt(pm, candidates, torch):
    """First candidate whose greedy path has margins >= MIN_MARGIN and agrees with one forward
    over prompt + continuation; else the best one."""
    best = None
    for i, prompt in enumerate(candidates):
        new, steps = greedy(pm, prompt, N_NEW, torch)
        full = forward_logits(pm, prompt + new, torch)
        rows = full[len(prompt) - 1:len(prompt) - 1 + N_NEW]
        margin = min_margin(steps, torch)
        argmax_ok = rows.argmax(dim=-1).tolist() == new
        score = (margin >= MIN_MARGIN and argmax_ok and len(set(new)) >= 4, margin)
        if best is None or score > best[0]:
            best = (score, i, prompt, new, steps, full, margin)
        if score[0]:
            break
    return best


def make_fixture(args, spec, torch, np):
    name = spec["name"]
    out_dir = os.path.join(args.out, name)
    log("=" * 90)
    log("fixture", name, "on", spec["base"], "-", spec["what"])
    info = build_and_save(args, spec, out_dir, torch)
    with open(os.path.join(out_dir, "adapter_config.json")) as f:
        saved_cfg = json.load(f)
    from safetensors import safe_open
    with safe_open(os.path.join(out_dir, "adapter_model.safetensors"), framework="pt") as f:
        keys = sorted(f.keys())
        dtypes = sorted({str(f.get_slice(k).get_dtype()) for k in keys})
        shapes = {k: list(f.get_slice(k).get_shape()) for k in keys}
    log("  saved %d tensors, dtypes %s, e.g. %s" % (len(keys), dtypes, keys[:2]))
    log("  saved config target_modules:", saved_cfg.get("target_modules"))

    pm, cast = load_adapter(args, spec, out_dir, torch)
    table = module_table(pm)
    layers = pm.get_base_model().config.get_text_config().num_hidden_layers
    expected = expected_modules(spec, layers)
    exp_cmp = [(e["key"], e["rank"], round(e["scale"], 6)) for e in expected]
    got_cmp = [(r["key"], r["rank"], round(r["scale"], 6)) for r in table]
    if sorted(exp_cmp) != sorted(got_cmp):
        log("  MISMATCH between the expected modules and peft's:")
        log("    expected:", sorted(exp_cmp))
        log("    peft:    ", sorted(got_cmp))
    vocab = BASES[spec["base"]]["vocab"]
    base_prompt = prompt_of(args, spec["base"])
    entry = {
        "name": name, "what": spec["what"], "base": "parity/" + spec["base"],
        "base_class": type(pm.get_base_model()).__name__, "adapter_dtype": spec["dtype"],
        "lora_config": spec["lora"], "seed": spec["seed"],
        "saved_tensor_dtypes": dtypes, "saved_tensor_count": len(keys),
        "saved_tensor_names_sample": keys[:4] + keys[-2:],
        "saved_config_target_modules": saved_cfg.get("target_modules"),
        "target_modules_in_memory": info["target_modules_in_memory"],
        "loaded_adapter_cast_to_f32": cast,
        "expected": table,
        "expected_matches_fgnet_rules": sorted(exp_cmp) == sorted(got_cmp),
        "vocab_size": vocab,
    }
    # Ranks as stored.
    for row in table:
        a_name = "base_model.model.%s.lora_A.weight" % row["key"]
        row["a_shape"] = shapes.get(a_name)
        row["b_shape"] = shapes.get("base_model.model.%s.lora_B.weight" % row["key"])

    base_model = load_base(args, spec["base"], torch)
    is_alora = bool(spec["lora"].get("alora_invocation_tokens"))
    if is_alora:
        twice, none = alora_prompts(vocab, spec["seed"])
        candidates = [twice]
        rng = random.Random(spec["seed"] + 1)
        for _ in range(MAX_PROMPT_TRIES):
            t2, _n = alora_prompts(vocab, rng.randrange(1 << 30))
            candidates.append(t2)
    else:
        rng = random.Random(spec["seed"])
        candidates = [base_prompt] + [
            [2] + [rng.randrange(3, vocab) for _ in range(len(base_prompt) - 1)]
            for _ in range(MAX_PROMPT_TRIES)]
    best = choose_prompt(pm, candidates, torch)
    (accepted, _), which, prompt, new, steps, full, margin = best
    log("  prompt candidate %d, min top-2 margin %.4f, accepted %s" % (which, margin, accepted))
    unmerged = forward_logits(pm, prompt, torch)
    base_logits = forward_logits(base_model, prompt, torch)
    save_npy(os.path.join(out_dir, "logits_unmerged.npy"), unmerged, np)
    save_npy(os.path.join(out_dir, "greedy_step_logits.npy"), steps, np)
    full_rows = full[len(prompt) - 1:len(prompt) - 1 + N_NEW]
    entry.update({
        "prompt_ids": prompt, "prompt_is_base_fixture_prompt": prompt == base_prompt,
        "logits_unmerged": "logits_unmerged.npy", "generated_ids": new, "n_new": N_NEW,
        "greedy_step_logits": "greedy_step_logits.npy", "greedy_accepted": accepted,
        "min_top2_margin": margin,
        "max_abs_diff_unmerged_vs_base": float((unmerged - base_logits).abs().max()),
        "mean_abs_diff_unmerged_vs_base": float((unmerged - base_logits).abs().mean()),
        "logit_min": float(unmerged.min()), "logit_max": float(unmerged.max()),
        "generate_steps_vs_full_forward_max_diff": float((steps - full_rows).abs().max()),
        "unmerged_prompt_vs_full_forward_max_diff":
            float((full[:len(prompt)] - unmerged).abs().max()),
    })
    log("  |unmerged - base| max %.3f mean %.3f; logits in [%.2f, %.2f]" % (
        entry["max_abs_diff_unmerged_vs_base"], entry["mean_abs_diff_unmerged_vs_base"],
        entry["logit_min"], entry["logit_max"]))
    log("  generate steps vs one forward over prompt + continuation: %.3g" %
        entry["generate_steps_vs_full_forward_max_diff"])

    if is_alora:
        entry["alora"] = alora_probes(args, spec, pm, base_model, prompt, new, steps, none,
                                      torch)
        entry["logits_merged"] = None
        try:
            pm.merge_and_unload()
            entry["merge_and_unload"] = "succeeded (unexpected)"
        except Exception as e:  # noqa: BLE001
            entry["merge_and_unload"] = "raises %s: %s" % (type(e).__name__, str(e)[:200])
        log("  merge_and_unload:", entry["merge_and_unload"])
    else:
        merged_model = pm.merge_and_unload()
        merged = forward_logits(merged_model, prompt, torch)
        save_npy(os.path.join(out_dir, "logits_merged.npy"), merged, np)
        entry["logits_merged"] = "logits_merged.npy"
        entry["merged_vs_unmerged_max_diff"] = float((merged - unmerged).abs().max())
        log("  merged vs unmerged: %.3g" % entry["merged_vs_unmerged_max_diff"])
    with open(os.path.join(out_dir, "fixture.json"), "w") as f:
        json.dump(entry, f, indent=1)
        f.write("\n")
    return entry


def alora_probes(args, spec, pm, base_model, prompt, new, steps, none_prompt, torch):
    """Which positions peft adapts, measured."""
    inv = spec["lora"]["alora_invocation_tokens"]
    start = last_occurrence(prompt, inv)
    first = prompt.index(inv[0])
    res = {"invocation_tokens": inv, "prompt_ids": prompt, "start": start,
           "first_occurrence": first}
    try:
        from peft.tuners.lora.variants import calculate_alora_offsets
        offs = calculate_alora_offsets(pm.peft_config, "default",
                                       torch.tensor([prompt], dtype=torch.long))
        res["peft_offset"] = offs[0]
        res["peft_start"] = len(prompt) - offs[0] if offs[0] is not None else None
    except Exception as e:  # noqa: BLE001
        res["peft_offset_error"] = repr(e)[:200]
    ad = forward_logits(pm, prompt, torch)
    bl = forward_logits(base_model, prompt, torch)
    per_pos = (ad - bl).abs().max(dim=-1).values.tolist()
    res["max_diff_vs_base_per_position"] = [round(v, 6) for v in per_pos]
    res["positions_equal_to_base"] = [i for i, v in enumerate(per_pos) if v == 0.0]
    res["first_position_differing_from_base"] = next(
        (i for i, v in enumerate(per_pos) if v > 0.0), None)
    # The invocation sequence itself: position `start` differs from base iff its token is adapted.
    res["invocation_itself_adapted"] = per_pos[start] > 0.0
    log("  aLoRA: start %s (peft %s); positions equal to base %s" % (
        start, res.get("peft_start"), res["positions_equal_to_base"]))
    # No invocation in the prompt: nothing is adapted, in the prompt and in generation.
    ad_none = forward_logits(pm, none_prompt, torch)
    bl_none = forward_logits(base_model, none_prompt, torch)
    res["no_invocation_prompt_ids"] = none_prompt
    res["no_invocation_max_diff_vs_base"] = float((ad_none - bl_none).abs().max())
    new_a, steps_a = greedy(pm, none_prompt, 8, torch)
    new_b, steps_b = greedy(base_model, none_prompt, 8, torch)
    res["no_invocation_generate_equals_base"] = new_a == new_b
    res["no_invocation_generate_max_diff_vs_base"] = float((steps_a - steps_b).abs().max())
    # Generation: do generated tokens get the adapter? Compare each generate() step with one
    # forward pass over prompt + continuation (offset recomputed: the same start as long as the
    # continuation does not contain the invocation) and with the base.
    full = forward_logits(pm, prompt + new, torch)
    rows = full[len(prompt) - 1:len(prompt) - 1 + len(new)]
    res["continuation_contains_invocation"] = contains(prompt + new, inv) and \
        last_occurrence(prompt + new, inv) != start
    res["generate_steps_vs_full_forward_max_diff"] = float((steps - rows).abs().max())
    base_full = forward_logits(base_model, prompt + new, torch)
    res["generate_steps_vs_base_full_forward_min_row_diff"] = float(
        (steps - base_full[len(prompt) - 1:len(prompt) - 1 + len(new)]).abs().max(dim=-1)
        .values.min())
    # Explicit offsets: adapting only the last k positions of a forward.
    try:
        n = len(prompt)
        for k in (1, n - start, n + 5):
            lg = forward_logits(pm, prompt, torch, alora_offsets=[k])
            d = (lg - bl).abs().max(dim=-1).values.tolist()
            res["explicit_offset_%d_positions_differing" % k if k != n + 5 else
                "explicit_offset_past_length_positions_differing"] = [
                i for i, v in enumerate(d) if v > 0.0]
    except Exception as e:  # noqa: BLE001
        res["explicit_offsets_error"] = repr(e)[:200]
    # A cached continuation: prefill the prompt, then one token; the second call sees T = 1.
    try:
        with torch.no_grad():
            ids = torch.tensor([prompt], dtype=torch.long)
            out = pm(input_ids=ids, use_cache=True)
            nxt = torch.tensor([[new[0]]], dtype=torch.long)
            out2 = pm(input_ids=nxt, past_key_values=out.past_key_values, use_cache=True)
            step_logits = out2.logits[0, -1].float()
        res["manual_decode_step_vs_full_forward"] = float(
            (step_logits - full[len(prompt)]).abs().max())
        res["manual_decode_step_vs_base_full_forward"] = float(
            (step_logits - base_full[len(prompt)]).abs().max())
    except Exception as e:  # noqa: BLE001
        res["manual_decode_error"] = repr(e)[:200]
    return res


def make_merges(args, entries, torch, np):
    """Dense-delta merges of two adapters on one base: linear and TIES (peft's merge_utils)."""
    log("=" * 90)
    log("merges:", MERGES)
    from peft.utils import merge_utils
    spec_by_name = {s["name"]: s for s in SPECS}
    deltas = []
    for name, _w in MERGES["adapters"]:
        pm, _ = load_adapter(args, spec_by_name[name], os.path.join(args.out, name), torch)
        d = {}
        for mname, module in lora_layers(pm):
            with torch.no_grad():
                d[strip_key(mname)] = module.get_delta_weight("default").float().clone()
        deltas.append(d)
    weights = [w for _n, w in MERGES["adapters"]]
    keys = sorted(set().union(*[set(d) for d in deltas]))
    prompt = prompt_of(args, MERGES["base"])
    out_dir = os.path.join(args.out, MERGES["name"])
    os.makedirs(out_dir, exist_ok=True)
    result = {"name": MERGES["name"], "base": "parity/" + MERGES["base"],
              "adapters": [{"name": n, "weight": w} for n, w in MERGES["adapters"]],
              "ties_density": MERGES["ties_density"], "ties_majority_sign_method": "total",
              "prompt_ids": prompt, "vocab_size": BASES[MERGES["base"]]["vocab"]}
    for method in ("linear", "ties"):
        model = load_base(args, MERGES["base"], torch)
        with torch.no_grad():
            for key in keys:
                w = model.get_submodule(key).weight
                tensors = [d.get(key, torch.zeros_like(w)) for d in deltas]
                if method == "linear":
                    merged = sum(wi * t for wi, t in zip(weights, tensors))
                else:
                    merged = merge_utils.ties(tensors, torch.tensor(weights, dtype=torch.float32),
                                              MERGES["ties_density"], "total")
                w.add_(merged.to(w.dtype))
        lg = forward_logits(model, prompt, torch)
        save_npy(os.path.join(out_dir, "logits_%s.npy" % method), lg, np)
        result["logits_" + method] = "logits_%s.npy" % method
    # peft's own concatenation ("cat") must equal the linear merge.
    try:
        from peft import PeftModel
        base = load_base(args, MERGES["base"], torch)
        names = [n for n, _ in MERGES["adapters"]]
        pm = PeftModel.from_pretrained(base, os.path.join(args.out, names[0]), adapter_name=names[0])
        for n in names[1:]:
            pm.load_adapter(os.path.join(args.out, n), adapter_name=n)
        pm.add_weighted_adapter(names, weights, "cat_merge", combination_type="cat")
        pm.set_adapter("cat_merge")
        lg_cat = forward_logits(pm, prompt, torch)
        lin = torch.from_numpy(np.load(os.path.join(out_dir, "logits_linear.npy")))
        result["peft_cat_vs_linear_max_diff"] = float((lg_cat - lin).abs().max())
        result["peft_cat_rank_layer0_q"] = int(
            pm.base_model.model.model.layers[0].self_attn.q_proj.r["cat_merge"])
        result["peft_cat_scaling_layer0_q"] = float(
            pm.base_model.model.model.layers[0].self_attn.q_proj.scaling["cat_merge"])
    except Exception as e:  # noqa: BLE001
        result["peft_cat_error"] = repr(e)[:300]
    base_lg = forward_logits(load_base(args, MERGES["base"], torch), prompt, torch)
    lin = torch.from_numpy(np.load(os.path.join(out_dir, "logits_linear.npy")))
    ties = torch.from_numpy(np.load(os.path.join(out_dir, "logits_ties.npy")))
    result["linear_vs_base_max_diff"] = float((lin - base_lg).abs().max())
    result["ties_vs_linear_max_diff"] = float((ties - lin).abs().max())
    log("  linear vs base %.3f, ties vs linear %.3f, peft cat vs linear %s" % (
        result["linear_vs_base_max_diff"], result["ties_vs_linear_max_diff"],
        result.get("peft_cat_vs_linear_max_diff", result.get("peft_cat_error"))))
    with open(os.path.join(out_dir, "fixture.json"), "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    return result


# ------------------------------------ probes -----------------------------------------------

def probe_pattern_key():
    """peft's rank_pattern / alpha_pattern key matching on chosen (keys, module) pairs."""
    fn = None
    for modname in ("peft.utils.other", "peft.tuners.tuners_utils", "peft.utils"):
        try:
            mod = __import__(modname, fromlist=["get_pattern_key"])
            fn = getattr(mod, "get_pattern_key")
            break
        except Exception:  # noqa: BLE001
            continue
    if fn is None:
        return {"error": "get_pattern_key not found"}
    cases = [
        (["q_proj"], "model.layers.0.self_attn.q_proj"),
        (["self_attn.q_proj"], "model.layers.0.self_attn.q_proj"),
        (["attn.q_proj"], "model.layers.0.self_attn.q_proj"),
        (["_proj"], "model.layers.0.self_attn.q_proj"),
        (["model.layers.0.self_attn.q_proj"], "model.layers.0.self_attn.q_proj"),
        (["layers.1.self_attn.q_proj"], "model.layers.11.self_attn.q_proj"),
        (["layers.1.self_attn.q_proj"], "model.layers.1.self_attn.q_proj"),
        (["down_proj", "layers.3.mlp.down_proj"], "model.layers.3.mlp.down_proj"),
        (["layers.3.mlp.down_proj", "down_proj"], "model.layers.3.mlp.down_proj"),
        (["layers\\.[56]\\.self_attn\\.v_proj"], "model.layers.5.self_attn.v_proj"),
        ([".*v_proj"], "model.layers.5.self_attn.v_proj"),
        (["q_proj|v_proj"], "model.layers.5.self_attn.v_proj"),
        (["q_proj"], "model.language_model.layers.0.self_attn.q_proj"),
        (["proj"], "model.layers.0.self_attn.q_proj"),
    ]
    out = []
    for keys, key in cases:
        try:
            got = fn(keys, key)
        except Exception as e:  # noqa: BLE001
            got = "error " + repr(e)[:100]
        out.append({"pattern_keys": keys, "key": key, "returns": got,
                    "matched": got != key or key in keys})
    return {"cases": out}


def probe_target_matching():
    try:
        from peft import LoraConfig
        from peft.tuners.tuners_utils import check_target_module_exists
    except Exception as e:  # noqa: BLE001
        return {"error": repr(e)[:200]}
    configs = {
        "list q_proj": dict(target_modules=["q_proj"]),
        "list self_attn.q_proj": dict(target_modules=["self_attn.q_proj"]),
        "str q_proj": dict(target_modules="q_proj"),
        "str regex": dict(target_modules=r".*\.(q|v)_proj"),
        "list + layers_to_transform [1] pattern layers": dict(
            target_modules=["up_proj"], layers_to_transform=[1], layers_pattern="layers"),
        "list + layers_to_transform 1 no pattern": dict(
            target_modules=["up_proj"], layers_to_transform=1),
        "exclude k_proj": dict(target_modules=["q_proj", "k_proj"], exclude_modules=["k_proj"]),
        "exclude regex": dict(target_modules=["q_proj", "k_proj"],
                              exclude_modules=r".*layers\.0\..*"),
    }
    keys = ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj",
            "model.layers.0.self_attn.k_proj", "model.layers.1.mlp.up_proj",
            "model.layers.11.mlp.up_proj", "model.layers.0.mlp.up_proj",
            "model.language_model.layers.1.mlp.up_proj", "q_proj", "model.layers.0.self_attn.xq_proj",
            "model.layers.5.self_attn.v_proj"]
    out = {}
    for cname, kw in configs.items():
        try:
            cfg = LoraConfig(**kw)
        except Exception as e:  # noqa: BLE001
            out[cname] = "config error " + repr(e)[:150]
            continue
        row = {}
        for key in keys:
            try:
                r = check_target_module_exists(cfg, key)
                row[key] = "excluded" if type(r).__name__ == "_ExcludedModule" else bool(r)
            except Exception as e:  # noqa: BLE001
                row[key] = "error " + repr(e)[:100]
        out[cname] = row
    return out


def probe_mm_targets(args, torch):
    """Which modules list / all-linear targets hit on the multimodal base."""
    from peft import get_peft_model
    out = {}
    for label, tm in (("list q_proj,up_proj", ["q_proj", "up_proj"]), ("all-linear", "all-linear")):
        try:
            base = load_base(args, "nested_mm", torch)
            pm = get_peft_model(base, make_lora_config({"r": 2, "lora_alpha": 2,
                                                        "target_modules": tm}))
            names = [strip_key(n) for n, _ in lora_layers(pm)]
            sd_keys = sorted(k for k in pm.state_dict().keys() if "lora_A" in k)
            from peft.utils import get_peft_model_state_dict
            saved = sorted(get_peft_model_state_dict(pm).keys())
            out[label] = {
                "count": len(names),
                "language_model": sum(1 for n in names if "language_model" in n),
                "vision": sum(1 for n in names if "vision" in n),
                "other": sorted(n for n in names if "language_model" not in n
                                and "vision" not in n)[:10],
                "sample": names[:3] + names[-3:],
                "state_dict_sample": sd_keys[:2],
                "saved_key_sample": saved[:2] + saved[-2:],
                "config_target_modules": sorted(pm.peft_config["default"].target_modules)
                if not isinstance(pm.peft_config["default"].target_modules, str) else
                pm.peft_config["default"].target_modules,
            }
        except Exception as e:  # noqa: BLE001
            out[label] = "error " + repr(e)[:300]
    return out


def probe_fgnet_written(args, torch):
    """An adapter directory written the way fgnet's WritePeftAdapter writes one: regex
    target_modules listing exactly the adapted modules, rank_pattern / alpha_pattern keyed by
    "layers.N.<path>", f32 tensors. Checks that peft loads it with the intended ranks and scales
    and that its logits equal W + s B A merged by hand."""
    from peft import PeftModel
    from safetensors.torch import save_file
    d = tempfile.mkdtemp()
    mods = {  # key -> (rank, scale)
        "model.layers.0.self_attn.q_proj": (2, 1.5),
        "model.layers.1.self_attn.q_proj": (2, 1.5),
        "model.layers.3.mlp.down_proj": (3, 0.25),
        "model.layers.4.mlp.down_proj": (2, 1.5),
    }
    cfg = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": "fgnet-probe",
        "r": 2, "lora_alpha": 3.0, "use_rslora": False, "use_dora": False, "bias": "none",
        "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
        "lora_dropout": 0.0, "modules_to_save": None, "layers_to_transform": None,
        "layers_pattern": None,
        "target_modules": "model\\.layers\\.(?:0|1)\\.self_attn\\.q_proj|"
                          "model\\.layers\\.(?:3|4)\\.mlp\\.down_proj",
        "rank_pattern": {"layers.3.mlp.down_proj": 3},
        "alpha_pattern": {"layers.3.mlp.down_proj": 0.75},
    }
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    base = load_base(args, "gqa_f32_v5", torch)
    gen = torch.Generator().manual_seed(7)
    tensors = {}
    for key, (r, _s) in mods.items():
        w = base.get_submodule(key).weight
        tensors["base_model.model.%s.lora_A.weight" % key] = \
            torch.randn((r, w.shape[1]), generator=gen) * 0.2
        tensors["base_model.model.%s.lora_B.weight" % key] = \
            torch.randn((w.shape[0], r), generator=gen) * 0.2
    save_file(tensors, os.path.join(d, "adapter_model.safetensors"))
    res = {}
    try:
        pm = PeftModel.from_pretrained(base, d)
        table = {r["key"]: (r["rank"], r["scale"]) for r in module_table(pm)}
        res["modules"] = {k: list(v) for k, v in table.items()}
        res["as_intended"] = table == mods
        prompt = prompt_of(args, "gqa_f32_v5")
        lg = forward_logits(pm, prompt, torch)
        ref = load_base(args, "gqa_f32_v5", torch)
        with torch.no_grad():
            for key, (r, s) in mods.items():
                a = tensors["base_model.model.%s.lora_A.weight" % key]
                b = tensors["base_model.model.%s.lora_B.weight" % key]
                ref.get_submodule(key).weight.add_(s * (b @ a))
        res["logits_vs_hand_merge_max_diff"] = float((lg - forward_logits(ref, prompt, torch))
                                                     .abs().max())
    except Exception as e:  # noqa: BLE001
        res["error"] = repr(e)[:300]
    shutil.rmtree(d)
    return res


SOURCES = [
    ("peft.utils.other", "get_pattern_key"),
    ("peft.tuners.tuners_utils", "check_target_module_exists"),
    ("peft.tuners.tuners_utils", "_maybe_include_all_linear_layers"),
    ("peft.tuners.tuners_utils", "match_target_against_key"),
    ("peft.tuners.lora.model", "LoraModel._create_and_replace"),
    ("peft.tuners.lora.layer", "LoraLayer.update_layer"),
    ("peft.tuners.lora.layer", "Linear.get_delta_weight"),
    ("peft.tuners.lora.layer", "Linear.forward"),
    ("peft.tuners.lora.variants", "ALoraLinearVariant"),
    ("peft.tuners.lora.variants", "calculate_alora_offsets"),
    ("peft.tuners.lora.variants", "get_alora_offsets_for_forward"),
    ("peft.tuners.lora.variants", "get_alora_offsets_for_generate"),
    ("peft.peft_model", "PeftModelForCausalLM.forward"),
    ("peft.peft_model", "PeftModelForCausalLM.generate"),
    ("peft.tuners.lora.model", "LoraModel._enable_peft_forward_hooks"),
    ("peft.utils.merge_utils", None),
    ("peft.tuners.lora.config", "LoraConfig.__post_init__"),
    ("peft.config", "PeftConfigMixin.save_pretrained"),
    ("peft.utils.save_and_load", "get_peft_model_state_dict"),
    ("peft.tuners.lora.model", "LoraModel.add_weighted_adapter"),
]


def dump_sources(path):
    parts = []
    for modname, attr in SOURCES:
        try:
            obj = __import__(modname, fromlist=["x"])
            if attr:
                for a in attr.split("."):
                    obj = getattr(obj, a)
            src = inspect.getsource(obj)
        except Exception as e:  # noqa: BLE001
            src = "# not found: %r\n" % (e,)
        parts.append("#" * 100 + "\n# %s %s\n" % (modname, attr or "") + "#" * 100 + "\n" + src)
    with open(path, "w") as f:
        f.write("\n".join(parts))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bases", default="tests/fixtures/parity")
    ap.add_argument("--out", default="tests/fixtures/lora")
    ap.add_argument("--log")
    ap.add_argument("--source-dump")
    ap.add_argument("--tar")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    if args.dry_run:
        print_specs()
        return 0

    import numpy as np
    import torch
    import transformers
    import peft
    torch.manual_seed(0)
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    from peft import LoraConfig
    fields = sorted(f.name for f in dataclasses.fields(LoraConfig))
    manifest = {"generator": "tools/make_lora_fixtures.py", "torch_version": torch.__version__,
                "transformers_version": transformers.__version__,
                "peft_version": peft.__version__, "fixture_json_fields": FIXTURE_JSON_DOC,
                "lora_config_has_alora": "alora_invocation_tokens" in fields}
    log("torch", torch.__version__, "transformers", transformers.__version__, "peft",
        peft.__version__)
    log("LoraConfig fields:", fields)
    if args.source_dump:
        dump_sources(args.source_dump)
    os.makedirs(args.out, exist_ok=True)
    failures = []

    def attempt(label, fn):
        try:
            return fn()
        except Exception:  # noqa: BLE001
            tb = traceback.format_exc()
            log("FAILED", label, "\n" + tb)
            failures.append(label)
            return {"error": tb[-600:]}

    manifest["probe_get_pattern_key"] = attempt("pattern", probe_pattern_key)
    log("get_pattern_key:", json.dumps(manifest["probe_get_pattern_key"])[:3000])
    manifest["probe_check_target_module_exists"] = attempt("targets", probe_target_matching)
    log("check_target_module_exists:", json.dumps(manifest["probe_check_target_module_exists"]))
    manifest["probe_mm_targets"] = attempt("mm", lambda: probe_mm_targets(args, torch))
    log("multimodal targets:", json.dumps(manifest["probe_mm_targets"]))
    manifest["probe_fgnet_written_adapter"] = attempt(
        "written", lambda: probe_fgnet_written(args, torch))
    log("fgnet-style adapter:", json.dumps(manifest["probe_fgnet_written_adapter"]))

    entries = {}
    for spec in SPECS:
        if spec["lora"].get("alora_invocation_tokens") and not manifest["lora_config_has_alora"]:
            log("SKIPPED", spec["name"], ": this peft has no alora_invocation_tokens")
            manifest.setdefault("skipped", []).append(spec["name"])
            continue
        entries[spec["name"]] = attempt(spec["name"],
                                        lambda s=spec: make_fixture(args, s, torch, np))
    manifest["fixtures"] = {k: {kk: v.get(kk) for kk in (
        "base", "what", "expected_matches_fgnet_rules", "saved_tensor_dtypes",
        "saved_config_target_modules", "min_top2_margin", "greedy_accepted",
        "max_abs_diff_unmerged_vs_base", "merged_vs_unmerged_max_diff",
        "generate_steps_vs_full_forward_max_diff", "merge_and_unload", "error")}
        for k, v in entries.items()}
    if "alora" in entries and "alora" in entries["alora"]:
        manifest["alora"] = entries["alora"]["alora"]
    manifest["merges"] = attempt("merges", lambda: make_merges(args, entries, torch, np))
    manifest["failures"] = failures
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    sizes = {}
    for root, _dirs, files in os.walk(args.out):
        for fn in files:
            p = os.path.join(root, fn)
            sizes[os.path.relpath(p, args.out)] = os.path.getsize(p)
    log("files:", json.dumps(sizes, indent=0))
    log("total bytes:", sum(sizes.values()))
    log("failures:", failures)
    if args.log:
        with open(args.log, "w") as f:
            f.write("\n".join(LOG) + "\n")
    if args.tar:
        with tarfile.open(args.tar, "w:gz") as t:
            t.add(args.out, arcname="lora")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
