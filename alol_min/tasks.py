"""The embedded tasks, each with its data, its training reward and its test-time reward.

    chitchat  real human dialogue (previous turn -> reply); reward = ChitchatReward (sentiment,
              safety, TF-IDF diversity, fluency, relevance), the same at training and test time;
              offline rewards are cross-fitted so the fitted parts do not flatter the training pairs.
    tiny-hh   a generated assistant world in the HH-RLHF format; as in the paper's HHA setup, a
              learned reward model (Bradley-Terry, trained by the project on half of the training
              pairs) gives the training rewards, V and validation, and a different judge (the world's
              scoring function) scores the test outputs. The offline RL set is the other half.

`rejected` responses (for DPO and PRO): tiny-hh has real ones; chitchat pairs each prompt with the
reply of another training pair (a reply to a different prompt, so clearly worse).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .cache import dataset_digest, load_or_build
from .data import ChitchatConfig, load_chitchat

TASKS = ("chitchat", "tiny-hh")


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

    def offline_rewards(self, subset) -> dict[str, np.ndarray]:
        """Rewards of offline training pairs (honest: never scored by a model fit on them)."""
        if self.name == "chitchat":
            from .rewards import cross_fit_rewards

            return cross_fit_rewards(self.train_reward, subset, seed=0)
        return self.train_reward(list(subset["prompt"]), list(subset["response"]))

    def rejected(self, subset) -> list[str]:
        if "rejected" in subset.column_names:
            return list(subset["rejected"])
        responses = list(subset["response"])
        return responses[1:] + responses[:1]


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


def _chitchat(data_cfg: ChitchatConfig | None, seed: int, verbose: bool) -> Task:
    from .rewards import ChitchatReward

    data, report = load_chitchat(data_cfg or ChitchatConfig())
    inputs = {"task": "chitchat", "train": dataset_digest(data["train"]), "seed": seed}

    def build(folder: Path) -> None:
        reward, stats = ChitchatReward.build(data["train"], validation=data["validation"], seed=seed)
        reward.save(folder)
        (folder / "stats.json").write_text(json.dumps(stats, indent=1, default=float))

    folder = load_or_build("reward-chitchat", inputs, build, verbose=verbose)
    reward = ChitchatReward.load(folder)
    stats = json.loads((folder / "stats.json").read_text())
    return Task("chitchat", data, report, reward, reward, stats, data["train"])


def _tiny_hh(n_train: int | None, seed: int, verbose: bool) -> Task:
    from .preference import PreferenceReward, pairwise_accuracy, train_preference_model
    from .tiny_hh import TinyHHJudge, load_tiny_hh

    data, report = load_tiny_hh(**({"n_train": n_train} if n_train else {}))
    half = len(data["train"]) // 2
    rm_pairs, offline_pool = data["train"].select(range(half)), data["train"].select(range(half, len(data["train"])))
    inputs = {"task": "tiny-hh", "train": dataset_digest(rm_pairs, ("prompt", "chosen", "rejected")), "seed": seed}

    def build(folder: Path) -> None:
        model, tokenizer, stats = train_preference_model(rm_pairs, eval_dataset=data["validation"], seed=seed)
        reward = PreferenceReward(model, tokenizer)
        reward.save(folder)
        judge = TinyHHJudge()
        val = data["validation"]
        j_c, j_r = judge(val["prompt"], val["chosen"])["total"], judge(val["prompt"], val["rejected"])["total"]
        r_c, r_r = reward(val["prompt"], val["chosen"])["total"], reward(val["prompt"], val["rejected"])["total"]
        stats = {k: v for k, v in stats.items() if not isinstance(v, list)}
        stats["heldout_pairwise_accuracy"] = pairwise_accuracy(reward, val["prompt"], val["chosen"], val["rejected"])
        stats["disagreement_with_judge"] = float(((r_c > r_r) != (j_c > j_r)).mean())
        (folder / "stats.json").write_text(json.dumps(stats, indent=1, default=float))

    folder = load_or_build("reward-tiny-hh", inputs, build, verbose=verbose)
    reward = PreferenceReward.load(folder)
    stats = json.loads((folder / "stats.json").read_text())
    return Task("tiny-hh", data, report, reward, JudgedReward(TinyHHJudge(), reward), stats, offline_pool)


def load_task(name: str, *, data_cfg: ChitchatConfig | None = None, n_train: int | None = None,
              seed: int = 0, verbose: bool = True) -> Task:
    """The task `name` with its data and rewards (rewards are trained once and cached)."""
    if name == "chitchat":
        return _chitchat(data_cfg, seed, verbose)
    if name == "tiny-hh":
        return _tiny_hh(n_train, seed, verbose)
    raise ValueError(f"unknown task {name!r}; choose one of {TASKS}")


POOLS = ("all", "low-rated", "high-rated")
LOW_RATED_BELOW = 5.0
"""Low-rated conversations: mean human rating (witty, upbeat, interesting; 1-10) below 5. A rating of
exactly 5 is the most common one by far (a third of the conversations), so it belongs to neither pool."""
HIGH_RATED_FROM = 9.0
"""High-rated conversations: mean rating 9 or more."""


def rated_pool(task: Task, which: str):
    """(training pairs, report): the offline pool restricted by the conversations' human ratings.

    The analogue of the paper's Reddit down-voted / up-voted training sets (spec 6.2): "low-rated"
    keeps pairs from conversations rated below LOW_RATED_BELOW, "high-rated" those rated
    HIGH_RATED_FROM or more. Both are cut to the same size (the smaller pool's, taking pairs in their
    order), so that the two trainings differ in data quality, not quantity. Pairs without a rating are
    counted in the report and belong to neither pool.

    tiny-hh has no ratings but knows its label noise: there "low-rated" keeps the pairs whose
    `chosen` reply is the worse one (is_noisy) and "high-rated" the clean pairs, cut the same way.
    """
    if which not in POOLS:
        raise ValueError(f"unknown pool {which!r}; choose one of {POOLS}")
    pool = task.offline_pool
    if which == "all":
        return pool, {"pool": "all", "pairs": len(pool)}
    if "is_noisy" in pool.column_names:
        noisy = np.array(pool["is_noisy"], bool)
        low, high = np.flatnonzero(noisy), np.flatnonzero(~noisy)
        report = {"by": "is_noisy", "noisy_pairs": int(len(low)), "clean_pairs": int(len(high))}
    elif "rating" in pool.column_names:
        rating = np.array([np.nan if r is None else float(r) for r in pool["rating"]])
        low, high = np.flatnonzero(rating < LOW_RATED_BELOW), np.flatnonzero(rating >= HIGH_RATED_FROM)
        report = {"low_rated_pairs": int(len(low)), "high_rated_pairs": int(len(high)),
                  "unrated_pairs": int(np.isnan(rating).sum())}
    else:
        raise ValueError(f"task {task.name!r} has no human ratings (column 'rating'): only pool 'all' exists")
    size = min(len(low), len(high))
    keep = (low if which == "low-rated" else high)[:size]
    report = {"pool": which, "pairs": int(size), **report}
    if "is_noisy" not in pool.column_names:  # the human ratings of the kept pairs
        report["mean_rating"] = round(float(rating[keep].mean()), 3)
        report["conversations"] = int(len(set(np.array(pool["conversation_id"])[keep].tolist())))
    return pool.select(keep.tolist()), report
