import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from alol_min.cache import cache_key, load_or_build, verify


def _builder(calls):
    def build(folder):
        calls.append(folder)
        (folder / "weights.bin").write_bytes(b"abc")

    return build


def test_key_changes_with_any_input():
    base = {"data": "d1", "model": {"n_layer": 2}, "seed": 0}
    assert cache_key(base) == cache_key(dict(base))
    for changed in ({**base, "data": "d2"}, {**base, "model": {"n_layer": 3}}, {**base, "seed": 1}):
        assert cache_key(changed) != cache_key(base)


def test_reuse_then_rebuild_on_corruption(tmp_path, capsys):
    calls = []
    inputs = {"a": 1}
    folder = load_or_build("thing", inputs, _builder(calls), root=tmp_path)
    again = load_or_build("thing", inputs, _builder(calls), root=tmp_path)
    assert again == folder and len(calls) == 1
    (folder / "weights.bin").write_bytes(b"abd")  # corrupted
    load_or_build("thing", inputs, _builder(calls), root=tmp_path)
    assert len(calls) == 2 and "does not match its recorded hash" in capsys.readouterr().err
    (folder / "manifest.json").unlink()  # half-written
    load_or_build("thing", inputs, _builder(calls), root=tmp_path)
    assert len(calls) == 3
    assert (folder / "weights.bin").read_bytes() == b"abc"
    load_or_build("thing", {"a": 2}, _builder(calls), root=tmp_path)  # new input, new artifact
    assert len(calls) == 4


def test_mismatched_manifest_is_rebuilt(tmp_path, capsys):
    calls = []
    folder = load_or_build("thing", {"a": 1}, _builder(calls), root=tmp_path)
    other = load_or_build("thing", {"a": 2}, _builder(calls), root=tmp_path)
    (folder / "manifest.json").write_bytes((other / "manifest.json").read_bytes())  # swapped
    load_or_build("thing", {"a": 1}, _builder(calls), root=tmp_path)
    assert len(calls) == 3 and "manifest key" in capsys.readouterr().err


@pytest.mark.parametrize(
    "damage, reason",
    [
        (b"\xff\xfe not utf-8", "manifest is damaged (UnicodeDecodeError)"),
        (b"{not json", "manifest is damaged (JSONDecodeError)"),
        (b"[]", "manifest is damaged (a JSON list, not an object)"),
        (b'{"key": "KEY", "files": null}', "manifest lists no files"),
        (b'{"key": "KEY", "files": {}}', "manifest lists no files"),
        (b'{"key": "KEY", "files": {"weights.bin": 7}}', "file weights.bin is missing"),
        (
            b'{"key": "KEY", "files": {"/etc/hostname": "0"}}',
            "manifest names a file outside its folder (/etc/hostname)",
        ),
        (b"[" * 100_000, "manifest is damaged (RecursionError)"),
    ],
)
def test_a_damaged_manifest_means_rebuild(tmp_path, capsys, damage, reason):
    calls = []
    folder = load_or_build("thing", {"a": 1}, _builder(calls), root=tmp_path)
    (folder / "manifest.json").write_bytes(damage.replace(b"KEY", folder.name.encode()))
    assert verify(folder, folder.name) == reason
    again = load_or_build("thing", {"a": 1}, _builder(calls), root=tmp_path)
    assert again == folder and len(calls) == 2 and reason in capsys.readouterr().err
    assert verify(folder, folder.name) is None


def test_a_build_that_writes_nothing_is_refused(tmp_path):
    with pytest.raises(RuntimeError, match="the build wrote no files"):
        load_or_build("thing", {"a": 1}, lambda folder: None, root=tmp_path)


def _slow_build(root: str, calls: str, seconds: float, barrier=None) -> None:
    """A worker process: build artifact {"a": 1} slowly, counting builds in the file `calls`;
    with a `barrier`, only once every worker is ready, so that their requests overlap."""

    def build(folder):
        with open(calls, "a") as handle:
            handle.write("built\n")
        time.sleep(seconds)
        (folder / "weights.bin").write_bytes(b"abc")

    if barrier is not None:
        barrier.wait()
    folder = load_or_build("thing", {"a": 1}, build, root=Path(root), verbose=False)
    assert (folder / "weights.bin").read_bytes() == b"abc"


def test_two_processes_building_one_key_build_it_once(tmp_path):
    calls = tmp_path / "calls.txt"
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)  # both ask only when both are ready: the requests overlap
    args = (str(tmp_path / "cache"), str(calls), 2.0, barrier)
    workers = [context.Process(target=_slow_build, args=args) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]
    assert calls.read_text().count("built") == 1  # the second waited for the lock, then reused


def test_a_killed_build_leaves_no_artifact_and_its_temp_folder_is_cleaned(tmp_path):
    root, calls = tmp_path / "cache", tmp_path / "calls.txt"
    context = multiprocessing.get_context("spawn")
    worker = context.Process(target=_slow_build, args=(str(root), str(calls), 60.0))
    worker.start()
    deadline = time.time() + 60
    while not calls.exists() and time.time() < deadline:  # wait until the build has started
        time.sleep(0.1)
    os.kill(worker.pid, signal.SIGKILL)
    worker.join()
    key = cache_key({"a": 1})
    assert list((root / "thing").glob(f".{key}-*")) and not (root / "thing" / key).exists()
    rebuilt = []
    folder = load_or_build("thing", {"a": 1}, _builder(rebuilt), root=root)
    assert len(rebuilt) == 1 and verify(folder, key) is None
    assert not list((root / "thing").glob(f".{key}-*"))  # the killed build's temp folder is gone
