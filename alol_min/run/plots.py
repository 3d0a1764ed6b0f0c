"""Figures and tables, rebuilt from the logged results only (never from a live run).

results/<task>/runs/<method>-s<seed>/log.jsonl  -> validation reward vs step, clip fraction vs step
results/<task>/runs/<method>-s<seed>/importance.json -> importance weights of the kept checkpoint
results/<task>/summary.csv                       -> the results table (mean +- std over seeds)
results/<task>/decoding_noise.json               -> pi_ref's test reward sd over decoding seeds
results/<task>/advantage_hist.json               -> the advantage distribution, leftovers marked
results/<task>-low-rated, <task>-high-rated      -> the noisy-data figure (A-LoL vs NLL)
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch

from alol_min.importance import clipped_share
from alol_min.losses import METHODS

TABLE_METRICS = ("total", "length", "distinct_1", "distinct_2", "distinct_3")
COST_METRICS = ("samples_generated", "reward_calls", "reward_calls_run", "train_seconds")
"""summary.csv's cost columns: in the cost table (`plot_cost`), not the results table."""


def _label(method: str) -> str:
    return METHODS[method].label if method in METHODS else method


METHOD_COLOURS = {
    "a_lol": "tab:green", "a_lol_ref_free": "tab:olive", "a_lol_seq": "tab:red",
    "a_lol_kl": "tab:purple", "nll": "tab:blue", "wbc": "tab:cyan", "r_gold": "tab:orange",
    "r_lol": "tab:brown", "dpo": "tab:pink", "dpo_ref_free": "#f7b6d2", "pro": "tab:gray",
    "ppo": "black", "a_lol_no_clamp": "#98df8a", "a_lol_good_random": "#9edae5",
}  # fmt: skip
"""One colour per method, the same in every figure."""


def method_colour(method: str):
    """The method's colour; a name outside the registry gets a light grey."""
    return METHOD_COLOURS.get(method, "#c7c7c7")


def _online(method: str) -> bool:
    return method in METHODS and METHODS[method].online


def read_logs(task_dir: Path) -> dict[str, list[list[dict]]]:
    """{method: [rows of seed 0, rows of seed 1, ...]} from the run folders listed in summary.csv
    (every run folder when there is none)."""
    runs = defaultdict(list)
    listed = _listed(task_dir)
    for log in sorted(Path(task_dir).glob("runs/*/log.jsonl")):
        if listed is not None and log.parent.name not in listed:
            continue
        method = log.parent.name.rsplit("-s", 1)[0]
        runs[method].append(
            [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        )
    return dict(runs)


def _listed(task_dir: Path) -> set[str] | None:
    """The run folders summary.csv lists (None without a summary)."""
    if not (Path(task_dir) / "summary.csv").exists():
        return None
    return {f"{r['method']}-s{r['seed']}" for r in read_summary(task_dir)}


def read_summary(task_dir: Path, name: str = "summary.csv") -> list[dict]:
    with open(Path(task_dir) / name) as handle:
        return list(csv.DictReader(handle))


def results_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Per method: mean +- std over seeds of every numeric column (reward components first)."""
    skip = {"method", "seed", "steps", "examples_seen", "kept_step", *COST_METRICS}
    metrics = [k for k in rows[0] if k not in skip and not k.endswith("/n")]
    metrics = [m for m in metrics if m not in TABLE_METRICS] + [
        m for m in TABLE_METRICS if m in metrics
    ]
    by_method = defaultdict(list)
    for row in rows:
        by_method[row["method"]].append(row)
    header = ["method", "seeds"] + metrics + ["steps"]
    table = []
    for method, group in by_method.items():
        kept_ref = sum(str(r.get("kept_step")) == "0" for r in group)
        label = _label(method) + (f" (kept pi_ref {kept_ref}/{len(group)})" if kept_ref else "")
        cells = [label, str(len(group))]
        for metric in metrics + ["steps"]:
            values = np.array([float(r[metric]) for r in group if r.get(metric) not in (None, "")])
            if len(values) == 0:
                cells.append("")
            elif len(values) == 1:
                cells.append(f"{values[0]:.3f}" if metric != "steps" else f"{values[0]:.0f}")
            else:
                cells.append(
                    f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"
                    if metric != "steps"
                    else f"{values.mean():.0f}"
                )
        table.append(cells)
    return header, table


def write_table(task_dir: Path, figures_dir: Path, task: str) -> Path:
    header, table = results_table(read_summary(task_dir))
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(row) + " |" for row in table]
    noise_path = Path(task_dir) / "decoding_noise.json"
    if noise_path.exists():
        noise = json.loads(noise_path.read_text())
        md += [
            "",
            f"Decoding noise: pi_ref's test total has sd {noise['sd']:.3f} over {len(noise['seeds'])} "
            f"decoding seeds ({noise['prompts']} prompts); ± above is the sd over training seeds, all "
            "decoded with the first decoding seed.",
        ]
    path = figures_dir / f"{task}_results.md"
    path.write_text("\n".join(md) + "\n")
    with open(figures_dir / f"{task}_results.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(table)
    return path


def _curves(ax, runs, key: str, ylabel: str, smooth: int = 1):
    """Mean over seeds (band: ± sd) of `key` against step; `smooth` > 1 takes a moving average of
    that many logged points first (for per-step series such as the clip fraction)."""
    for method, seeds in runs.items():
        points = [{r["step"]: r[key] for r in rows if key in r} for rows in seeds]
        steps = sorted(set.intersection(*[set(p) for p in points])) if points else []
        if not steps:
            continue
        values = np.array([[p[s] for s in steps] for p in points])
        if smooth > 1 and values.shape[1] >= smooth:
            kernel = np.ones(smooth) / smooth
            values = np.array([np.convolve(v, kernel, mode="valid") for v in values])
            steps = steps[smooth - 1 :]
        mean = values.mean(0)
        (line,) = ax.plot(
            steps, mean, marker="o" if smooth == 1 else None, ms=3, label=_label(method),
            color=method_colour(method),
        )  # fmt: skip
        if len(values) > 1:
            std = values.std(0, ddof=1)
            ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def plot_all(task_dir: Path, figures_dir: Path, task: str) -> list[Path]:
    """Write every figure and the table for one task; returns the paths written."""

    matplotlib.use("Agg")

    figures_dir.mkdir(parents=True, exist_ok=True)
    runs = read_logs(task_dir)
    written = [write_table(task_dir, figures_dir, task)]

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    alol = {m: r for m, r in runs.items() if m.startswith("a_lol")}
    others = {m: r for m, r in runs.items() if not m.startswith("a_lol") or m == "a_lol"}
    for ax, group, title in (
        (axes[0], alol, "A-LoL variants"),
        (axes[1], others, "baselines (A-LoL for reference)"),
    ):
        _curves(ax, group, "val_total", "validation reward (mean ± sd over seeds)")
        ax.set_title(f"{task}: {title}", fontsize=10)
        if ax.lines:
            ax.legend(fontsize=7)
    written.append(figures_dir / f"{task}_training_curves.png")
    fig.tight_layout()
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    _importance_histogram(axes[0], Path(task_dir))
    _curves(
        axes[1],
        {
            m: s
            for m, s in runs.items()
            if any("clip_fraction" in r for r in s[0]) and not _online(m)
        },  # fmt: skip
        "clip_fraction",
        "fraction of importance weights at 1 ± ε",
        smooth=10,
    )
    axes[1].set_title(
        f"{task}: weights at the clip bounds (training batches, 10-step mean)", fontsize=10
    )
    if axes[1].lines:
        axes[1].legend(fontsize=7)
    written.append(figures_dir / f"{task}_importance_weights.png")
    fig.tight_layout()
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)

    hist_path = Path(task_dir) / "advantage_hist.json"
    if hist_path.exists():
        hist = json.loads(hist_path.read_text())
        edges, counts = np.array(hist["edges"]), np.array(hist["counts"])
        fig, ax = plt.subplots(figsize=(6, 4))
        centers = (edges[:-1] + edges[1:]) / 2
        ax.bar(
            centers,
            counts,
            width=np.diff(edges),
            color=np.where(centers > 0, "tab:green", "tab:gray"),
        )
        ax.axvline(0, color="k", lw=1)
        ax.set_xlabel("advantage A = R - V_ref(x)")
        ax.set_ylabel("training pairs")
        ax.set_title(
            f"{task}: leftovers (A > 0, green) = {hist['leftover_fraction']:.1%} of the data"
        )
        written.append(figures_dir / f"{task}_advantages.png")
        fig.tight_layout()
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    validated = all(
        any("val_total" in r for r in rows) for seeds in runs.values() for rows in seeds
    )
    if "ppo" in runs and validated:  # the cost figure draws validation reward
        written += plot_cost(Path(task_dir), figures_dir, task, runs)
    return written


COST_METHODS = ("nll", "a_lol", "ppo")


def _best_validation(rows: list[dict]) -> float:
    return max(r["val_total"] for r in rows if "val_total" in r)


def calls_to_reach(rows: list[dict], level: float) -> int | None:
    """Reward calls of the first validation at or above `level` (None: never reached)."""
    return next((r["reward_calls"] for r in rows if r.get("val_total", -np.inf) >= level), None)


def plot_cost(task_dir: Path, figures_dir: Path, task: str, runs: dict) -> list[Path]:
    """The sample-efficiency figure: validation reward against (a) training steps and (b) reward
    calls (the training's own: rollouts for PPO, the one-time V fit and training-set rewards for
    the offline methods), NLL, A-LoL and PPO; and the cost table beside it."""
    runs = {m: runs[m] for m in COST_METHODS if m in runs}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    _curves(axes[0], runs, "val_total", "validation reward (mean ± sd over seeds)")
    axes[0].set_title(f"{task}: (a) against training steps (PPO: rollouts)", fontsize=10)
    for method, seeds in runs.items():
        best = float(np.mean([_best_validation(rows) for rows in seeds]))
        if _online(method):
            points = [[(r["reward_calls"], r["val_total"]) for r in rows if "val_total" in r]
                      for rows in seeds]  # fmt: skip
            n = min(len(p) for p in points)
            x = np.mean([[c for c, _ in p[:n]] for p in points], axis=0)
            y = np.array([[v for _, v in p[:n]] for p in points])
            (line,) = axes[1].plot(x, y.mean(0), marker="o", ms=3, label=_label(method),
                                   color=method_colour(method))  # fmt: skip
            if len(y) > 1:
                sd = y.std(0, ddof=1)
                axes[1].fill_between(x, y.mean(0) - sd, y.mean(0) + sd, color=line.get_color(),
                                     alpha=0.2)  # fmt: skip
        else:  # every call is paid before the first step: a point, then its best level
            cost = seeds[0][0].get("reward_calls", 0)
            axes[1].plot([cost], [best], marker="s", ms=6, ls="none", label=_label(method),
                         color=method_colour(method))  # fmt: skip
            axes[1].axhline(best, color=axes[1].lines[-1].get_color(), ls="--", lw=1)
    axes[1].set_xlabel("reward calls (training)")
    axes[1].set_title(f"{task}: (b) against reward calls (offline: paid once, dashed: best)",
                      fontsize=10)  # fmt: skip
    axes[1].grid(alpha=0.3)
    for ax in axes:
        if ax.lines:
            ax.legend(fontsize=7)
    path = figures_dir / f"{task}_cost.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path, write_cost_table(task_dir, figures_dir, task, runs)]


def write_cost_table(task_dir: Path, figures_dir: Path, task: str, runs: dict) -> Path:
    """Per method, mean over seeds: samples generated and reward calls up to the kept checkpoint
    (and reward calls of the whole run),
    training seconds and seconds per step, the best validation reward, test KL to pi_ref and
    length; and the reward calls PPO needed to reach A-LoL's best validation reward."""
    rows = defaultdict(list)
    for row in read_summary(task_dir):
        rows[row["method"]].append(row)

    def mean(method, key):
        values = [float(r[key]) for r in rows.get(method, []) if r.get(key) not in (None, "")]
        if not values:
            return ""
        value = float(np.mean(values))
        return f"{value:.0f}" if key in COST_METRICS else f"{value:.3g}"

    md = ["| method | seeds | samples generated | reward calls | reward calls, whole run | train s | "
          "s / step | best validation | test KL to pi_ref | test length |", "|" + "---|" * 10]  # fmt: skip
    for method, seeds in runs.items():
        per_step = np.mean([rows_[-1]["seconds"] / rows_[-1]["step"] for rows_ in seeds])
        best = np.mean([_best_validation(r) for r in seeds])
        md.append(
            f"| {_label(method)} | {len(seeds)} | {mean(method, 'samples_generated')} | "
            f"{mean(method, 'reward_calls')} | {mean(method, 'reward_calls_run')} | "
            f"{mean(method, 'train_seconds')} | {per_step:.3g} | "
            f"{best:.3f} | {mean(method, 'kl_ref')} | {mean(method, 'length')} |"
        )
    if "ppo" in runs and "a_lol" in runs:
        level = float(np.mean([_best_validation(r) for r in runs["a_lol"]]))
        reached = [calls_to_reach(r, level) for r in runs["ppo"]]
        md += ["", f"A-LoL's best validation reward (mean over seeds) {level:.3f}: PPO reached it "
               f"after {', '.join('never' if c is None else f'{c} reward calls' for c in reached)} "
               "(per seed)."]  # fmt: skip
    path = figures_dir / f"{task}_cost.md"
    path.write_text("\n".join(md) + "\n")
    return path


def _importance_histogram(ax, task_dir: Path, method: str = "a_lol") -> None:
    """Histogram of r = pi_theta(y|x) / pi_ref(y|x) on the probe pairs, at the kept checkpoint of
    every seed of `method`, with the clip bounds 1 ± ε."""
    listed = _listed(task_dir)
    files = [
        f
        for f in sorted(task_dir.glob(f"runs/{method}-s*/importance.json"))
        if listed is None or f.parent.name in listed
    ]
    if not files:
        ax.text(
            0.5, 0.5, f"no importance.json in {method} runs", ha="center", transform=ax.transAxes
        )
        return
    probes = [json.loads(f.read_text()) for f in files]
    log_r = np.concatenate([p["log_ratio"] for p in probes])
    ax.hist(np.clip(log_r, -8, 8), bins=np.linspace(-8, 8, 65), color="tab:blue", alpha=0.8)
    clip = probes[0]["clip"]
    if clip is not None:
        for bound in (1 - clip, 1 + clip):
            ax.axvline(np.log(max(bound, 1e-9)), color="k", ls="--", lw=1)
        outside = clipped_share(torch.as_tensor(log_r), clip)
        ax.set_title(
            f"{_label(method)}: r at the kept checkpoint ({len(files)} seeds); "
            f"{outside:.0%} clipped",
            fontsize=10,
        )
    ax.set_xlabel(
        "log r = log pi_theta(y|x) - log pi_ref(y|x)  (|log r| > 8 shown at ±8; dashed: log(1 ± ε))"
    )
    ax.set_ylabel("probe pairs (A > 0)")


POOL_NAMES = {"tiny-hh": {"low-rated": "label-noise", "high-rated": "clean"}}
"""What the pools hold, where it is not a human rating (tasks.rated_pool)."""


def plot_noisy(results_dir: Path, figures_dir: Path, task: str) -> Path | None:
    """Figure 5: test reward of each method trained on low- vs high-rated data (mean ± sd over seeds),
    pi_ref as a line; None unless both results/<task>-low-rated and -high-rated exist."""
    dirs = {pool: Path(results_dir) / f"{task}-{pool}" for pool in ("low-rated", "high-rated")}
    if not all((d / "summary.csv").exists() for d in dirs.values()):
        return None

    matplotlib.use("Agg")

    names = POOL_NAMES.get(task, {})
    tables = {names.get(pool, pool): read_summary(d) for pool, d in dirs.items()}
    low, high = tables
    methods = [m for m in dict.fromkeys(r["method"] for r in tables[low]) if m != "pi_ref"]
    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.8 / max(1, len(methods))
    md = [
        "| method | " + " | ".join(f"{pool} total" for pool in tables) + " | gap (high - low) |",
        "|---|---|---|---|",
    ]
    heights = []
    for k, method in enumerate(methods):
        means, sds = [], []
        for pool, rows in tables.items():
            values = np.array([float(r["total"]) for r in rows if r["method"] == method])
            means.append(values.mean() if len(values) else np.nan)
            sds.append(values.std(ddof=1) if len(values) > 1 else 0.0)
        ax.bar(
            np.arange(2) + (k - (len(methods) - 1) / 2) * width,
            means,
            width,
            yerr=sds,
            capsize=3,
            label=_label(method),
            color=method_colour(method),
        )
        heights += means
        md.append(
            f"| {_label(method)} | "
            + " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in zip(means, sds))
            + f" | {means[1] - means[0]:+.3f} |"
        )
    ref = [float(r["total"]) for r in tables[low] if r["method"] == "pi_ref"]
    if ref:
        ax.axhline(ref[0], color="k", ls=":", lw=1, label="pi_ref")
    ax.set_xticks(range(2), [f"trained on {pool} replies" for pool in tables])
    ax.set_ylabel("test reward (mean ± sd over seeds)")
    ax.set_title(f"{task}: trained on {low} against {high} replies", fontsize=10)
    shown = [h for h in heights + ref if np.isfinite(h)]
    if shown:  # bars start at 0, never at a truncated floor; room above for the legend
        ax.set_ylim(0, max(shown) * 1.25)
    ax.legend(fontsize=8, ncols=2)
    figures_dir.mkdir(parents=True, exist_ok=True)
    path = figures_dir / f"{task}_noisy_data.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    (figures_dir / f"{task}_noisy_data.md").write_text("\n".join(md) + "\n")
    return path
