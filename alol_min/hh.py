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
    response      str   = chosen: the paper trains NLL, wBC and A-LoL on chosen responses only (spec 4)
    source_index  int   0-based line of the row in its file (row index for hub data)
    subset        str   the folder (hub data_dir) the row comes from, "" for a single file
    n_turns       int   Human turns in the prompt
    ...                 any other keys of the JSON rows, passed through unchanged (tiny-hh metadata)

Cleaning, as in the paper's `data_cleaning.py` (spec 4): a pair is dropped when either response
ends with ":" (cut off mid-turn). Malformed rows are dropped and counted by reason in the report,
with the first few places each reason occurred (`report.where`); nothing is dropped silently.
"""
from __future__ import annotations

import gzip
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import Dataset

from .data import DataReport

ROLES = {"Human": "human", "Assistant": "assistant"}
_TURN = re.compile(r"\n\n(Human|Assistant):")
BASE_COLUMNS = ("prompt", "chosen", "rejected", "response", "source_index", "subset", "n_turns")

# The paper's prompt (spec 6.1): a system line, then " ### Human: " / " ### Assistant: " turns.
PAPER_SYSTEM_LINE = ("A chat between a curious human and an artificial intelligence assistant. "
                     "The assistant gives helpful, detailed, and polite answers to the user's questions.\n")


class HubUnavailableError(ConnectionError):
    """A hub dataset or model was named but the hub is switched off or cannot be reached (and, for a
    model, it is not in the local Hugging Face cache either). A ConnectionError, hence an OSError."""


@dataclass
class HHReport(DataReport):
    """DataReport plus, for each drop reason, the first few places it happened ("file:line")."""

    where: dict[str, list[str]] = field(default_factory=dict)

    def drop(self, reason: str, place: str, keep_places: int = 5) -> None:
        self.dropped[reason] += 1
        places = self.where.setdefault(reason, [])
        if len(places) < keep_places:
            places.append(place)


def turns(text: str) -> list[tuple[str, str]]:
    """Parse an HH dialogue into [(role, text), ...], role "human" or "assistant", text stripped.

    A leading "Human:" without the blank line is accepted. Raises ValueError when there is text
    before the first turn marker (the string is not in the HH format).
    """
    if text.startswith(("Human:", "Assistant:")):
        text = "\n\n" + text
    parts = _TURN.split(text)
    if parts[0].strip():
        raise ValueError("text before the first Human/Assistant turn")
    return [(ROLES[parts[i]], parts[i + 1].strip()) for i in range(1, len(parts), 2)]


def render(dialogue: list[tuple[str, str]]) -> str:
    """The canonical HH text of parsed turns (inverse of `turns` up to whitespace)."""
    names = {v: k for k, v in ROLES.items()}
    return "".join(f"\n\n{names[role]}: {text}" if text else f"\n\n{names[role]}:" for role, text in dialogue)


def split_dialogue(text: str) -> tuple[list[tuple[str, str]], str]:
    """(turns before the final assistant turn, final assistant response). ValueError if malformed."""
    dialogue = turns(text)
    if not dialogue or dialogue[-1][0] != "assistant":
        raise ValueError("no final assistant turn")
    return dialogue[:-1], dialogue[-1][1]


def prompt_text(context: list[tuple[str, str]]) -> str:
    """HH text of a prompt: its turns, then the empty "\\n\\nAssistant:" tag the reply follows."""
    return render(context) + "\n\nAssistant:"


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
    return {"prompt": prompt_text(context_w), "chosen": chosen, "rejected": rejected,
            "n_turns": sum(role == "human" for role, _ in context_w)}


def format_prompt(prompt_hh_text: str, style: str = "plain") -> str:
    """Write an HH prompt for a policy.

    style="plain": one turn per line, "Human: q1\\nAssistant: a1\\nHuman: q2\\nAssistant:".
    style="paper": the paper's LLaMA prompt (spec 6.1), the system line followed by
        "### Human: q1 ### Assistant: a1 ### Human: q2 ### Assistant:"
      (each turn prefixed " ### Human: " / " ### Assistant: "; the paper's code strips the turns'
      joined text, so the first prefix loses its leading space and the last its trailing space).
    style="hh": the canonical HH text itself.
    """
    context = turns(prompt_hh_text)
    if context and context[-1] == ("assistant", ""):
        context = context[:-1]
    if style == "hh":
        return prompt_text(context)
    if style == "plain":
        return "".join(f"{'Human' if r == 'human' else 'Assistant'}: {t}\n" for r, t in context) + "Assistant:"
    if style == "paper":
        body = "".join(f" ### {'Human' if r == 'human' else 'Assistant'}: {t}" for r, t in context)
        return PAPER_SYSTEM_LINE + (body + " ### Assistant: ").strip()
    raise ValueError(f"style must be 'plain', 'paper' or 'hh', got {style!r}")


def oasst_format(prompt_hh_text: str, response: str, eos_token: str) -> str:
    """Input of the OpenAssistant reward models (spec 6.1, `metrics_hh.py`).

    Every turn is "<|prompter|>text" or "<|assistant|>text" followed by the RM tokenizer's EOS; the
    response is appended to the final "<|assistant|>" tag, which gets its EOS too:
        <|prompter|>q1</s><|assistant|>a1</s><|prompter|>q2</s><|assistant|>y</s>
    """
    context = turns(prompt_hh_text)
    if context and context[-1] == ("assistant", ""):
        context = context[:-1]
    tags = {"human": "<|prompter|>", "assistant": "<|assistant|>"}
    parts = [tags[role] + text for role, text in context] + ["<|assistant|>" + response.strip()]
    return "".join(part + eos_token for part in parts)


def _read_lines(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        yield from enumerate(handle, start=1)


@dataclass
class _BadLine:
    reason: str


def _pairs_from_rows(rows, *, subset: str, place, report: HHReport, drop_colon_endings: bool) -> list[dict]:
    """Parse (index, row-or-reason) items into kept pairs; count every dropped one."""
    kept = []
    for index, row in rows:
        parsed = parse_pair(row) if not isinstance(row, _BadLine) else row.reason
        if isinstance(parsed, str):
            report.drop(parsed, place(index))
            continue
        if drop_colon_endings and (parsed["chosen"].endswith(":") or parsed["rejected"].endswith(":")):
            report.drop("response ends with ':'", place(index))
            continue
        extra = {k: v for k, v in row.items() if k not in ("chosen", "rejected")}
        clash = set(extra) & set(BASE_COLUMNS)
        if clash:
            raise ValueError(f"{place(index)}: extra field(s) {sorted(clash)} clash with the loader's columns")
        kept.append({**parsed, "response": parsed["chosen"], "source_index": index, "subset": subset, **extra})
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
            raise FileNotFoundError(f"{source}: no subset folder(s) {missing}; found "
                                    f"{sorted(p.name for p in source.iterdir() if p.is_dir())}")
        files = [(p, s) for s in subsets for p in find(source / s)]
    else:
        files = [(p, "") for p in find(source)]
        files += [(p, d.name) for d in sorted(source.iterdir()) if d.is_dir() for p in find(d)]
    if not files:
        raise FileNotFoundError(f"{source}: no {split}.jsonl or {split}.jsonl.gz in the folder or its subfolders")
    return files


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set (1, true, yes, on): never try the hub."""
    return any(os.environ.get(name, "").lower() in ("1", "true", "yes", "on")
               for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


_offline = hub_offline  # the old private name


def hub_reachable(timeout: float = 3.0) -> bool:
    """Can a TCP connection to the hub (HF_ENDPOINT, default huggingface.co:443) open within `timeout` s?

    Asked before any download so that a machine without network fails in seconds, not after the hub
    client's retries (about 50 s per file).
    """
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _hub_rows(source: str, split: str, subsets, max_rows):
    if hub_offline():
        raise HubUnavailableError(
            f"{source!r} is not a local file or folder, and HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set, "
            "so the hub is not tried. Download the files (e.g. harmless-base/train.jsonl.gz) and pass "
            "their folder, or unset HF_HUB_OFFLINE and HF_DATASETS_OFFLINE on a machine with the hub.")
    if not hub_reachable():
        raise HubUnavailableError(
            f"{source!r} is not a local file or folder, and the hub cannot be reached from this machine. "
            "Download the files (e.g. harmless-base/train.jsonl.gz) elsewhere and pass their folder.")
    import datasets

    for subset in subsets or [None]:
        try:
            data = datasets.load_dataset(source, data_dir=subset, split=split)
        except Exception as error:  # the hub raises many types; say what to do in one place
            raise HubUnavailableError(
                f"could not load {source!r} (data_dir={subset!r}) from the hub: {error}. Without network "
                "access, pass a local folder of the files (and set HF_HUB_OFFLINE=1 to fail fast).") from error
        if max_rows is not None:
            data = data.select(range(min(max_rows, len(data))))
        yield subset or "", f"{source}/{subset or ''}[{split}]", enumerate(data)


def load_hh_rlhf(source, *, split: str = "train", subsets=None, drop_colon_endings: bool = True,
                 max_rows: int | None = None, verbose: bool = False) -> tuple[Dataset, HHReport]:
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
        groups = [(subset, str(f), _file_rows(f, max_rows)) for f, subset in _local_files(path, split, subsets)]
    elif str(source).endswith((".jsonl", ".gz", ".json")) or str(source).startswith((".", "/", "~")):
        raise FileNotFoundError(f"{source}: no such file or folder")
    else:
        groups = _hub_rows(str(source), split, subsets, max_rows)
    for subset, label, items in groups:
        if path.exists():  # files: 1-based line numbers, as an editor shows them
            def place(i, label=label): return f"{label}:{i + 1}"
        else:
            def place(i, label=label): return f"{label} row {i}"
        kept = _pairs_from_rows(items, subset=subset, place=place, report=report,
                                drop_colon_endings=drop_colon_endings)
        report.kept[label] = len(kept)
        rows += kept
    columns = list(BASE_COLUMNS) + sorted({k for r in rows for k in r} - set(BASE_COLUMNS))
    dataset = Dataset.from_dict({c: [r.get(c) for r in rows] for c in columns})
    if verbose:
        print(f"hh-rlhf {source}: {report}")
    return dataset, report


def load_hh_splits(source, *, n_validation: int = 280, n_test: int = 500, max_rows: int | None = None,
                   seed: int = 0, verbose: bool = False):
    """(DatasetDict train / validation / test, HHReport) for the HHA pipeline (`python -m alol_min hh`).

    test: the source's own test split when it has one (a folder with test.jsonl[.gz], or a hub
    name), else n_test rows held out of the training rows. validation: n_validation rows held out of
    the training rows (the paper samples 280 dev prompts). Held-out rows are drawn with `seed`, and
    n_test caps the test split either way.
    """
    from datasets import DatasetDict

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
        raise ValueError(f"{source}: {len(train)} usable training pairs, need more than {held} "
                         f"({n_validation} validation{'' if test is not None else f' + {n_test} test'})")
    order = np.random.default_rng(seed).permutation(len(train)).tolist()
    validation = train.select(sorted(order[:n_validation]))
    if test is None:
        test = train.select(sorted(order[n_validation:held]))
    train = train.select(sorted(order[held:]))
    splits = DatasetDict(train=train, validation=validation, test=test.select(range(min(n_test, len(test)))))
    if verbose:
        print(f"hh-rlhf {source}: {report}; splits {', '.join(f'{k} {len(v):,}' for k, v in splits.items())}")
    return splits, report
