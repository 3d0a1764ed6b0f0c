"""Offline training of pi_theta (initialised from pi_ref) with any method of `losses.METHODS`.

Each step draws a batch from the method's sampling distribution (uniform, p ~ R, p ~ A+, ...),
computes pi_theta's per-token log-probs of the batch's responses, and takes the mean of the
method's per-example loss. pi_ref's log-probs come from the cache built by
`run.prepare.reference_pass`, so no method runs pi_ref during training: A-LoL's step costs what an
NLL step costs. Periodic validation decodes the validation prompts, scores them, and keeps the
best checkpoint by validation reward (the paper's model selection).

Scaling: `grad_accum`, `bf16`, `grad_checkpointing`, LoRA (`lora_r`) and several processes
(`accelerate launch`) work as in `lm.sft` (see its docstring): a step's global batch of
batch_size x grad_accum x processes indices is drawn once, by a sampler seeded alike on every
process, so every process holds the same global index list; each keeps
`rank_slice(batch, rank, processes)` and splits it into grad_accum micro-batches. The update is
that of the mean per-example loss over the global batch.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from alol_min.advantage import (
    draw_batch,
    leftover_fraction,
    rank_slice,
    sampling_weights,
    scaled_step_budget,
)
from alol_min.importance import clip_fraction, clipped_share, sequence_log_ratio
from alol_min.lm.batching import EncodedPairs, collate, scatter_ref_logprobs
from alol_min.lm.loop import (
    JsonlLog,
    LoraOptions,
    adamw,
    finish_training,
    make_accelerator,
    micro_batches,
    policy_logprobs,
    prepare_for_training,
)
from alol_min.losses import (
    dpo_implicit_rewards,
    method_loss,
    method_spec,
    pairwise_loss,
    reward_logit,
)


@dataclass
class OfflineConfig(LoraOptions):
    """Optimisation of pi_theta by an offline method."""

    steps: int = 300
    """Nominal optimiser steps (A-LoL variants run int(steps * p), p = leftover fraction, as the paper)."""
    batch_size: int = 32
    """Examples (or pairs) per micro-batch and process (one process, grad_accum 1: per step)."""
    lr: float = 3e-4
    """AdamW learning rate, constant after warm-up."""
    warmup_steps: int = 20
    """Linear warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Max gradient norm."""
    clip: float | None = 0.9
    """epsilon: importance weights are clipped to [1 - eps, 1 + eps] (the paper's HHA default 0.9)."""
    kl_beta: float = 0.1
    """beta of A-LoL KL (the paper's value is unverified; A-LoL KL needs beta > 0)."""
    gold_floor: float = 0.1
    """u of R-GOLD: per-token probabilities are floored at u."""
    dpo_beta: float = 0.1
    """beta of DPO."""
    pro_sft_weight: float = 0.05
    """Weight of PRO's SFT term."""
    pro_temperature: Literal["logit", "reward"] = "logit"
    """PRO's temperature T = s_0 - s_1 on the reward-model logit scale, s = logit(R / max R), as the
    paper's code (exact for a sigmoid reward model; chitchat's sum of scores gives the logit of
    the mean score); "reward": the reward's own gap R_0 - R_1."""
    scale_steps_by_leftover: bool = True
    """Run the methods that sample only leftovers for int(steps * p) steps, validating every
    int(eval_every * p), as the paper's trainer."""
    eval_every: int = 50
    """Validation every this many steps (int(eval_every * p) for the leftover samplers) and at the
    end."""
    no_improvement: Literal["keep_ref", "keep_last"] = "keep_ref"
    """The checkpoint kept when no validation beats pi_ref's: keep_ref (default) treats pi_ref as
    one of the candidates of model selection, so a run that never improved on it reports pi_ref,
    marked "kept pi_ref" in every table; keep_last keeps the last step, as the paper's HHA code."""
    seed: int = 0
    """Seed of the sampler and of dropout."""
    grad_accum: int = 1
    """Micro-batches per optimiser step: the global batch is batch_size x grad_accum x processes."""
    bf16: bool = False
    """bf16 mixed precision (Accelerate autocast): pays on GPUs and on CPUs with bf16 matrix units."""
    grad_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, ~30% more compute, same loss."""
    probe_pairs: int = 256
    """Fixed training pairs (the first leftovers) whose sequence log-ratio log r is logged at each
    validation, for methods that use pi_ref: the distribution of the importance weights over training."""


@dataclass
class OfflineData:
    """Everything a method may need about the training pairs, aligned by index."""

    encoded: EncodedPairs
    reward: np.ndarray
    advantage: np.ndarray | None = None
    ref_logp: list | None = None
    rejected: EncodedPairs | None = None
    reward_rejected: np.ndarray | None = None
    ref_logp_rejected: list | None = None
    max_reward: float | None = None
    """The reward's largest value (`max_total`): PRO's logit temperature needs it."""
    provenance: dict | None = None
    """The cache keys of what built this data (pi_ref, the offline set, the rejected replies)."""


def batch_loss(
    model, method: str, data: OfflineData, indices, cfg: OfflineConfig, pad_id: int, device="cpu"
):
    """Mean loss of `method` on the examples at `indices`, and a dict of batch statistics: the
    importance clip fraction, or DPO's reward accuracy and margin (TRL's rewards/accuracies and
    rewards/margins: the share of pairs whose implicit reward r_w exceeds r_l, and mean r_w - r_l)."""
    spec = method_spec(method)

    def per_example(values):  # rewards and advantages of the batch, on the model's device
        return torch.as_tensor(values[indices], dtype=torch.float32, device=device)

    batch = {k: v.to(device) for k, v in collate(data.encoded, indices, pad_id).items()}
    logp, mask = policy_logprobs(model, batch)
    ref = None
    if spec.needs_ref:
        ref = scatter_ref_logprobs([data.ref_logp[i].to(device) for i in indices], mask)
    if spec.pairwise:
        rej = {k: v.to(device) for k, v in collate(data.rejected, indices, pad_id).items()}
        logp_r, mask_r = policy_logprobs(model, rej)
        ref_r = (
            scatter_ref_logprobs([data.ref_logp_rejected[i].to(device) for i in indices], mask_r)
            if spec.needs_ref
            else None
        )
        r_w = per_example(data.reward)
        r_l = per_example(data.reward_rejected) if data.reward_rejected is not None else None
        if method == "pro" and cfg.pro_temperature == "logit" and r_l is not None:
            if data.max_reward is None:
                raise ValueError("PRO's logit temperature needs OfflineData.max_reward")
            r_w, r_l = reward_logit(r_w, data.max_reward), reward_logit(r_l, data.max_reward)
        losses = pairwise_loss(
            method,
            logp_chosen=logp,
            mask_chosen=mask,
            logp_rejected=logp_r,
            mask_rejected=mask_r,
            ref_logp_chosen=ref,
            ref_logp_rejected=ref_r,
            reward_chosen=r_w,
            reward_rejected=r_l,
            beta=cfg.dpo_beta,
            sft_weight=cfg.pro_sft_weight,
        )
        stats = {}
        if method.startswith("dpo"):
            with torch.no_grad():
                rw, rl = dpo_implicit_rewards(
                    logp.float(), mask, logp_r.float(), mask_r,
                    None if ref is None else ref.float(), None if ref_r is None else ref_r.float(),
                    cfg.dpo_beta,
                )  # fmt: skip
            stats = {
                "rewards_accuracy": float((rw > rl).float().mean()),
                "rewards_margin": float((rw - rl).mean()),
            }
        return losses.mean(), stats
    advantage = per_example(data.advantage) if spec.needs_value else None
    losses = method_loss(
        method,
        logp=logp,
        mask=mask,
        ref_logp=ref,
        reward=per_example(data.reward),
        advantage=advantage,
        clip=cfg.clip,
        kl_beta=cfg.kl_beta,
        gold_floor=cfg.gold_floor,
    )
    stats = {}
    if spec.importance is not None:
        stats["clip_fraction"] = clip_fraction(
            logp.detach(), ref, mask, cfg.clip, per_token=spec.importance == "token"
        )
    return losses.mean(), stats


PROBE_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def probe_indices(data: OfflineData, n: int) -> np.ndarray:
    """The first n training pairs with A > 0 (all pairs if there is no advantage): a fixed probe set."""
    pool = (
        np.arange(len(data.encoded))
        if data.advantage is None
        else np.flatnonzero(data.advantage > 0)
    )
    return pool[:n]


@torch.no_grad()
def probe_log_ratios(
    model, data: OfflineData, indices: np.ndarray, pad_id: int, device="cpu", batch_size: int = 64,
    rejected: bool = False,
) -> np.ndarray:  # fmt: skip
    """log r = log pi_theta(y|x) - log pi_ref(y|x) of the pairs at `indices` (eval mode, no dropout);
    `rejected`: of their rejected replies."""
    encoded, ref_logp = (
        (data.rejected, data.ref_logp_rejected) if rejected else (data.encoded, data.ref_logp)
    )
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size].tolist()
        batch = {k: v.to(device) for k, v in collate(encoded, chunk, pad_id).items()}
        logp, mask = policy_logprobs(model, batch)
        ref = scatter_ref_logprobs([ref_logp[i].to(device) for i in chunk], mask)
        out.append(sequence_log_ratio(logp.float(), ref.float(), mask).cpu())
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0)


def probe_row(log_r: np.ndarray, clip: float | None) -> dict:
    """Quantiles of log r and the share of weights r at a clip bound (`importance.clipped_share`)."""
    row = {
        f"logr_p{round(q * 100):02d}": round(float(v), 4)
        for q, v in zip(PROBE_QUANTILES, np.quantile(log_r, PROBE_QUANTILES))
    }
    if clip is not None:
        row["probe_clipped"] = round(clipped_share(torch.as_tensor(log_r), clip), 4)
    return row


def train_offline(
    ref_model,
    method: str,
    data: OfflineData,
    cfg: OfflineConfig,
    pad_id: int,
    validate=None,
    run_dir: Path | None = None,
    progress: bool = True,
    initial_scores: dict | None = None,
    costs: dict | None = None,
):
    """Train pi_theta (a copy of pi_ref) with `method`; returns (best model, log rows).

    `validate(model) -> dict` (with a "total" key) is called every `eval_every` steps (scaled by the
    leftover fraction for the leftover samplers) and at the end; the best model by validation total
    is returned. pi_ref's own score is the first bar to beat; when nothing beats it,
    `cfg.no_improvement` returns pi_ref (keep_ref) or the last step (keep_last), and the last log row
    records the kept checkpoint's step as "kept_step".
    `initial_scores`: pi_ref's `validate` scores when the caller already has them (they are the same
    for every run), logged as step 0 instead of validating pi_ref again.
    `costs`: what the method paid before its first step ({"samples_generated": pi_ref's samples
    for the V fit, "reward_calls": ...}), written into every row beside the online methods' own
    counts (`ppo.train_ppo`).
    Under several processes every process validates (the same numbers) and only the main one writes
    run_dir.
    """
    spec = method_spec(method)
    if spec.online:
        raise ValueError(f"{method} samples its own data: train it with ppo.train_ppo")
    costs = dict(costs or {})
    if spec.pairwise and (
        data.rejected is None or (spec.needs_ref and data.ref_logp_rejected is None)
    ):
        raise ValueError(
            f"{method} trains on (chosen, rejected) pairs, but the OfflineData has no rejected "
            "replies (or no pi_ref log-probs of them): prepare_offline(..., rejected=True)"
        )
    accelerator = make_accelerator(cfg)
    world = accelerator.num_processes
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)  # the same stream on every process
    weights = sampling_weights(
        spec.sampler, reward=data.reward, advantage=data.advantage, num_examples=len(data.encoded)
    )
    steps, eval_every = cfg.steps, cfg.eval_every
    if spec.scales_steps and cfg.scale_steps_by_leftover:
        p = leftover_fraction(data.advantage)
        steps, eval_every = scaled_step_budget(cfg.steps, p), scaled_step_budget(cfg.eval_every, p)
    global_size = cfg.batch_size * cfg.grad_accum * world
    model = prepare_for_training(copy.deepcopy(ref_model), cfg)
    optimizer = adamw(model, cfg)
    model, optimizer = accelerator.prepare(model, optimizer)
    log, seen = [], set()
    best_score, best_state, kept_step = -float("inf"), None, None
    probe = (
        probe_indices(data, cfg.probe_pairs)
        if spec.needs_ref and data.ref_logp is not None
        else np.zeros(0, int)
    )
    probe_log_r = None
    if validate is not None:
        scores = (
            initial_scores
            if initial_scores is not None
            else validate(accelerator.unwrap_model(model))
        )
        best_score = scores["total"]
        if cfg.no_improvement == "keep_ref":
            best_state, kept_step = copy.deepcopy(accelerator.unwrap_model(model).state_dict()), 0
        log.append({"step": 0, "examples_seen": 0, **costs,
                    **{f"val_{k}": v for k, v in scores.items()}})  # fmt: skip
    log_file = JsonlLog(None)
    if run_dir is not None and accelerator.is_main_process:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(
            json.dumps(
                {
                    "method": method,
                    "steps_run": steps,
                    "eval_every_run": eval_every,
                    "processes": world,
                    "global_batch": global_size,
                    **asdict(cfg),
                },
                indent=1,
            )
        )
        log_file = JsonlLog(run_dir / "log.jsonl")
        for row in log:
            log_file.write(row)
    start = time.time()
    bar = tqdm(
        range(steps),
        desc=spec.label,
        disable=not progress or not accelerator.is_main_process,
        mininterval=1.0,
    )
    for step in bar:
        global_batch = draw_batch(weights, global_size, generator)
        seen.update(global_batch.tolist())
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
        model.train()  # validation decodes in eval mode
        loss, stats = _optimizer_step(
            model, optimizer, accelerator, method, data, cfg, pad_id, global_batch
        )
        if not np.isfinite(loss):
            raise FloatingPointError(f"{method}: loss is {loss} at step {step + 1}")
        row = {
            "step": step + 1,
            "loss": round(loss, 5),
            "lr": optimizer.param_groups[0]["lr"],
            "examples_seen": (step + 1) * global_size,
            "unique_examples_seen": len(seen),
            **costs,
            "seconds": round(time.time() - start, 2),
        }
        row.update({k: round(v, 4) for k, v in stats.items()})
        if validate is not None and ((step + 1) % eval_every == 0 or step + 1 == steps):
            unwrapped = accelerator.unwrap_model(model)
            scores = validate(unwrapped)
            row.update({f"val_{k}": v for k, v in scores.items()})
            if len(probe):
                probe_log_r = probe_log_ratios(unwrapped, data, probe, pad_id, accelerator.device)
                row.update(probe_row(probe_log_r, cfg.clip))
                if method == "dpo":
                    row.update(
                        dpo_probe_row(unwrapped, data, probe, probe_log_r, cfg, pad_id, accelerator)
                    )
            bar.set_postfix(loss=row["loss"], val=round(scores["total"], 3))
            last = step + 1 == steps and best_state is None  # keep_last: nothing beat pi_ref
            if scores["total"] > best_score or last:
                best_score = max(best_score, scores["total"])
                best_state = copy.deepcopy(unwrapped.state_dict())
                kept_step = step + 1
                row["best"] = True
                if probe_log_r is not None and log_file.path is not None:  # the kept weights
                    kept = {"step": step + 1, "clip": cfg.clip,
                            "log_ratio": np.round(probe_log_r, 4).tolist()}  # fmt: skip
                    (run_dir / "importance.json").write_text(json.dumps(kept))
        log.append(row)
        log_file.write(row)
    model = accelerator.unwrap_model(model)
    if best_state is not None:
        model.load_state_dict(best_state)
    model = finish_training(model, cfg)
    if log:
        log[-1]["kept_step"] = steps if kept_step is None else kept_step
    return model, log


def dpo_probe_row(model, data, probe, log_r_chosen, cfg, pad_id, accelerator) -> dict:
    """DPO's reward accuracy and margin on the fixed probe pairs (as TRL logs them at evaluation)."""
    log_r_rejected = probe_log_ratios(model, data, probe, pad_id, accelerator.device, rejected=True)
    r_w, r_l = cfg.dpo_beta * log_r_chosen, cfg.dpo_beta * log_r_rejected
    return {
        "probe_rewards_accuracy": round(float(np.mean(r_w > r_l)), 4),
        "probe_rewards_margin": round(float(np.mean(r_w - r_l)), 4),
    }


def _optimizer_step(model, optimizer, accelerator, method, data, cfg, pad_id, global_batch):
    """One update on `global_batch`: this process's grad_accum micro-batches, gradients summed, then
    clipped and applied. Each micro-batch's mean loss is weighted len(micro) x processes / G, so the
    update is that of the global batch's mean loss. Returns (that mean loss, the batch statistics of
    `batch_loss` averaged over micro-batches and processes)."""
    rank, world = accelerator.process_index, accelerator.num_processes
    micro = micro_batches(rank_slice(global_batch, rank, world).tolist(), 0, 1, cfg.grad_accum)
    optimizer.zero_grad(set_to_none=True)
    total, names, sums = 0.0, None, None
    for k, indices in enumerate(micro):
        sync = contextlib.nullcontext() if k == len(micro) - 1 else accelerator.no_sync(model)
        with sync:
            with accelerator.autocast():
                mean_loss, stats = batch_loss(
                    model, method, data, indices, cfg, pad_id, accelerator.device
                )
                loss = mean_loss * len(indices) * world / len(global_batch)
            accelerator.backward(loss)
        names = names or sorted(stats)  # the same keys for every micro-batch of a method
        values = [loss.item(), *(stats[n] for n in names)]
        step_sums = torch.tensor(values, device=accelerator.device, dtype=torch.float64)
        sums = step_sums if sums is None else sums + step_sums
    accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    sums = accelerator.reduce(sums, "sum")
    total = float(sums[0]) / world
    count = len(micro) * world
    return total, {n: float(sums[i + 1]) / count for i, n in enumerate(names)}
