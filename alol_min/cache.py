"""Artifacts cached by a hash of everything that determines them.

`cache_key(inputs)` hashes a JSON-able dict of the inputs (data config, model config, training
config, seed, upstream artifact keys). An artifact folder holds its files and a `manifest.json`
written last, with the key, the inputs and a SHA-256 of every file. `load_or_build` reuses a
folder only if its manifest matches the key and every file's hash; anything else (a stale key, a
half-written folder, a corrupted or swapped file) is rebuilt, and the reason is printed.

Root: $ALOL_MIN_CACHE, else ~/.cache/alol-min.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

SCHEMA = 1  # bump when an artifact's layout changes, so old folders are not mistaken for new ones


def cache_root() -> Path:
    return Path(os.environ.get("ALOL_MIN_CACHE", Path.home() / ".cache" / "alol-min"))


def cache_key(inputs: dict) -> str:
    """SHA-256 (first 16 hex digits) of the canonical JSON of `inputs`."""
    text = json.dumps({"schema": SCHEMA, **inputs}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, key: str, inputs: dict) -> None:
    files = {
        str(p.relative_to(folder)): file_sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }
    manifest = {"key": key, "inputs": inputs, "files": files}
    (folder / "manifest.json").write_text(
        json.dumps(manifest, indent=1, sort_keys=True, default=str)
    )


def verify(folder: Path, key: str) -> str | None:
    """None if `folder` is a complete artifact for `key`, else the reason it is not."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        return "no manifest (missing or half-written)"
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError:
        return "manifest is not valid JSON"
    if manifest.get("key") != key:
        return f"manifest key {manifest.get('key')} != {key}"
    for name, digest in manifest.get("files", {}).items():
        path = folder / name
        if not path.exists():
            return f"file {name} is missing"
        if file_sha256(path) != digest:
            return f"file {name} does not match its recorded hash"
    return None


# Options that change how a result is computed but not the result, at the value given (None: any value).
_NEUTRAL = {"grad_checkpointing": None, "bf16": False, "grad_accum": 1}


def config_inputs(cfg) -> dict:
    """asdict(cfg) for a cache key, minus options that leave the result unchanged (`_NEUTRAL`, and
    the fields a config names in `unused_fields()`, e.g. another estimator's options).

    Gradient checkpointing never changes the result; bf16 off and grad_accum 1 are the plain
    computation. Leaving them out keeps keys (and cached artifacts) valid when such options are added.
    """

    unused = set(cfg.unused_fields()) if hasattr(cfg, "unused_fields") else set()
    return {
        k: v
        for k, v in asdict(cfg).items()
        if k not in unused and not (k in _NEUTRAL and (_NEUTRAL[k] is None or v == _NEUTRAL[k]))
    }


def load_or_build(
    kind: str, inputs: dict, build, *, root: Path | None = None, verbose: bool = True
) -> Path:
    """Folder of the artifact `kind` for `inputs`, built with `build(tmp_folder)` if not cached.

    `build` writes the artifact's files into the folder it is given; the folder is moved into
    place only after the manifest is written, so an interrupted build never looks complete.
    """
    key = cache_key(inputs)
    folder = Path(root or cache_root()) / kind / key
    reason = verify(folder, key) if folder.exists() else "not cached"
    if reason is None:
        if verbose:
            print(
                f"[cache] reusing {kind} {key}", file=sys.stderr
            )  # stderr: stdout stays the same warm or cold
        return folder
    if verbose:
        print(f"[cache] building {kind} {key} ({reason})", file=sys.stderr)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=folder.parent))
    try:
        build(tmp)
        write_manifest(tmp, key, inputs)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def dataset_digest(dataset, columns=("prompt", "response")) -> str:
    """SHA-256 (16 hex digits) of a split's text columns: a change in the data changes the key."""
    digest = hashlib.sha256()
    for name in columns:
        for text in dataset[name]:
            digest.update(text.encode())
            digest.update(b"\x00")
    return digest.hexdigest()[:16]
