"""Smoke runs of the entry points as subprocesses, with tiny budgets."""

import csv
import json
import os
import subprocess
import sys

import pytest

from alol_min.run.config import FULL_METHODS

pytestmark = pytest.mark.slow


def _run(args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "alol_min", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr  # cache messages go to stderr


def test_cli_help_lists_subcommands(tmp_path):
    out = _run(["--help"], tmp_path)
    for command in ("train-ref", "reproduce", "plot"):
        assert command in out


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    out = _run(["reproduce", "--preset", "smoke", "--seeds", "0,1", "--no-progress"], root)
    return root, out


def test_smoke_reproduce_writes_a_row_per_method_and_seed(smoke_run):
    root, out = smoke_run
    with open(root / "runs" / "chitchat" / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    pairs = {(r["method"], r["seed"]) for r in rows}
    assert pairs == {("pi_ref", "")} | {(m, s) for m in FULL_METHODS for s in ("0", "1")}
    for row in rows:
        for column in (
            "total",
            "length",
            "distinct_1",
            "distinct_2",
            "distinct_3",
            "steps",
            "examples_seen",
        ):
            assert row[column] != ""
    for name in (
        "chitchat_results.md",
        "chitchat_results.csv",
        "chitchat_training_curves.png",
        "chitchat_importance_weights.png",
        "chitchat_advantages.png",
    ):
        assert (root / "runs" / "figures" / name).stat().st_size > 0


def test_plot_rebuilds_figures_from_logs(smoke_run):
    root, _ = smoke_run
    figures = root / "runs" / "figures"
    for png in figures.glob("*.png"):
        png.unlink()
    out = _run(["plot", "--results", "runs", "--figures", "runs/figures"], root)
    assert "chitchat_training_curves.png" in out
    assert (figures / "chitchat_training_curves.png").exists()


def test_second_run_reuses_cache_and_resumes(smoke_run):
    root, _ = smoke_run
    run_dir = root / "runs" / "chitchat" / "runs" / "a_lol-s1"
    before = json.loads((run_dir / "test.json").read_text())
    (run_dir / "test.json").unlink()  # as if interrupted before this run finished
    out = _run(["reproduce", "--preset", "smoke", "--seeds", "0,1", "--no-progress"], root)
    assert (
        "[cache] building" not in out and out.count("[cache] reusing") >= 4
    )  # reward, pi_ref, offline, rejected
    assert out.count(": test total") == 1  # only the unfinished run is trained again
    assert f"reused {2 * len(FULL_METHODS) - 1} finished run(s)" in out
    again = json.loads((run_dir / "test.json").read_text())
    timing = {"train_seconds"}  # wall time, the one field a rerun need not repeat
    assert {k: v for k, v in again.items() if k not in timing} == {
        k: v for k, v in before.items() if k not in timing
    }  # same seed, same numbers


def test_extra_invocation_adds_to_the_summary(smoke_run):
    """Runs from an earlier call (other --methods / --seeds) stay in summary.csv beside the new ones."""
    root, _ = smoke_run
    out = _run(
        [
            "reproduce",
            "--preset",
            "smoke",
            "--methods",
            "a_lol_no_clamp",
            "--seeds",
            "0",
            "--no-progress",
        ],
        root,
    )
    assert (
        "offline-rejected" not in out
    )  # no pairwise method: the rejected replies are not even loaded
    with open(root / "runs" / "chitchat" / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    pairs = [(r["method"], r["seed"]) for r in rows]
    expected = {("pi_ref", ""), ("a_lol_no_clamp", "0")} | {
        (m, s) for m in FULL_METHODS for s in ("0", "1")
    }
    assert set(pairs) == expected and len(pairs) == len(expected)
    assert pairs[0] == ("pi_ref", "") and pairs.index(("a_lol_no_clamp", "0")) > pairs.index(
        ("pro", "1")
    )


def test_smoke_reproduce_on_tiny_hh(tmp_path):
    out = _run(
        [
            "reproduce",
            "--task",
            "tiny-hh",
            "--preset",
            "smoke",
            "--methods",
            "nll,a_lol,dpo",
            "--no-progress",
        ],
        tmp_path,
    )
    with open(tmp_path / "runs" / "tiny-hh" / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["method"] for r in rows] == ["pi_ref", "nll", "a_lol", "dpo"]
    # test scores come from the judge, with the training reward model's score beside them
    assert {"helpful", "harmless", "coherent", "train_rm", "total"} <= set(rows[0])
    assert "leftover fraction" in out
