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

from alol_min.lm.generation import DecodeConfig, generate_responses

METRIC_PATH = Path(__file__).parent / "metrics" / "distinct_n"


@lru_cache(maxsize=1)
def _distinct_metric():

    return evaluate.load(str(METRIC_PATH))


def distinct_n(texts, max_n: int = 3) -> dict[str, float]:
    """{"distinct_1": ..., "distinct_2": ..., "distinct_3": ...} over all `texts`."""
    return _distinct_metric().compute(predictions=list(texts), max_n=max_n)


def score_responses(prompts, responses, reward) -> dict[str, float]:
    """Mean of every reward component and the total, mean length in words, distinct-1/2/3."""
    scores = reward(list(prompts), list(responses))
    out = {name: float(np.mean(values)) for name, values in scores.items()}
    out["length"] = float(np.mean([len(r.split()) for r in responses]))
    out.update(distinct_n(responses))
    return out


def scores_by_group(prompts, responses, reward, groups) -> dict[str, float]:
    """{"<group>/total": mean total, "<group>/n": count} per group label (e.g. HH-RLHF's subsets),
    when there are at least two groups; {} otherwise."""
    labels = sorted(set(groups))
    if len(labels) < 2:
        return {}
    out = {}
    for label in labels:
        idx = [i for i, g in enumerate(groups) if g == label]
        totals = reward([prompts[i] for i in idx], [responses[i] for i in idx])["total"]
        out[f"{label}/total"] = float(np.mean(totals))
        out[f"{label}/n"] = len(idx)
    return out


def evaluate_policy(
    model,
    tokenizer,
    prompts,
    reward,
    decode: DecodeConfig,
    max_prompt_tokens: int,
    progress: bool = False,
) -> tuple[dict[str, float], list[str]]:
    """Decode one response per prompt with the documented setting and score it."""
    responses = generate_responses(
        model, tokenizer, prompts, decode, max_prompt_tokens, progress=progress
    )
    return score_responses(prompts, responses, reward), responses
