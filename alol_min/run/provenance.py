"""What a method run is made from: a finished run is reused only when all of it is unchanged.

Each run folder holds `provenance.json` with four parts:
- "run": the method and the seed;
- "config": every setting of the job that can change the run (the `ReproduceConfig` less the fields
  that only choose what to run or where to write, `NOT_CONFIG`);
- "inputs": the cache keys of pi_ref and of the offline set (its rewards, V_ref and advantages),
  of the rejected replies for a pairwise method, and digests of the validation and test prompts;
- "source": a SHA-256 of every package module the main job runs (`package_sources`) but those that
  cannot change a result (`OUTPUT_ONLY`).

Two runs of one job share "config", "inputs" (less the rejected replies) and "source", less the
parts that only one family of methods reads (`FAMILIES`: the offline methods' config section, and
PPO's section and module): `summary_key` decides which runs in a folder belong to one summary, so
that a table never mixes runs made from different inputs, settings or code.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
from pathlib import Path

import alol_min
from alol_min.cache import cache_key, config_inputs
from alol_min.losses import method_spec

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


ENTRY = "alol_min.run.reproduce"
"""The main job's module: what it imports, directly or through other modules, runs in a method run."""

LOADED_BY_PATH = ("alol_min.run.metrics",)
"""Package scripts loaded by file path, not imported (the shipped distinct-n metric)."""


def package_sources(root: Path | None = None) -> dict[str, str]:
    """{module name: SHA-256 (16 hex digits) of its file} for every package module the main job
    runs: the import closure of ENTRY (each file's import statements, those inside functions
    included) and LOADED_BY_PATH, less OUTPUT_ONLY. A module no run imports (a new method not yet
    on the command line) leaves every run's provenance as it is."""
    root = Path(root or Path(alol_min.__file__).parent)
    files = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    needed = {name for name in files if name.startswith(LOADED_BY_PATH)}
    todo = [ENTRY]
    while todo:
        name = todo.pop()
        if name in needed or name not in files:
            continue
        needed.add(name)
        todo += _imported(name, files)
    return {
        name: hashlib.sha256(files[name].read_bytes()).hexdigest()[:16]
        for name in sorted(needed)
        if name not in OUTPUT_ONLY
    }


def _imported(name: str, files: dict[str, Path]) -> set[str]:
    """The package modules `name` imports, and the packages above them (their __init__ runs too)."""
    package = name if files[name].name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(files[name].read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . / .. import
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # submodules
    out = set()
    for module in found:
        while module.startswith("alol_min"):
            out.add(module)
            module = module.rpartition(".")[0]
    return out & set(files)


FAMILIES = {"offline": ("offline", ()), "online": ("ppo", ("alol_min.ppo",))}
"""Per family of methods: the config section and the package modules that only its runs read. A
run's provenance leaves out the other family's parts, so that a --ppo flag never retrains NLL and
an edit of ppo.py never retrains A-LoL."""


def method_family(method: str) -> str:
    """ "online" (PPO) or "offline"; a name no longer registered counts as offline."""
    try:
        return "online" if method and method_spec(method).online else "offline"
    except ValueError:
        return "offline"


def job_config(cfg) -> dict:
    """The settings part of the provenance: the config, less NOT_CONFIG and the run's own seed."""
    out = {}
    for f in dataclasses.fields(cfg):
        if f.name in NOT_CONFIG:
            continue
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            value = config_inputs(value)
            if f.name in (section for section, _ in FAMILIES.values()):
                value.pop("seed", None)
        out[f.name] = value
    return json.loads(json.dumps(out, default=str))  # tuples as lists, as they read back


def run_provenance(method: str, seed: int, config: dict, inputs: dict, source: dict) -> dict:
    """The provenance of one run: the job's config and source less the other family's parts."""
    own = method_family(method)
    others = [parts for family, parts in FAMILIES.items() if family != own]
    sections = {section for section, _ in others}
    modules = {m for _, family_modules in others for m in family_modules}
    return {
        "run": {"method": method, "seed": seed},
        "config": {k: v for k, v in config.items() if k not in sections},
        "inputs": inputs,
        "source": {k: v for k, v in source.items() if k not in modules},
    }


def shared_key(provenance: dict) -> str:
    """The digest of what every run of one job shares, whatever its method: the config, the
    inputs (but the rejected replies) and the source, less every family's own parts. It names the
    job's test protocol (protocol.json, the decoding noise)."""
    sections = {section for section, _ in FAMILIES.values()}
    modules = {m for _, family_modules in FAMILIES.values() for m in family_modules}
    inputs = {k: v for k, v in provenance.get("inputs", {}).items() if k != "rejected"}
    config = {k: v for k, v in (provenance.get("config") or {}).items() if k not in sections}
    source = {k: v for k, v in (provenance.get("source") or {}).items() if k not in modules}
    return cache_key({"config": config, "inputs": inputs, "source": source})


def summary_key(provenance: dict) -> str:
    """The digest of what the runs of one family in one job share: `shared_key`'s parts and the
    family's own (its config section, its modules). A summary lists only runs whose summary key is
    the call's for their family, so that it never mixes runs made otherwise."""
    inputs = {k: v for k, v in provenance.get("inputs", {}).items() if k != "rejected"}
    method = (provenance.get("run") or {}).get("method", "")
    return cache_key({"family": method_family(method), "config": provenance.get("config"),
                      "inputs": inputs, "source": provenance.get("source")})  # fmt: skip


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
