#!/usr/bin/env python3
"""Writes the example expert adapters of examples/adapters/.

For each expert id, one PEFT LoRA adapter (rank 2, alpha 4, on q_proj and v_proj of layers 0, 8
and 17) for a Gemma3ForCausalLM of the given config, with seeded random A and B (both nonzero, so
the adapter changes the model's outputs), saved with peft's save_pretrained in bfloat16 into
OUT/<id>/ (adapter_config.json and adapter_model.safetensors only).

The base weights do not matter for an adapter's file, so the model is built from the config with
random initialisation. The config is the one `fgnet synth --like functiongemma-270m` writes.

  python3 tools/make_example_adapters.py --config /tmp/fg270/config.json --out examples/adapters
  python3 tools/make_example_adapters.py --config /tmp/fg270/config.json --dry-run

--dry-run checks the config and prints the plan without torch.
"""

import argparse
import json
import os
import sys

EXPERT_IDS = [
    "scaffold", "logic", "style", "test", "router", "frontend", "backend", "infra", "react", "css",
    "a11y", "api", "db", "auth", "docker", "k8s", "cicd",
]
RANK = 2
ALPHA = 4
TARGET_MODULES = ["q_proj", "v_proj"]
LAYERS = [0, 8, 17]
# Standard deviation of A and B. With rank 2 and scale alpha / r = 2, the update B A x of a q_proj
# output is about a quarter of W x for the synthesized base (the script prints the measured ratio).
STDDEV = 0.04
BASE_NAME = "functiongemma-270m"


def expert_seed(base_seed, index):
    return base_seed * 1000 + index


def plan(config, base_seed):
    """The adapters to write, checked against the config (pure python)."""
    layers = config.get("num_hidden_layers")
    if not isinstance(layers, int) or layers <= max(LAYERS):
        raise SystemExit(f"config: num_hidden_layers {layers!r} does not have layers {LAYERS}")
    hidden = config["hidden_size"]
    q_out = config["num_attention_heads"] * config["head_dim"]
    v_out = config["num_key_value_heads"] * config["head_dim"]
    params = len(LAYERS) * (RANK * hidden + q_out * RANK + RANK * hidden + v_out * RANK)
    return [{
        "id": expert,
        "seed": expert_seed(base_seed, i),
        "params": params,
        "bytes_bf16": 2 * params,
    } for i, expert in enumerate(EXPERT_IDS)]


def write_adapters(config_path, out_dir, base_seed, items):
    import copy

    import peft
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    from safetensors import safe_open
    from transformers import AutoConfig, Gemma3ForCausalLM

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"peft {peft.__version__}", flush=True)
    torch.manual_seed(base_seed)
    config = AutoConfig.from_pretrained(os.path.dirname(os.path.abspath(config_path)))
    base = Gemma3ForCausalLM(config).to(torch.bfloat16).eval()
    base.name_or_path = BASE_NAME  # recorded as base_model_name_or_path
    print(f"base: {type(base).__name__}, {sum(p.numel() for p in base.parameters())} parameters",
          flush=True)

    for item in items:
        lora = LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGET_MODULES,
                          layers_to_transform=LAYERS, lora_dropout=0.0, bias="none")
        model = get_peft_model(copy.deepcopy(base), lora)
        gen = torch.Generator().manual_seed(item["seed"])
        ratios = []
        with torch.no_grad():
            for name, module in sorted(model.named_modules(), key=lambda kv: kv[0]):
                if not hasattr(module, "lora_A") or "default" not in module.lora_A:
                    continue
                a = module.lora_A["default"].weight
                b = module.lora_B["default"].weight
                a.copy_(torch.randn(a.shape, generator=gen) * STDDEV)
                b.copy_(torch.randn(b.shape, generator=gen) * STDDEV)
                if name.endswith("q_proj"):
                    x = torch.randn(4, a.shape[1], generator=gen)
                    w = module.base_layer.weight.float()
                    delta = (x @ a.float().t() @ b.float().t()) * (ALPHA / RANK)
                    ratios.append(float(delta.norm() / (x @ w.t()).norm()))
            model.to(torch.bfloat16)
        target = os.path.join(out_dir, item["id"])
        model.save_pretrained(target)
        readme = os.path.join(target, "README.md")
        if os.path.exists(readme):
            os.remove(readme)
        del model

        weights = os.path.join(target, "adapter_model.safetensors")
        with safe_open(weights, framework="pt") as f:
            keys = sorted(f.keys())
            dtypes = {str(f.get_tensor(k).dtype) for k in keys}
            zero = [k for k in keys if float(f.get_tensor(k).float().abs().max()) == 0.0]
        expected = 2 * len(TARGET_MODULES) * len(LAYERS)
        if len(keys) != expected or zero or dtypes != {"torch.bfloat16"}:
            raise SystemExit(f"{target}: {len(keys)} tensors (expected {expected}), "
                             f"dtypes {dtypes}, all-zero {zero}")
        files = sorted(os.listdir(target))
        size = sum(os.path.getsize(os.path.join(target, n)) for n in files)
        print(f"{item['id']}: seed {item['seed']}, {len(keys)} tensors, files {files}, "
              f"{size} bytes, |dq|/|q| {min(ratios):.3f}..{max(ratios):.3f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="config.json of the base")
    parser.add_argument("--out", help="folder that receives one folder per expert")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dry-run", action="store_true", help="print the plan only")
    args = parser.parse_args()

    with open(args.config, encoding="utf-8") as f:
        config = json.load(f)
    items = plan(config, args.seed)
    for item in items:
        print(json.dumps(item))
    if args.dry_run:
        return 0
    if not args.out:
        parser.error("--out is required unless --dry-run")
    os.makedirs(args.out, exist_ok=True)
    write_adapters(args.config, args.out, args.seed, items)
    return 0


if __name__ == "__main__":
    sys.exit(main())
