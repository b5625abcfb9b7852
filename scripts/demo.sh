#!/usr/bin/env bash
# fgnet's main job, end to end on this machine: build, make a FunctionGemma-270M-shaped checkpoint
# (random weights: no weights are downloaded), inspect it, run a function-calling generation with
# it, convert it to an 8-bit RDRR package and generate from that, run a file of requests at once
# through the serving engine, run the example networks of experts and compare them with a single
# expert, and benchmark the CPU engine on it (bf16, then q8_0, then serving).
# With a real checkpoint, pass its directory as $1.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/scripts/build.sh" release
fgnet="$repo/build/bin/fgnet"

model="${1:-}"
if [ -z "$model" ]; then
  model="$repo/build/demo/functiongemma-270m-random"
  if [ ! -f "$model/model.safetensors" ]; then
    "$fgnet" synth --like functiongemma-270m --out "$model" --seed 1
  fi
fi

echo "== fgnet inspect $model (first lines; the whole report is in build/demo/inspect.txt)"
mkdir -p "$repo/build/demo"
"$fgnet" inspect "$model" > "$repo/build/demo/inspect.txt"
head -n 14 "$repo/build/demo/inspect.txt"

echo "== fgnet generate (FunctionGemma tool calling; random weights give random text)"
"$fgnet" generate --model "$model" --messages "$repo/examples/weather_messages.json" \
  --tools "$repo/examples/weather_tools.json" --max-tokens 32 --json

echo "== fgnet convert (an RDRR package with Q8_0 weights and SHA-256-verified shards)"
package="$repo/build/demo/functiongemma-270m-q8_0.rdrr"
rm -rf "$package"
"$fgnet" convert --model "$model" --quant q8_0 --out "$package"
"$fgnet" inspect "$package" | sed -n '1p;/^weights/p;/^quantization/p'
"$fgnet" generate --model "$package" --messages "$repo/examples/weather_messages.json" \
  --tools "$repo/examples/weather_tools.json" --max-tokens 16 --json

echo "== fgnet batch (examples/batch_requests.jsonl, every request at once through the serving engine)"
"$fgnet" batch --model "$model" --requests "$repo/examples/batch_requests.jsonl" \
  --out "$repo/build/demo/batch_results.jsonl" --metrics "$repo/build/demo/batch_metrics.json"
cut -c1-160 "$repo/build/demo/batch_results.jsonl"

echo "== fgnet route (the embedding router over examples/networks/experts.json)"
"$fgnet" route --model "$model" --experts "$repo/examples/networks/experts.json" \
  --prompt "Add a /health endpoint to the API" --top-k 2

for net in ring4 tree mesh4 dag-react; do
  echo "== fgnet run examples/networks/$net.json (trace in build/demo/${net}_trace.json)"
  "$fgnet" run --model "$model" --experts "$repo/examples/networks/experts.json" \
    --network "$repo/examples/networks/$net.json" --task "$repo/examples/networks/task.json" \
    --trace "$repo/build/demo/${net}_trace.json" | cut -c1-160
done

echo "== fgnet bench-network (a single expert against the example networks, same task)"
"$fgnet" bench-network --model "$model" --experts "$repo/examples/networks/experts.json" \
  --single react --network "$repo/examples/networks/ring4.json" \
  --network "$repo/examples/networks/tree.json" --network "$repo/examples/networks/mesh4.json" \
  --network "$repo/examples/networks/dag-react.json" --task "$repo/examples/networks/task.json" \
  --repeat 1 --json "$repo/build/demo/bench_network.json"

echo "== fgnet bench"
"$fgnet" bench --model "$model" --json "$repo/build/demo/bench.json"
"$fgnet" bench --model "$model" --quant q8_0 --skip-bandwidth --json "$repo/build/demo/bench_q8_0.json"
"$fgnet" bench-serve --model "$model" --concurrency 1,4,16 --decode-tokens 32 \
  --prefix-tokens 1024 --context-tokens 1024 --json "$repo/build/demo/bench_serve.json"
echo "bench reports written to build/demo/bench.json, bench_q8_0.json, bench_serve.json and bench_network.json"
