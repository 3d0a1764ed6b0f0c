"""figures/README.md: the index of every figure `python -m alol_min plot` writes, one line each."""

from __future__ import annotations

from pathlib import Path

FIGURE_KINDS = {
    "training_curves": "validation reward against training step, mean ± sd over seeds: the A-LoL "
    "variants (left), the baselines with A-LoL (right)",
    "importance_weights": "A-LoL's sequence ratios r at the kept checkpoint (left) and the share of "
    "weights at the clip bounds during training (right)",
    "advantages": "the training set's advantages A = R - V_ref(x); green: the leftovers (A > 0)",
    "noisy_data": "test reward after training on the low-rated (noisy) against the high-rated replies",
    "cost": "validation reward against training steps and against reward calls: NLL, A-LoL, PPO",
}
"""What each kind of figure shows, for the index (`write_index`)."""


def write_index(figures_dir: Path) -> Path:
    """figures/README.md: every PNG in the folder with one line saying what it shows."""
    lines = ["# Figures", "",
             "Rebuilt from the committed logs in `results/` by `python -m alol_min plot`. "
             "`<task>-low-rated` and `<task>-high-rated` are the noisy-data runs' folders.", "",
             "| figure | what it shows |", "|---|---|"]  # fmt: skip
    for png in sorted(Path(figures_dir).glob("*.png")):
        kind = next((k for k in FIGURE_KINDS if png.stem.endswith(f"_{k}")), None)
        task = png.stem[: -len(kind) - 1] if kind else png.stem
        caption = f"{task}: {FIGURE_KINDS[kind]}" if kind else "(no caption: an unknown kind)"
        lines.append(f"| [{png.name}]({png.name}) | {caption} |")
    path = Path(figures_dir) / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path
