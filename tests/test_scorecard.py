"""The claims scorecard and the noisy-data figure, on hand-written results folders."""

import csv
import json

import pytest
from datasets import Dataset

from alol_min.run.config import ReproduceConfig
from alol_min.run.plots import plot_noisy
from alol_min.run.reproduce import run
from alol_min.run.scorecard import FAILS, HOLDS, MISSING, scorecard
from alol_min.tasks.base import Task, rated_pool
from alol_min.tasks.chitchat import HIGH_RATED_FROM, LOW_RATED_BELOW, rating_pools
from alol_min.tasks.tiny_hh import label_noise_pools


def _write(task_dir, totals: dict, pi_ref=1.0, lr=3e-4):
    """A results folder: summary.csv (method, seed, total, ...), one log and provenance per run."""
    (task_dir / "runs").mkdir(parents=True)
    rows = [
        {
            "method": "pi_ref",
            "seed": "",
            "total": pi_ref,
            "length": 10,
            "distinct_2": 0.5,
            "fluency": 0.5,
        }
    ]
    for method, values in totals.items():
        for seed, total in enumerate(values):
            rows.append(
                {
                    "method": method,
                    "seed": seed,
                    "total": total,
                    "length": 10,
                    "distinct_2": 0.5,
                    "fluency": total / 2,
                }
            )
            log = [
                {"step": 0, "examples_seen": 0, "val_total": pi_ref},
                {"step": 10, "examples_seen": 320, "val_total": total},
            ]
            run = task_dir / "runs" / f"{method}-s{seed}"
            run.mkdir()
            (run / "log.jsonl").write_text("\n".join(json.dumps(r) for r in log) + "\n")
            provenance = {"config": {"pool": task_dir.name, "offline": {"lr": lr}}, "source": {}}
            (run / "provenance.json").write_text(json.dumps(provenance))
    with open(task_dir / "summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _verdicts(claims):
    return {c["claim"].split(":")[0]: c["verdict"] for c in claims}


def test_alol_over_nll_needs_a_gap_larger_than_the_seed_spread(tmp_path):
    _write(tmp_path / "clear", {"a_lol": [1.5, 1.52, 1.48], "nll": [1.1, 1.12, 1.08]})
    _write(tmp_path / "noise", {"a_lol": [1.5, 1.2, 1.0], "nll": [1.1, 1.4, 1.05]})
    _write(tmp_path / "one", {"a_lol": [1.5], "nll": [1.1]})
    key = "A-LoL beats NLL on test reward by more than the seed spread"
    assert _verdicts(scorecard(tmp_path / "clear"))[key] == HOLDS
    assert _verdicts(scorecard(tmp_path / "noise"))[key] == FAILS
    assert _verdicts(scorecard(tmp_path / "one"))[key] == MISSING
    assert (
        _verdicts(scorecard(tmp_path / "clear"))["the importance weight helps"] == MISSING
    )  # no ref-free runs


def test_data_efficiency_needs_nll_to_improve_on_pi_ref(tmp_path):
    key = "data efficiency"
    _write(tmp_path / "moves", {"a_lol": [1.5, 1.52], "nll": [1.1, 1.12]})
    assert (
        _verdicts(scorecard(tmp_path / "moves"))[key] == HOLDS
    )  # A-LoL passes NLL's best at 320 examples, as NLL
    _write(
        tmp_path / "flat", {"a_lol": [1.5, 1.52], "nll": [0.9, 0.9]}
    )  # NLL's best is pi_ref (1.0) at step 0
    claims = scorecard(tmp_path / "flat")
    assert _verdicts(claims)[key] == MISSING
    assert "never improved" in next(c["evidence"] for c in claims if c["claim"].startswith(key))


def test_noisy_claim_reads_the_sibling_rated_folders(tmp_path):
    _write(tmp_path / "chitchat", {"a_lol": [1.5, 1.5], "nll": [1.1, 1.1]})
    key = "robust to noisy data"
    assert _verdicts(scorecard(tmp_path / "chitchat"))[key] == MISSING
    _write(tmp_path / "chitchat-low-rated", {"a_lol": [1.4, 1.42], "nll": [0.9, 0.92]})
    _write(tmp_path / "chitchat-high-rated", {"a_lol": [1.6, 1.6], "nll": [1.4, 1.4]})
    claims = scorecard(tmp_path / "chitchat")
    assert _verdicts(claims)[key] == HOLDS  # gap 0.5 on low-rated > 0.2 on high-rated
    evidence = next(c["evidence"] for c in claims if c["claim"].startswith(key))
    assert "+0.500" in evidence and "+0.200" in evidence and "high-rated" in evidence
    swapped = scorecard(
        tmp_path / "chitchat",
        noisy_dir=tmp_path / "chitchat-high-rated",
        clean_dir=tmp_path / "chitchat-low-rated",
    )
    assert _verdicts(swapped)[key] == FAILS


def test_noisy_claim_refuses_folders_made_under_another_protocol(tmp_path):
    _write(tmp_path / "chitchat", {"a_lol": [1.5, 1.5], "nll": [1.1, 1.1]})
    _write(tmp_path / "chitchat-low-rated", {"a_lol": [1.4, 1.42], "nll": [0.9, 0.92]}, lr=1e-2)
    claims = scorecard(tmp_path / "chitchat")
    evidence = next(c["evidence"] for c in claims if c["claim"].startswith("robust to noisy data"))
    assert _verdicts(claims)["robust to noisy data"] == MISSING
    assert evidence.startswith("chitchat-low-rated made under another protocol")


def test_noisy_figure_and_table(tmp_path):
    results, figures = tmp_path / "results", tmp_path / "figures"
    assert plot_noisy(results, figures, "chitchat") is None  # nothing to plot yet
    _write(results / "chitchat-low-rated", {"nll": [0.9, 0.92], "a_lol": [1.4, 1.42]})
    _write(results / "chitchat-high-rated", {"nll": [1.4, 1.4], "a_lol": [1.6, 1.6]})
    path = plot_noisy(results, figures, "chitchat")
    assert path.stat().st_size > 0
    table = (figures / "chitchat_noisy_data.md").read_text()
    assert "| NLL | 0.910 ± 0.014 | 1.400 ± 0.000 | +0.490 |" in table
    assert "| A-LoL | 1.410 ± 0.014 | 1.600 ± 0.000 | +0.190 |" in table


@pytest.mark.parametrize("which", ["low-rated", "high-rated"])
def test_rated_pools_are_equal_sized_and_filtered(which):

    ratings = [1.0, 4.9, 5.0, 5.0, 9.0, 9.5, 10.0, None, 3.0]
    pool = Dataset.from_dict(
        {
            "prompt": ["p"] * 9,
            "response": ["r"] * 9,
            "rating": ratings,
            "conversation_id": [str(i // 2) for i in range(9)],
        }
    )
    task = Task("chitchat", None, None, None, None, offline_pool=pool, quality_pools=rating_pools)
    subset, report = rated_pool(task, which)
    kept = subset["rating"]
    assert len(kept) == 3 and report["unrated_pairs"] == 1
    assert report["low_rated_pairs"] == 3 and report["high_rated_pairs"] == 3
    assert (
        all(r < LOW_RATED_BELOW for r in kept)
        if which == "low-rated"
        else all(r >= HIGH_RATED_FROM for r in kept)
    )
    with pytest.raises(ValueError, match="unknown pool"):
        rated_pool(task, "medium")
    no_ratings = Task("hh-rlhf", None, None, None, None, offline_pool=pool.remove_columns("rating"))
    with pytest.raises(ValueError, match="has no quality labels"):
        rated_pool(no_ratings, which)


@pytest.mark.parametrize("which", ["low-rated", "high-rated"])
def test_tiny_hh_pools_split_by_label_noise(which):

    noisy = [True, False, False, True, False, False, False]
    pool = Dataset.from_dict({"prompt": [f"p{i}" for i in range(7)], "is_noisy": noisy})
    subset, report = rated_pool(
        Task("tiny-hh", None, None, None, None, offline_pool=pool, quality_pools=label_noise_pools),
        which,
    )
    assert report["noisy_pairs"] == 2 and report["clean_pairs"] == 5 and len(subset) == 2
    assert subset["prompt"] == (["p0", "p3"] if which == "low-rated" else ["p1", "p2"])


def test_reproduce_rejects_unknown_methods_and_pools_before_any_work(tmp_path):

    with pytest.raises(ValueError, match=r"--methods: unknown method 'a_lol_typo'"):
        run(ReproduceConfig(methods=("nll", "a_lol_typo"), out_dir=str(tmp_path), progress=False))
    with pytest.raises(ValueError, match="unknown pool"):
        run(ReproduceConfig(pool="medium", out_dir=str(tmp_path), progress=False))
    assert not any(tmp_path.iterdir())  # nothing was written
