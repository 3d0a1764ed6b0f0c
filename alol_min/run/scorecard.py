"""The paper's claims (docs/method.md §11), each checked against a reproduction's logged results.

    claims = scorecard(Path("results/tiny-hh"))   # [{"claim", "verdict", "evidence"}, ...]

A verdict is "holds", "does not hold", or "not measured" (the runs it needs are missing: fewer than
2 seeds, or a method or data variant that was not run). Nothing here is tuned: it reads
`summary.csv` and the run logs, and says what they show.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from alol_min.run.compare import protocol as read_protocol
from alol_min.run.plots import read_logs, read_summary
from alol_min.run.provenance import read_provenance

HOLDS, FAILS, MISSING = "holds", "does not hold", "not measured"


def _by_method(rows: list[dict]) -> dict[str, dict[str, np.ndarray]]:
    """{method: {metric: values over seeds}} for the numeric columns of summary.csv."""
    out: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        for key, value in row.items():
            if key not in ("method", "seed") and value not in (None, ""):
                out[row["method"]][key].append(float(value))
    return {m: {k: np.array(v) for k, v in metrics.items()} for m, metrics in out.items()}


def _sd(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def _beats(m: dict, a: str, b: str, metric: str = "total") -> tuple[str, str]:
    """Does a's mean beat b's by more than the larger of their seed sds?"""
    if a not in m or b not in m:
        return MISSING, f"needs runs of {a} and {b}"
    x, y = m[a][metric], m[b][metric]
    gap, spread = x.mean() - y.mean(), max(_sd(x), _sd(y))
    evidence = (
        f"{a} {x.mean():.3f} vs {b} {y.mean():.3f} "
        f"(gap {gap:+.3f}, seed sd {spread:.3f}, seeds {len(x)}/{len(y)})"
    )
    if min(len(x), len(y)) < 2:
        return MISSING, evidence + "; needs >= 2 seeds"
    return (HOLDS if gap > spread else FAILS), evidence


def _steadier(m: dict, a: str, b: str) -> tuple[str, str]:
    """Is a's seed sd of the test total no larger than b's?"""
    if a not in m or b not in m or min(len(m[a]["total"]), len(m[b]["total"])) < 2:
        return MISSING, f"needs >= 2 seeds of {a} and {b}"
    sd_a, sd_b = _sd(m[a]["total"]), _sd(m[b]["total"])
    evidence = (f"{a} sd {sd_a:.3f} (mean {m[a]['total'].mean():.3f}) vs {b} sd {sd_b:.3f} "
                f"(mean {m[b]['total'].mean():.3f}), seeds {len(m[a]['total'])}/{len(m[b]['total'])}")  # fmt: skip
    return (HOLDS if sd_a <= sd_b else FAILS), evidence


FAMILY = ("a_lol", "a_lol_ref_free", "a_lol_seq", "a_lol_kl")
BASELINES = ("nll", "wbc", "r_gold", "r_lol", "dpo", "pro")


def _provenance(task_dir: Path) -> dict | None:
    """The provenance of the first run that the folder's summary lists (None: none recorded)."""
    for row in read_summary(task_dir):
        if row["method"] != "pi_ref":
            return read_provenance(Path(task_dir) / "runs" / f"{row['method']}-s{row['seed']}")
    return None


def same_protocol(a: Path, b: Path) -> bool:
    """Were two folders' runs made with the same settings (the pool aside) and the same code?"""
    pa, pb = _provenance(a), _provenance(b)
    if pa is None or pb is None:
        return False
    config = [{k: v for k, v in p["config"].items() if k != "pool"} for p in (pa, pb)]
    return config[0] == config[1] and pa["source"] == pb["source"]


def diversity(m: dict, decoding: str) -> tuple[str, str]:
    """The paper's diversity claim (HHA, its Table 2): per n, the A-LoL variant with the highest
    mean distinct-n against every baseline's mean, mean length beside. Holds if it beats all six
    baselines, and PPO when it was run, on distinct-1, -2 and -3."""
    family = [v for v in FAMILY if v in m]
    missing = [b for b in BASELINES if b not in m]
    if not family or missing:
        return MISSING, f"needs runs of {', '.join(missing) or 'an A-LoL variant'}"
    rivals = BASELINES + (("ppo",) if "ppo" in m else ())  # PPO, the online contrast, when run
    parts, holds = [], True
    for n in (1, 2, 3):
        key = f"distinct_{n}"
        best = max(family, key=lambda v: m[v][key].mean())
        lost = [b for b in rivals if m[b][key].mean() >= m[best][key].mean()]
        holds = holds and not lost
        beat = [b for b in rivals if b not in lost]
        parts.append(
            f"distinct-{n}: {best} {m[best][key].mean():.3f} beats {', '.join(beat) or 'none'}"
            + (
                "; loses to " + ", ".join(f"{b} {m[b][key].mean():.3f}" for b in lost)
                if lost
                else ""
            )
        )
    lengths = ", ".join(f"{k} {m[k]['length'].mean():.1f}" for k in family + list(rivals))
    evidence = f"{decoding} decoding. " + ". ".join(parts) + f". Length (words): {lengths}"
    if "ppo" not in m:
        evidence += ". PPO not run"
    return (HOLDS if holds else FAILS), evidence


def examples_to_best(rows: list[dict]) -> int | None:
    """Examples seen when a run reached its best validation reward."""
    evals = [r for r in rows if "val_total" in r]
    return max(evals, key=lambda r: r["val_total"])["examples_seen"] if evals else None


def examples_to_reach(rows: list[dict], level: float) -> int | None:
    """Examples seen at the first validation whose reward is >= level (None if never)."""
    return next((r["examples_seen"] for r in rows if r.get("val_total", -np.inf) >= level), None)


def scorecard(
    task_dir: Path, noisy_dir: Path | None = None, clean_dir: Path | None = None
) -> list[dict]:
    """Check each claim on one task's results.

    noisy_dir / clean_dir hold the runs trained on low- / high-rated data only (default: the sibling
    folders <task_dir>-low-rated and <task_dir>-high-rated, as `reproduce --pool` writes them); without
    a clean_dir the noisy gap is set against task_dir's (all data).
    """
    task_dir = Path(task_dir)
    m = _by_method(read_summary(task_dir))
    logs = read_logs(task_dir)
    claims = []

    def add(claim, verdict_evidence):
        claims.append(
            {"claim": claim, "verdict": verdict_evidence[0], "evidence": verdict_evidence[1]}
        )

    add("A-LoL beats NLL on test reward by more than the seed spread", _beats(m, "a_lol", "nll"))
    noisy_dir = Path(noisy_dir) if noisy_dir else task_dir.with_name(task_dir.name + "-low-rated")
    clean_dir = Path(clean_dir) if clean_dir else task_dir.with_name(task_dir.name + "-high-rated")
    noisy_claim = (
        "robust to noisy data: A-LoL's gap over NLL is positive and larger on low-rated data"
    )
    mismatch = [
        d.name
        for d in (noisy_dir, clean_dir)
        if (d / "summary.csv").exists() and not same_protocol(task_dir, d)
    ]
    unrecorded = [d.name for d in (task_dir, noisy_dir, clean_dir) if (d / "summary.csv").exists()
                  and _provenance(d) is None]  # fmt: skip
    if unrecorded:
        add(noisy_claim, (MISSING, f"no provenance recorded in {', '.join(unrecorded)}, so the "
                          "folders cannot be shown to share a protocol"))  # fmt: skip
    elif mismatch:
        add(noisy_claim, (MISSING, f"{', '.join(mismatch)} made under another protocol than "
                          f"{task_dir.name} (settings other than the pool, or code)"))  # fmt: skip
    elif (noisy_dir / "summary.csv").exists():
        low = _by_method(read_summary(noisy_dir))
        clean, clean_name = (
            (_by_method(read_summary(clean_dir)), "high-rated")
            if (clean_dir / "summary.csv").exists()
            else (m, "all")
        )
        if all(k in low and k in clean for k in ("a_lol", "nll")):
            gap_low = low["a_lol"]["total"].mean() - low["nll"]["total"].mean()
            gap_clean = clean["a_lol"]["total"].mean() - clean["nll"]["total"].mean()
            ref = low["pi_ref"]["total"].mean() if "pi_ref" in low else float("nan")
            add(
                noisy_claim,
                (
                    HOLDS if gap_low > max(gap_clean, 0) else FAILS,
                    f"gap on low-rated data {gap_low:+.3f}, on {clean_name} data {gap_clean:+.3f}; NLL on "
                    f"low-rated {low['nll']['total'].mean():.3f} vs pi_ref {ref:.3f}",
                ),
            )
        else:
            add(noisy_claim, (MISSING, "needs a_lol and nll runs on both data sets"))
    else:
        add(noisy_claim, (MISSING, "no low-rated-data runs"))
    for ablation in ("a_lol_no_clamp", "a_lol_good_random"):
        add(
            f"dropping negative advantages matters: A-LoL beats {ablation}",
            _beats(m, "a_lol", ablation),
        )
    add(
        "the importance weight helps: A-LoL beats A-LoL ref-free (r fixed at 1)",
        _beats(m, "a_lol", "a_lol_ref_free"),
    )
    variants = [v for v in ("a_lol", "a_lol_ref_free", "a_lol_seq", "a_lol_kl") if v in m]
    for baseline in ("r_lol", "r_gold"):
        if baseline in m and variants:
            wins = [v for v in variants if m[v]["total"].mean() > m[baseline]["total"].mean()]
            below = "".join(
                f"; {v} {m[v]['total'].mean():.3f} is not" for v in variants if v not in wins
            )
            add(
                f"A-LoL variants beat {baseline}",
                (
                    HOLDS if len(wins) == len(variants) else FAILS,
                    f"{len(wins)}/{len(variants)} variants above {baseline} "
                    f"({m[baseline]['total'].mean():.3f}){below}",
                ),
            )
        else:
            add(f"A-LoL variants beat {baseline}", (MISSING, f"needs runs of {baseline}"))
    others = [k for k in m if k not in ("pi_ref", "a_lol") and len(m[k]["total"]) > 1]
    if "a_lol" in m and len(m["a_lol"]["total"]) > 1 and others:
        sd_alol, sd_median = (
            _sd(m["a_lol"]["total"]),
            float(np.median([_sd(m[k]["total"]) for k in others])),
        )
        add(
            "A-LoL is stable over seeds (seed sd no larger than the median method's)",
            (
                HOLDS if sd_alol <= sd_median else FAILS,
                f"A-LoL sd {sd_alol:.3f}, median of other methods {sd_median:.3f}",
            ),
        )
    else:
        add(
            "A-LoL is stable over seeds (seed sd no larger than the median method's)",
            (MISSING, "needs >= 2 seeds"),
        )
    add(
        "A-LoL is more stable over seeds than PPO, the online contrast",
        _steadier(m, "a_lol", "ppo"),
    )
    protocol = read_protocol(task_dir)
    views = [(protocol.get("decoding", "unrecorded"), m)]
    second = protocol.get("second_view", "none")
    if second != "none" and (task_dir / f"summary-{second}.csv").exists():
        views.append((second, _by_method(read_summary(task_dir, f"summary-{second}.csv"))))
    for decoding, view in views:
        add(
            f"A-LoL methods have the highest diversity: the best A-LoL variant beats every baseline "
            f"on distinct-1, -2 and -3 ({decoding} decoding)",
            diversity(view, decoding),
        )
    if "a_lol" in m and "nll" in m:
        skip = {
            "total",
            "length",
            "distinct_1",
            "distinct_2",
            "distinct_3",
            "steps",
            "examples_seen",
            "kept_step",
            "kl_ref",
            "samples_generated",
            "reward_calls",
            "reward_calls_run",
            "train_seconds",
        }
        components = [  # the reward's parts ("<subset>/total" of hh-rlhf is not one)
            c for c in m["a_lol"] if c not in skip and "/" not in c and c in m["nll"]
        ]
        up = [c for c in components if m["a_lol"][c].mean() > m["nll"][c].mean()]
        add(
            "several reward components improve together (A-LoL over NLL)",
            (
                HOLDS if len(up) >= 2 else FAILS,
                f"{len(up)}/{len(components)} up: {', '.join(up) or 'none'}",
            ),
        )
    if "a_lol" in logs and "nll" in logs:
        nll_best = float(
            np.mean([max(r["val_total"] for r in rows if "val_total" in r) for rows in logs["nll"]])
        )
        nll_seen = float(np.mean([examples_to_best(rows) for rows in logs["nll"]]))
        reach = [examples_to_reach(rows, nll_best) for rows in logs["a_lol"]]
        if nll_seen == 0:
            verdict = (
                MISSING,
                f"NLL never improved on pi_ref's validation reward ({nll_best:.3f}), so there is "
                "no level to race to",
            )
        elif None in reach:
            verdict = (FAILS, f"A-LoL never reached NLL's best validation reward {nll_best:.3f}")
        else:
            verdict = (
                HOLDS if np.mean(reach) <= nll_seen else FAILS,
                f"examples seen to reach NLL's best validation reward ({nll_best:.3f}): A-LoL "
                f"{np.mean(reach):.0f}, NLL {nll_seen:.0f}",
            )
        add(
            "data efficiency: A-LoL reaches NLL's best validation reward after no more examples than NLL",
            verdict,
        )
    return claims


def scorecard_markdown(claims: list[dict]) -> str:
    lines = ["| claim | verdict | evidence |", "|---|---|---|"]
    lines += [f"| {c['claim']} | {c['verdict']} | {c['evidence']} |" for c in claims]
    return "\n".join(lines) + "\n"
