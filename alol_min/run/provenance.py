"""What a method run is made from: a finished run is reused only when all of it is unchanged.

Each run folder holds `provenance.json` with four parts:
- "run": the method and the seed;
- "config": every setting of the job that can change the run (the `ReproduceConfig` less the fields
  that only choose what to run or where to write, `NOT_CONFIG`);
- "inputs": the cache keys of pi_ref and of the offline set (its rewards, V_ref and advantages),
  of the rejected replies for a pairwise method, and digests of the validation and test prompts;
- "source": a SHA-256 of every package module that can change a result (all but `OUTPUT_ONLY`).

Two runs of one job share "config", "inputs" (less the rejected replies) and "source": that shared
part decides which runs in a folder belong to one summary, so that a table never mixes runs made
from different inputs, settings or code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import alol_min
from alol_min.cache import cache_key, config_inputs

OUTPUT_ONLY = (
    "alol_min.__main__",
    "alol_min.cli",
    "alol_min.notebook",
    "alol_min.run.compare",
    "alol_min.run.config",
    "alol_min.run.plots",
    "alol_min.run.provenance",
    "alol_min.run.scorecard",
)
"""Modules that only parse flags, draw, compare or report, and the config module, whose every
value a run uses is recorded in the "config" part: editing them never retrains a run by itself."""

NOT_CONFIG = (
    "preset", "methods", "seeds", "decoding_seeds", "prepare_only", "out_dir", "figures_dir",
    "reference_dir", "write_reference", "progress",
)  # fmt: skip
"""ReproduceConfig fields that choose what to run and where, not how a run is made."""


def package_sources(root: Path | None = None) -> dict[str, str]:
    """{module name: SHA-256 (16 hex digits) of its file} for every .py file of the package but
    OUTPUT_ONLY (the shipped distinct-n metric included)."""
    root = Path(root or Path(alol_min.__file__).parent)
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name not in OUTPUT_ONLY:
            out[name] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return out


def job_config(cfg) -> dict:
    """The settings part of the provenance: the config, less NOT_CONFIG and the run's own seed."""
    out = {}
    for f in dataclasses.fields(cfg):
        if f.name in NOT_CONFIG:
            continue
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            value = config_inputs(value)
            if f.name == "offline":
                value.pop("seed", None)
        out[f.name] = value
    return json.loads(json.dumps(out, default=str))  # tuples as lists, as they read back


def run_provenance(method: str, seed: int, config: dict, inputs: dict, source: dict) -> dict:
    return {"run": {"method": method, "seed": seed}, "config": config, "inputs": inputs,
            "source": source}  # fmt: skip


def shared_key(provenance: dict) -> str:
    """The digest of what every run of one job shares (config, inputs but the rejected replies,
    source)."""
    inputs = {k: v for k, v in provenance.get("inputs", {}).items() if k != "rejected"}
    return cache_key(
        {"config": provenance.get("config"), "inputs": inputs, "source": provenance.get("source")}
    )


def _flat(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: value}


def differences(old: dict | None, new: dict, limit: int = 4) -> list[str]:
    """What differs between two provenances, for people: "config offline.lr 0.0003 -> 0.01",
    "source losses", "inputs offline" (at most `limit` items per part, then a count)."""
    if not old:
        return ["no provenance recorded"]
    out = []
    for part in ("run", "config", "inputs", "source"):
        a, b = _flat(old.get(part, {})), _flat(new.get(part, {}))
        changed = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        if part == "source":
            items = [k.removeprefix("alol_min.") for k in changed]
        elif part == "inputs":
            items = changed
        else:
            items = [f"{k} {a.get(k, '(none)')} -> {b.get(k, '(none)')}" for k in changed]
        if items:
            shown = ", ".join(items[:limit]) + (
                f" and {len(items) - limit} more" if len(items) > limit else ""
            )
            out.append(f"{part} {shown}")
    return out


def read_provenance(run_dir: Path) -> dict | None:
    path = Path(run_dir) / "provenance.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def reuse(run_dir: Path, provenance: dict) -> tuple[bool, str]:
    """(True, "") if run_dir holds a finished run made from exactly `provenance`; else (False, why)."""
    run_dir = Path(run_dir)
    if not (run_dir / "test.json").exists():
        return False, "not finished" if run_dir.exists() else "new"
    old = read_provenance(run_dir)
    if old == provenance:
        return True, ""
    return False, "; ".join(differences(old, provenance))
