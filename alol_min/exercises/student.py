"""Student notebooks from solution notebooks: one source, two versions.

In a solution notebook's code cells, the lines between the markers (nbgrader's convention)

    ### BEGIN SOLUTION
    ...
    ### END SOLUTION

are the answer. The student version replaces them by `raise NotImplementedError(...)` at the same
indentation and drops every output, so its checkers report "not implemented yet" until the student
writes the answer. `python -m alol_min exercises` writes the student versions; `--check` only
reports whether the committed ones are stale.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = 'raise NotImplementedError("your answer here")'
SOLUTIONS = ("10_exercises.ipynb",)
"""The solution notebooks under notebooks/; their student versions go to notebooks/student/."""


def strip_solutions(source: str, where: str = "a cell") -> str:
    """The source with every marked solution replaced by the stub; unbalanced markers raise."""
    out, inside = [], False
    for number, line in enumerate(source.split("\n"), 1):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ValueError(f"{where}, line {number}: {BEGIN} inside another solution")
            inside = True
            out.append(re.match(r"\s*", line).group(0) + STUB)
        elif stripped == END:
            if not inside:
                raise ValueError(f"{where}, line {number}: {END} without {BEGIN}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: {BEGIN} is never closed by {END}")
    return "\n".join(out)


def student_version(
    solution: nbformat.NotebookNode, name: str = "notebook"
) -> nbformat.NotebookNode:
    """A copy of `solution` with the answers stubbed and every output dropped."""
    nb = nbformat.from_dict(solution)
    stubs = 0
    for i, cell in enumerate(nb.cells):
        cell.pop("id", None)
        if cell.cell_type != "code":
            continue
        stubs += sum(line.strip() == BEGIN for line in cell.source.split("\n"))
        new = strip_solutions(cell.source, f"{name}, cell {i}")
        cell.source, cell.outputs, cell.execution_count = new, [], None
        cell.metadata.pop("execution", None)
    if stubs == 0:
        raise ValueError(f"{name} has no {BEGIN} ... {END} block: nothing for a student to write")
    nb.nbformat_minor = 4  # no cell ids: regenerating gives the same file
    return nb


def student_paths(notebooks: Path) -> list[tuple[Path, Path]]:
    return [(notebooks / s, notebooks / "student" / s) for s in SOLUTIONS]


def write_students(notebooks: Path, check: bool = False) -> list[str]:
    """Write (or, with check, only compare) every student version; the stale ones' paths."""
    stale = []
    for source, target in student_paths(notebooks):
        text = nbformat.writes(student_version(nbformat.read(source, as_version=4), source.name))
        if not target.exists() or target.read_text() != text + "\n":
            stale.append(str(target))
            if not check:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text + "\n")
    return stale
