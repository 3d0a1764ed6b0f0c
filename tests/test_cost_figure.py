"""The sample-efficiency figure and cost table, from hand-written run logs."""

import csv
import json

from alol_min.losses import METHODS
from alol_min.run.figure_index import write_index
from alol_min.run.plots import METHOD_COLOURS, calls_to_reach, plot_all


def _run(task, name, rows):
    folder = task / "runs" / name
    folder.mkdir(parents=True)
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_cost_table_and_calls_to_reach(tmp_path):
    task = tmp_path / "chitchat"
    offline = {"samples_generated": 100, "reward_calls": 1100}
    _run(task, "a_lol-s0", [{"step": s, "val_total": v, "seconds": s * 0.5, **offline}
                            for s, v in ((0, 3.0), (10, 3.4), (20, 3.3))])  # fmt: skip
    _run(task, "nll-s0", [{"step": s, "val_total": v, "seconds": s * 0.5, "samples_generated": 0,
                           "reward_calls": 0} for s, v in ((0, 3.0), (10, 3.2))])  # fmt: skip
    ppo = [{"step": s, "val_total": v, "seconds": s * 2.0, "samples_generated": 64 * s,
            "reward_calls": 64 * s} for s, v in ((0, 3.0), (5, 3.3), (10, 3.45))]  # fmt: skip
    _run(task, "ppo-s0", ppo)
    assert calls_to_reach(ppo, 3.4) == 640 and calls_to_reach(ppo, 3.5) is None
    with open(task / "summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["method", "seed", "total", "length", "kl_ref",
                                         "samples_generated", "reward_calls", "reward_calls_run",
                                         "train_seconds"])  # fmt: skip
        writer.writeheader()
        writer.writerow({"method": "pi_ref", "seed": "", "total": 3.0, "length": 9})
        for m, calls in (("nll", 0), ("a_lol", 1100), ("ppo", 640)):
            writer.writerow({"method": m, "seed": 0, "total": 3.3, "length": 8, "kl_ref": 1.5,
                             "samples_generated": calls, "reward_calls": calls,
                             "reward_calls_run": calls,
                             "train_seconds": 10})  # fmt: skip
    written = plot_all(task, tmp_path / "figures", "chitchat")
    assert tmp_path / "figures" / "chitchat_cost.png" in written
    table = (tmp_path / "figures" / "chitchat_cost.md").read_text()
    assert "| PPO | 1 | 640 | 640 | 640 | 10 | 2 | 3.450 | 1.5 | 8 |" in table
    assert "| A-LoL | 1 | 1100 | 1100 | 1100 | 10 | 0.5 | 3.400 |" in table
    assert (
        "A-LoL's best validation reward (mean over seeds) 3.400: PPO reached it after 640" in table
    )
    results = (tmp_path / "figures" / "chitchat_results.md").read_text()
    assert "reward_calls" not in results and "kl_ref" in results  # costs live in the cost table


def test_every_method_has_its_own_colour():
    assert set(METHOD_COLOURS) == set(METHODS)
    assert len(set(METHOD_COLOURS.values())) == len(METHOD_COLOURS)


def test_figure_index_lists_every_png_with_its_caption(tmp_path):
    for name in ("tiny-hh_cost.png", "chitchat-low-rated_advantages.png", "odd.png"):
        (tmp_path / name).write_bytes(b"")
    text = write_index(tmp_path).read_text()
    assert "| [tiny-hh_cost.png](tiny-hh_cost.png) | tiny-hh: validation reward against" in text
    assert "| chitchat-low-rated: the training set's advantages" in text
    assert "| [odd.png](odd.png) | (no caption: an unknown kind) |" in text
