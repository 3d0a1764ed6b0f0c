"""The notebook series is committed executed, top to bottom, with its outputs (nbval checks them)."""

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SERIES = [
    "00_overview",
    "01_data_and_reference_policy",
    "02_rewards",
    "03_value_estimate",
    "04_advantage_and_leftovers",
    "05_importance_weights",
    "06_alol_variants",
    "07_baselines",
    "08_reproduce_the_paper",
    "09_gpt2_scale",
    "10_exercises",
]


def test_the_series_is_complete():
    assert [p.stem for p in NOTEBOOKS] == SERIES


def executed_in_order(path: Path) -> str | None:
    """None if every code cell ran once, in order, from a fresh kernel; else what is wrong."""
    cells = [
        c
        for c in nbformat.read(path, as_version=4).cells
        if c.cell_type == "code" and c.source.strip()
    ]
    counts = [c.execution_count for c in cells]
    if any(n is None for n in counts):
        return f"cell {counts.index(None)} was not executed"
    if counts != list(range(1, len(cells) + 1)):
        return f"execution counts {counts} are not 1..{len(cells)}: run the notebook top to bottom in a fresh kernel"
    errors = [i for i, c in enumerate(cells) for o in c.outputs if o.output_type == "error"]
    if errors:
        return f"code cells {errors} end in an error"
    return None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_executed_in_order(path):
    assert executed_in_order(path) is None, f"{path.name}: {executed_in_order(path)}"


def test_the_check_catches_an_unexecuted_or_reordered_notebook(tmp_path):
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("1"), nbformat.v4.new_code_cell("2")]
    )
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    assert "not executed" in executed_in_order(path)
    nb.cells[0].execution_count, nb.cells[1].execution_count = 2, 1
    nbformat.write(nb, path)
    assert "not 1..2" in executed_in_order(path)
