#!/usr/bin/env python3
"""Writes the tokenizer parity references with the Hugging Face `tokenizers` package.

For the Gemma 3 tokenizer.json and for the FunctionGemma one derived from it (ids 46..52 renamed
from <unused40>..<unused46> to the function-calling control tokens, as fgnet's
MakeFunctionGemmaTokenizerJson does), writes per corpus line
  {"ids": encode(text, add_special_tokens=False).ids,
   "decoded": decode(ids, skip_special_tokens=False),
   "decoded_skip": decode(ids, skip_special_tokens=True)}
to reference_gemma3.jsonl and reference_functiongemma.jsonl, and for every id list of
decode_cases.jsonl the decodes of both tokenizers to decode_reference.jsonl.
With --stress it also encodes a larger corpus (ids only) to stress_<name>.jsonl.

Run where `tokenizers` is installed:
  python3 tools/make_tokenizer_reference.py --tokenizer PATH/tokenizer.json \
      --corpus tests/fixtures/tokenizer/corpus.jsonl \
      --decode-cases tests/fixtures/tokenizer/decode_cases.jsonl --out tests/fixtures/tokenizer
"""

import argparse
import json
import os
import sys

FUNCTIONGEMMA_RENAMES = {
    46: ("<unused40>", "<start_function_declaration>"),
    47: ("<unused41>", "<end_function_declaration>"),
    48: ("<unused42>", "<start_function_call>"),
    49: ("<unused43>", "<end_function_call>"),
    50: ("<unused44>", "<start_function_response>"),
    51: ("<unused45>", "<end_function_response>"),
    52: ("<unused46>", "<escape>"),
}


def derive_functiongemma(tok):
    """Returns a copy of the Gemma 3 tokenizer dict with the control tokens renamed."""
    tok = json.loads(json.dumps(tok))
    by_id = {a["id"]: a for a in tok["added_tokens"]}
    vocab = tok["model"]["vocab"]
    for tid, (old, new) in FUNCTIONGEMMA_RENAMES.items():
        if by_id.get(tid, {}).get("content") != old:
            sys.exit(f"added_tokens: id {tid} is not {old}")
        if vocab.get(old) != tid:
            sys.exit(f"model.vocab: {old} is not id {tid}")
        if new in vocab:
            sys.exit(f"model.vocab: {new} already present")
        by_id[tid]["content"] = new
        del vocab[old]
        vocab[new] = tid
    return tok


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")


def safe_decode(tk, ids, skip):
    try:
        return tk.decode(ids, skip_special_tokens=skip)
    except Exception as e:  # noqa: BLE001  (recorded, the test skips such cases)
        print(f"decode({ids[:8]}...) raised {e!r}", file=sys.stderr)
        return None


def encode_records(tk, texts):
    out = []
    for text in texts:
        ids = tk.encode(text, add_special_tokens=False).ids
        out.append({"ids": ids, "decoded": tk.decode(ids, skip_special_tokens=False),
                    "decoded_skip": tk.decode(ids, skip_special_tokens=True)})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--decode-cases", required=True)
    ap.add_argument("--stress")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import tokenizers  # imported late so that --help works without it
    from tokenizers import Tokenizer

    with open(args.tokenizer, encoding="utf-8") as f:
        gemma3 = json.load(f)
    functiongemma = derive_functiongemma(gemma3)
    tks = {
        "gemma3": Tokenizer.from_file(args.tokenizer),
        "functiongemma": Tokenizer.from_str(json.dumps(functiongemma, ensure_ascii=False)),
    }
    fg = tks["functiongemma"]
    for tid, (_, new) in FUNCTIONGEMMA_RENAMES.items():
        got = fg.encode(new, add_special_tokens=False).ids
        if got != [tid]:
            sys.exit(f"functiongemma: {new} encodes to {got}, expected [{tid}]")

    os.makedirs(args.out, exist_ok=True)
    texts = [rec["text"] for rec in read_jsonl(args.corpus)]
    for name, tk in tks.items():
        records = encode_records(tk, texts)
        write_jsonl(os.path.join(args.out, f"reference_{name}.jsonl"), records)
        print(f"{name}: {len(records)} lines, {sum(len(r['ids']) for r in records)} tokens")

    cases = [rec["ids"] for rec in read_jsonl(args.decode_cases)]
    decoded = []
    for ids in cases:
        rec = {}
        for name, tk in tks.items():
            rec[name] = [safe_decode(tk, ids, False), safe_decode(tk, ids, True)]
        decoded.append(rec)
    write_jsonl(os.path.join(args.out, "decode_reference.jsonl"), decoded)
    print(f"decode cases: {len(decoded)}")

    if args.stress:
        stress = [rec["text"] for rec in read_jsonl(args.stress)]
        for name, tk in tks.items():
            ids = [{"ids": tk.encode(t, add_special_tokens=False).ids} for t in stress]
            write_jsonl(os.path.join(args.out, f"stress_{name}.jsonl"), ids)
        print(f"stress: {len(stress)} lines")

    with open(os.path.join(args.out, "reference_info.json"), "w") as f:
        json.dump({"tokenizers": tokenizers.__version__, "python": sys.version.split()[0]}, f)
    print(f"tokenizers {tokenizers.__version__}")


if __name__ == "__main__":
    main()
