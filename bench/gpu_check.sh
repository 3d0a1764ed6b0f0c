#!/usr/bin/env bash
# One command for a lent GPU, in two steps:
#   1. the throughput check (bench/gpu_check.py): A-LoL steps of GPT-2 124M in bf16, tokens/s, peak
#      memory and the share of the card's bf16 matmul peak -> results/measurements/gpu_check.json;
#   2. the committed CPU set's job (`--preset gpt2-scale --task tiny-hh`) at full size:
#      `reproduce --preset gpu --task tiny-hh` (SmolLM2-135M fine-tuned into pi_ref, every method x 3
#      seeds at the paper's batch of 16, bf16) -> results/gpu/tiny-hh-smollm2-135m/, its figures in
#      results/gpu/figures/, and its wall time in results/gpu/wall_time.txt.
# The preset is sized to finish in about 10 minutes on one H200; that is an estimate until it runs.
# Usage: bench/gpu_check.sh              on a machine with an NVIDIA GPU
#        bench/gpu_check.sh --cpu-smoke  both steps on the CPU with tiny budgets, into a scratch
#                                        folder (GPU_CHECK_OUT, default a new temporary folder)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if [ "${1:-}" = "--cpu-smoke" ]; then
  out="${GPU_CHECK_OUT:-$(mktemp -d)}"
  "$PY" bench/gpu_check.py --cpu-dry-run
  "$PY" -m alol_min reproduce --preset gpu --task tiny-hh --methods a_lol ppo --seeds 0 \
    --second-view none --n-offline 24 --n-value-prompts 10 --n-val-eval 2 --n-test 3 \
    --n-kl-prompts 2 --decoding-seeds 1 --tiny-hh-train 600 \
    --sft.steps 2 --sft.batch-size 4 --sft.eval-every 2 --sft.eval-pairs 4 \
    --offline.steps 2 --offline.batch-size 4 --offline.eval-every 2 \
    --ppo.steps 1 --ppo.rollout-prompts 4 --ppo.minibatch-size 4 --ppo.epochs 1 --ppo.eval-every 1 \
    --decode.max-new-tokens 4 --eval-decode.max-new-tokens 4 --max-prompt-tokens 24 \
    --max-response-tokens 8 --no-progress --out-dir "$out" --figures-dir "$out/figures"
  echo "gpu_check: CPU smoke finished in $out"
  exit 0
fi

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA device here, so nothing was measured. Run it on a machine with an NVIDIA GPU."
  exit 0
fi
"$PY" bench/gpu_check.py "$@"
mkdir -p results/gpu
start=$(date +%s)
"$PY" -m alol_min reproduce --preset gpu --task tiny-hh --out-dir results/gpu --figures-dir results/gpu/figures
echo "reproduce --preset gpu --task tiny-hh: $(( $(date +%s) - start )) s on $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" \
  | tee results/gpu/wall_time.txt
