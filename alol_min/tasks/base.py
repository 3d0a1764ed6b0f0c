"""What the pipeline knows about a task: its data, its training reward and its test reward.

Every task is a `Task`; shared code reads only these fields and never asks which task it has.
The tasks themselves are built in `tasks/chitchat.py`, `tasks/tiny_hh.py` and `tasks/hh_rlhf.py`
and listed in `alol_min.tasks.TASKS`.

`rejected` responses (for DPO and PRO): a task with a `rejected` column has real ones; otherwise
each prompt is paired with the reply of another training pair (a reply to a different prompt, so
clearly worse).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


class DataError(ValueError):
    """A data file or source that cannot be read as asked: the message names it."""


@dataclass
class DataReport:
    """What loading kept and what it dropped, by reason: nothing is dropped silently."""

    kept: dict[str, int] = field(default_factory=dict)
    dropped: Counter = field(default_factory=Counter)

    def __str__(self) -> str:
        kept = ", ".join(f"{k} {v:,}" for k, v in self.kept.items())
        dropped = ", ".join(f"{v:,} {k}" for k, v in sorted(self.dropped.items())) or "none"
        return f"kept: {kept}; dropped: {dropped}"


@dataclass
class Task:
    """What the pipeline needs to know about a task."""

    name: str
    data: object
    """DatasetDict with train / validation / test (columns prompt, response, ...)."""
    report: object
    train_reward: object
    """R used for the offline data, V_ref and validation (model selection)."""
    test_reward: object
    """R used for the final test evaluation."""
    reward_stats: dict = field(default_factory=dict)
    offline_pool: object = None
    """The training pairs the offline RL set is drawn from."""
    offline_reward: Callable | None = None
    """`offline_reward(pairs) -> scores` for a reward that was fit on the training pairs (scored out of
    fold, so the fit does not flatter them); None: `train_reward` on the pairs."""
    quality_pools: Callable | None = None
    """`quality_pools(pool) -> ((low, high), describe)`: the indices of the pool's low- and
    high-quality pairs, and `describe(kept indices) -> dict` for the report (`rated_pool`); None: the
    task has no quality labels."""

    def offline_rewards(self, subset) -> dict[str, np.ndarray]:
        """Rewards of offline training pairs (honest: never scored by a model fit on them)."""
        if self.offline_reward is not None:
            return self.offline_reward(subset)
        return self.train_reward(list(subset["prompt"]), list(subset["response"]))

    def rejected(self, subset) -> list[str]:
        if "rejected" in subset.column_names:
            return list(subset["rejected"])
        responses = list(subset["response"])
        return responses[1:] + responses[:1]


POOLS = ("all", "low-rated", "high-rated")


def rated_pool(task: Task, which: str):
    """(training pairs, report): the offline pool, or its low- or high-quality part.

    The analogue of the paper's Reddit down-voted / up-voted training sets (Section 4, the
    noisy-data experiment). The task says which pairs are low and high quality
    (`Task.quality_pools`); both parts are cut to the same size (the smaller part's, taking pairs in
    their order), so that the two trainings differ in data quality, not quantity.
    """
    if which not in POOLS:
        raise ValueError(f"unknown pool {which!r}; choose one of {POOLS}")
    pool = task.offline_pool
    if which == "all":
        return pool, {"pool": "all", "pairs": len(pool)}
    if task.quality_pools is None:
        raise ValueError(f"task {task.name!r} has no quality labels: only pool 'all' exists")
    (low, high), report = task.quality_pools(pool)
    size = min(len(low), len(high))
    keep = (low if which == "low-rated" else high)[:size]
    report = {"pool": which, "pairs": int(size), **report(keep)}
    return pool.select(keep.tolist()), report
