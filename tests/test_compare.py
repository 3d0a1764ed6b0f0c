"""A run against the reference, provenance diffs, and the diversity claim, on hand-written folders."""

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import alol_min
from alol_min import cli
from alol_min.run.compare import DIFFERS, NO_REFERENCE, WITHIN, compare, comparison_markdown
from alol_min.run.config import ConfigError, check_config, preset, second_view
from alol_min.run.provenance import (
    OUTPUT_ONLY,
    differences,
    package_sources,
    reuse,
    run_provenance,
    shared_key,
    summary_key,
)
from alol_min.run.scorecard import FAILS, HOLDS, MISSING, _steadier, diversity


def _folder(path, totals: dict, deterministic=True, noise=None, provenance=None):
    (path / "runs").mkdir(parents=True)
    rows = [
        {"method": m, "seed": s, "total": t} for m, ts in totals.items() for s, t in enumerate(ts)
    ]
    with open(path / "summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["method", "seed", "total"])
        writer.writeheader()
        writer.writerows(rows)
    decoding = "beam" if deterministic else "top-p"
    (path / "protocol.json").write_text(
        json.dumps({"decoding": decoding, "deterministic": deterministic})
    )
    if noise is not None:
        (path / "decoding_noise.json").write_text(json.dumps({"decoding": decoding, "sd": noise}))
    for method, prov in (provenance or {}).items():
        (path / "runs" / f"{method}-s0").mkdir()
        (path / "runs" / f"{method}-s0" / "provenance.json").write_text(json.dumps(prov))


def test_verdict_is_within_two_seed_sds_or_the_decoding_noise(tmp_path):
    ref = {"pi_ref": [3.0], "nll": [3.0, 3.02, 3.04], "a_lol": [3.2, 3.21, 3.22], "dpo": [3.1]}
    _folder(tmp_path / "ref", ref)
    _folder(tmp_path / "mine", {"pi_ref": [3.0], "nll": [3.05], "a_lol": [3.10], "pro": [3.0],
                                "dpo": [3.1001]})  # fmt: skip
    rows = {r["method"]: r for r in compare(tmp_path / "mine", tmp_path / "ref")}
    assert rows["nll"]["verdict"] == WITHIN  # 0.03 from the mean, 2 sd = 0.04
    assert rows["a_lol"]["verdict"] == DIFFERS and np.isclose(rows["a_lol"]["gap"], -0.11)
    assert rows["pro"]["verdict"] == NO_REFERENCE
    assert rows["dpo"]["verdict"] == DIFFERS  # one reference seed, beam search: no tolerance
    assert rows["pi_ref"]["verdict"] == WITHIN and rows["pi_ref"]["noise"] == 0.0
    table = comparison_markdown(list(rows.values()), tmp_path / "ref")
    assert "| A-LoL | 3.100 | 3.210 ± 0.010 (3) | 0.000 | differs (-0.110) |" in table


def test_sampled_reference_uses_its_decoding_noise(tmp_path):
    _folder(tmp_path / "ref", {"nll": [3.0]}, deterministic=False, noise=0.02)
    _folder(tmp_path / "mine", {"nll": [3.03]}, deterministic=False)
    (row,) = compare(tmp_path / "mine", tmp_path / "ref")
    assert row["noise"] == 0.02 and row["verdict"] == WITHIN


def test_comparison_names_what_the_runs_were_made_from(tmp_path):
    base = run_provenance("a_lol", 0, {"offline": {"lr": 3e-4}}, {"offline": "k1"},
                          {"alol_min.losses": "aa", "alol_min.values": "bb"})  # fmt: skip
    edited = json.loads(json.dumps(base))
    edited["source"]["alol_min.losses"] = "cc"
    edited["config"]["offline"]["lr"] = 1e-2
    _folder(tmp_path / "ref", {"a_lol": [3.2]}, provenance={"a_lol": base})
    _folder(tmp_path / "mine", {"a_lol": [3.0]}, provenance={"a_lol": edited})
    (row,) = compare(tmp_path / "mine", tmp_path / "ref")
    assert row["made_from"] == "config offline.lr 0.0003 -> 0.01; source losses"


def test_provenance_decides_reuse_and_the_shared_part(tmp_path):
    prov = run_provenance(
        "nll", 0, {"n_test": 500}, {"offline": "k1", "rejected": "r1"}, {"m": "1"}
    )
    assert reuse(tmp_path / "nll-s0", prov) == (False, "new")
    (tmp_path / "nll-s0").mkdir()
    (tmp_path / "nll-s0" / "provenance.json").write_text(json.dumps(prov))
    assert reuse(tmp_path / "nll-s0", prov) == (False, "not finished")
    (tmp_path / "nll-s0" / "test.json").write_text("{}")
    assert reuse(tmp_path / "nll-s0", prov) == (True, "")
    other = json.loads(json.dumps(prov))
    other["inputs"]["offline"] = "k2"
    assert reuse(tmp_path / "nll-s0", other) == (False, "inputs offline")
    # the shared part ignores the run's method, seed and rejected replies, not its inputs
    seed1 = run_provenance("dpo", 1, {"n_test": 500}, {"offline": "k1"}, {"m": "1"})
    assert shared_key(seed1) == shared_key(prov) != shared_key(other)
    assert differences(None, prov) == ["no provenance recorded"]


def test_package_sources_cover_every_module_but_the_output_only_ones():
    sources = package_sources()
    assert {"alol_min.losses", "alol_min.values", "alol_min.run.train", "alol_min.tasks"} <= set(
        sources
    )
    assert not set(OUTPUT_ONLY) & set(sources)
    assert all(len(digest) == 16 for digest in sources.values())


def test_each_family_of_methods_records_only_its_own_parts():
    """A PPO flag or an edit of ppo.py never touches an offline run's provenance, and the other way
    round; the shared key (the test protocol) ignores both families' parts."""
    config = {"n_test": 500, "offline": {"lr": 3e-4}, "ppo": {"lr": 1e-4}}
    source = {"alol_min.losses": "a", "alol_min.ppo": "b"}
    nll = run_provenance("nll", 0, config, {"offline": "k"}, source)
    ppo = run_provenance("ppo", 0, config, {"offline": "k"}, source)
    assert "ppo" not in nll["config"] and "alol_min.ppo" not in nll["source"]
    assert "offline" not in ppo["config"] and ppo["source"] == source
    other = {**config, "ppo": {"lr": 1e-3}}
    nll2 = run_provenance("nll", 0, other, {"offline": "k"}, {**source, "alol_min.ppo": "c"})
    ppo2 = run_provenance("ppo", 0, other, {"offline": "k"}, source)
    assert nll2 == nll and summary_key(nll2) == summary_key(nll)
    assert summary_key(ppo2) != summary_key(ppo) and shared_key(ppo2) == shared_key(nll)
    assert differences(ppo, ppo2) == ["config ppo.lr 0.0001 -> 0.001"]
    assert summary_key(nll) != summary_key(ppo)  # one family's key never admits the other's runs


def test_package_sources_follow_the_main_jobs_imports(tmp_path):
    """A module no run imports leaves the sources alone; once the job imports it, it is hashed."""
    root = tmp_path / "alol_min"
    shutil.copytree(
        Path(alol_min.__file__).parent, root, ignore=shutil.ignore_patterns("__pycache__")
    )
    before = package_sources(root)
    assert "alol_min.run.metrics.distinct_n.distinct_n" in before  # loaded by path, not imported
    (root / "newmethod.py").write_text("X = 1\n")
    assert package_sources(root) == before
    losses = root / "losses.py"
    losses.write_text(losses.read_text() + "\nfrom alol_min import newmethod  # noqa\n")
    after = package_sources(root)
    assert set(after) - set(before) == {"alol_min.newmethod"}
    assert after["alol_min.losses"] != before["alol_min.losses"]


def _methods(values: dict) -> dict:
    """{method: {"distinct_1": array, ...}} as the scorecard reads summary.csv."""
    return {m: {k: np.array([v]) for k, v in metrics.items()} for m, metrics in values.items()}


def test_diversity_claim_names_every_baseline_it_beat_or_lost_to():
    base = {"distinct_1": 0.1, "distinct_2": 0.3, "distinct_3": 0.5, "length": 10.0}
    m = {b: dict(base) for b in ("nll", "wbc", "r_gold", "r_lol", "dpo", "pro")}
    m["a_lol"] = {**base, "distinct_1": 0.2, "distinct_2": 0.4, "distinct_3": 0.6}
    m["a_lol_seq"] = {**base, "distinct_1": 0.05}
    verdict, evidence = diversity(_methods(m), "greedy")
    assert verdict == HOLDS and evidence.startswith("greedy decoding")
    assert "distinct-2: a_lol 0.400 beats nll, wbc, r_gold, r_lol, dpo, pro" in evidence
    m["dpo"]["distinct_3"] = 0.7
    verdict, evidence = diversity(_methods(m), "beam")
    assert (
        verdict == FAILS
        and "distinct-3: a_lol 0.600 beats nll, wbc, r_gold, r_lol, pro; loses to dpo 0.700"
        in evidence
    )
    assert evidence.endswith("PPO not run")
    m["ppo"] = {**base, "distinct_1": 0.3}  # PPO joins the rivals when it was run
    verdict, evidence = diversity(_methods(m), "beam")
    assert (
        "distinct-1: a_lol 0.200 beats nll, wbc, r_gold, r_lol, dpo, pro; loses to ppo 0.300"
        in (evidence)
    )
    assert "ppo 10.0" in evidence and "PPO not run" not in evidence
    del m["pro"]
    assert diversity(_methods(m), "beam") == (MISSING, "needs runs of pro")


def test_stability_against_ppo():
    m = {"a_lol": {"total": np.array([3.0, 3.1, 3.05])}, "ppo": {"total": np.array([2.0, 3.5])}}
    verdict, evidence = _steadier(m, "a_lol", "ppo")
    assert verdict == HOLDS and "a_lol sd 0.050 (mean 3.050) vs ppo sd 1.061" in evidence
    assert _steadier(m, "ppo", "a_lol")[0] == FAILS
    m["ppo"]["total"] = np.array([2.0])
    assert _steadier(m, "a_lol", "ppo") == (MISSING, "needs >= 2 seeds of a_lol and ppo")


def test_runs_under_another_decoding_are_not_comparable(tmp_path):
    _folder(tmp_path / "ref", {"nll": [3.0, 3.1]}, deterministic=False)  # top-p
    _folder(tmp_path / "mine", {"nll": [3.05]})  # beam
    (row,) = compare(tmp_path / "mine", tmp_path / "ref")
    assert row["verdict"] == "not comparable: decoding beam vs top-p"
    (tmp_path / "ref" / "protocol.json").unlink()  # a reference that records no decoding
    (row,) = compare(tmp_path / "mine", tmp_path / "ref")
    assert row["verdict"] == "not comparable: decoding beam vs unrecorded"


def test_decoding_options_resolve_and_refuse():
    top_p = cli.reproduce_config(["--decoding", "top-p"])
    assert second_view(top_p) == "beam"  # the paper's decoding becomes the second view
    assert second_view(cli.reproduce_config([])) == "top-p"
    tiny = cli.reproduce_config(["--task", "tiny-hh"])
    assert tiny.decoding == "top-p" and second_view(tiny) == "greedy"
    greedy = cli.reproduce_config(["--task", "tiny-hh", "--decoding", "greedy"])
    assert second_view(greedy) == "top-p"
    both = dataclasses.replace(preset(), write_reference=True, out_dir="elsewhere")
    with pytest.raises(ConfigError, match="cannot go with --out-dir") as error:
        check_config(both)
    assert error.value.flag == "--write-reference"
