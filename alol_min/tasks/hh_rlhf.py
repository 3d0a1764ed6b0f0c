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

Cleaning, as in the paper's `data_cleaning.py` (docs/method.md §9.1): a pair is dropped when either
response ends with ":" (cut off mid-turn) or holds a turn marker of its own ("Human:" without the
blank line before it), and when chosen and rejected are the same. Lines that cannot be read
(`tasks/hh_files.py`) and malformed rows are dropped too, and every drop is counted by reason with
the first few places it occurred (`report.where`); nothing is dropped silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import datasets
import numpy as np
import pyarrow as pa
from datasets import Dataset, DatasetDict

from alol_min.lm.hh_format import prompt_text, split_dialogue
from alol_min.lm.hub import HubUnavailableError, hub_offline, hub_reachable
from alol_min.rewards import SequenceClassifierReward
from alol_min.tasks.base import DataError, Task
from alol_min.tasks.hh_files import BadLine, HHReport, file_rows, local_files
from alol_min.tasks.preference import bradley_terry_reward

EMBEDDED_TURN = re.compile(r"(?:^|\n)[ \t]*(?:Human|Assistant):")
"""A turn marker inside a final response: the paper's cleaning drops such cut or merged replies."""
BASE_COLUMNS = ("prompt", "chosen", "rejected", "response", "source_index", "subset", "n_turns")


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
    if chosen == rejected:
        return "chosen and rejected are the same"
    if EMBEDDED_TURN.search(chosen) or EMBEDDED_TURN.search(rejected):
        return "a response holds another turn ('Human:' / 'Assistant:' without the blank line)"
    return {
        "prompt": prompt_text(context_w),
        "chosen": chosen,
        "rejected": rejected,
        "n_turns": sum(role == "human" for role, _ in context_w),
    }


def value_kind(value) -> str | None:
    """The type of an extra field's value as a column sees it (None: missing, fits any column)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        inner = {value_kind(v) for v in value} - {None}
        if len(inner) > 1:  # an empty inner list fits a list of anything
            inner -= {"list"}
        if not inner:
            return "list"
        return f"list of {inner.pop()}" if len(inner) == 1 else "mixed list"
    return "object"


def same_kind(a: str, b: str) -> bool:
    """Whether two values of these kinds fit one column (an empty list fits any list)."""
    return a == b or (a.startswith("list") and b.startswith("list") and "list" in (a, b))


def _pairs_from_rows(
    rows, *, subset: str, place, report: HHReport, drop_colon_endings: bool, kinds: dict
) -> list[dict]:
    """Parse (index, row-or-reason) items into kept pairs; count every dropped one. `kinds`: each
    extra field's type so far (shared by the files of one load); a row that changes it is dropped."""
    kept = []
    for index, row in rows:
        parsed = parse_pair(row) if not isinstance(row, BadLine) else row.reason
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
            raise DataError(
                f"{place(index)}: extra field(s) {sorted(clash)} clash with the loader's columns"
            )
        found = {k: value_kind(v) for k, v in extra.items()}
        changed = [
            k for k, kind in found.items() if kind and not same_kind(kinds.get(k, kind), kind)
        ]
        if changed or "mixed list" in found.values():
            report.drop("an extra field changes type from row to row", place(index))
            continue
        kinds.update(
            {k: kind for k, kind in found.items() if kind and kinds.get(k) in (None, "list")}
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
    kinds: dict[str, str] = {}
    path = Path(source)
    if path.exists():
        groups = [
            (subset, str(f), file_rows(f, max_rows, report))
            for f, subset in local_files(path, split, subsets)
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
            items,
            subset=subset,
            place=place,
            report=report,
            drop_colon_endings=drop_colon_endings,
            kinds=kinds,
        )
        report.kept[label] = len(kept)
        rows += kept
    columns = list(BASE_COLUMNS) + sorted({k for r in rows for k in r} - set(BASE_COLUMNS))
    try:
        dataset = Dataset.from_dict({c: [r.get(c) for r in rows] for c in columns})
    except (
        pa.ArrowInvalid,
        pa.ArrowTypeError,
        OverflowError,
    ) as error:  # e.g. an object field whose keys change type
        raise DataError(
            f"{source}: the rows' extra fields do not make one table: {error}"
        ) from None
    if verbose:
        print(f"hh-rlhf {source}: {report}")
    return dataset, report


def split_overlap(splits) -> dict[str, int]:
    """How many validation and test prompts also occur in an earlier split (HH-RLHF repeats many
    first questions, so some overlap is in the data itself); reported, not removed."""
    train, validation = set(splits["train"]["prompt"]), set(splits["validation"]["prompt"])
    return {
        "validation prompts also in train": sum(p in train for p in splits["validation"]["prompt"]),
        "test prompts also in train or validation": sum(
            p in train or p in validation for p in splits["test"]["prompt"]
        ),
    }


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
    the training rows (the paper samples 280 dev prompts). Held-out rows are drawn with `seed`
    from all subsets, and n_test caps the test split either way: a source's own test split is
    sampled (seeded, across its subsets), never cut to its first rows, which are one subset's.
    """

    train, report = load_hh_rlhf(source, split="train", max_rows=max_rows)
    test = None
    if not Path(source).is_file():
        try:
            test, test_report = load_hh_rlhf(source, split="test", max_rows=max_rows)
            report.kept.update({f"{k} (test)": v for k, v in test_report.kept.items()})
            report.dropped.update(test_report.dropped)
            for reason, places in test_report.where.items():
                report.where.setdefault(reason, []).extend(places)
            for note, count in test_report.notes.items():
                report.notes[note] = report.notes.get(note, 0) + count
        except FileNotFoundError:
            test = None
    held = n_validation + (n_test if test is None else 0)
    if len(train) < held + 1:
        raise DataError(
            f"{source}: {len(train)} usable training pairs, need more than {held} "
            f"({n_validation} validation{'' if test is not None else f' + {n_test} test'})"
        )
    order = np.random.default_rng(seed).permutation(len(train)).tolist()
    validation = train.select(sorted(order[:n_validation]))
    if test is None:
        test = train.select(sorted(order[n_validation:held]))
    train = train.select(sorted(order[held:]))
    if len(test) > n_test:
        test_order = np.random.default_rng([seed, 1]).permutation(len(test))[:n_test]
        test = test.select(sorted(test_order.tolist()))
    splits = DatasetDict(train=train, validation=validation, test=test)
    report.notes.update(split_overlap(splits))
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
    reward_allow_pickle: bool = False
    """Also read reward-model weights stored as pickle (pytorch_model.bin, as the OpenAssistant
    RMs ship), with torch.load(weights_only=True); otherwise safetensors only."""
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
                name, name="reward", formatter=formatter, max_length=hh.reward_max_tokens,
                allow_pickle=hh.reward_allow_pickle,
            )  # fmt: skip

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
