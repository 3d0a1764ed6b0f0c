"""The precomputation between pi_ref and training: rewards, V_ref, advantages, reference log-probs.

1. pi_ref samples k responses per validation prompt; the reward scores them   -> targets [N, k]
2. V_ref is fit on (frozen pi_ref prompt states, mean target)                 -> R^2 vs ceiling
3. one pass of frozen pi_ref over the offline training pairs gives, at once,
   the per-token log pi_ref(y_t | x, y_<t) of every response (cached, so A-LoL never runs
   pi_ref again: the importance weight costs nothing at training time) and V_ref(x)
4. A = R(x, y) - V_ref(x) on the training pairs; the positive ones are the leftovers.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from alol_min.advantage import compute_advantage, leftover_fraction
from alol_min.cache import (
    cache_key,
    config_inputs,
    dataset_digest,
    load_or_build,
    source_digest,
)
from alol_min.extensions.neighbour_value import fit_neighbour_value
from alol_min.lm.batching import (
    EncodedPairs,
    collate,
    encode_prompts,
    response_logprobs_from_states,
)
from alol_min.lm.generation import DecodeConfig, generate_responses
from alol_min.lm.reference import encode_split
from alol_min.losses import method_spec
from alol_min.run.train import OfflineData
from alol_min.tasks.base import rated_pool
from alol_min.values import ValueConfig, fit_value, layer_states, noise_ceiling, prompt_states


def sample_rewards(
    model,
    tokenizer,
    prompts,
    reward,
    k: int,
    decode: DecodeConfig,
    max_prompt_tokens: int,
    progress: bool = False,
) -> tuple[np.ndarray, list[str]]:
    """Rewards of k pi_ref samples per prompt: ([N, k] totals, the N*k responses prompt-major)."""
    repeated = [p for p in prompts for _ in range(k)]
    responses = generate_responses(
        model, tokenizer, repeated, decode, max_prompt_tokens, progress=progress
    )
    totals = np.asarray(reward(repeated, responses)["total"], float).reshape(len(prompts), k)
    return totals, responses


def fit_value_estimate(
    model,
    tokenizer,
    prompts,
    reward,
    value_cfg: ValueConfig,
    decode: DecodeConfig,
    max_prompt_tokens: int,
    progress: bool = False,
):
    """Fit V_ref on pi_ref's own samples for `prompts`; returns (head, report).

    The report has held-out R^2 against the k-sample mean, the noise ceiling of that target on the
    same held-out prompts, and their ratio (the share of the achievable R^2 the fit reaches).
    """
    start = time.time()
    samples, responses = sample_rewards(
        model,
        tokenizer,
        prompts,
        reward,
        value_cfg.samples_per_prompt,
        decode,
        max_prompt_tokens,
        progress,
    )
    sample_seconds = time.time() - start
    states = prompt_states(
        model, encode_prompts(tokenizer, prompts, max_prompt_tokens), tokenizer.pad_token_id
    )
    replies = np.array(responses, dtype=object).reshape(samples.shape)
    targets = samples.mean(axis=1)
    if value_cfg.estimator == "neighbours":  # not in the paper: borrows pi_ref's replies
        head, report = fit_neighbour_value(
            states, targets, reward.max_total, value_cfg, progress,
            prompts=list(prompts), replies=replies, reward=reward,
        )  # fmt: skip
    else:
        head, report = fit_value(states, targets, reward.max_total, value_cfg, progress)
    report.update(
        {
            "sample_seconds": round(sample_seconds, 1),
            "fit_seconds": round(time.time() - start - sample_seconds, 1),
            "reward_mean": float(samples.mean()),
            "reward_sd": float(samples.std()),
        }
    )
    if value_cfg.samples_per_prompt >= 2:
        report["noise_all"] = noise_ceiling(samples)
        held = report.get("heldout_indices", [])
        if held:
            report["noise_heldout"] = noise_ceiling(samples[held])
            ceiling = report["noise_heldout"]["ceiling_r2"]
            report["share_of_ceiling"] = (
                report["heldout_r2"] / ceiling if ceiling > 0 else float("nan")
            )
    report["samples"] = samples
    return head, report


@torch.no_grad()
def reference_pass(
    model,
    encoded: EncodedPairs,
    pad_id: int,
    head=None,
    batch_size: int = 64,
    progress: bool = False,
    prompts=None,
) -> dict:
    """One forward pass of frozen pi_ref over prompt <eos> response <eos>.

    Returns `ref_logp` (a list of per-example response-token log-probs) and, with a value head,
    `value` (V_ref(x) from the prompt positions of the same pass: a causal LM's states at the prompt
    positions do not depend on the response). `head` is any estimator from `values.fit_value`;
    `prompts` (the pairs' prompt texts) is what the "neighbours" estimator needs beside the states.
    The output layer runs at the response positions only (`response_logprobs_from_states`): the same
    log-probs as the full softmax (bit for bit on chitchat's 20,000 pairs), about a third faster.
    """
    model.eval()
    device = next(model.parameters()).device
    ref_logp: list[torch.Tensor] = [None] * len(encoded)
    values = np.zeros(len(encoded))
    order = sorted(range(len(encoded)), key=lambda i: len(encoded.input_ids[i]))
    for start in tqdm(range(0, len(order), batch_size), desc="pi_ref pass", disable=not progress):
        idx = order[start : start + batch_size]
        batch = {k: v.to(device) for k, v in collate(encoded, idx, pad_id).items()}
        out = model.base_model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            output_hidden_states=head is not None,
        )
        logp = response_logprobs_from_states(model, out.last_hidden_state, batch).cpu()
        mask = batch["response_mask"].cpu().bool()
        for b, i in enumerate(idx):
            ref_logp[i] = logp[b][mask[b]].clone()
        if head is not None:
            states = [
                layer_states(out.hidden_states, b, encoded.response_start[i])
                for b, i in enumerate(idx)
            ]
            values[idx] = head.predict(
                states, [prompts[i] for i in idx] if prompts is not None else None
            )
    result = {"ref_logp": ref_logp}
    if head is not None:
        result["value"] = values
    return result


def advantage_summary(reward_total: np.ndarray, value: np.ndarray) -> dict:
    """A = R - V on the training pairs, the leftover fraction, and how much V changes A's ranking."""
    advantage = compute_advantage(reward_total, value)
    constant = reward_total - value.mean()
    return {
        "advantage": advantage,
        "leftover_fraction": leftover_fraction(advantage),
        "mean_advantage": float(advantage.mean()),
        "value_sd": float(value.std()),
        "corr_advantage_reward": float(np.corrcoef(advantage, reward_total)[0, 1]),
        "sign_differs_from_constant_v": float(((advantage > 0) != (constant > 0)).mean()),
    }


VALUE_SOURCE = (
    "alol_min.values", "alol_min.advantage", "alol_min.run.prepare", "alol_min.lm.generation",
    "alol_min.lm.batching", "alol_min.extensions.neighbour_value",
)  # fmt: skip
"""The modules whose source is part of the V_ref / advantage / rejected-replies cache keys (the
reward's own code is in the reward's key, which these keys name)."""


def prepare_offline(
    cfg,
    task,
    model,
    tokenizer,
    model_cfg,
    ref_folder,
    rejected: bool | None = None,
):
    """Rewards, V_ref, advantages and pi_ref log-probs of the offline set (cached).

    `rejected`: also score the pairs' rejected replies and take pi_ref's log-probs of them, which only
    the pairwise methods (DPO, PRO) read; None: when `cfg.methods` has one. They are cached apart,
    so a run without pairwise methods skips that pass.
    """
    pool, pool_report = rated_pool(task, cfg.pool)
    if cfg.pool != "all":
        print(f"offline pool {cfg.pool}: {json.dumps(pool_report)}")
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(pool), size=min(cfg.n_offline, len(pool)), replace=False))
    train = pool.select(pick.tolist())
    value_prompts = task.data["validation"]["prompt"][: cfg.n_value_prompts]
    reward_key = {
        k: v for k, v in task.reward_stats.items() if "seconds" not in k
    }  # timings differ per build
    inputs = {
        "task": cfg.task,
        "pi_ref": str(ref_folder.name),
        "pool": dataset_digest(pool),
        "reward": reward_key,
        "reward_cache": getattr(task.train_reward, "cache_key", None),
        "n_offline": cfg.n_offline,
        "value": config_inputs(cfg.value),
        "decode": asdict(cfg.decode),
        "prompts": cache_key({"p": value_prompts}),
        "source": source_digest(*VALUE_SOURCE),
    }
    encoded = encode_split(tokenizer, train, model_cfg)

    def build(folder: Path) -> None:
        head, report = fit_value_estimate(
            model,
            tokenizer,
            value_prompts,
            task.train_reward,
            cfg.value,
            cfg.decode,
            model_cfg.max_prompt_tokens,
        )
        torch.save(head.state_dict(), folder / "value_head.pt")
        passed = reference_pass(
            model, encoded, tokenizer.pad_token_id, head=head, prompts=list(train["prompt"])
        )
        scores = task.offline_rewards(train)
        summary = advantage_summary(scores["total"], passed["value"])
        arrays = {
            "index": pick,
            "value": passed["value"],
            "advantage": summary["advantage"],
            "value_samples": report.pop("samples"),
        }
        arrays.update({f"reward_{k}": v for k, v in scores.items()})
        np.savez(folder / "offline.npz", **arrays)
        torch.save({"ref_logp": passed["ref_logp"]}, folder / "ref_logp.pt")
        report.pop("history", None)
        report.pop("heldout_indices", None)
        stats = {k: v for k, v in summary.items() if k != "advantage"}
        (folder / "report.json").write_text(
            json.dumps({"value": report, "advantage": stats}, indent=1, default=float)
        )

    folder = load_or_build(f"offline-{cfg.task}", inputs, build)
    arrays = dict(np.load(folder / "offline.npz"))
    ref = torch.load(folder / "ref_logp.pt", weights_only=True)
    offline = OfflineData(encoded, arrays["reward_total"], arrays["advantage"], ref["ref_logp"])
    offline.max_reward = float(task.train_reward.max_total)
    offline.provenance = {"pi_ref": str(ref_folder.name), "offline": folder.name}
    pairwise = any(method_spec(m).pairwise for m in cfg.methods)
    if rejected or (rejected is None and pairwise):
        rejected_responses = task.rejected(train)
        offline.rejected = encode_split(
            tokenizer, {"prompt": train["prompt"], "response": rejected_responses}, model_cfg
        )

        def build_rejected(folder: Path) -> None:
            passed = reference_pass(model, offline.rejected, tokenizer.pad_token_id)
            scores = task.train_reward(list(train["prompt"]), rejected_responses)
            np.savez(folder / "rejected.npz", reward_rejected=scores["total"])
            torch.save({"ref_logp_rejected": passed["ref_logp"]}, folder / "ref_logp_rejected.pt")

        rej_inputs = {
            "task": cfg.task,
            "pi_ref": str(ref_folder.name),
            "reward": reward_key,
            "reward_cache": getattr(task.train_reward, "cache_key", None),
            "pairs": cache_key({"p": list(train["prompt"]), "r": list(rejected_responses)}),
            "source": source_digest(*VALUE_SOURCE),
        }
        rej_folder = load_or_build(f"offline-rejected-{cfg.task}", rej_inputs, build_rejected)
        arrays["reward_rejected"] = np.load(rej_folder / "rejected.npz")["reward_rejected"]
        offline.reward_rejected = arrays["reward_rejected"]
        offline.provenance["rejected"] = rej_folder.name
        offline.ref_logp_rejected = torch.load(
            rej_folder / "ref_logp_rejected.pt", weights_only=True
        )["ref_logp_rejected"]
    return offline, json.loads((folder / "report.json").read_text()), arrays, train
