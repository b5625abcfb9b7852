#!/usr/bin/env python3
"""The PyTorch + transformers baseline that `fgnet bench --device cuda` is compared against.

Runs, on one CUDA device, in bfloat16 with attn_implementation "sdpa" ("eager" only when sdpa
fails), on the same checkpoint directory fgnet uses (a Gemma 3 text checkpoint such as the one
`fgnet synth --like functiongemma-270m` writes):

  1. batch-1 greedy decode of 256 tokens after a 128-token prompt: model.generate (dynamic cache,
     no compilation), and a hand-written loop that times every token (ms/token p50 / p99);
  2. prefill of one 2,048-token prompt with use_cache=True (KV writes included) and use_cache=False
     (last-position logits, as a serving prefill needs; all-position logits as an extra row);
  3. aggregate greedy decode tokens/s of 16 and 64 concurrent sequences (128-token prompts, 256 new
     tokens each), without adapters and with one random rank-16 LoRA adapter per sequence on all
     seven projections (peft's mixed-batch inference, `adapter_names=[...]`);
  4. time to first token for a 2,048-token shared prefix + 16-token suffix: cold (whole prompt)
     against cached (the prefix's KV cache computed beforehand and copied, then only the suffix);
  5. peak GPU memory for 8 experts: base + 8 rank-16 adapters + a KV cache for 8 x 4,096 tokens.

With --compile, batch-1 decode and the adapter-free aggregate decode are measured again with
torch.compile and a static cache (generate's own compilation, and the loop with a compiled
forward). Every measurement runs in its own try/except: a failure is recorded as its error string
and the others still run; --time-limit skips what would start after it, and the JSON is rewritten
after every measurement, so a run cut short keeps what it measured. The adapter runs come last:
peft's mixed batch costs about 0.2 ms per adapter and module per decode step (seconds per token
with 64 adapters), so --lora-new-tokens can shorten them. Without --model, a random
Gemma3ForCausalLM of the FunctionGemma 270M config is built from a fixed seed (saved to --save DIR
when given) so the script runs standalone.

  python3 tools/bench_transformers.py --model /tmp/fg270 --device cuda --json bench.json --compile
  python3 tools/bench_transformers.py --save /tmp/fg270_random --json bench.json --quick
  python3 tools/bench_transformers.py --print-table bench.json     # table of a saved run, no torch

Times are host wall-clock between torch.cuda.synchronize() calls, after warm-up runs; each figure
is the median of several timed runs. The JSON holds every figure, the settings and the errors.
"""

import argparse
import copy
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback

# The config.json `fgnet synth --like functiongemma-270m` writes (src/model/synth.cpp,
# Gemma3ConfigToJson in src/model/config.cpp), key for key.
FUNCTIONGEMMA_270M_CONFIG = {
    "architectures": ["Gemma3ForCausalLM"],
    "attention_bias": False,
    "attn_logit_softcapping": None,
    "bos_token_id": 2,
    "dtype": "bfloat16",
    "eos_token_id": 1,
    "final_logit_softcapping": None,
    "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh",
    "hidden_size": 640,
    "intermediate_size": 2048,
    "layer_types": ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention"
                    for i in range(18)],
    "max_position_embeddings": 32768,
    "model_type": "gemma3_text",
    "num_attention_heads": 4,
    "num_hidden_layers": 18,
    "num_key_value_heads": 1,
    "pad_token_id": 0,
    "query_pre_attn_scalar": 256,
    "rms_norm_eps": 1e-06,
    "rope_parameters": {
        "full_attention": {"rope_theta": 1000000.0, "rope_type": "default"},
        "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"},
    },
    "sliding_window": 512,
    "tie_word_embeddings": True,
    "use_bidirectional_attention": False,
    "vocab_size": 262144,
}

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_RANK = 16
LORA_ALPHA = 32
# Standard deviation of the random B matrices (A is N(0, 1/in)): the update s B A x is then a
# modest, non-zero fraction of W x for weights of standard deviation 0.02.
LORA_B_STDDEV = 0.01
# Prompt ids are uniform over the vocabulary past its first 256 (control) tokens, as fgnet's
# benchmark prompts are.
FIRST_PROMPT_ID = 256

SIZES = {
    "full": {
        "decode_prompt": 128, "decode_new": 256, "prefill_tokens": 2048, "batches": [16, 64],
        "ttft_prefix": 2048, "ttft_suffix": 16, "memory_experts": 8, "memory_tokens": 4096,
        "repeats": 3, "short_repeats": 10,
    },
    "quick": {
        "decode_prompt": 32, "decode_new": 32, "prefill_tokens": 256, "batches": [2, 4],
        "ttft_prefix": 256, "ttft_suffix": 16, "memory_experts": 8, "memory_tokens": 512,
        "repeats": 2, "short_repeats": 3,
    },
}

# Timed runs of a measurement stop early once they add up to this many seconds (at least one
# run is always made), so that the slow runs fit a bounded time.
RUN_BUDGET_S = 15.0


# ---------------------------------------------------------------------------------------------
# Pure-python helpers (no torch): statistics and the report table.

def median(values):
    """The median of a non-empty list of numbers."""
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def percentile(values, q):
    """The q-th percentile (0..100) with linear interpolation between closest ranks."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _fmt(value, digits=1):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def table_rows(report):
    """(measurement, value, unit, notes) rows of the report's results, in a fixed order."""
    sizes = report.get("settings", {}).get("sizes", {})
    results = report.get("results", {})
    rows = []

    def status(entry):
        if entry is None:
            return "not run"
        if "error" in entry:
            return "error: " + entry["error"].splitlines()[0][:90]
        if "skipped" in entry:
            return "skipped: " + entry["skipped"]
        return None

    def add(key, label, field, unit, note="", digits=1):
        entry = results.get(key)
        bad = status(entry)
        if bad is not None:
            rows.append((label, "-", unit, bad))
        else:
            rows.append((label, _fmt(entry.get(field), digits), unit, note))

    p, n = sizes.get("decode_prompt"), sizes.get("decode_new")
    for prefix, tag in (("", ""), ("compile_", " [compile]")):
        if prefix and not report.get("settings", {}).get("compile"):
            continue
        cache = "static" if prefix else "dynamic"
        add(prefix + "decode_b1_generate", "batch-1 decode, generate" + tag, "tokens_per_s",
            "tokens/s", f"{p}-token prompt, {n} new, greedy, {cache} cache, prefill included")
        loop = results.get(prefix + "decode_b1_loop") or {}
        differ = ("; greedy tokens differed between runs"
                  if loop.get("same_tokens_every_run") is False else "")
        add(prefix + "decode_b1_loop", "batch-1 decode, loop" + tag, "tokens_per_s", "tokens/s",
            f"{cache} cache, 1 / mean of the timed decode steps{differ}")
        add(prefix + "decode_b1_loop", "batch-1 decode, loop, p50" + tag, "ms_p50", "ms/token",
            "", 3)
        add(prefix + "decode_b1_loop", "batch-1 decode, loop, p99" + tag, "ms_p99", "ms/token",
            "", 3)
        if prefix:
            add(prefix + "decode_b1_generate", "  first generate (compilation)" + tag,
                "first_run_s", "s", "warm-up run that compiles", 1)
    t = sizes.get("prefill_tokens")
    add("prefill_cache", "prefill, use_cache=True", "tokens_per_s", "tokens/s",
        f"{t}-token prompt, KV writes, last-position logits")
    add("prefill_nocache", "prefill, use_cache=False", "tokens_per_s", "tokens/s",
        f"{t}-token prompt, last-position logits")
    add("prefill_nocache_all_logits", "prefill, use_cache=False, all logits", "tokens_per_s",
        "tokens/s", f"{t}-token prompt, logits at every position")
    for b in sizes.get("batches", []):
        add(f"aggregate_b{b}", f"aggregate decode, {b} seqs", "tokens_per_s", "tokens/s",
            f"{p}-token prompts, {n} new each, dynamic cache, prefill included")
        add(f"aggregate_lora_b{b}", f"aggregate decode, {b} seqs, {b} LoRA", "tokens_per_s",
            "tokens/s", f"peft adapter_names, r {LORA_RANK}, 7 projections, "
            f"{sizes.get('lora_new')} new each")
        if report.get("settings", {}).get("compile"):
            add(f"compile_aggregate_b{b}", f"aggregate decode, {b} seqs [compile]",
                "tokens_per_s", "tokens/s", "static cache, generate's compilation")
    pre, suf = sizes.get("ttft_prefix"), sizes.get("ttft_suffix")
    add("ttft", "TTFT cold", "cold_ms", "ms", f"{pre}-token prefix + {suf}-token suffix, one forward",
        2)
    same = (results.get("ttft") or {}).get("same_first_token")
    add("ttft", "TTFT cached prefix", "cached_ms", "ms",
        "copy of the prefix KV cache + suffix forward"
        + ("" if same is not False else "; first token differs from the cold one"), 2)
    add("ttft", "  of which cache copy", "copy_ms", "ms", "", 2)
    e, m = sizes.get("memory_experts"), sizes.get("memory_tokens")
    add("memory", f"peak memory, {e} experts", "peak_mib", "MiB",
        f"base + {e} adapters + KV of {e} x {m} (static cache) + that prefill")
    add("memory", "  base weights", "base_mib", "MiB", "")
    add("memory", f"  {e} adapters", "adapters_mib", "MiB", "")
    add("memory", "  KV cache", "kv_cache_mib", "MiB", "as transformers allocates it")
    return rows


def format_table(report):
    """The report as a markdown table with a header naming the GPU and versions."""
    env = report.get("environment", {})
    model = report.get("model", {})
    lines = [
        f"GPU: {env.get('gpu', '?')} | torch {env.get('torch', '?')} (CUDA {env.get('cuda', '?')})"
        f" | transformers {env.get('transformers', '?')} | peft {env.get('peft', '?')}",
        f"model: {model.get('source', '?')}, {model.get('parameters', '?')} parameters, bf16, "
        f"attention {model.get('attn_implementation', '?')}",
        "",
        "| measurement | value | unit | notes |",
        "|---|---:|---|---|",
    ]
    for label, value, unit, note in table_rows(report):
        lines.append(f"| {label} | {value} | {unit} | {note} |")
    return "\n".join(lines)


def write_json(path, report):
    """Writes the report atomically (a partial run still leaves a valid file)."""
    if not path:
        return
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def error_string(exc):
    """One error as a string: type, message and the innermost frames (bounded length)."""
    text = f"{type(exc).__name__}: {exc}"
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    where = "; ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in frames)
    if where:
        text += f" [at {where}]"
    return text[:4000]


# ---------------------------------------------------------------------------------------------
# The benchmark (torch from here on).

class Bench:
    """Holds the model, the settings and the report; each measure_* method fills one entry."""

    def __init__(self, args):
        import torch

        self.torch = torch
        self.args = args
        self.sizes = dict(SIZES["quick" if args.quick else "full"])
        self.sizes["lora_new"] = args.lora_new_tokens or self.sizes["decode_new"]
        self.device = torch.device(args.device)
        self.start = time.monotonic()
        self.deadline = self.start + args.time_limit if args.time_limit > 0 else None
        self.model = None
        self.config = None
        self.model_dir = None
        self.temp_dir = None
        self.attn = "sdpa"
        self.report = {
            "tool": "tools/bench_transformers.py",
            "settings": {
                "device": args.device, "compile": args.compile, "quick": args.quick,
                "seed": args.seed, "dtype": "bfloat16", "sizes": self.sizes,
                "lora": {"r": LORA_RANK, "alpha": LORA_ALPHA, "targets": LORA_TARGETS,
                         "b_stddev": LORA_B_STDDEV},
                "timing": "host clock between torch.cuda.synchronize() calls; median of the "
                          "timed runs after warm-up",
                "generation": "greedy (do_sample=False), min_new_tokens = max_new_tokens, "
                              "eos never stops a sequence; the checkpoint's generation_config "
                              "is replaced by a neutral one",
            },
            "environment": {},
            "model": {},
            "results": {},
            "errors": {},
        }

    # -- bookkeeping ------------------------------------------------------------------------

    def elapsed(self):
        return time.monotonic() - self.start

    def save(self):
        self.report["elapsed_s"] = round(self.elapsed(), 1)
        write_json(self.args.json, self.report)

    def measure(self, name, fn):
        """Runs fn() -> dict and stores it under results[name]; an exception becomes an error
        entry. Skipped when the time limit has passed."""
        torch = self.torch
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.report["results"][name] = {"skipped": f"time limit {self.args.time_limit:.0f} s"}
            print(f"[{self.elapsed():6.1f}s] {name}: skipped (time limit)", flush=True)
            self.save()
            return None
        print(f"[{self.elapsed():6.1f}s] {name} ...", flush=True)
        t0 = time.monotonic()
        try:
            with torch.no_grad():
                result = fn()
        except Exception as exc:  # pylint: disable=broad-except
            result = {"error": error_string(exc)}
            self.report["errors"][name] = result["error"]
            print(f"    error: {result['error'][:600]}", flush=True)
        result["wall_s"] = round(time.monotonic() - t0, 2)
        self.report["results"][name] = result
        gc.collect()
        torch.cuda.empty_cache()
        shown = {k: v for k, v in result.items() if not isinstance(v, (list, dict))}
        print(f"    {json.dumps(shown)[:600]}", flush=True)
        self.save()
        return result

    def sync(self):
        self.torch.cuda.synchronize(self.device)

    def timed(self, fn, warmup, repeats, budget_s=RUN_BUDGET_S):
        """Calls fn() `warmup` times, then up to `repeats` timed times (stopping once the timed
        runs exceed budget_s); returns the list of seconds."""
        for _ in range(warmup):
            fn()
        self.sync()
        times = []
        for _ in range(repeats):
            self.sync()
            t0 = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - t0)
            if sum(times) > budget_s:
                break
        return times

    def prompts(self, batch, length, stream):
        """Seeded random prompt ids [batch, length] on the device."""
        torch = self.torch
        gen = torch.Generator().manual_seed(self.args.seed * 1000 + stream)
        vocab = self.config.vocab_size
        low = FIRST_PROMPT_ID if vocab > 2 * FIRST_PROMPT_ID else 0
        return torch.randint(low, vocab, (batch, length), generator=gen).to(self.device)

    # -- model ------------------------------------------------------------------------------

    def environment(self):
        torch = self.torch
        import transformers

        env = {
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(self.device),
            "gpu_memory_mib": round(torch.cuda.get_device_properties(self.device).total_memory
                                    / 2**20),
        }
        try:
            import peft
            env["peft"] = peft.__version__
        except Exception as exc:  # pylint: disable=broad-except
            env["peft"] = f"unavailable ({exc})"
        self.report["environment"] = env

    def prepare_checkpoint(self):
        """Sets model_dir: --model, or a random checkpoint of the 270M config written to --save
        (or a temporary directory) from the seed."""
        torch = self.torch
        from transformers import AutoConfig, AutoModelForCausalLM

        if self.args.model:
            self.model_dir = self.args.model
            self.report["model"]["source"] = f"checkpoint {self.args.model}"
            return
        if self.args.save:
            self.model_dir = self.args.save
        else:
            self.temp_dir = tempfile.mkdtemp(prefix="bench_transformers_")
            self.model_dir = self.temp_dir
        os.makedirs(self.model_dir, exist_ok=True)
        with open(os.path.join(self.model_dir, "config.json"), "w", encoding="utf-8") as f:
            json.dump(FUNCTIONGEMMA_270M_CONFIG, f, indent=2)
        config = AutoConfig.from_pretrained(self.model_dir)
        torch.manual_seed(self.args.seed)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            with torch.device(self.device):
                model = AutoModelForCausalLM.from_config(config)
        finally:
            torch.set_default_dtype(previous)
        model.to(torch.bfloat16).save_pretrained(self.model_dir)
        del model
        self.report["model"]["source"] = (f"random FunctionGemma 270M config, seed "
                                          f"{self.args.seed}, saved to {self.model_dir}")

    def load(self):
        """Loads the checkpoint in bf16 on the device, with the chosen attention, and a neutral
        greedy generation config."""
        torch = self.torch
        from transformers import AutoModelForCausalLM, GenerationConfig

        model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.bfloat16,
                                                     attn_implementation=self.attn)
        model.to(self.device).eval()
        cfg = model.config
        model.generation_config = GenerationConfig(
            bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id,
            pad_token_id=cfg.pad_token_id if cfg.pad_token_id is not None else 0, do_sample=False)
        self.config = cfg
        return model

    def load_base(self):
        """Loads the base model; sdpa first, eager when an sdpa load or forward fails."""
        torch = self.torch
        try:
            model = self.load()
            with torch.no_grad():
                model(input_ids=self.prompts(1, 8, 99), use_cache=False)
        except Exception as exc:  # pylint: disable=broad-except
            if self.attn != "sdpa":
                raise
            self.report["errors"]["attn_sdpa"] = error_string(exc)
            self.attn = "eager"
            model = self.load()
        info = self.report["model"]
        info["attn_implementation"] = self.attn
        info["class"] = type(model).__name__
        info["parameters"] = sum(p.numel() for p in model.parameters())
        info["config"] = {k: getattr(self.config, k, None) for k in (
            "model_type", "num_hidden_layers", "hidden_size", "intermediate_size",
            "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size",
            "sliding_window", "tie_word_embeddings")}
        return model

    def free_model(self):
        self.model = None
        gc.collect()
        self.torch.cuda.empty_cache()

    def accepts_cache_position(self, model):
        import inspect

        return "cache_position" in inspect.signature(model.forward).parameters

    def dynamic_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.config)

    def static_cache(self, max_len):
        from transformers import StaticCache

        return StaticCache(config=self.config, max_cache_len=max_len)

    # -- 1. batch-1 decode ------------------------------------------------------------------

    def generate(self, model, ids, new_tokens, compiled, **extra):
        """Greedy generate of exactly new_tokens per sequence; returns the number generated."""
        torch = self.torch
        kwargs = dict(extra)
        if compiled:
            kwargs["cache_implementation"] = "static"
        else:
            kwargs["past_key_values"] = self.dynamic_cache()
            kwargs["disable_compile"] = True
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                             max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             do_sample=False, **kwargs)
        return out.shape[1] - ids.shape[1]

    def measure_generate(self, model, batch, compiled, stream, new_tokens=None, warmup_tokens=8,
                         **extra):
        """Aggregate tokens/s of generate over `batch` sequences (prefill included)."""
        torch = self.torch
        s = self.sizes
        new_tokens = new_tokens or s["decode_new"]
        ids = self.prompts(batch, s["decode_prompt"], stream)
        first = None
        if compiled:
            # The first run compiles; a second one settles the CUDA graphs.
            t0 = time.perf_counter()
            self.generate(model, ids, new_tokens, True, **extra)
            self.sync()
            first = time.perf_counter() - t0
            warmup = 1
        else:
            self.generate(model, ids, min(warmup_tokens, new_tokens), False, **extra)
            warmup = 0
        torch.cuda.reset_peak_memory_stats(self.device)
        made = []
        times = self.timed(lambda: made.append(
            self.generate(model, ids, new_tokens, compiled, **extra)), warmup, s["repeats"])
        if any(m != new_tokens for m in made):
            raise RuntimeError(f"generate made {made} tokens, expected {new_tokens}")
        sec = median(times)
        result = {
            "batch": batch, "prompt_tokens": s["decode_prompt"], "new_tokens": new_tokens,
            "tokens_per_s": batch * new_tokens / sec,
            "ms_per_step": 1000.0 * sec / new_tokens, "seconds": times,
            "peak_mib": torch.cuda.max_memory_allocated(self.device) / 2**20,
        }
        if first is not None:
            result["first_run_s"] = first
        return result

    def decode_loop(self, model, forward, ids, new_tokens, cache, compiled):
        """Greedy decode by hand: one forward over the prompt, then new_tokens - 1 one-token
        forwards, each timed on its own. Returns (prefill seconds, step seconds, token ids)."""
        torch = self.torch
        plen = ids.shape[1]
        with_cache_position = self.accepts_cache_position(model)
        # One position tensor per step, each its own storage: slices of one tensor would differ
        # in storage offset, which a compiled forward treats as a dynamic shape.
        step_positions = [torch.full((1,), plen + i, dtype=torch.long, device=self.device)
                          for i in range(new_tokens)]

        def kwargs(positions):
            k = {"past_key_values": cache, "use_cache": True, "logits_to_keep": 1,
                 "position_ids": positions.unsqueeze(0)}
            if with_cache_position:
                k["cache_position"] = positions
            return k

        self.sync()
        t0 = time.perf_counter()
        out = model(input_ids=ids, **kwargs(torch.arange(plen, device=self.device)))
        token = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
        self.sync()
        prefill = time.perf_counter() - t0
        steps, tokens = [], [token]
        for i in range(new_tokens - 1):
            t0 = time.perf_counter()
            if compiled:
                torch.compiler.cudagraph_mark_step_begin()
            out = forward(input_ids=token, **kwargs(step_positions[i]))
            token = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
            self.sync()
            steps.append(time.perf_counter() - t0)
            tokens.append(token)
        return prefill, steps, torch.cat(tokens, dim=1)

    def measure_loop(self, model, compiled):
        """Per-token latency of batch-1 decode with a dynamic cache (eager) or a static cache
        and a compiled forward."""
        torch = self.torch
        s = self.sizes
        ids = self.prompts(1, s["decode_prompt"], 1)
        total = s["decode_prompt"] + s["decode_new"]
        first = None
        if compiled:
            forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=False)
            cache = self.static_cache(total)

            def run():
                cache.reset()
                return self.decode_loop(model, forward, ids, s["decode_new"], cache, True)

            t0 = time.perf_counter()
            run()
            first = time.perf_counter() - t0
            run()  # CUDA graphs recorded
        else:
            def run():
                return self.decode_loop(model, model, ids, s["decode_new"],
                                        self.dynamic_cache(), False)

            run()
        runs = []
        for _ in range(s["repeats"]):
            runs.append(run())
            if sum(sum(r[1]) for r in runs) > RUN_BUDGET_S:
                break
        steps = [t for r in runs for t in r[1]]
        ms = [1000.0 * t for t in steps]
        mean_ms = sum(ms) / len(ms)
        result = {
            "cache": "static" if compiled else "dynamic", "runs": len(runs),
            "prompt_tokens": s["decode_prompt"], "new_tokens": s["decode_new"],
            "tokens_per_s": 1000.0 / mean_ms, "ms_mean": mean_ms,
            "ms_p50": percentile(ms, 50), "ms_p99": percentile(ms, 99), "ms_max": max(ms),
            "prefill_ms": median([1000.0 * r[0] for r in runs]),
            "same_tokens_every_run": all(torch.equal(r[2], runs[0][2]) for r in runs),
        }
        if first is not None:
            result["first_run_s"] = first
        return result

    # -- 2. prefill -------------------------------------------------------------------------

    def measure_prefill(self, model, use_cache, logits_to_keep):
        s = self.sizes
        ids = self.prompts(1, s["prefill_tokens"], 2)

        def run():
            kwargs = {"use_cache": use_cache, "logits_to_keep": logits_to_keep}
            if use_cache:
                kwargs["past_key_values"] = self.dynamic_cache()
            return model(input_ids=ids, **kwargs)

        times = self.timed(run, 3, s["short_repeats"])
        sec = median(times)
        return {"tokens": s["prefill_tokens"], "use_cache": use_cache,
                "logits_positions": "all" if logits_to_keep == 0 else logits_to_keep,
                "tokens_per_s": s["prefill_tokens"] / sec, "ms": 1000.0 * sec,
                "seconds": times}

    # -- 4. time to first token -------------------------------------------------------------

    def measure_ttft(self, model):
        torch = self.torch
        s = self.sizes
        prefix = self.prompts(1, s["ttft_prefix"], 3)
        suffix = self.prompts(1, s["ttft_suffix"], 4)
        full = torch.cat([prefix, suffix], dim=1)
        plen, total = prefix.shape[1], full.shape[1]
        with_cache_position = self.accepts_cache_position(model)
        suffix_positions = torch.arange(plen, total, device=self.device)

        def cold():
            out = model(input_ids=full, past_key_values=self.dynamic_cache(), use_cache=True,
                        logits_to_keep=1)
            return int(out.logits[0, -1].argmax())

        prefix_cache = self.dynamic_cache()
        model(input_ids=prefix, past_key_values=prefix_cache, use_cache=True, logits_to_keep=1)

        def cached():
            cache = copy.deepcopy(prefix_cache)
            kwargs = {"position_ids": suffix_positions.unsqueeze(0)}
            if with_cache_position:
                kwargs["cache_position"] = suffix_positions
            out = model(input_ids=suffix, past_key_values=cache, use_cache=True,
                        logits_to_keep=1, **kwargs)
            return int(out.logits[0, -1].argmax())

        cold_times = self.timed(cold, 3, s["short_repeats"])
        cached_times = self.timed(cached, 3, s["short_repeats"])
        copy_times = self.timed(lambda: copy.deepcopy(prefix_cache), 3, s["short_repeats"])
        cold_token, cached_token = cold(), cached()
        return {
            "prefix_tokens": plen, "suffix_tokens": s["ttft_suffix"],
            "cold_ms": 1000.0 * median(cold_times), "cached_ms": 1000.0 * median(cached_times),
            "copy_ms": 1000.0 * median(copy_times),
            "speedup": median(cold_times) / median(cached_times),
            "prefix_cache_mib": cache_bytes(prefix_cache) / 2**20,
            "same_first_token": cold_token == cached_token,
            "cold_seconds": cold_times, "cached_seconds": cached_times,
        }

    # -- adapters ---------------------------------------------------------------------------

    def add_adapters(self, model, count, start=0):
        """Wraps model (a base, or a PeftModel to extend) with adapters e<start>..e<count-1>:
        rank 16, alpha 32, all 7 projections, A ~ N(0, 1/in) and B ~ N(0, LORA_B_STDDEV^2) from
        a seeded generator, kept in bf16. Returns the PeftModel."""
        torch = self.torch
        from peft import LoraConfig, PeftModel, get_peft_model

        def lora_config():
            return LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, target_modules=LORA_TARGETS,
                              lora_dropout=0.0, bias="none", init_lora_weights=False)

        names = [f"e{i}" for i in range(start, count)]
        if not isinstance(model, PeftModel):
            try:
                model = get_peft_model(model, lora_config(), adapter_name=names[0],
                                       autocast_adapter_dtype=False)
            except TypeError:
                model = get_peft_model(model, lora_config(), adapter_name=names[0])
            rest = names[1:]
        else:
            rest = names
        for name in rest:
            model.add_adapter(name, lora_config())
        model.to(torch.bfloat16).eval()
        layers = lora_layers(model)
        gen = torch.Generator(device=self.device)
        for name in names:
            gen.manual_seed(self.args.seed * 100000 + int(name[1:]))
            for module in layers:
                if name not in module.lora_A:
                    continue
                a = module.lora_A[name].weight
                b = module.lora_B[name].weight
                a.normal_(0.0, a.shape[1] ** -0.5, generator=gen)
                b.normal_(0.0, LORA_B_STDDEV, generator=gen)
        return model

    def adapter_summary(self, model, names):
        dtypes, params = set(), 0
        layers = lora_layers(model)
        for module in layers:
            for name in names:
                if name in module.lora_A:
                    for w in (module.lora_A[name].weight, module.lora_B[name].weight):
                        params += w.numel()
                        dtypes.add(str(w.dtype))
        modules = sum(1 for module in layers if names[0] in module.lora_A)
        return {"adapters": len(names), "modules_per_adapter": modules,
                "parameters": params, "dtypes": sorted(dtypes)}

    # -- 5. memory of 8 experts -------------------------------------------------------------

    def measure_memory(self):
        """Peak allocated memory from nothing: base, adapters, a static KV cache for the batch,
        and one prefill of the whole batch (each sequence with its own adapter)."""
        torch = self.torch
        s = self.sizes
        experts, tokens = s["memory_experts"], s["memory_tokens"]
        self.free_model()
        torch.cuda.reset_peak_memory_stats(self.device)
        m0 = torch.cuda.memory_allocated(self.device)
        model = self.load_base()
        m_base = torch.cuda.memory_allocated(self.device)
        model = self.add_adapters(model, experts)
        m_adapters = torch.cuda.memory_allocated(self.device)
        names = [f"e{i}" for i in range(experts)]
        cache = self.static_cache(tokens)
        ids = self.prompts(experts, tokens, 5)
        model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1,
              adapter_names=names)
        self.sync()
        m_end = torch.cuda.memory_allocated(self.device)
        peak = torch.cuda.max_memory_allocated(self.device)
        self.model = model
        return {
            "experts": experts, "tokens_per_sequence": tokens, "cache": "StaticCache",
            "base_mib": (m_base - m0) / 2**20, "adapters_mib": (m_adapters - m_base) / 2**20,
            "kv_cache_mib": cache_bytes(cache) / 2**20,
            "allocated_after_mib": (m_end - m0) / 2**20, "peak_mib": (peak - m0) / 2**20,
            "adapter_info": self.adapter_summary(model, names),
            "cache_layers": cache_layout(cache),
        }

    def measure_lora_generate(self, batch):
        """Aggregate decode with one adapter per sequence (peft mixed batch)."""
        if self.model is None or not hasattr(self.model, "peft_config"):
            self.free_model()
            self.model = self.add_adapters(self.load_base(), batch)
        have = len(self.model.peft_config)
        t0 = time.perf_counter()
        if have < batch:
            self.model = self.add_adapters(self.model, batch, start=have)
        setup = time.perf_counter() - t0
        names = [f"e{i}" for i in range(batch)]
        result = self.measure_generate(self.model, batch, False, 10 + batch,
                                       new_tokens=self.sizes["lora_new"], warmup_tokens=2,
                                       adapter_names=names)
        result["adapter_setup_s"] = setup
        result["adapter_info"] = self.adapter_summary(self.model, names)
        return result

    # -- the run ----------------------------------------------------------------------------

    def run(self):
        s = self.sizes
        self.environment()
        self.prepare_checkpoint()
        self.model = self.load_base()
        self.save()
        base = self.model

        # Base model, eager (no compilation).
        self.measure("decode_b1_generate", lambda: self.measure_generate(base, 1, False, 1))
        self.measure("decode_b1_loop", lambda: self.measure_loop(base, False))
        self.measure("prefill_cache", lambda: self.measure_prefill(base, True, 1))
        self.measure("prefill_nocache", lambda: self.measure_prefill(base, False, 1))
        self.measure("prefill_nocache_all_logits", lambda: self.measure_prefill(base, False, 0))
        self.measure("ttft", lambda: self.measure_ttft(base))
        for b in s["batches"]:
            self.measure(f"aggregate_b{b}", lambda b=b: self.measure_generate(base, b, False,
                                                                             10 + b))

        # torch.compile with a static cache (transformers compiles the decode step only, so the
        # prefill-only figures are not repeated).
        if self.args.compile:
            self.measure("compile_decode_b1_generate",
                         lambda: self.measure_generate(base, 1, True, 1))
            self.measure("compile_decode_b1_loop", lambda: self.measure_loop(base, True))
            for b in s["batches"]:
                self.measure(f"compile_aggregate_b{b}",
                             lambda b=b: self.measure_generate(base, b, True, 10 + b))
            self.torch._dynamo.reset()  # drops the compiled graphs and their CUDA graph memory
        del base

        # Adapters: memory of the experts from a fresh load, then one adapter per sequence
        # (the slowest runs, last).
        self.measure("memory", self.measure_memory)
        for b in s["batches"]:
            self.measure(f"aggregate_lora_b{b}", lambda b=b: self.measure_lora_generate(b))
        self.free_model()


def lora_layers(model):
    """The LoRA-wrapped modules of a peft model, in name order."""
    return [module for _, module in sorted(model.named_modules(), key=lambda kv: kv[0])
            if hasattr(module, "lora_A") and hasattr(module, "lora_B")]


def cache_bytes(cache):
    """Bytes held by a transformers cache's key and value tensors."""
    total = 0
    for layer in getattr(cache, "layers", []):
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if t is not None:
                total += t.numel() * t.element_size()
    return total


def cache_layout(cache):
    """[(layer class, key shape)] of a cache, to show how sliding layers are stored."""
    return [[type(layer).__name__, list(layer.keys.shape) if layer.keys is not None else None]
            for layer in getattr(cache, "layers", [])]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="checkpoint directory (config.json + model.safetensors); "
                        "default: a random checkpoint of the FunctionGemma 270M config")
    parser.add_argument("--save", help="where the random checkpoint is written (without --model)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", help="write every figure, the settings and the errors here")
    parser.add_argument("--compile", action="store_true",
                        help="also measure decode with torch.compile and a static cache")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, prompts, adapters")
    parser.add_argument("--lora-new-tokens", type=int, default=0,
                        help="new tokens per sequence in the adapter runs (default: as the "
                             "others, 256); peft's mixed batch costs about 0.2 ms per adapter "
                             "and module per step, so 64 adapters take seconds per token")
    parser.add_argument("--time-limit", type=float, default=0,
                        help="seconds after which the remaining measurements are skipped "
                             "(0: none)")
    parser.add_argument("--print-table", metavar="JSON",
                        help="print the table of a saved report and exit (no torch needed)")
    args = parser.parse_args()

    if args.print_table:
        with open(args.print_table, encoding="utf-8") as f:
            print(format_table(json.load(f)))
        return 0
    if args.model and args.save:
        parser.error("--save applies only without --model")

    import torch

    if not args.device.startswith("cuda") or not torch.cuda.is_available():
        print(f"error: this benchmark needs a CUDA device (got --device {args.device}, "
              f"cuda available: {torch.cuda.is_available()})", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)

    bench = Bench(args)
    status = 0
    try:
        bench.run()
    except Exception as exc:  # pylint: disable=broad-except
        bench.report["errors"]["setup"] = error_string(exc)
        print(f"error: {bench.report['errors']['setup']}", file=sys.stderr)
        status = 1
    finally:
        bench.save()
        if bench.temp_dir:
            shutil.rmtree(bench.temp_dir, ignore_errors=True)
    print()
    print(format_table(bench.report))
    return status


if __name__ == "__main__":
    sys.exit(main())
