#!/usr/bin/env python3
"""Builds fgnet's hidden-state fixtures: transformers' output_hidden_states on the committed
parity checkpoints.

For each parity fixture named (tests/fixtures/parity/<name>/: config.json, model.safetensors,
prompt.json) the checkpoint is loaded with transformers in float32 with
attn_implementation="eager" on the CPU (as tools/make_parity_fixtures.py does), its prompt is run
once with output_hidden_states=True, and <out>/<name>/ receives
  hidden_states.npy   float32 [len(indices), n_prompt, hidden]: hidden_states[i] for each index
  hidden_states.json  {"indices": [...], "num_hidden_layers", "n_prompt", "hidden_size",
                       "checks": {...}}
transformers numbers the hidden states 0 .. L (L = num_hidden_layers): 0 is the scaled
embeddings, i (1 .. L-1) the output of decoder layer i-1, L the final-normed output. The script
checks that numbering on the run itself (L + 1 states; state 0 equals embed_tokens * sqrt(hidden)
in float32; state L times the output matrix, softcapped where configured, equals the logits and
the committed logits.npy) and fails if any check does not hold.

Needs torch, transformers (5.x), safetensors and numpy. Usage:
  python3 tools/make_hidden_state_fixtures.py --parity tests/fixtures/parity \\
      --out tests/fixtures/hidden_states [--only mqa_bf16_v4 ...]
  python3 tools/make_hidden_state_fixtures.py --dry-run   # the plan, no torch needed
"""

import argparse
import json
import os
import sys

DEFAULT_FIXTURES = ["mqa_bf16_v4", "gqa_f32_v5", "untied_f16"]
# Largest accepted difference of a recomputation from transformers' own output.
CHECK_TOLERANCE = 1e-4


def chosen_indices(num_layers):
    """The hidden-state indices stored: the embeddings, a middle layer, the last decoder output
    before the final norm is applied to it (L - 1) and the final-normed output (L)."""
    return sorted({0, num_layers // 2, num_layers - 1, num_layers})


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def fixture_plan(parity_dir, name):
    d = os.path.join(parity_dir, name)
    cfg = read_json(os.path.join(d, "config.json"))
    cfg = cfg.get("text_config", cfg)
    ids = read_json(os.path.join(d, "prompt.json"))["input_ids"]
    layers = int(cfg["num_hidden_layers"])
    return {"name": name, "dir": d, "input_ids": ids, "num_hidden_layers": layers,
            "hidden_size": int(cfg["hidden_size"]), "indices": chosen_indices(layers),
            "final_logit_softcapping": cfg.get("final_logit_softcapping")}


def make_fixture(plan, out_root, torch, np):
    from transformers import Gemma3ForCausalLM
    try:
        model = Gemma3ForCausalLM.from_pretrained(plan["dir"], dtype=torch.float32,
                                                  attn_implementation="eager")
    except TypeError:
        model = Gemma3ForCausalLM.from_pretrained(plan["dir"], torch_dtype=torch.float32,
                                                  attn_implementation="eager")
    model.eval()
    for p in model.parameters():
        assert p.dtype == torch.float32, p.dtype
    ids = plan["input_ids"]
    L = plan["num_hidden_layers"]
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False,
                    output_hidden_states=True)
    hs = out.hidden_states
    checks = {"num_states": len(hs)}
    if len(hs) != L + 1:
        raise RuntimeError(f"{plan['name']}: {len(hs)} hidden states, expected {L + 1}")
    states = [h[0].float() for h in hs]
    # State 0: the scaled embeddings.
    embed = model.get_input_embeddings().weight.float()
    scale = torch.tensor(plan["hidden_size"] ** 0.5, dtype=torch.float32)
    want0 = embed[torch.tensor(ids, dtype=torch.long)] * scale
    checks["state0_vs_scaled_embeddings"] = float((states[0] - want0).abs().max())
    # State L: what the output matrix sees.
    lm = model.get_output_embeddings().weight.float()
    logits = states[L] @ lm.T
    cap = plan["final_logit_softcapping"]
    if cap:
        logits = cap * torch.tanh(logits / cap)
    checks["stateL_logits_vs_model"] = float((logits - out.logits[0].float()).abs().max())
    committed = np.load(os.path.join(plan["dir"], "logits.npy"))
    checks["model_logits_vs_committed"] = float(np.abs(out.logits[0].float().numpy()
                                                       - committed).max())
    for key in ("state0_vs_scaled_embeddings", "stateL_logits_vs_model"):
        if not checks[key] <= CHECK_TOLERANCE:
            raise RuntimeError(f"{plan['name']}: check {key} = {checks[key]}")
    if not checks["model_logits_vs_committed"] <= 1e-3:
        raise RuntimeError(f"{plan['name']}: logits differ from logits.npy by "
                           f"{checks['model_logits_vs_committed']}")
    stacked = np.stack([states[i].numpy() for i in plan["indices"]]).astype("<f4")
    d = os.path.join(out_root, plan["name"])
    os.makedirs(d, exist_ok=True)
    np.save(os.path.join(d, "hidden_states.npy"), stacked)
    meta = {"indices": plan["indices"], "num_hidden_layers": L, "n_prompt": len(ids),
            "hidden_size": plan["hidden_size"], "checks": checks,
            "generator": "tools/make_hidden_state_fixtures.py"}
    with open(os.path.join(d, "hidden_states.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(plan["name"], "shape", list(stacked.shape), json.dumps(checks), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parity", default="tests/fixtures/parity")
    ap.add_argument("--out", default="tests/fixtures/hidden_states")
    ap.add_argument("--only", nargs="*", help="fixture names (default: %s)" % DEFAULT_FIXTURES)
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    plans = [fixture_plan(args.parity, n) for n in (args.only or DEFAULT_FIXTURES)]
    for p in plans:
        print(p["name"], "layers", p["num_hidden_layers"], "hidden", p["hidden_size"], "prompt",
              len(p["input_ids"]), "indices", p["indices"], flush=True)
    if args.dry_run:
        return 0
    import numpy as np
    import torch
    import transformers
    torch.set_num_threads(4)
    print("torch", torch.__version__, "transformers", transformers.__version__, "numpy",
          np.__version__, flush=True)
    failures = 0
    for p in plans:
        try:
            make_fixture(p, args.out, torch, np)
        except Exception as e:  # noqa: BLE001 - report every fixture
            import traceback
            traceback.print_exc()
            print("FAILED", p["name"], e, flush=True)
            failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
