#!/usr/bin/env python3
"""Recomputes the committed parity fixtures with the float64 NumPy forward pass of
gemma3_reference.py, reading config.json and model.safetensors directly (NumPy only: no torch,
no transformers). Prints, per fixture, the largest difference from transformers' logits and
whether the greedy continuation is reproduced. Useful to re-check the fixtures and as a
readable reference when a C++ result disagrees.

Usage: python3 tools/check_parity_fixtures.py [tests/fixtures/parity] [--tolerance 1e-3]
"""

import argparse
import json
import os
import struct
import sys

import numpy as np

from gemma3_reference import manual_forward


def read_safetensors(path):
    """name -> float64 array, for F32 / F16 / BF16 tensors."""
    with open(path, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_len])
    base = 8 + header_len
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = data[base + begin:base + end]
        if info["dtype"] == "F32":
            a = np.frombuffer(raw, dtype="<f4")
        elif info["dtype"] == "F16":
            a = np.frombuffer(raw, dtype="<f2")
        elif info["dtype"] == "BF16":
            a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError("%s: tensor %s has dtype %s" % (path, name, info["dtype"]))
        out[name] = a.astype(np.float64).reshape(info["shape"])
    return out


def text_config(config):
    """The text-model config and the tensor-name prefix of the text model."""
    if config.get("model_type") == "gemma3":
        return config["text_config"], "language_model.model."
    return config, "model."


def resolve_config(t):
    """What the forward pass needs, read the way transformers 5 reads it."""
    n = t["num_hidden_layers"]
    if t.get("layer_types"):
        layer_types = list(t["layer_types"])
    else:
        pattern = t.get("sliding_window_pattern", 6)
        layer_types = ["sliding_attention" if (i + 1) % pattern else "full_attention"
                       for i in range(n)]
    factor_global = factor_local = 1.0
    if t.get("rope_parameters"):
        rp = t["rope_parameters"]
        theta_global = rp["full_attention"]["rope_theta"]
        theta_local = rp["sliding_attention"]["rope_theta"]
        if rp["full_attention"].get("rope_type") == "linear":
            factor_global = rp["full_attention"]["factor"]
        if rp["sliding_attention"].get("rope_type") == "linear":
            factor_local = rp["sliding_attention"]["factor"]
    else:
        theta_global = t.get("rope_theta", 1000000.0)
        theta_local = t.get("rope_local_base_freq", 10000.0)
        scaling = t.get("rope_scaling") or {}
        if scaling.get("rope_type", scaling.get("type")) == "linear":
            factor_global = scaling["factor"]  # 4.x scaling applies to global layers only
    r = {k: t[k] for k in ("vocab_size", "hidden_size", "num_hidden_layers",
                           "num_attention_heads", "num_key_value_heads", "head_dim",
                           "query_pre_attn_scalar", "sliding_window", "rms_norm_eps")}
    r.update({
        "layer_types": layer_types,
        "theta_global": theta_global, "theta_local": theta_local,
        "factor_global": factor_global, "factor_local": factor_local,
        "final_logit_softcapping": t.get("final_logit_softcapping"),
        "attn_logit_softcapping": t.get("attn_logit_softcapping"),
    })
    return r


def check(directory, tolerance):
    with open(os.path.join(directory, "config.json")) as f:
        t, prefix = text_config(json.load(f))
    r = resolve_config(t)
    tensors = read_safetensors(os.path.join(directory, "model.safetensors"))
    W = {"model." + k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if "lm_head.weight" in tensors:
        W["lm_head.weight"] = tensors["lm_head.weight"]
    with open(os.path.join(directory, "greedy.json")) as f:
        greedy = json.load(f)
    ids = greedy["prompt_ids"] + greedy["generated_ids"]
    want = np.load(os.path.join(directory, "logits_full.npy")).astype(np.float64)
    got = manual_forward(W, r, ids)
    err = np.abs(got - want)
    pos, tok = np.unravel_index(int(np.argmax(err)), err.shape)
    n_prompt = len(greedy["prompt_ids"])
    path = [int(np.argmax(got[n_prompt - 1 + i])) for i in range(len(greedy["generated_ids"]))]
    ok = err.max() <= tolerance and path == greedy["generated_ids"]
    print("%-12s %s  max |float64 - transformers| = %.3g at position %d token %d; greedy %s" %
          (os.path.basename(directory), "ok  " if ok else "FAIL", err.max(), pos, tok,
           "reproduced" if path == greedy["generated_ids"] else "differs"))
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root", nargs="?", default="tests/fixtures/parity")
    ap.add_argument("--tolerance", type=float, default=1e-3)
    args = ap.parse_args()
    names = sorted(d for d in os.listdir(args.root)
                   if os.path.isfile(os.path.join(args.root, d, "config.json")))
    results = [check(os.path.join(args.root, d), args.tolerance) for d in names]
    return 0 if results and all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
