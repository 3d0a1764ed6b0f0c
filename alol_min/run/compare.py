"""A run set against the committed reference, method by method.

    rows = compare(Path("runs/chitchat"), Path("results/chitchat"))

For each method of the run: this run's test total (mean over its seeds), the reference's mean ± sd
over its seeds, the reference's decoding noise (pi_ref's test-total sd over decoding seeds; 0 under
greedy or beam search, which do not sample), and a verdict:

    tolerance = 2 * max(reference seed sd, decoding noise)
    "within noise" if |this - reference mean| <= tolerance, else "differs"

With one reference seed and a deterministic decoding the tolerance is 0: only the same number is
"within noise". The row also names what the two were made from that differs (settings, inputs,
package modules), read from the runs' provenance: after an edit of `losses.py` the expected
difference is "source losses".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from alol_min.losses import METHODS
from alol_min.run.plots import read_summary
from alol_min.run.provenance import differences, read_provenance

WITHIN, DIFFERS, NO_REFERENCE = "within noise", "differs", "no reference"
NOT_COMPARABLE, NOISE_UNKNOWN = "not comparable", "noise unknown"


def _totals(rows: list[dict]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for row in rows:
        if row.get("total") not in (None, ""):
            out.setdefault(row["method"], []).append(float(row["total"]))
    return out


def protocol(task_dir: Path) -> dict:
    """The folder's protocol.json (its test decoding and shared provenance key), {} if none."""
    path = Path(task_dir) / "protocol.json"
    return json.loads(path.read_text()) if path.exists() else {}


def decoding_noise_sd(task_dir: Path) -> float:
    """The sd in `decoding_noise.json` when it was measured for this folder's runs under the decoding
    its tables use; 0 when that decoding is deterministic; nan when unknown."""
    made = protocol(task_dir)
    if made.get("deterministic"):
        return 0.0
    path = Path(task_dir) / "decoding_noise.json"
    if not path.exists():
        return float("nan")
    noise = json.loads(path.read_text())
    same = noise.get("decoding") == made.get("decoding") and noise.get("shared_key") == made.get(
        "shared_key"
    )
    return float(noise["sd"]) if same else float("nan")


def compare(run_dir: Path, reference_dir: Path) -> list[dict]:
    """One row per method of `run_dir`'s summary (pi_ref first): see the module docstring. When the
    two folders were tested under different decodings (or the reference records none), every row is
    "not comparable"; with a sampled decoding, one reference seed and no measured decoding noise,
    "noise unknown"."""
    run_dir, reference_dir = Path(run_dir), Path(reference_dir)
    mine = _totals(read_summary(run_dir))
    has_reference = (reference_dir / "summary.csv").exists()
    theirs = _totals(read_summary(reference_dir)) if has_reference else {}
    noise = decoding_noise_sd(reference_dir) if has_reference else float("nan")
    decoding = (protocol(run_dir).get("decoding"), protocol(reference_dir).get("decoding"))
    listed = {
        "mine": _listed(run_dir),
        "theirs": _listed(reference_dir) if has_reference else set(),
    }
    rows = []
    for method, values in mine.items():
        row = {
            "method": method,
            "label": METHODS[method].label if method in METHODS else method,
            "this": float(np.mean(values)),
            "seeds": len(values),
            "made_from": "",
        }
        ref = theirs.get(method)
        if not ref:
            rows.append({**row, "verdict": NO_REFERENCE})
            continue
        sd = float(np.std(ref, ddof=1)) if len(ref) > 1 else 0.0
        gap = row["this"] - float(np.mean(ref))
        if decoding[0] != decoding[1]:
            verdict = f"{NOT_COMPARABLE}: decoding {decoding[0]} vs {decoding[1] or 'unrecorded'}"
        elif np.isnan(noise) and len(ref) < 2:
            verdict = NOISE_UNKNOWN
        else:
            tolerance = 2 * max(sd, 0.0 if np.isnan(noise) else noise)
            verdict = WITHIN if abs(gap) <= tolerance + 5e-5 else DIFFERS  # totals: 4 decimals
        rows.append(
            {
                **row,
                "reference": float(np.mean(ref)),
                "reference_sd": sd,
                "reference_seeds": len(ref),
                "noise": noise,
                "gap": gap,
                "verdict": verdict,
                "made_from": _made_from(run_dir, reference_dir, method, listed),
            }
        )
    return rows


def _listed(task_dir: Path) -> set[str]:
    return {f"{r['method']}-s{r['seed']}" for r in read_summary(task_dir)}


def _made_from(run_dir: Path, reference_dir: Path, method: str, listed: dict) -> str:
    """What differs between this run's first seed and the reference's first seed of `method` (runs
    listed in each summary only)."""
    if method == "pi_ref":
        return ""
    found = []
    for folder, key in ((reference_dir, "theirs"), (run_dir, "mine")):
        names = sorted(n for n in listed[key] if n.rsplit("-s", 1)[0] == method)
        found.append(read_provenance(folder / "runs" / names[0]) if names else None)
    a, b = found
    if a is None or b is None:
        return "no provenance to compare"
    for part in (a, b):
        part.pop("run", None)  # seeds may differ; a run's seed is not a difference of protocol
    diff = differences(a, b)
    return "; ".join(diff) if diff else "the same settings, inputs and code"


def comparison_markdown(rows: list[dict], reference_dir: Path) -> str:
    lines = [
        f"Against the reference in {reference_dir}:",
        "",
        "| method | this run | reference (mean ± sd, seeds) | decoding noise | verdict | made from |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "reference" not in r:
            lines.append(f"| {r['label']} | {r['this']:.3f} | (none) | | {r['verdict']} | |")
            continue
        noise = "unknown" if np.isnan(r["noise"]) else f"{r['noise']:.3f}"
        lines.append(
            f"| {r['label']} | {r['this']:.3f} | {r['reference']:.3f} ± {r['reference_sd']:.3f} "
            f"({r['reference_seeds']}) | {noise} | {r['verdict']} ({r['gap']:+.3f}) | "
            f"{r['made_from']} |"
        )
    return "\n".join(lines) + "\n"
