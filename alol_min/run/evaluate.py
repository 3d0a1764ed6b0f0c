"""Test-time evaluation: decode, score with the reward (every component), length, distinct-n.

distinct-n = unique word n-grams / all word n-grams, pooled over the outputs (an `evaluate`
metric module shipped in `alol_min/run/metrics/distinct_n`, loaded by path: the hub's metrics
cannot load offline).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import evaluate
import numpy as np
import torch

from alol_min.lm.batching import EncodedPairs, collate, encode_prompts, response_logprobs
from alol_min.lm.generation import DecodeConfig, generate_responses, sample_response_ids

METRIC_PATH = Path(__file__).parent / "metrics" / "distinct_n"


@lru_cache(maxsize=1)
def _distinct_metric():

    return evaluate.load(str(METRIC_PATH))


def distinct_n(texts, max_n: int = 3) -> dict[str, float]:
    """{"distinct_1": ..., "distinct_2": ..., "distinct_3": ...} over all `texts`."""
    return _distinct_metric().compute(predictions=list(texts), max_n=max_n)


def score_responses(prompts, responses, reward, groups=None) -> dict[str, float]:
    """Mean of every reward component and the total, mean length in words, distinct-1/2/3; with
    `groups` (a label per prompt), each group's total too (`scores_by_group`), from the same
    reward call."""
    scores = reward(list(prompts), list(responses))
    out = {name: float(np.mean(values)) for name, values in scores.items()}
    out["length"] = float(np.mean([len(r.split()) for r in responses]))
    out.update(distinct_n(responses))
    if groups is not None:
        out.update(scores_by_group(scores["total"], groups))
    return out


def scores_by_group(totals, groups) -> dict[str, float]:
    """{"<group>/total": mean total, "<group>/n": count} per group label (e.g. HH-RLHF's subsets),
    when there are at least two groups; {} otherwise."""
    labels = sorted(set(groups))
    if len(labels) < 2:
        return {}
    totals, groups = np.asarray(totals, float), np.asarray(groups)
    out = {}
    for label in labels:
        out[f"{label}/total"] = float(totals[groups == label].mean())
        out[f"{label}/n"] = int((groups == label).sum())
    return out


def evaluate_policy(
    model,
    tokenizer,
    prompts,
    reward,
    decode: DecodeConfig,
    max_prompt_tokens: int,
    progress: bool = False,
    groups=None,
) -> tuple[dict[str, float], list[str]]:
    """Decode one response per prompt with the documented setting and score it (`groups`: see
    `score_responses`)."""
    responses = generate_responses(
        model, tokenizer, prompts, decode, max_prompt_tokens, progress=progress
    )
    return score_responses(prompts, responses, reward, groups), responses


@torch.no_grad()
def kl_to_reference(
    policy, ref_model, tokenizer, prompts, decode: DecodeConfig, max_prompt_tokens: int
) -> float:
    """KL(pi_theta || pi_ref) per response on the policy's own samples (seed decode.seed, the same
    for every model): the mean over prompts of

        sum_t [log pi_theta(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t)],   y ~ pi_theta(.|x),

    the k1 estimator that PPO's penalty uses, so every method's KL is measured alike. `decode` must
    sample pi_theta itself (top_p 1, temperature 1): under truncation the replies come from another
    distribution and the mean is no KL (it can fall below 0)."""
    if decode.top_p != 1.0 or decode.temperature != 1.0:
        raise ValueError(f"kl_to_reference samples pi_theta itself: top_p and temperature must be 1, "
                         f"got {decode.top_p} and {decode.temperature}")  # fmt: skip
    prompt_ids = encode_prompts(tokenizer, prompts, max_prompt_tokens)
    kl = []
    for start in range(0, len(prompt_ids), decode.batch_size):
        chunk = prompt_ids[start : start + decode.batch_size]
        _, _, logp, ref_logp, mask = sampled_log_probs(
            policy, ref_model, tokenizer, chunk, decode, decode.seed + start
        )
        kl += ((logp - ref_logp) * mask).sum(dim=1).tolist()
    return float(np.mean(kl)) if kl else float("nan")


@torch.no_grad()
def sampled_log_probs(policy, ref_model, tokenizer, prompt_ids, decode: DecodeConfig, seed: int):
    """One reply sampled per prompt, and the per-token log-probs of its sampled ids (never
    re-tokenised) under the policy and pi_ref: (batch, reply ids, logp, ref_logp, mask)."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    replies = sample_response_ids(policy, prompt_ids, decode, eos, pad, seed)
    pairs = EncodedPairs([p + r for p, r in zip(prompt_ids, replies)], [len(p) for p in prompt_ids])
    device = next(policy.parameters()).device
    batch = {k: v.to(device) for k, v in collate(pairs, range(len(pairs)), pad).items()}
    logp, mask = response_logprobs(policy, batch)
    ref_logp, _ = response_logprobs(ref_model.eval(), batch)
    return batch, replies, logp, ref_logp, mask
