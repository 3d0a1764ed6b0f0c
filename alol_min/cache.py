"""Artifacts cached by a hash of everything that determines them.

`cache_key(inputs)` hashes a JSON-able dict of the inputs (data config, model config, training
config, seed, upstream artifact keys). An artifact folder holds its files and a `manifest.json`
written last, with the key, the inputs and a SHA-256 of every file. `load_or_build` reuses a
folder only if its manifest matches the key and every file's hash; anything else (a stale key, a
half-written folder, a corrupted or swapped file, a damaged manifest) is rebuilt, and the reason is
printed.

Concurrency and crashes: a build holds a file lock per key (`<kind>/.<key>.lock`, the `filelock`
package), so a second process asking for the same artifact waits and then reuses the first one's.
A build writes into a temporary folder `.<key>-*` that is moved into place only when complete; one
left behind by a killed build is removed at the next build of that key.

Root: $ALOL_MIN_CACHE, else ~/.cache/alol-min.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from filelock import FileLock

SCHEMA = 1  # bump when an artifact's layout changes, so old folders are not mistaken for new ones


def cache_root() -> Path:
    return Path(os.environ.get("ALOL_MIN_CACHE", Path.home() / ".cache" / "alol-min"))


def cache_key(inputs: dict) -> str:
    """SHA-256 (first 16 hex digits) of the canonical JSON of `inputs`."""
    text = json.dumps({"schema": SCHEMA, **inputs}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def source_digest(*modules: str) -> str:
    """SHA-256 (16 hex digits) of the source files of the named modules ("alol_min.values"): put in
    an artifact's inputs, an edit of the code that builds it rebuilds it."""
    digest = hashlib.sha256()
    for name in sorted(modules):
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ValueError(f"source_digest: no module {name!r}")
        digest.update(name.encode() + b"\x00" + Path(spec.origin).read_bytes() + b"\x00")
    return digest.hexdigest()[:16]


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
    if not files:
        raise RuntimeError(f"{folder}: the build wrote no files, so there is nothing to cache")
    manifest = {"key": key, "inputs": inputs, "files": files}
    (folder / "manifest.json").write_text(
        json.dumps(manifest, indent=1, sort_keys=True, default=str)
    )


def verify(folder: Path, key: str) -> str | None:
    """None if `folder` is a complete artifact for `key`, else the reason it is not. A manifest
    damaged in any way is a reason to rebuild, never an error."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        return "no manifest (missing or half-written)"
    try:
        manifest = json.loads(manifest_path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError, OSError) as error:
        return f"manifest is damaged ({type(error).__name__})"
    if not isinstance(manifest, dict):
        return f"manifest is damaged (a JSON {type(manifest).__name__}, not an object)"
    if manifest.get("key") != key:
        return f"manifest key {manifest.get('key')} != {key}"
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return "manifest lists no files"
    for name, digest in files.items():
        if Path(name).is_absolute() or ".." in Path(name).parts:
            return f"manifest names a file outside its folder ({name})"
        path = folder / name
        if not isinstance(digest, str) or not path.is_file():
            return f"file {name} is missing"
        try:
            if file_sha256(path) != digest:
                return f"file {name} does not match its recorded hash"
        except OSError:  # e.g. removed by a concurrent rebuild: then rebuild under the lock
            return f"file {name} could not be read"
    return None


# Options that change how a result is computed but not the result, at the value given (None: any
# value); LoRA off (rank 0) is full fine-tuning and the plain prompt format the DialoGPT join, as
# before these options existed.
_NEUTRAL = {"grad_checkpointing": None, "bf16": False, "grad_accum": 1, "lora_r": 0,
            "prompt_format": "plain"}  # fmt: skip
# Options read only when another one is on: left out while it is off (0, False, None).
_ONLY_WITH = {"lora_alpha": "lora_r", "lora_dropout": "lora_r"}


def config_inputs(cfg) -> dict:
    """asdict(cfg) for a cache key, minus options that leave the result unchanged (`_NEUTRAL`, and
    the fields a config names in `unused_fields()`, e.g. another estimator's options).

    Gradient checkpointing never changes the result; bf16 off and grad_accum 1 are the plain
    computation. Leaving them out keeps keys (and cached artifacts) valid when such options are added.
    """

    unused = set(cfg.unused_fields()) if hasattr(cfg, "unused_fields") else set()
    values = asdict(cfg)
    unused |= {k for k, on in _ONLY_WITH.items() if k in values and not values.get(on)}
    return {
        k: v
        for k, v in values.items()
        if k not in unused and not (k in _NEUTRAL and (_NEUTRAL[k] is None or v == _NEUTRAL[k]))
    }


def load_or_build(
    kind: str, inputs: dict, build, *, root: Path | None = None, verbose: bool = True
) -> Path:
    """Folder of the artifact `kind` for `inputs`, built with `build(tmp_folder)` if not cached.

    `build` writes the artifact's files into the folder it is given; the folder is moved into
    place only after the manifest is written, so an interrupted build never looks complete. The
    key's lock is held while checking and building, so that one process builds and the others wait
    and reuse.
    """
    key = cache_key(inputs)
    folder = Path(root or cache_root()) / kind / key
    if folder.exists() and verify(folder, key) is None:  # the common case: no lock needed
        return _reused(kind, key, folder, verbose)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder.parent / f".{key}.lock")):
        reason = verify(folder, key) if folder.exists() else "not cached"
        if reason is None:  # another process built it while this one waited
            return _reused(kind, key, folder, verbose)
        if verbose:
            print(f"[cache] building {kind} {key} ({reason})", file=sys.stderr)
        for orphan in folder.parent.glob(f".{key}-*"):  # left by a build that was killed
            shutil.rmtree(orphan, ignore_errors=True)
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


def _reused(kind: str, key: str, folder: Path, verbose: bool) -> Path:
    if verbose:  # stderr: stdout stays the same warm or cold
        print(f"[cache] reusing {kind} {key}", file=sys.stderr)
    return folder


def dataset_digest(dataset, columns=("prompt", "response")) -> str:
    """SHA-256 (16 hex digits) of a split's text columns: a change in the data changes the key."""
    digest = hashlib.sha256()
    for name in columns:
        for text in dataset[name]:
            digest.update(text.encode())
            digest.update(b"\x00")
    return digest.hexdigest()[:16]
