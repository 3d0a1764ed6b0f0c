"""Task data: (prompt, response) pairs as `datasets.Dataset` splits.

The embedded default, `chitchat`, is real human dialogue from the `chitchat-dataset` package
(7,168 open-domain conversations, MIT). Each turn is one speaker's consecutive messages joined by
spaces; a pair is (turn i-1 -> turn i), optionally with `context_turns` more turns of history
before the prompt turn. This is the analogue of the paper's Reddit task (parent -> reply).

Columns of every split:
    prompt          str    the previous turn (history turns first, joined by "\\n")
    response        str    the reply
    conversation_id str    the conversation the pair comes from (splits never share one)
    turn            int    index of the reply turn in its conversation (1 = first reply)
    witty, upbeat, interesting   int | None   the conversation's human ratings, 1-10 (None if absent)
    rating          float | None   mean of the three ratings

Splits are made by conversation, deterministically from `seed`: no conversation is in two splits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import chitchat_dataset
import numpy as np
from datasets import Dataset, DatasetDict

from alol_min.cache import dataset_digest, load_or_build, source_digest
from alol_min.tasks.base import DataReport, Task
from alol_min.tasks.chitchat_reward import ChitchatReward, cross_fit_rewards

RATING_FIELDS = ("witty", "upbeat", "interesting")


@dataclass
class ChitchatConfig:
    """How the `chitchat` splits are built."""

    context_turns: int = 0
    """Extra turns of history before the prompt turn (0 = prompt is just the previous turn)."""
    split_fractions: tuple[float, float, float] = (0.9, 0.05, 0.05)
    """Share of conversations in train / validation / test."""
    max_train: int | None = None
    """Keep at most this many training pairs (random, seeded); None keeps all (~118k)."""
    max_validation: int | None = 2000
    """Keep at most this many validation pairs (distinct prompts first)."""
    max_test: int | None = 1000
    """Keep at most this many test pairs."""
    max_words: int | None = None
    """If set, pairs whose prompt turn or reply has more words than this are dropped (and counted);
    None keeps them (the tokenizer truncates long turns, and reports how many)."""
    seed: int = 0
    """Seed of the conversation split and of the subsampling."""


def validate_pairs(
    rows: list[dict],
    *,
    source: str = "data",
    on_bad: str = "error",
    report: DataReport | None = None,
) -> list[dict]:
    """Check every row has non-empty string `prompt` and `response`.

    on_bad="error" raises ValueError naming the row index and the field; on_bad="drop" drops the
    row and counts the reason in `report` (which the caller prints).
    """
    if on_bad not in ("error", "drop"):
        raise ValueError(f"on_bad must be 'error' or 'drop', got {on_bad!r}")
    kept = []
    for i, row in enumerate(rows):
        problem = None
        for name in ("prompt", "response"):
            if name not in row:
                problem = f"missing field '{name}'"
            elif not isinstance(row[name], str):
                problem = f"field '{name}' is {type(row[name]).__name__}, expected str"
            elif not row[name].strip():
                problem = f"field '{name}' is empty"
            if problem:
                break
        if problem is None:
            kept.append(row)
        elif on_bad == "error":
            raise ValueError(f"{source}: row {i}: {problem}")
        else:
            if report is None:
                raise ValueError("on_bad='drop' needs a DataReport to count the dropped rows")
            report.dropped[problem] += 1
    return kept


def _turns(conversation: dict) -> list[str]:
    return [
        " ".join(u["text"].strip() for u in message).strip() for message in conversation["messages"]
    ]


def _ratings(conversation: dict) -> dict:
    ratings = conversation.get("ratings") or {}
    out = {k: (int(ratings[k]) if ratings.get(k) is not None else None) for k in RATING_FIELDS}
    given = [v for v in out.values() if v is not None]
    out["rating"] = float(np.mean(given)) if given else None
    return out


def split_conversations(ids: list[str], fractions, seed: int) -> dict[str, set[str]]:
    """Assign each conversation id to train/validation/test with a seeded permutation."""
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) <= 0:
        raise ValueError(
            f"split_fractions must be 3 positive numbers summing to 1, got {fractions}"
        )
    ordered = sorted(ids)
    ids = [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))]
    n_train = int(round(fractions[0] * len(ids)))
    n_val = int(round(fractions[1] * len(ids)))
    return {
        "train": set(ids[:n_train]),
        "validation": set(ids[n_train : n_train + n_val]),
        "test": set(ids[n_train + n_val :]),
    }


def chitchat_pairs(conversations: dict, config: ChitchatConfig, report: DataReport) -> list[dict]:
    """All (turn i-1 -> turn i) pairs of the raw chitchat conversations, validated."""
    rows = []
    for conv_id in sorted(conversations):
        conv = conversations[conv_id]
        turns, ratings = _turns(conv), _ratings(conv)
        for i in range(1, len(turns)):
            prompt, response = turns[i - 1], turns[i]
            if not prompt or not response:
                report.dropped["empty turn"] += 1
                continue
            if config.max_words and (
                len(prompt.split()) > config.max_words or len(response.split()) > config.max_words
            ):
                report.dropped[f"turn over {config.max_words} words"] += 1
                continue
            history = [t for t in turns[max(0, i - 1 - config.context_turns) : i - 1] if t]
            rows.append(
                {
                    "prompt": "\n".join(history + [prompt]),
                    "response": response,
                    "conversation_id": conv_id,
                    "turn": i,
                    **ratings,
                }
            )
    return validate_pairs(rows, source="chitchat", on_bad="drop", report=report)


def _subsample(
    rows: list[dict], n: int | None, rng: np.random.Generator, distinct_prompts: bool
) -> list[dict]:
    order = rng.permutation(len(rows))
    if (
        distinct_prompts
    ):  # evaluation splits: one pair per prompt text, so V(x) and metrics are per prompt
        seen, picked = set(), []
        for i in order:
            if rows[i]["prompt"] not in seen:
                seen.add(rows[i]["prompt"])
                picked.append(i)
        order = np.array(picked, dtype=int)
    if n is not None:
        order = order[:n]
    return [rows[i] for i in sorted(order)]


def load_chitchat(
    config: ChitchatConfig | None = None, *, path: str | None = None, verbose: bool = False
) -> tuple[DatasetDict, DataReport]:
    """Load the embedded `chitchat` task as train/validation/test `Dataset`s, split by conversation.

    Returns the splits and a `DataReport` of what was kept and dropped (and why).
    """

    config = config or ChitchatConfig()
    conversations = chitchat_dataset.Dataset(path) if path else chitchat_dataset.Dataset()
    report = DataReport()
    rows = chitchat_pairs(conversations, config, report)
    assignment = split_conversations(list(conversations), config.split_fractions, config.seed)
    rng = np.random.default_rng(config.seed + 1)
    limits = {
        "train": config.max_train,
        "validation": config.max_validation,
        "test": config.max_test,
    }
    splits = {}
    for name, conv_ids in assignment.items():
        split_rows = [r for r in rows if r["conversation_id"] in conv_ids]
        split_rows = _subsample(split_rows, limits[name], rng, distinct_prompts=name != "train")
        splits[name] = Dataset.from_list(split_rows)
        report.kept[name] = len(split_rows)
    if verbose:
        print(f"chitchat: {report}")
    return DatasetDict(splits), report


LOW_RATED_BELOW = 5.0
"""Low-rated conversations: mean human rating (witty, upbeat, interesting; 1-10) below 5. A rating of
exactly 5 is the most common one by far (a third of the conversations), so it belongs to neither pool."""
HIGH_RATED_FROM = 9.0
"""High-rated conversations: mean rating 9 or more."""


def rating_pools(pool):
    """`Task.quality_pools` of chitchat: pairs of conversations rated below LOW_RATED_BELOW, and
    HIGH_RATED_FROM or more. Pairs without a rating are counted and belong to neither."""
    rating = np.array([np.nan if r is None else float(r) for r in pool["rating"]])
    low, high = np.flatnonzero(rating < LOW_RATED_BELOW), np.flatnonzero(rating >= HIGH_RATED_FROM)

    def describe(keep: np.ndarray) -> dict:
        return {
            "low_rated_pairs": int(len(low)),
            "high_rated_pairs": int(len(high)),
            "unrated_pairs": int(np.isnan(rating).sum()),
            "mean_rating": round(float(rating[keep].mean()), 3),
            "conversations": int(len(set(np.array(pool["conversation_id"])[keep].tolist()))),
        }

    return (low, high), describe


def chitchat_task(
    data_cfg: ChitchatConfig | None = None, seed: int = 0, verbose: bool = True
) -> Task:
    """chitchat: real dialogue; R = `ChitchatReward` (the same at training and test time), fit once
    on the training split (cached); the offline pairs' rewards are cross-fitted."""
    data, report = load_chitchat(data_cfg or ChitchatConfig())
    source = source_digest(
        "alol_min.rewards", "alol_min.tasks.chitchat_reward", "alol_min.tasks.relevance"
    )
    inputs = {"task": "chitchat", "train": dataset_digest(data["train"]), "seed": seed}
    inputs["source"] = source

    def build(folder: Path) -> None:
        reward, stats = ChitchatReward.build(
            data["train"], validation=data["validation"], seed=seed
        )
        reward.save(folder)
        (folder / "stats.json").write_text(json.dumps(stats, indent=1, default=float))

    folder = load_or_build("reward-chitchat", inputs, build, verbose=verbose)
    reward = ChitchatReward.load(folder)
    reward.cache_key = folder.name  # what the offline set's cache key names the reward by
    stats = json.loads((folder / "stats.json").read_text())
    return Task(
        "chitchat", data, report, reward, reward, stats, data["train"],
        offline_reward=partial(cross_fit_rewards, reward, seed=0), quality_pools=rating_pools,
    )  # fmt: skip
