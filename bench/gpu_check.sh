#!/usr/bin/env bash
# A-LoL on GPT-2 124M in bf16: tokens/s, peak memory, share of the GPU's bf16 matmul peak.
# Writes results/measurements/gpu_check.json; without CUDA it says so and exits 0.
# Usage: bench/gpu_check.sh [--steps 30 --batch-size 16 --grad-accum 1 --grad-checkpointing]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$PY" bench/gpu_check.py "$@"
