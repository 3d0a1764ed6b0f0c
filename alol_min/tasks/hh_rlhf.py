"""The Anthropic HH-RLHF format: one loader for local files, folders and the hub.

A row is {"chosen": str, "rejected": str}; each string is a whole dialogue

    "\\n\\nHuman: q1\\n\\nAssistant: a1\\n\\nHuman: q2\\n\\nAssistant: a2"

and chosen and rejected share every turn except the final assistant turn. The loader splits each
into x = the prompt (every turn before the final assistant turn, in the same HH text form and
ending with "\\n\\nAssistant:") and y_w / y_l = the final assistant turns (stripped).

Columns of the returned `Dataset`:
    prompt        str   x, canonical HH text: "\\n\\nHuman: q1 ... \\n\\nAssistant:"
    chosen        str   y_w, the preferred final assistant turn
    rejected      str   y_l, the other one
    response      str   = chosen: the paper trains NLL, wBC and A-LoL on chosen responses only (docs/method.md §9.1)
    source_index  int   0-based line of the row in its file (row index for hub data)
    subset        str   the folder (hub data_dir) the row comes from, "" for a single file
    n_turns       int   Human turns in the prompt
    ...                 any other keys of the JSON rows, passed through unchanged (tiny-hh metadata)

Cleaning, as in the paper's `data_cleaning.py` (docs/method.md §9.1): a pair is dropped when either response
ends with ":" (cut off mid-turn). Malformed rows are dropped and counted by reason in the report,
with the first few places each reason occurred (`report.where`); nothing is dropped silently.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import datasets
import numpy as np
from datasets import Dataset, DatasetDict

from alol_min.lm.hh_format import prompt_text, split_dialogue
from alol_min.lm.hub import HubUnavailableError, hub_offline, hub_reachable
from alol_min.rewards import SequenceClassifierReward
from alol_min.tasks.base import DataReport, Task
from alol_min.tasks.preference import bradley_terry_reward

BASE_COLUMNS = ("prompt", "chosen", "rejected", "response", "source_index", "subset", "n_turns")

# The paper's prompt (docs/method.md §9.1): a system line, then " ### Human: " / " ### Assistant: " turns.


@dataclass
class HHReport(DataReport):
    """DataReport plus, for each drop reason, the first few places it happened ("file:line")."""

    where: dict[str, list[str]] = field(default_factory=dict)

    def drop(self, reason: str, place: str, keep_places: int = 5) -> None:
        self.dropped[reason] += 1
        places = self.where.setdefault(reason, [])
        if len(places) < keep_places:
            places.append(place)


def parse_pair(row) -> dict | str:
    """One HH row -> {prompt, chosen, rejected, n_turns} or the reason it is malformed (a str)."""
    if not isinstance(row, dict):
        return "row is not a JSON object"
    for name in ("chosen", "rejected"):
        if name not in row:
            return f"missing field '{name}'"
        if not isinstance(row[name], str):
            return f"field '{name}' is not a string"
    try:
        context_w, chosen = split_dialogue(row["chosen"])
        context_l, rejected = split_dialogue(row["rejected"])
    except ValueError as error:
        return str(error)
    if not chosen or not rejected:
        return "empty final response"
    if context_w != context_l:
        return "chosen and rejected prompts differ"
    return {
        "prompt": prompt_text(context_w),
        "chosen": chosen,
        "rejected": rejected,
        "n_turns": sum(role == "human" for role, _ in context_w),
    }


def _read_lines(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        yield from enumerate(handle, start=1)


@dataclass
class _BadLine:
    reason: str


def _pairs_from_rows(
    rows, *, subset: str, place, report: HHReport, drop_colon_endings: bool
) -> list[dict]:
    """Parse (index, row-or-reason) items into kept pairs; count every dropped one."""
    kept = []
    for index, row in rows:
        parsed = parse_pair(row) if not isinstance(row, _BadLine) else row.reason
        if isinstance(parsed, str):
            report.drop(parsed, place(index))
            continue
        if drop_colon_endings and (
            parsed["chosen"].endswith(":") or parsed["rejected"].endswith(":")
        ):
            report.drop("response ends with ':'", place(index))
            continue
        extra = {k: v for k, v in row.items() if k not in ("chosen", "rejected")}
        clash = set(extra) & set(BASE_COLUMNS)
        if clash:
            raise ValueError(
                f"{place(index)}: extra field(s) {sorted(clash)} clash with the loader's columns"
            )
        kept.append(
            {
                **parsed,
                "response": parsed["chosen"],
                "source_index": index,
                "subset": subset,
                **extra,
            }
        )
    return kept


def _file_rows(path: Path, max_rows: int | None):
    """(0-based line index, parsed JSON or _BadLine) for each non-blank line of a JSONL file."""
    count = 0
    for line_no, line in _read_lines(path):
        if not line.strip():
            continue
        if max_rows is not None and count >= max_rows:
            break
        count += 1
        try:
            yield line_no - 1, json.loads(line)
        except json.JSONDecodeError:
            yield line_no - 1, _BadLine("invalid JSON line")


def _local_files(source: Path, split: str, subsets) -> list[tuple[Path, str]]:
    """(file, subset) pairs: the file itself, or {split}.jsonl[.gz] in the folder and its subfolders."""
    if source.is_file():
        return [(source, "")]

    def find(folder: Path):
        return [p for p in (folder / f"{split}.jsonl", folder / f"{split}.jsonl.gz") if p.is_file()]

    if subsets is not None:
        missing = [s for s in subsets if not (source / s).is_dir()]
        if missing:
            raise FileNotFoundError(
                f"{source}: no subset folder(s) {missing}; found "
                f"{sorted(p.name for p in source.iterdir() if p.is_dir())}"
            )
        files = [(p, s) for s in subsets for p in find(source / s)]
    else:
        files = [(p, "") for p in find(source)]
        files += [(p, d.name) for d in sorted(source.iterdir()) if d.is_dir() for p in find(d)]
    if not files:
        raise FileNotFoundError(
            f"{source}: no {split}.jsonl or {split}.jsonl.gz in the folder or its subfolders"
        )
    return files


def _hub_rows(source: str, split: str, subsets, max_rows):
    if hub_offline():
        raise HubUnavailableError(
            f"{source!r} is not a local file or folder, and HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set, "
            "so the hub is not tried. Download the files (e.g. harmless-base/train.jsonl.gz) and pass "
            "their folder, or unset HF_HUB_OFFLINE and HF_DATASETS_OFFLINE on a machine with the hub."
        )
    if not hub_reachable():
        raise HubUnavailableError(
            f"{source!r} is not a local file or folder, and the hub cannot be reached from this machine. "
            "Download the files (e.g. harmless-base/train.jsonl.gz) elsewhere and pass their folder."
        )

    for subset in subsets or [None]:
        try:
            data = datasets.load_dataset(source, data_dir=subset, split=split)
        except Exception as error:  # the hub raises many types; say what to do in one place
            raise HubUnavailableError(
                f"could not load {source!r} (data_dir={subset!r}) from the hub: {error}. Without network "
                "access, pass a local folder of the files (and set HF_HUB_OFFLINE=1 to fail fast)."
            ) from error
        if max_rows is not None:
            data = data.select(range(min(max_rows, len(data))))
        yield subset or "", f"{source}/{subset or ''}[{split}]", enumerate(data)


def load_hh_rlhf(
    source,
    *,
    split: str = "train",
    subsets=None,
    drop_colon_endings: bool = True,
    max_rows: int | None = None,
    verbose: bool = False,
) -> tuple[Dataset, HHReport]:
    """Load HH-RLHF pairs from a .jsonl/.jsonl.gz file, a folder of them, or a hub name.

    source: a file (read whole; `split` is ignored), a folder holding {split}.jsonl[.gz] directly
        or in subset folders (the hub layout: harmless-base/train.jsonl.gz, helpful-base/...), or,
        when no such path exists, a hub dataset name such as "Anthropic/hh-rlhf".
    subsets: subset folders (hub data_dirs) to read; None reads all of them.
    max_rows: read at most this many rows of each file (quick looks); None reads everything.
    Returns the pairs and an HHReport (kept counts per file, dropped counts by reason).
    """
    report = HHReport()
    rows: list[dict] = []
    path = Path(source)
    if path.exists():
        groups = [
            (subset, str(f), _file_rows(f, max_rows))
            for f, subset in _local_files(path, split, subsets)
        ]
    elif str(source).endswith((".jsonl", ".gz", ".json")) or str(source).startswith(
        (".", "/", "~")
    ):
        raise FileNotFoundError(f"{source}: no such file or folder")
    else:
        groups = _hub_rows(str(source), split, subsets, max_rows)
    for subset, label, items in groups:
        if path.exists():  # files: 1-based line numbers, as an editor shows them

            def place(i, label=label):
                return f"{label}:{i + 1}"
        else:

            def place(i, label=label):
                return f"{label} row {i}"

        kept = _pairs_from_rows(
            items, subset=subset, place=place, report=report, drop_colon_endings=drop_colon_endings
        )
        report.kept[label] = len(kept)
        rows += kept
    columns = list(BASE_COLUMNS) + sorted({k for r in rows for k in r} - set(BASE_COLUMNS))
    dataset = Dataset.from_dict({c: [r.get(c) for r in rows] for c in columns})
    if verbose:
        print(f"hh-rlhf {source}: {report}")
    return dataset, report


def load_hh_splits(
    source,
    *,
    n_validation: int = 280,
    n_test: int = 500,
    max_rows: int | None = None,
    seed: int = 0,
    verbose: bool = False,
):
    """(DatasetDict train / validation / test, HHReport) of the `hh-rlhf` task.

    test: the source's own test split when it has one (a folder with test.jsonl[.gz], or a hub
    name), else n_test rows held out of the training rows. validation: n_validation rows held out of
    the training rows (the paper samples 280 dev prompts). Held-out rows are drawn with `seed`, and
    n_test caps the test split either way.
    """

    train, report = load_hh_rlhf(source, split="train", max_rows=max_rows)
    test = None
    if not Path(source).is_file():
        try:
            test, test_report = load_hh_rlhf(source, split="test", max_rows=max_rows)
            report.kept.update({f"{k} (test)": v for k, v in test_report.kept.items()})
            report.dropped.update(test_report.dropped)
        except FileNotFoundError:
            test = None
    held = n_validation + (n_test if test is None else 0)
    if len(train) < held + 1:
        raise ValueError(
            f"{source}: {len(train)} usable training pairs, need more than {held} "
            f"({n_validation} validation{'' if test is not None else f' + {n_test} test'})"
        )
    order = np.random.default_rng(seed).permutation(len(train)).tolist()
    validation = train.select(sorted(order[:n_validation]))
    if test is None:
        test = train.select(sorted(order[n_validation:held]))
    train = train.select(sorted(order[held:]))
    splits = DatasetDict(
        train=train, validation=validation, test=test.select(range(min(n_test, len(test))))
    )
    if verbose:
        print(
            f"hh-rlhf {source}: {report}; splits {', '.join(f'{k} {len(v):,}' for k, v in splits.items())}"
        )
    return splits, report


@dataclass
class HHConfig:
    """The `hh-rlhf` task's data and reward model (the paper's HHA setting)."""

    source: str | None = None
    """Anthropic/hh-rlhf, a folder of {train,test}.jsonl[.gz] (or of subsets), or one .jsonl[.gz] file."""
    n_val: int = 280
    """Validation prompts held out of the training pairs (the paper: 280)."""
    max_rows: int | None = None
    """Read at most this many rows per file."""
    reward_model: str | None = None
    """A sequence-classifier reward (folder or hub name); None: a Bradley-Terry model trained on half
    of the training pairs."""
    reward_format: Literal["oasst", "plain"] = "oasst"
    """Reward-model input: "oasst" (OpenAssistant <|prompter|>/<|assistant|> turns) or "plain"
    (prompt <eos> response)."""
    reward_max_tokens: int = 1024
    """The reward input is left-truncated to this many tokens."""
    test_reward_model: str | None = None
    """A different reward model for the test split (the paper: the 6.9B OpenAssistant RM)."""
    rm_steps: int = 250
    """Steps of the Bradley-Terry reward model (without --reward-model)."""
    split_seed: int = 0
    """Seed of the held-out validation (and test) prompts and of the Bradley-Terry reward model."""


def hh_rlhf_task(hh: HHConfig, n_test: int = 500, verbose: bool = True) -> Task:
    """hh-rlhf: HH-RLHF pairs; with `reward_model`, that sequence classifier on the whole training
    split; without, a Bradley-Terry reward model trained (cached) on half of the training pairs,
    the offline RL set being the other half (as tiny-hh)."""
    if hh.source is None:
        raise ValueError(
            "task hh-rlhf needs --source (Anthropic/hh-rlhf, a folder or a .jsonl[.gz] file)"
        )
    data, report = load_hh_splits(
        hh.source, n_validation=hh.n_val, n_test=n_test, max_rows=hh.max_rows, seed=hh.split_seed,
        verbose=verbose,
    )  # fmt: skip
    train = data["train"]
    if hh.reward_model:
        formatter = "oasst" if hh.reward_format == "oasst" else None

        def classifier(name):
            return SequenceClassifierReward(
                name, name="reward", formatter=formatter, max_length=hh.reward_max_tokens
            )

        reward = classifier(hh.reward_model)
        test_reward = classifier(hh.test_reward_model) if hh.test_reward_model else reward
        stats = {
            "reward_model": hh.reward_model,
            "test_reward_model": hh.test_reward_model,
            "format": hh.reward_format,
            "max_tokens": hh.reward_max_tokens,
        }
        return Task("hh-rlhf", data, report, reward, test_reward, stats, train)
    half = len(train) // 2
    rm_pairs, pool = train.select(range(half)), train.select(range(half, len(train)))
    reward, stats = bradley_terry_reward(
        "hh-rlhf",
        rm_pairs,
        data["validation"],
        seed=hh.split_seed,
        steps=hh.rm_steps,
        verbose=verbose,
    )
    print(
        f"reward: Bradley-Terry on {half:,} pairs, held-out pairwise accuracy "
        f"{stats['heldout_pairwise_accuracy']:.3f}"
    )
    return Task("hh-rlhf", data, report, reward, reward, stats, pool)
