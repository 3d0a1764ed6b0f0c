"""Figures and tables, rebuilt from the logged results only (never from a live run).

    results/<task>/runs/<method>-s<seed>/log.jsonl  -> validation reward vs step, clip fraction vs step
    results/<task>/summary.csv                       -> the results table (mean +- std over seeds)
    results/<task>/advantage_hist.json               -> the advantage distribution, leftovers marked
"""
from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from .losses import METHODS

TABLE_METRICS = ("total", "length", "distinct_1", "distinct_2", "distinct_3")


def _label(method: str) -> str:
    return METHODS[method].label if method in METHODS else method


def read_logs(task_dir: Path) -> dict[str, list[list[dict]]]:
    """{method: [rows of seed 0, rows of seed 1, ...]} from every run folder."""
    runs = defaultdict(list)
    for log in sorted(Path(task_dir).glob("runs/*/log.jsonl")):
        method = log.parent.name.rsplit("-s", 1)[0]
        runs[method].append([json.loads(line) for line in log.read_text().splitlines() if line.strip()])
    return dict(runs)


def read_summary(task_dir: Path) -> list[dict]:
    with open(Path(task_dir) / "summary.csv") as handle:
        return list(csv.DictReader(handle))


def results_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Per method: mean +- std over seeds of every numeric column (reward components first)."""
    skip = {"method", "seed", "steps", "examples_seen"}
    metrics = [k for k in rows[0] if k not in skip]
    metrics = [m for m in metrics if m not in TABLE_METRICS] + [m for m in TABLE_METRICS if m in metrics]
    by_method = defaultdict(list)
    for row in rows:
        by_method[row["method"]].append(row)
    header = ["method", "seeds"] + metrics + ["steps"]
    table = []
    for method, group in by_method.items():
        cells = [_label(method), str(len(group))]
        for metric in metrics + ["steps"]:
            values = np.array([float(r[metric]) for r in group if r.get(metric) not in (None, "")])
            if len(values) == 0:
                cells.append("")
            elif len(values) == 1:
                cells.append(f"{values[0]:.3f}" if metric != "steps" else f"{values[0]:.0f}")
            else:
                cells.append(f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if metric != "steps" else f"{values.mean():.0f}")
        table.append(cells)
    return header, table


def write_table(task_dir: Path, figures_dir: Path, task: str) -> Path:
    header, table = results_table(read_summary(task_dir))
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(row) + " |" for row in table]
    path = figures_dir / f"{task}_results.md"
    path.write_text("\n".join(md) + "\n")
    with open(figures_dir / f"{task}_results.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(table)
    return path


def _curves(ax, runs, key: str, ylabel: str):
    for method, seeds in runs.items():
        points = [{r["step"]: r[key] for r in rows if key in r} for rows in seeds]
        steps = sorted(set.intersection(*[set(p) for p in points])) if points else []
        if not steps:
            continue
        values = np.array([[p[s] for s in steps] for p in points])
        mean = values.mean(0)
        line, = ax.plot(steps, mean, marker="o", ms=3, label=_label(method))
        if len(values) > 1:
            std = values.std(0, ddof=1)
            ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def plot_all(task_dir: Path, figures_dir: Path, task: str) -> list[Path]:
    """Write every figure and the table for one task; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures_dir.mkdir(parents=True, exist_ok=True)
    runs = read_logs(task_dir)
    written = [write_table(task_dir, figures_dir, task)]

    fig, ax = plt.subplots(figsize=(6, 4))
    _curves(ax, runs, "val_total", "validation reward (mean ± sd over seeds)")
    ax.set_title(f"{task}: validation reward during training")
    ax.legend(fontsize=8)
    written.append(figures_dir / f"{task}_training_curves.png")
    fig.tight_layout()
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    _curves(ax, {m: s for m, s in runs.items() if any("clip_fraction" in r for r in s[0])}, "clip_fraction",
            "fraction of importance weights at 1 ± ε")
    ax.set_title(f"{task}: importance weights at the clip bounds")
    if ax.lines:
        ax.legend(fontsize=8)
    written.append(figures_dir / f"{task}_clip_fraction.png")
    fig.tight_layout()
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)

    hist_path = Path(task_dir) / "advantage_hist.json"
    if hist_path.exists():
        hist = json.loads(hist_path.read_text())
        edges, counts = np.array(hist["edges"]), np.array(hist["counts"])
        fig, ax = plt.subplots(figsize=(6, 4))
        centers = (edges[:-1] + edges[1:]) / 2
        ax.bar(centers, counts, width=np.diff(edges), color=np.where(centers > 0, "tab:green", "tab:gray"))
        ax.axvline(0, color="k", lw=1)
        ax.set_xlabel("advantage A = R - V_ref(x)")
        ax.set_ylabel("training pairs")
        ax.set_title(f"{task}: leftovers (A > 0, green) = {hist['leftover_fraction']:.1%} of the data")
        written.append(figures_dir / f"{task}_advantages.png")
        fig.tight_layout()
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    return written
