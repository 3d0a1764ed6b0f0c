"""The main job: pi_ref -> reward -> V_ref -> advantages -> methods x seeds -> test evaluation.

Every stage before the method runs is cached (keyed by its inputs), so a second run reuses them.
Each method run writes `config.json`, `log.jsonl` and `test.json` into
`results/<task>/runs/<method>-s<seed>/`; `results/<task>/summary.csv` has one row per
(method, seed) with every test metric, the steps run and the examples seen.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from alol_min.lm.generation import DecodeConfig
from alol_min.lm.reference import pretrained_reference, reference_metrics, reference_policy
from alol_min.losses import METHODS, method_spec
from alol_min.run.config import ReproduceConfig, check_config
from alol_min.run.evaluate import evaluate_policy
from alol_min.run.plots import plot_all, plot_noisy
from alol_min.run.prepare import (
    prepare_offline,
)
from alol_min.run.train import train_offline
from alol_min.tasks import load_task


def run(cfg: ReproduceConfig) -> Path:
    """Run the reproduction; returns <out_dir>/<task>[-<pool>]."""
    start = time.time()
    check_config(cfg)
    model_cfg = cfg.model_config()
    cfg = resolved(cfg, model_cfg)
    out = Path(cfg.out_dir) / (cfg.task if cfg.pool == "all" else f"{cfg.task}-{cfg.pool}")
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
    reward_stats = task.reward_stats
    print(f"reward: {', '.join(reward.components)}; fit: {json.dumps(reward_stats, default=float)}")
    # --prepare-only also builds what DPO / PRO need, so that no later multi-process call has to
    offline, prep, _, _ = prepare_offline(
        cfg,
        task,
        model,
        tokenizer,
        model_cfg,
        ref_folder,
        rejected=True if cfg.prepare_only else None,
    )
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
    if writer:
        prepared = {"reward": reward_stats, **prep}
        (out / "prepare.json").write_text(json.dumps(prepared, indent=1, default=float))
        counts, edges = np.histogram(offline.advantage, bins=40)
        histogram = {
            "edges": edges.round(5).tolist(),
            "counts": counts.tolist(),
            "leftover_fraction": float((offline.advantage > 0).mean()),
        }
        (out / "advantage_hist.json").write_text(json.dumps(histogram))
    val_prompts = data["validation"]["prompt"][-cfg.n_val_eval :] if cfg.n_val_eval else []
    test_prompts = data["test"]["prompt"][: cfg.n_test]
    max_prompt = model_cfg.max_prompt_tokens

    def validate(policy):
        scores, _ = evaluate_policy(
            policy, tokenizer, val_prompts, reward, cfg.eval_decode, max_prompt
        )
        return {k: round(v, 4) for k, v in scores.items()}

    ref_val: dict = {}  # pi_ref's validation scores (every run's step 0): from the first run trained
    ref_scores, _ = evaluate_policy(
        model, tokenizer, test_prompts, task.test_reward, cfg.eval_decode, max_prompt
    )
    rows = [{"method": "pi_ref", "seed": "", "steps": 0, "examples_seen": 0, **ref_scores}]
    decoding_noise(
        cfg,
        out,
        model,
        tokenizer,
        test_prompts,
        task.test_reward,
        model_cfg,
        ref_scores["total"],
        write=writer,
    )
    for method in cfg.methods:
        for seed in cfg.seeds:
            run_dir = out / "runs" / f"{method}-s{seed}"
            done = run_dir / "test.json"
            if done.exists():  # resume: a finished run is not repeated
                rows.append(json.loads(done.read_text()))
                continue
            offline_cfg = dataclasses.replace(cfg.offline, seed=seed)
            policy, log = train_offline(
                model, method, offline, offline_cfg, tokenizer.pad_token_id,
                validate=validate if cfg.n_val_eval else None, run_dir=run_dir,
                progress=cfg.progress, initial_scores=ref_val or None,
            )  # fmt: skip
            ref_val = ref_val or {k[4:]: v for k, v in log[0].items() if k.startswith("val_")}
            scores, responses = evaluate_policy(
                policy, tokenizer, test_prompts, task.test_reward, cfg.eval_decode, max_prompt
            )
            row = {"method": method, "seed": seed, "steps": log[-1]["step"],
                   "examples_seen": log[-1]["examples_seen"], **scores}  # fmt: skip
            if writer:
                samples = [
                    {"prompt": p, "response": r} for p, r in zip(test_prompts[:20], responses[:20])
                ]
                (run_dir / "samples.json").write_text(json.dumps(samples, indent=1))
                done.write_text(json.dumps(row))
            rows.append(row)
            print(f"{method_spec(method).label} seed {seed}: test total {scores['total']:.3f}")
    if writer:
        write_summary(with_finished_runs(rows, out), out / "summary.csv")
        figures = Path(cfg.figures_dir)
        written = plot_all(out, figures, out.name) + [plot_noisy(out.parent, figures, cfg.task)]
        for path in filter(None, written):
            print(f"wrote {path}")
    print(f"done in {time.time() - start:.0f} s; results in {out}")
    return out


def resolved(cfg: ReproduceConfig, model_cfg) -> ReproduceConfig:
    """`cfg` with a decoding length of None filled in: the model's response length."""
    cfg = dataclasses.replace(cfg)
    for name in ("decode", "eval_decode"):
        decode = getattr(cfg, name)
        if decode.max_new_tokens is None:
            tokens = model_cfg.max_response_tokens
            setattr(cfg, name, dataclasses.replace(decode, max_new_tokens=tokens))
    return cfg


def main_process() -> bool:
    """False on the non-main processes of `accelerate launch` / torchrun: they train, never write."""
    return int(os.environ.get("RANK", "0")) == 0


def decoding_noise(
    cfg: ReproduceConfig, out: Path, model, tokenizer, prompts, reward, model_cfg, first: float,
    write: bool = True,
):  # fmt: skip
    """pi_ref's test reward under cfg.decoding_seeds decoding seeds (the first is the one every method
    is evaluated with): their sd is the decoding noise, to set beside the spread over training seeds.
    Written to out/decoding_noise.json (kept when it exists) if `write`; every process decodes, so
    that none waits for the others."""
    path = out / "decoding_noise.json"
    if cfg.decoding_seeds < 2 or path.exists():
        return
    seeds, totals = [cfg.eval_decode.seed], [first]
    for k in range(1, cfg.decoding_seeds):
        decode = DecodeConfig(**{**asdict(cfg.eval_decode), "seed": cfg.eval_decode.seed + k})
        scores, _ = evaluate_policy(
            model, tokenizer, prompts, reward, decode, model_cfg.max_prompt_tokens
        )
        seeds.append(decode.seed)
        totals.append(scores["total"])
    sd = float(np.std(totals, ddof=1))
    if not write:
        return
    path.write_text(
        json.dumps(
            {
                "policy": "pi_ref",
                "prompts": len(prompts),
                "seeds": seeds,
                "total": [round(t, 4) for t in totals],
                "sd": round(sd, 4),
            },
            indent=1,
        )
    )
    print(f"decoding noise: pi_ref test total sd {sd:.4f} over {len(seeds)} decoding seeds")


def with_finished_runs(rows: list[dict], out: Path) -> list[dict]:
    """This call's rows plus the other finished runs in `out/runs` (from earlier calls with other
    --methods / --seeds), so that summary.csv describes every run in the folder; pi_ref first, then
    the methods in registry order, seeds ascending."""
    have = {(row["method"], str(row["seed"])) for row in rows}
    earlier = [json.loads(p.read_text()) for p in (out / "runs").glob("*/test.json")]
    rows = rows + [row for row in earlier if (row["method"], str(row["seed"])) not in have]
    order = {"pi_ref": -1, **{m: i for i, m in enumerate(METHODS)}}
    return sorted(rows, key=lambda row: (order.get(row["method"], len(order)), str(row["seed"])))


def write_summary(rows: list[dict], path: Path) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
            )
