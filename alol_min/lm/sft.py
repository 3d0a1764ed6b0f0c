"""NLL (SFT) training of the reference policy pi_ref, the paper's first step.

    L_NLL(theta) = - mean over pairs of  sum_t log pi_theta(y_t | x, y_<t)

(summed over response tokens, as the paper's code does; the prompt is context only; RESULTS.md
compares it with the token-averaged loss). Runs on HF Accelerate, so the same loop uses a CPU, a
GPU, or several GPUs under `accelerate launch`.
Logs are JSON lines (`log.jsonl`) next to the run's `config.json`.

Scaling (shared with `run.train.train_offline`):
- One optimiser step sees a *global batch* of G = batch_size x grad_accum x processes examples.
  Every process draws the same global batch (same seed), keeps its share `batch[rank::processes]`
  and splits it into grad_accum micro-batches (`micro_batches`).
- Normalisation: each micro-batch's loss is sum_{i in micro} loss_i x processes / G. Gradients add
  up over micro-steps and DDP averages them over processes, so the update is that of
  mean_{i in global batch} loss_i, whatever the split: (batch 8, accum 1) and (batch 4, accum 2)
  give the same step up to float rounding. (The paper's HHA trainer sums over its 4 micro-steps
  instead (docs/method.md §7.4); with a mean the learning rate does not depend on grad_accum.)
- bf16: Accelerate's autocast (`mixed_precision="bf16"`); weights and optimiser stay in fp32. It
  pays on a GPU, and on a CPU with bf16 matrix instructions (AVX-512 BF16, AMX) for a model large
  enough to be bound by its matmuls; `bench/precision.py` measures both on the machine at hand.
- lora_r > 0: LoRA adapters on every linear layer (`lm.loop.with_lora`, through `peft`); only
  they train, and they are merged into the weights at the end.
- grad_checkpointing: `model.gradient_checkpointing_enable()`: activations are recomputed in the
  backward pass (about 30% more compute, much less memory); the loss is unchanged.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from alol_min.lm.batching import EncodedPairs, collate, length_buckets, response_logprobs
from alol_min.lm.loop import (
    JsonlLog,
    LoraOptions,
    _sync_on_last,
    adamw,
    finish_training,
    make_accelerator,
    micro_batches,
    policy_logprobs,
    prepare_for_training,
)


@dataclass
class SFTConfig(LoraOptions):
    """Optimisation of pi_ref by NLL."""

    steps: int = 1150
    """Optimiser steps."""
    batch_size: int = 64
    """Pairs per micro-batch and process (one process, grad_accum 1: pairs per step)."""
    lr: float = 2.5e-3
    """Peak learning rate (AdamW)."""
    warmup_steps: int = 100
    """Linear warm-up steps."""
    min_lr_ratio: float = 0.1
    """Cosine decay ends at lr * min_lr_ratio."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Max gradient norm."""
    eval_every: int = 575
    """Validation reply perplexity every this many steps."""
    eval_pairs: int = 1000
    """Validation pairs used for the periodic perplexity (the final one uses them too)."""
    seed: int = 0
    """Seed of initialisation and batch order."""
    grad_accum: int = 1
    """Micro-batches per optimiser step: the global batch is batch_size x grad_accum x processes."""
    bf16: bool = False
    """bf16 mixed precision (Accelerate autocast): pays on GPUs and on CPUs with bf16 matrix units."""
    grad_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, ~30% more compute, same loss."""


def lr_at(step: int, cfg) -> float:
    """Linear warm-up, then cosine decay from lr to lr * min_lr_ratio."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (
        cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    )


@torch.no_grad()
def reply_perplexity(
    model, encoded: EncodedPairs, pad_id: int, batch_size: int = 64, limit: int | None = None
) -> float:
    """exp(mean NLL per response token), response tokens and final <eos> only, given the prompt."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    n = len(encoded) if limit is None else min(limit, len(encoded))
    order = sorted(range(n), key=lambda i: len(encoded.input_ids[i]))
    total, count = 0.0, 0.0
    for start in range(0, n, batch_size):
        batch = {
            k: v.to(device)
            for k, v in collate(encoded, order[start : start + batch_size], pad_id).items()
        }
        logp, mask = response_logprobs(model, batch)
        total -= float(logp.sum())
        count += float(mask.sum())
    model.train(was_training)
    return math.exp(total / count)


def train_nll(
    model,
    encoded: EncodedPairs,
    val_encoded: EncodedPairs,
    cfg: SFTConfig,
    pad_id: int,
    run_dir: Path | None = None,
    progress: bool = True,
) -> list[dict]:
    """Train `model` in place by NLL on `encoded` (LoRA adapters, if any, are merged into it);
    returns the log rows (also written to run_dir).

    Each step takes a global batch of batch_size x grad_accum x processes pairs from length buckets
    and follows the normalisation of the module docstring: the update is that of the global batch's
    mean summed-token NLL. A last batch of an epoch too small to split is skipped.
    """
    accelerator = make_accelerator(cfg)
    rank, world = accelerator.process_index, accelerator.num_processes
    if len(encoded) < world * cfg.grad_accum:
        raise ValueError(
            f"{len(encoded)} training pairs cannot feed {world} processes x {cfg.grad_accum} micro-steps"
        )
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    model = prepare_for_training(model, cfg)
    optimizer = adamw(model, cfg)
    model, optimizer = accelerator.prepare(model, optimizer)
    global_size = cfg.batch_size * cfg.grad_accum * world
    lengths = [len(ids) for ids in encoded.input_ids]
    batches: list[list[int]] = []
    log: list[dict] = []
    log_file = JsonlLog(None)
    if run_dir is not None and accelerator.is_main_process:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(
            json.dumps({**asdict(cfg), "processes": world}, indent=1)
        )
        log_file = JsonlLog(run_dir / "log.jsonl")
    start_time = time.time()
    bar = tqdm(
        range(cfg.steps),
        desc="pi_ref (NLL)",
        disable=not progress or not accelerator.is_main_process,
        mininterval=1.0,
    )
    examples_seen = 0
    for step in bar:
        global_batch = []
        while len(global_batch) < world * cfg.grad_accum:  # skips an epoch's too-small last batch
            if not batches:
                batches = length_buckets(lengths, global_size, generator)
            global_batch = batches.pop()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        optimizer.zero_grad(set_to_none=True)
        sums = torch.zeros(
            3, device=accelerator.device
        )  # loss, summed NLL, response tokens (this process)
        micro = micro_batches(global_batch, rank, world, cfg.grad_accum)
        for k, indices in enumerate(micro):
            batch = {
                key: v.to(accelerator.device)
                for key, v in collate(encoded, indices, pad_id).items()
            }
            with _sync_on_last(accelerator, model, k == len(micro) - 1):
                with accelerator.autocast():
                    logp, mask = policy_logprobs(model, batch)
                    loss = -logp.sum() * world / len(global_batch)
                accelerator.backward(loss)
            sums += torch.stack([loss.detach(), -logp.detach().sum(), mask.sum()]).float()
        accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        sums = accelerator.reduce(sums, "sum")
        examples_seen += len(global_batch)
        row = {
            "step": step + 1,
            "loss": round(float(sums[0]) / world, 4),
            "token_nll": round(float(sums[1] / sums[2]), 4),
            "lr": lr_at(step, cfg),
            "examples_seen": examples_seen,
            "seconds": round(time.time() - start_time, 1),
        }
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            row["val_reply_ppl"] = round(
                reply_perplexity(
                    accelerator.unwrap_model(model), val_encoded, pad_id, limit=cfg.eval_pairs
                ),
                2,
            )
            bar.set_postfix(val_ppl=row["val_reply_ppl"])
        log.append(row)
        log_file.write(row)
    finish_training(accelerator.unwrap_model(model), cfg)
    return log
