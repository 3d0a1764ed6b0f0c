"""The main job: pi_ref -> reward -> V_ref -> advantages -> methods x seeds -> test evaluation.

Every stage before the method runs is cached (keyed by its inputs), so a second run reuses them.
Each method run writes `provenance.json`, `config.json`, `log.jsonl`, `samples.json` and
`test.json` (and `test-<view>.json` for the second decoding) into
`<out-dir>/<task>/runs/<method>-s<seed>/`. A finished run is reused only when its provenance (its
settings, its inputs and the package's source, `run.provenance`) is the same; the output says which
runs were reused and why the others were not. `summary.csv` (and `summary-<view>.csv`) has one row
per (method, seed) of the runs made from this call's inputs, with every test metric, the steps run,
the examples seen and the step of the kept checkpoint. The job ends by comparing the run with the
committed reference (`run.compare`) and printing the claims scorecard (`run.scorecard`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from alol_min.cache import cache_key
from alol_min.lm.generation import DecodeConfig, with_decoding
from alol_min.lm.loop import policy_device
from alol_min.lm.reference import pretrained_reference, reference_metrics, reference_policy
from alol_min.losses import METHODS, method_spec
from alol_min.ppo import train_ppo
from alol_min.run.compare import compare, comparison_markdown
from alol_min.run.config import ReproduceConfig, check_config, second_view
from alol_min.run.evaluate import evaluate_policy, kl_to_reference
from alol_min.run.plots import plot_all, plot_noisy
from alol_min.run.prepare import prepare_offline
from alol_min.run.provenance import (
    job_config,
    method_family,
    package_sources,
    read_provenance,
    reuse,
    run_provenance,
    shared_key,
    summary_key,
)
from alol_min.run.scorecard import scorecard, scorecard_markdown
from alol_min.run.train import train_offline
from alol_min.tasks import load_task


def task_folder(cfg: ReproduceConfig) -> str:
    """<task>[-<pool>][-<model>]: a pretrained model's runs get a folder of their own."""
    folder = cfg.task if cfg.pool == "all" else f"{cfg.task}-{cfg.pool}"
    pretrained = cfg.model_config().pretrained
    return f"{folder}-{Path(cfg.model).name}" if pretrained else folder


def run(cfg: ReproduceConfig) -> Path:
    """Run the reproduction; returns <out_dir>/<task>[-<pool>][-<model>] (`task_folder`)."""
    start = time.time()
    check_config(cfg)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and any(
        method_spec(m).online for m in cfg.methods
    ):
        raise ValueError("--methods ppo trains in one process: run it without accelerate launch")
    model_cfg = cfg.model_config()
    cfg = resolved(cfg, model_cfg)
    out = Path(cfg.out_dir) / task_folder(cfg)
    writer = main_process()
    if writer:
        (out / "runs").mkdir(parents=True, exist_ok=True)
    task = load_task(
        cfg.task, data_cfg=cfg.data, n_train=cfg.tiny_hh_train, hh=cfg.hh, n_test=cfg.n_test
    )
    data, reward = task.data, task.train_reward
    print(f"{cfg.task}: {task.report}")
    if not cfg.ref_sft:
        model, tokenizer, ref_folder = pretrained_reference(model_cfg)
    else:
        model, tokenizer, ref_folder = reference_policy(
            data, model_cfg, cfg.sft, task=cfg.task, progress=cfg.progress
        )
        print(
            f"pi_ref: validation reply perplexity {reference_metrics(ref_folder)['val_reply_ppl']:.1f}"
        )
    model.to(policy_device())  # generation, V's features and the tests run where training does
    reward_stats = task.reward_stats
    print(f"reward: {', '.join(reward.components)}; fit: {json.dumps(reward_stats, default=float)}")
    # --prepare-only also builds what DPO / PRO need, so that no later multi-process call has to
    offline, prep, _, train_pairs = prepare_offline(
        cfg, task, model, tokenizer, model_cfg, ref_folder,
        rejected=True if cfg.prepare_only else None,
    )  # fmt: skip
    v, a = prep["value"], prep["advantage"]
    ceiling = v.get("noise_heldout", {}).get("ceiling_r2", float("nan"))
    print(
        f"V_ref: held-out R^2 {v.get('heldout_r2', float('nan')):.3f} (noise ceiling {ceiling:.3f}); "
        f"leftover fraction {a['leftover_fraction']:.3f}; corr(A, R) {a['corr_advantage_reward']:.3f}"
    )
    if cfg.prepare_only:
        print(
            "--prepare-only: pi_ref, reward, V and advantages are cached; stopping before training"
        )
        return out
    val_prompts = data["validation"]["prompt"][-cfg.n_val_eval :] if cfg.n_val_eval else []
    test_prompts = data["test"]["prompt"][: cfg.n_test]
    max_prompt = model_cfg.max_prompt_tokens
    views = test_views(cfg)
    inputs = {k: v for k, v in offline.provenance.items() if k != "rejected"}
    inputs["prompts"] = cache_key({"validation": list(val_prompts), "test": list(test_prompts)})
    config, source = job_config(cfg), package_sources()
    shared = shared_key(run_provenance("", 0, config, inputs, source))
    # every family's key, whichever this call trains: earlier runs of the other family stay listed
    families = {method_family(m): summary_key(run_provenance(m, 0, config, inputs, source))
                for m in ("nll", "ppo")}  # fmt: skip
    sampled = with_decoding(cfg.eval_decode, "top-p")  # PPO's rollouts: the sampled test view
    untruncated = dataclasses.replace(sampled, top_p=1.0)  # the KL's samples: y ~ pi_theta itself
    if writer:
        write_preparation(out, {"reward": reward_stats, **prep}, offline.advantage)
        protocol = {
            "decoding": cfg.decoding,
            "deterministic": not cfg.eval_decode.do_sample,
            "second_view": cfg.second_view,
            "eval_decode": asdict(cfg.eval_decode),
            "shared_key": shared,
        }
        (out / "protocol.json").write_text(json.dumps(protocol, indent=1))

    def kl(policy, prompts) -> dict:
        prompts = prompts[: cfg.n_kl_prompts]
        if not prompts:
            return {}
        return {
            "kl_ref": kl_to_reference(policy, model, tokenizer, prompts, untruncated, max_prompt)
        }

    def validate(policy):
        scores, _ = evaluate_policy(
            policy, tokenizer, val_prompts, reward, cfg.eval_decode, max_prompt
        )
        scores.update(kl(policy, val_prompts))
        return {k: round(v, 4) for k, v in scores.items()}

    # hh-rlhf: each subset's test total as well as the whole set's
    groups = (
        list(data["test"]["subset"][: cfg.n_test])
        if "subset" in data["test"].column_names
        else None
    )

    def test(policy) -> tuple[dict, dict, list]:
        """{view: scores} under every test decoding ("" the main one) and the main responses."""
        scores, responses = {}, None
        for view, decode in views.items():
            scores[view], texts = evaluate_policy(
                policy, tokenizer, test_prompts, task.test_reward, decode, max_prompt,
                groups=groups,
            )  # fmt: skip
            responses = responses or texts
        scores[""].update(kl(policy, test_prompts))
        return scores, responses

    ref_val: dict = {}  # pi_ref's validation scores (every run's step 0): from the first run trained
    ref_scores, _ = test(model)
    rows = {view: [{"method": "pi_ref", "seed": "", "steps": 0, "examples_seen": 0, **s}]
            for view, s in ref_scores.items()}  # fmt: skip
    decoding_noise(
        cfg, out, model, tokenizer, test_prompts, task.test_reward, model_cfg, ref_scores,
        shared, write=writer,
    )  # fmt: skip
    value_samples = len(data["validation"]["prompt"][: cfg.n_value_prompts]) * (
        cfg.value.samples_per_prompt
    )
    reused, retrained = [], []
    for method in cfg.methods:
        for seed in cfg.seeds:
            name = f"{method}-s{seed}"
            run_dir = out / "runs" / name
            run_inputs = dict(inputs)
            if method_spec(method).pairwise:
                run_inputs["rejected"] = offline.provenance["rejected"]
            provenance = run_provenance(method, seed, config, run_inputs, source)
            same, why = reuse(run_dir, provenance)
            if same:
                for view in views:
                    rows[view].append(json.loads((run_dir / test_file(view)).read_text()))
                reused.append(name)
                continue
            if why not in ("new", "not finished"):
                retrained.append(f"{name} ({why})")
            if writer and run_dir.exists():
                shutil.rmtree(run_dir)  # no file of a run made from other inputs stays beside it
            checked = validate if cfg.n_val_eval else None
            if method_spec(method).online:
                policy, log = train_ppo(
                    model, tokenizer, list(train_pairs["prompt"]), reward,
                    dataclasses.replace(cfg.ppo, seed=seed), sampled, max_prompt, validate=checked,
                    run_dir=run_dir if writer else None, progress=cfg.progress,
                    initial_scores=ref_val or None,
                )  # fmt: skip
            else:
                policy, log = train_offline(
                    model, method, offline, dataclasses.replace(cfg.offline, seed=seed),
                    tokenizer.pad_token_id, validate=checked, run_dir=run_dir,
                    progress=cfg.progress, initial_scores=ref_val or None,
                    costs=offline_costs(method, len(offline.encoded), value_samples),
                )  # fmt: skip
            ref_val = ref_val or {k[4:]: v for k, v in log[0].items() if k.startswith("val_")}
            scores, responses = test(policy)
            kept = next(r for r in log if r["step"] == log[-1]["kept_step"])
            for view, view_scores in scores.items():
                row = {"method": method, "seed": seed, "steps": log[-1]["step"],
                       "examples_seen": log[-1]["examples_seen"],
                       "kept_step": log[-1]["kept_step"],
                       "samples_generated": kept.get("samples_generated", 0),
                       "reward_calls": kept.get("reward_calls", 0),
                       "reward_calls_run": log[-1].get("reward_calls", 0),
                       "train_seconds": log[-1].get("seconds", 0.0), **view_scores}  # fmt: skip
                rows[view].append(row)
            if writer:
                samples = [
                    {"prompt": p, "response": r} for p, r in zip(test_prompts[:20], responses[:20])
                ]
                (run_dir / "samples.json").write_text(json.dumps(samples, indent=1))
                (run_dir / "provenance.json").write_text(json.dumps(provenance, indent=1))
                for view in views:  # test.json last: it marks the run finished
                    (run_dir / test_file(view)).write_text(json.dumps(rows[view][-1]))
            kept = " (kept pi_ref)" if log[-1]["kept_step"] == 0 else ""
            print(
                f"{method_spec(method).label} seed {seed}: test total {scores['']['total']:.3f}{kept}"
            )
    report_reuse(reused, retrained)
    if writer:
        finish(cfg, out, rows, families)
    print(f"done in {time.time() - start:.0f} s; results in {out}")
    return out


def offline_costs(method: str, n_train: int, value_samples: int) -> dict:
    """What an offline method pays once, before its first step: pi_ref's samples for the V fit
    and their rewards (the methods that read A), and the training set's rewards (one per pair and
    reward it reads: PRO scores the rejected reply too). NLL and DPO read no reward."""
    spec = method_spec(method)
    samples = value_samples if spec.needs_value else 0
    return {"samples_generated": samples, "reward_calls": samples + spec.rewards_per_pair * n_train}


def test_views(cfg: ReproduceConfig) -> dict[str, DecodeConfig]:
    """{"": the main test decoding, <second view>: its decoding} (validation uses the main one)."""
    views = {"": cfg.eval_decode}
    if cfg.second_view != "none":
        views[cfg.second_view] = with_decoding(cfg.eval_decode, cfg.second_view)
    return views


def test_file(view: str) -> str:
    return f"test-{view}.json" if view else "test.json"


def summary_file(view: str) -> str:
    return f"summary-{view}.csv" if view else "summary.csv"


def report_reuse(reused: list[str], retrained: list[str]) -> None:
    if reused:
        print(f"reused {len(reused)} finished run(s) made from the same settings, inputs and code: "
              f"{', '.join(reused)}")  # fmt: skip
    for line in retrained:
        print(f"retrained {line}")


def write_preparation(out: Path, prepared: dict, advantage: np.ndarray) -> None:
    (out / "prepare.json").write_text(json.dumps(prepared, indent=1, default=float))
    counts, edges = np.histogram(advantage, bins=40)
    histogram = {
        "edges": edges.round(5).tolist(),
        "counts": counts.tolist(),
        "leftover_fraction": float((advantage > 0).mean()),
    }
    (out / "advantage_hist.json").write_text(json.dumps(histogram))


def finish(cfg: ReproduceConfig, out: Path, rows: dict, families: dict[str, str]) -> None:
    """Summaries, figures, the comparison with the reference and the scorecard."""
    for view, view_rows in rows.items():
        kept, left_out = with_finished_runs(view_rows, out, families, test_file(view))
        write_summary(kept, out / summary_file(view))
    if left_out:
        print(f"left out of summary.csv: {len(left_out)} run(s) in {out / 'runs'} made from other "
              f"settings, inputs or code: {', '.join(left_out)}")  # fmt: skip
    figures = Path(cfg.figures_dir)
    pools = [] if cfg.model_config().pretrained else [plot_noisy(out.parent, figures, cfg.task)]
    written = plot_all(out, figures, out.name) + pools  # the noisy-data pools: the tiny model's
    for path in filter(None, written):
        print(f"wrote {path}")
    reference = Path(cfg.reference_dir) / out.name
    if out.resolve() != reference.resolve():
        table = comparison_markdown(compare(out, reference), reference)
        (out / "comparison.md").write_text(table)
        print("\n" + table)
    print("The paper's claims on this run:\n" + scorecard_markdown(scorecard(out)))


def resolved(cfg: ReproduceConfig, model_cfg) -> ReproduceConfig:
    """`cfg` made concrete: a decoding length of None filled in (the model's response length), the
    --decoding applied to eval_decode, and the folders of --write-reference / a figures_dir of None."""
    cfg = dataclasses.replace(cfg)
    for name in ("decode", "eval_decode"):
        decode = getattr(cfg, name)
        if decode.max_new_tokens is None:
            tokens = model_cfg.max_response_tokens
            setattr(cfg, name, dataclasses.replace(decode, max_new_tokens=tokens))
    cfg.eval_decode = with_decoding(cfg.eval_decode, cfg.decoding)
    cfg.second_view = second_view(cfg)
    if cfg.write_reference:
        cfg.out_dir = cfg.reference_dir
        cfg.figures_dir = cfg.figures_dir or "figures"
    cfg.figures_dir = cfg.figures_dir or str(Path(cfg.out_dir) / "figures")
    return cfg


def main_process() -> bool:
    """False on the non-main processes of `accelerate launch` / torchrun: they train, never write."""
    return int(os.environ.get("RANK", "0")) == 0


def decoding_noise(
    cfg: ReproduceConfig, out: Path, model, tokenizer, prompts, reward, model_cfg, first: dict,
    shared: str, write: bool = True,
):  # fmt: skip
    """pi_ref's test reward under cfg.decoding_seeds sampling seeds, for the test decoding that
    samples (the main one or the second view; none: no noise, nothing to do). The first seed is the
    one every method is evaluated with: the sd is the decoding noise, to set beside the spread over
    training seeds. Written to out/decoding_noise.json if `write` (kept when it exists for the same
    inputs); every process decodes, so that none waits for the others."""
    path = out / "decoding_noise.json"
    sampled = [(view, d) for view, d in test_views(cfg).items() if d.do_sample]
    if cfg.decoding_seeds < 2 or not sampled:
        return
    view, base = sampled[0]
    if path.exists() and json.loads(path.read_text()).get("shared_key") == shared:
        return
    seeds, totals = [base.seed], [first[view]["total"]]
    for k in range(1, cfg.decoding_seeds):
        decode = dataclasses.replace(base, seed=base.seed + k)
        scores, _ = evaluate_policy(
            model, tokenizer, prompts, reward, decode, model_cfg.max_prompt_tokens
        )
        seeds.append(decode.seed)
        totals.append(scores["total"])
    sd = float(np.std(totals, ddof=1))
    if not write:
        return
    noise = {
        "policy": "pi_ref",
        "decoding": view or cfg.decoding,
        "prompts": len(prompts),
        "seeds": seeds,
        "total": [round(t, 4) for t in totals],
        "sd": round(sd, 4),
        "shared_key": shared,
    }
    path.write_text(json.dumps(noise, indent=1))
    print(
        f"decoding noise ({noise['decoding']}): pi_ref test total sd {sd:.4f} over {len(seeds)} seeds"
    )


def with_finished_runs(
    rows: list[dict], out: Path, families: dict[str, str], name: str = "test.json"
) -> tuple[list[dict], list[str]]:
    """This call's rows plus the other finished runs in `out/runs` made from the same provenance
    as this call's runs of their family (`families`: {family: summary key}; earlier calls with
    other --methods / --seeds), so that summary.csv describes every comparable run in the folder;
    pi_ref first, then the methods in registry order, seeds ascending. Returns (rows, the names
    of the runs left out because they were made otherwise)."""
    have = {(row["method"], str(row["seed"])) for row in rows}
    earlier, left_out = [], []
    for path in sorted((out / "runs").glob(f"*/{name}")):
        row = json.loads(path.read_text())
        if (row["method"], str(row["seed"])) in have:
            continue
        provenance = read_provenance(path.parent)
        family = provenance and method_family(provenance["run"]["method"])
        if provenance is not None and families.get(family) == summary_key(provenance):
            earlier.append(row)
        else:
            left_out.append(path.parent.name)
    order = {"pi_ref": -1, **{m: i for i, m in enumerate(METHODS)}}
    rows = sorted(
        rows + earlier, key=lambda row: (order.get(row["method"], len(order)), str(row["seed"]))
    )
    return rows, left_out


def write_summary(rows: list[dict], path: Path) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
            )
