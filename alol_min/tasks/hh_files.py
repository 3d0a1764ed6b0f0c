"""Reading HH-RLHF JSON-lines files, accounting for every line.

A line that cannot be read (bytes that are not UTF-8, invalid JSON, text with a lone surrogate
such as a JSON "\\ud800" escape) is skipped and counted by reason with its `file:line`; a UTF-8
byte-order mark is accepted. A gzip file that ends early keeps the rows before the cut and reports
where the file ended. A file that is not what its name says, or two files for one subset and split
(`train.jsonl` beside `train.jsonl.gz`, as `gunzip -k` leaves them), is a `DataError` naming the
file(s).
"""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from alol_min.tasks.base import DataError, DataReport

GZIP_MAGIC = b"\x1f\x8b\x08"  # gzip's magic number and its one compression method, deflate
BOM = b"\xef\xbb\xbf"


@dataclass
class HHReport(DataReport):
    """DataReport plus, for each drop reason, the first few places it happened ("file:line"), and
    notes such as the prompts that two splits share."""

    where: dict[str, list[str]] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str, place: str, keep_places: int = 5) -> None:
        self.dropped[reason] += 1
        places = self.where.setdefault(reason, [])
        if len(places) < keep_places:
            places.append(place)

    def __str__(self) -> str:
        notes = "".join(f"; {k}: {v:,}" for k, v in self.notes.items())
        return super().__str__() + notes


@dataclass
class BadLine:
    """A line that could not be read as a JSON row, and why."""

    reason: str


def _opener(path: Path):
    """gzip.open or open, from the file's first bytes; a name that says otherwise is an error."""
    with open(path, "rb") as handle:
        is_gzip = handle.read(len(GZIP_MAGIC)) == GZIP_MAGIC
    if path.suffix == ".gz" and not is_gzip:
        raise DataError(f"{path}: named .gz but it is not a gzip file")
    if path.suffix != ".gz" and is_gzip:
        raise DataError(
            f"{path}: a gzip file whose name does not end in .gz (rename it {path.name}.gz)"
        )
    return gzip.open if is_gzip else open


def file_lines(path: Path, report: HHReport):
    """(1-based line number, bytes) of every line; a truncated gzip stops at the cut, reported."""
    line_no = 0
    try:
        with _opener(path)(path, "rb") as handle:
            for line_no, line in enumerate(handle, start=1):
                yield line_no, line
    except (EOFError, gzip.BadGzipFile, zlib.error):
        reason = "gzip stream ends early or is damaged: rows before it kept"
        report.drop(reason, f"{path}:{line_no + 1}")


def has_lone_surrogate(value) -> bool:
    """True if any string in a parsed JSON value holds a lone surrogate (not encodable as UTF-8)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(has_lone_surrogate(k) or has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_lone_surrogate(v) for v in value)
    return False


def file_rows(path: Path, max_rows: int | None, report: HHReport):
    """(0-based line index, parsed JSON or BadLine) for each non-blank line of a JSONL file."""
    count = 0
    for line_no, raw in file_lines(path, report):
        if line_no == 1 and raw.startswith(BOM):
            raw = raw[len(BOM) :]
        if not raw.strip():
            report.notes["blank lines skipped"] = report.notes.get("blank lines skipped", 0) + 1
            continue
        if max_rows is not None and count >= max_rows:
            report.notes["files cut at --max-rows"] = (
                report.notes.get("files cut at --max-rows", 0) + 1
            )
            break
        count += 1
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            yield line_no - 1, BadLine("line is not UTF-8")
            continue
        try:
            row = json.loads(text)
        except (ValueError, RecursionError):  # JSONDecodeError, an over-long integer, deep nesting
            yield line_no - 1, BadLine("invalid JSON line")
            continue
        if has_lone_surrogate(row):
            yield line_no - 1, BadLine("text holds a lone surrogate (e.g. a JSON \\ud800 escape)")
            continue
        yield line_no - 1, row


def local_files(source: Path, split: str, subsets) -> list[tuple[Path, str]]:
    """(file, subset) pairs: the file itself, or {split}.jsonl[.gz] in the folder and its subfolders."""
    if source.is_file():
        return [(source, "")]

    def find(folder: Path) -> list[Path]:
        found = [
            p for p in (folder / f"{split}.jsonl", folder / f"{split}.jsonl.gz") if p.is_file()
        ]
        if len(found) > 1:
            raise DataError(
                f"{found[0]} and {found[1]}: two files for one split; keep one (the same rows would "
                "be read twice and leak into validation and test)"
            )
        return found

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
