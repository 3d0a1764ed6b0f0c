"""GPU check: A-LoL training throughput of GPT-2 124M in bf16, and how close it gets to the card's peak.

    python bench/gpu_check.py [--steps 30 --batch-size 16 --grad-accum 1]   (or bench/gpu_check.sh)

1. Builds GPT-2 124M from config (no hub needed) and synthetic offline data: random token ids,
   prompt 256 + response 128 tokens (the `gpt2` preset's lengths), rewards in (0, 1), advantages
   with about 60% positive; pi_ref's log-probs from one `run.prepare.reference_pass`.
2. Trains A-LoL with `run.train.train_offline` in bf16 for --steps steps and reads from its log:
       tokens/s  = tokens of the steps after the first (warm-up) / their wall time,
       peak memory = torch.cuda.max_memory_allocated() during training.
3. Measures the card's bf16 matmul peak in the same process: a large bf16 matmul (8192^3, timed
   with CUDA events), 2 n^3 FLOPs per product.
4. Achieved fraction = model FLOPs/s / that peak, with the usual estimate of training FLOPs per token
   (PaLM appendix B, as nanoGPT's estimate_mfu): 6 N + 12 n_layer n_embd T (N parameters,
   T = sequence length). It overstates the work a little: the output layer runs at response
   positions only (`lm.batching.response_logprobs`).
Writes results/measurements/gpu_check.json. Without CUDA it says so and exits 0 (--cpu-dry-run runs
a tiny model on the CPU instead, to check the script itself; it writes nothing).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from alol_min.lm.batching import EncodedPairs
from alol_min.run.prepare import reference_pass
from alol_min.run.train import OfflineConfig, OfflineData, train_offline

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "measurements" / "gpu_check.json"


def matmul_peak_tflops(n: int = 8192, repeats: int = 20, device="cuda") -> float:
    """Best-of-3 bf16 matmul throughput (TFLOP/s) of an n x n x n product."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b  # warm-up (cuBLAS picks its kernel)
    best = 0.0
    for _ in range(3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            a @ b
        end.record()
        torch.cuda.synchronize()
        best = max(best, 2 * n**3 * repeats / (start.elapsed_time(end) / 1e3) / 1e12)
    return best


def synthetic_offline_data(
    model, n_examples: int, prompt_tokens: int, response_tokens: int, seed: int = 0
):
    """OfflineData of random token sequences of one fixed length, with pi_ref's log-probs."""

    rng = np.random.default_rng(seed)
    eos, vocab = model.config.eos_token_id, model.config.vocab_size
    ids = [
        rng.integers(0, vocab - 1, prompt_tokens).tolist()
        + [eos]
        + rng.integers(0, vocab - 1, response_tokens).tolist()
        + [eos]
        for _ in range(n_examples)
    ]
    encoded = EncodedPairs(ids, [prompt_tokens + 1] * n_examples)
    reward = rng.uniform(0.05, 0.95, n_examples)
    advantage = reward - 0.4  # about 60% positive: the leftovers A-LoL samples from
    ref_logp = reference_pass(model, encoded, pad_id=eos, batch_size=32)["ref_logp"]
    return OfflineData(encoded, reward, advantage, ref_logp)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--steps", type=int, default=30, help="optimiser steps (the first is warm-up)"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per micro-batch")
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step")
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--response-tokens", type=int, default=128)
    parser.add_argument("--grad-checkpointing", action="store_true")
    parser.add_argument(
        "--cpu-dry-run", action="store_true", help="tiny model on the CPU; writes nothing"
    )
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() and not args.cpu_dry_run:
        print(
            "gpu_check: no CUDA device here (torch.cuda.is_available() is False), so nothing was measured. "
            "Run bench/gpu_check.sh on a machine with an NVIDIA GPU."
        )
        return 0

    dry = args.cpu_dry_run and not torch.cuda.is_available()
    device = "cpu" if dry else "cuda"
    if dry:
        args.steps, args.batch_size, args.prompt_tokens, args.response_tokens = 3, 2, 16, 8
    torch.manual_seed(0)
    config = (
        GPT2Config(
            n_layer=2, n_embd=64, n_head=2, vocab_size=1000, bos_token_id=999, eos_token_id=999
        )
        if dry
        else GPT2Config()
    )  # GPT-2 124M
    model = GPT2LMHeadModel(config).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    seq = args.prompt_tokens + args.response_tokens + 2
    global_batch = args.batch_size * args.grad_accum
    data = synthetic_offline_data(
        model, max(256, 4 * global_batch), args.prompt_tokens, args.response_tokens
    )
    cfg = OfflineConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        lr=2e-4,
        warmup_steps=0,
        grad_clip=0.3,
        bf16=not dry,
        grad_checkpointing=args.grad_checkpointing,
        scale_steps_by_leftover=False,
        eval_every=10**9,
    )
    if not dry:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    _, log = train_offline(model, "a_lol", data, cfg, pad_id=config.eos_token_id, progress=False)
    peak_gib = torch.cuda.max_memory_allocated() / 2**30 if not dry else float("nan")
    timed = log[-1]["seconds"] - log[0]["seconds"]  # steps 2..N: the first step is warm-up
    tokens_per_s = (len(log) - 1) * global_batch * seq / timed
    flops_per_token = 6 * n_params + 12 * config.n_layer * config.n_embd * seq
    achieved = flops_per_token * tokens_per_s / 1e12
    peak = matmul_peak_tflops() if not dry else float("nan")
    result = {
        "device": "cpu (dry run)" if dry else torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "model": "GPT-2 124M from config" if not dry else "2x64 GPT-2",
        "parameters": n_params,
        "method": "a_lol",
        "precision": "bf16 autocast" if not dry else "fp32",
        "steps": len(log),
        "batch_size": args.batch_size,
        "grad_accum": args.grad_accum,
        "grad_checkpointing": args.grad_checkpointing,
        "sequence_tokens": seq,
        "tokens_per_s": round(tokens_per_s, 1),
        "peak_memory_gib": round(peak_gib, 2),
        "model_tflops_per_s": round(achieved, 2),
        "matmul_peak_tflops_bf16": round(peak, 1),
        "fraction_of_matmul_peak": round(achieved / peak, 4) if not dry else None,
        "flops_per_token_formula": "6 N + 12 n_layer n_embd T",
        "final_loss": log[-1]["loss"],
    }
    for key in (
        "device",
        "tokens_per_s",
        "peak_memory_gib",
        "model_tflops_per_s",
        "matmul_peak_tflops_bf16",
        "fraction_of_matmul_peak",
    ):
        print(f"{key:>26}: {result[key]}")
    if dry:
        print("gpu_check: CPU dry run finished; nothing written")
        return 0
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
