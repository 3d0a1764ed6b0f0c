"""Resume keyed by content: a finished run is reused only when its settings, inputs and the
package's source are unchanged; a summary never mixes runs made otherwise. Smoke runs."""

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import alol_min

pytestmark = pytest.mark.slow

BASE = ["reproduce", "--preset", "smoke", "--methods", "nll,a_lol", "--seeds", "0", "--no-progress"]


def _run(args, cwd, **env):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **env}
    result = subprocess.run(
        [sys.executable, "-m", "alol_min", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def _methods(root):
    with open(root / "runs" / "chitchat" / "summary.csv") as handle:
        return [r["method"] for r in csv.DictReader(handle)]


def test_reuse_retrain_and_summaries(tmp_path):
    out = _run(BASE, tmp_path)
    assert out.count(": test total") == 2
    assert "Against the reference in results/chitchat" in out and "no reference" in out
    assert "The paper's claims on this run" in out
    assert not (tmp_path / "results").exists()  # the reference is never written by a plain run

    out = _run(BASE, tmp_path)  # the same inputs: nothing is trained
    assert out.count(": test total") == 0
    assert "reused 2 finished run(s) made from the same settings, inputs and code" in out

    out = _run([*BASE, "--offline.lr", "1e-3"], tmp_path)  # a config change retrains
    assert out.count(": test total") == 2
    assert "retrained nll-s0 (config offline.lr 0.0003 -> 0.001)" in out

    # a student's edit of losses.py (a copy of the package first on the path) retrains every run
    src = tmp_path / "src"
    shutil.copytree(
        Path(alol_min.__file__).parent, src / "alol_min",
        ignore=shutil.ignore_patterns("__pycache__"),
    )  # fmt: skip
    losses = src / "alol_min" / "losses.py"
    losses.write_text(losses.read_text() + "\n# a student's edit\n")
    out = _run([*BASE, "--offline.lr", "1e-3"], tmp_path, PYTHONPATH=str(src))
    assert out.count(": test total") == 2
    assert "retrained a_lol-s0 (source losses)" in out

    # back to the default config, NLL only: the A-LoL run in the folder was made otherwise, so it is
    # left out of the summary (and said so), never mixed with this call's rows
    out = _run(["reproduce", "--preset", "smoke", "--methods", "nll", "--no-progress"], tmp_path)
    assert "left out of summary.csv: 1 run(s)" in out and "a_lol-s0" in out
    assert _methods(tmp_path) == ["pi_ref", "nll"]

    # PPO beside it: the NLL run of the other family stays in the summary; a PPO flag retrains PPO
    # alone, and the NLL run is reused
    smoke = ["reproduce", "--preset", "smoke", "--no-progress"]
    out = _run([*smoke, "--methods", "ppo"], tmp_path)
    assert "PPO seed 0: test total" in out and _methods(tmp_path) == ["pi_ref", "nll", "ppo"]
    out = _run([*smoke, "--methods", "nll,ppo", "--ppo.lr", "1e-3"], tmp_path)
    assert "reused 1 finished run(s)" in out and "nll-s0" in out
    assert "retrained ppo-s0 (config ppo.lr 0.0001 -> 0.001)" in out
    assert _methods(tmp_path) == ["pi_ref", "nll", "ppo"]


def test_duplicate_methods_and_seeds_are_refused(tmp_path):
    for flag, value in (("--methods", "nll,nll"), ("--seeds", "0,0")):
        result = subprocess.run(
            [sys.executable, "-m", "alol_min", "reproduce", flag, value],
            cwd=tmp_path, capture_output=True, text=True,
        )  # fmt: skip
        assert result.returncode == 2 and "given more than once" in result.stderr
