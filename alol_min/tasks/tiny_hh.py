"""The tiny-hh task: the generated world's files (`tiny_hh_world`), read back with the HH-RLHF
loader, a Bradley-Terry reward model for training and the world's judge for the test.

As in the paper's HHA setup, the training reward is learned from preference pairs and a different
scorer judges the test outputs; the learned model's own score is reported beside the judge's.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
from datasets import DatasetDict

from alol_min.cache import load_or_build
from alol_min.tasks.base import Task
from alol_min.tasks.hh_files import HHReport
from alol_min.tasks.hh_rlhf import load_hh_rlhf
from alol_min.tasks.preference import bradley_terry_reward
from alol_min.tasks.tiny_hh_judge import TinyHHJudge
from alol_min.tasks.tiny_hh_world import SPLITS, WORLD_VERSION, generate_tiny_hh


def load_tiny_hh(folder=None, *, verbose: bool = False, **generate_kwargs):
    """(DatasetDict train/validation/test, DataReport) of tiny-hh, read with `load_hh_rlhf`.

    folder=None generates into the artifact cache ($ALOL_MIN_CACHE/tiny-hh/<key>), keyed by the
    world version and `generate_kwargs`; a folder without the three files is generated into.
    Columns: prompt (HH text), chosen, rejected, response (= chosen), source_index, subset,
    n_turns, and the metadata family, topic, intent, chosen_type, rejected_type, is_noisy.
    """

    settings = {
        k: p.default
        for k, p in inspect.signature(generate_tiny_hh).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    unknown = set(generate_kwargs) - set(settings)
    if unknown:
        raise TypeError(
            f"unknown tiny-hh setting(s) {sorted(unknown)}; choose from {sorted(settings)}"
        )
    settings.update(generate_kwargs)
    if folder is None:
        inputs = {"world_version": WORLD_VERSION, **settings}
        folder = load_or_build(
            "tiny-hh", inputs, lambda tmp: generate_tiny_hh(tmp, **settings), verbose=verbose
        )
    else:
        folder = Path(folder)
        if not all((folder / f"{s}.jsonl").exists() for s in SPLITS):
            generate_tiny_hh(folder, **settings)
        elif (folder / "config.json").exists():
            stored = json.loads((folder / "config.json").read_text())
            wanted = {"world_version": WORLD_VERSION, **settings}
            differ = {k: (v, stored.get(k)) for k, v in wanted.items() if stored.get(k) != v}
            if differ:
                raise ValueError(
                    f"{folder} was generated with other settings {differ} (asked, stored)"
                )
    report, splits = HHReport(), {}
    for split in SPLITS:
        data, split_report = load_hh_rlhf(Path(folder) / f"{split}.jsonl")
        splits[split] = data
        report.kept[split] = len(data)
        report.dropped.update({f"{split}: {k}": v for k, v in split_report.dropped.items()})
        for reason, places in split_report.where.items():
            report.where.setdefault(f"{split}: {reason}", []).extend(places)
    if verbose:
        print(f"tiny-hh: {report}")
    return DatasetDict(splits), report


class JudgedReward:
    """Test-time scores of tiny-hh: the judge's components and total, plus the training RM's score."""

    def __init__(self, judge, reward_model):
        self.judge, self.reward_model = judge, reward_model
        self.components = tuple(judge.components) + ("train_rm",)
        self.max_total = judge.max_total

    def __call__(self, prompts, responses):
        scores = dict(self.judge(prompts, responses))
        scores["train_rm"] = self.reward_model(prompts, responses)["total"]
        return scores


def label_noise_pools(pool):
    """`Task.quality_pools` of tiny-hh: the pairs whose `chosen` reply is the worse one (is_noisy),
    and the clean pairs."""
    noisy = np.array(pool["is_noisy"], bool)
    low, high = np.flatnonzero(noisy), np.flatnonzero(~noisy)
    counts = {"by": "is_noisy", "noisy_pairs": int(len(low)), "clean_pairs": int(len(high))}
    return (low, high), lambda keep: counts


def tiny_hh_task(n_train: int | None = None, seed: int = 0, verbose: bool = True) -> Task:
    """tiny-hh: as in the paper's HHA setup, a learned reward model (Bradley-Terry, trained on half
    of the training pairs) gives the training rewards, V and validation, and a different judge (the
    world's scoring function) scores the test outputs. The offline RL set is the other half."""
    data, report = load_tiny_hh(**({"n_train": n_train} if n_train else {}))
    train, half = data["train"], len(data["train"]) // 2
    rm_pairs, offline_pool = train.select(range(half)), train.select(range(half, len(train)))
    judge = TinyHHJudge()
    reward, stats = bradley_terry_reward(
        "tiny-hh", rm_pairs, data["validation"], seed=seed, eval_dataset=data["validation"],
        judge=judge, verbose=verbose,
    )  # fmt: skip
    return Task(
        "tiny-hh", data, report, reward, JudgedReward(judge, reward), stats, offline_pool,
        quality_pools=label_noise_pools,
    )  # fmt: skip
