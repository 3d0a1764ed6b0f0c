from alol_min.cache import cache_key, load_or_build


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
