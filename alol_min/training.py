"""NLL (SFT) training of the reference policy pi_ref, the paper's first step.

    L_NLL(theta) = - mean over pairs of  sum_t log pi_theta(y_t | x, y_<t)

(summed over response tokens, as the paper's code does; the prompt is context only). Measured on
`chitchat` with `tiny`: after 800 steps this reached validation reply perplexity 169, against 215
for the token-averaged loss with the same settings. Runs on HF
Accelerate, so the same loop uses a CPU, a GPU, or several GPUs under `accelerate launch`.
Logs are JSON lines (`log.jsonl`) next to the run's `config.json`.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .batching import EncodedPairs, collate, length_buckets, response_logprobs


@dataclass
class SFTConfig:
    """Optimisation of pi_ref by NLL."""

    steps: int = 1150
    """Optimiser steps (tiny on chitchat: about 275 s on 2 cores)."""
    batch_size: int = 64
    """Pairs per step."""
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


def lr_at(step: int, cfg) -> float:
    """Linear warm-up, then cosine decay from lr to lr * min_lr_ratio."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def reply_perplexity(model, encoded: EncodedPairs, pad_id: int, batch_size: int = 64, limit: int | None = None) -> float:
    """exp(mean NLL per response token), response tokens and final <eos> only, given the prompt."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    n = len(encoded) if limit is None else min(limit, len(encoded))
    order = sorted(range(n), key=lambda i: len(encoded.input_ids[i]))
    total, count = 0.0, 0.0
    for start in range(0, n, batch_size):
        batch = {k: v.to(device) for k, v in collate(encoded, order[start:start + batch_size], pad_id).items()}
        logp, mask = response_logprobs(model, batch)
        total -= float(logp.sum())
        count += float(mask.sum())
    model.train(was_training)
    return math.exp(total / count)


def train_nll(model, encoded: EncodedPairs, val_encoded: EncodedPairs, cfg: SFTConfig, pad_id: int,
              run_dir: Path | None = None, progress: bool = True) -> list[dict]:
    """Train `model` in place by NLL on `encoded`; returns the log rows (also written to run_dir)."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    lengths = [len(ids) for ids in encoded.input_ids]
    batches: list[list[int]] = []
    log: list[dict] = []
    if run_dir is not None:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
        log_file = open(run_dir / "log.jsonl", "w")
    start_time = time.time()
    bar = tqdm(range(cfg.steps), desc="pi_ref (NLL)", disable=not progress, mininterval=1.0)
    rank, world = accelerator.process_index, accelerator.num_processes
    for step in bar:
        if not batches:
            batches = length_buckets(lengths, cfg.batch_size, generator)
        indices = batches.pop()[rank::world]
        batch = {k: v.to(accelerator.device) for k, v in collate(encoded, indices, pad_id).items()}
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        logp, mask = response_logprobs(model, batch)
        loss = -logp.sum() / len(indices)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        token_nll = float(-logp.detach().sum() / mask.sum())
        row = {"step": step + 1, "loss": round(float(loss.detach()), 4), "token_nll": round(token_nll, 4),
               "lr": lr_at(step, cfg), "examples_seen": (step + 1) * cfg.batch_size,
               "seconds": round(time.time() - start_time, 1)}
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            row["val_reply_ppl"] = round(reply_perplexity(model, val_encoded, pad_id, limit=cfg.eval_pairs), 2)
            bar.set_postfix(val_ppl=row["val_reply_ppl"])
        log.append(row)
        if run_dir is not None:
            log_file.write(json.dumps(row) + "\n")
    if run_dir is not None:
        log_file.close()
    accelerator.unwrap_model(model).eval()
    return log
