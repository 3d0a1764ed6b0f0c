"""Tune PPO's two main knobs, the KL weight beta and the learning rate, on an embedded task.

    python bench/ppo_grid.py --task tiny-hh --out results/measurements/ppo_grid_tiny-hh.json

A one-factor-at-a-time design around the defaults: (beta, lr) = the default, then each other beta
at the default lr, then each other lr at the default beta (2 * 2 + 1 = 5 runs with the flags'
defaults). The task, pi_ref and the offline set come from the `--preset` (cached, as `reproduce`
builds them); each run is `ppo.train_ppo` with the main job's validation and model selection, its
rollouts sampled as the top-p test view, and is scored on `--n-test` test prompts under the job's
main decoding by the test reward, with the KL to pi_ref on sampled replies. A-LoL (seed 0, the
preset's offline settings) is trained and tested the same way, with the reward calls it paid
(`reproduce.offline_costs`), as the point PPO is measured against. Resumable: a config already in
`--out` (same preset, task and settings) is not run again; the file is rewritten after each run.
"""

import argparse
import dataclasses
import json
import time
from pathlib import Path

from alol_min.lm.generation import with_decoding
from alol_min.lm.reference import reference_policy
from alol_min.ppo import train_ppo
from alol_min.run.config import preset
from alol_min.run.evaluate import evaluate_policy, kl_to_reference
from alol_min.run.prepare import prepare_offline
from alol_min.run.reproduce import offline_costs, resolved
from alol_min.run.train import train_offline
from alol_min.tasks import load_task


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="tiny-hh", choices=("chitchat", "tiny-hh"))
    p.add_argument("--preset", default="default", choices=("default", "full"))
    p.add_argument("--betas", type=floats, default=[0.02, 0.2], help="betas besides the default")
    p.add_argument("--lrs", type=floats, default=[3e-5, 3e-4], help="lrs besides the default")
    p.add_argument(
        "--steps", type=int, default=None, help="rollouts per run (default: the preset's)"
    )
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()

    cfg = preset(args.preset, args.task)
    model_cfg = cfg.model_config()
    cfg = resolved(cfg, model_cfg)
    base = cfg.ppo if args.steps is None else dataclasses.replace(cfg.ppo, steps=args.steps)
    grid = [(base.kl_beta, base.lr)] + [(b, base.lr) for b in args.betas]
    grid += [(base.kl_beta, lr) for lr in args.lrs]

    task = load_task(args.task, data_cfg=cfg.data, n_train=cfg.tiny_hh_train, n_test=cfg.n_test)
    pi_ref, tokenizer, ref_folder = reference_policy(
        task.data, model_cfg, cfg.sft, task=args.task, progress=False
    )
    offline, _, _, train_pairs = prepare_offline(
        cfg, task, pi_ref, tokenizer, model_cfg, ref_folder
    )
    data, max_prompt = task.data, model_cfg.max_prompt_tokens
    val_prompts = data["validation"]["prompt"][-cfg.n_val_eval :]
    test_prompts = data["test"]["prompt"][: args.n_test]
    rollout_decode = with_decoding(cfg.eval_decode, "top-p")
    kl_decode = dataclasses.replace(rollout_decode, top_p=1.0)

    def validate(policy):
        scores, _ = evaluate_policy(
            policy, tokenizer, val_prompts, task.train_reward, cfg.eval_decode, max_prompt
        )
        return {k: round(v, 4) for k, v in scores.items()}

    def test(policy) -> dict:
        scores, _ = evaluate_policy(
            policy, tokenizer, test_prompts, task.test_reward, cfg.eval_decode, max_prompt
        )
        kl = kl_to_reference(policy, pi_ref, tokenizer, test_prompts[: cfg.n_kl_prompts],
                             kl_decode, max_prompt)  # fmt: skip
        return {"test_total": round(scores["total"], 4), "kl_ref": round(kl, 4)}

    settings = {"task": args.task, "preset": args.preset, "n_test": args.n_test,
                "decoding": cfg.decoding, "ppo": dataclasses.asdict(base)}  # fmt: skip
    report = json.loads(args.out.read_text()) if args.out.exists() else {}
    if report.get("settings") != json.loads(json.dumps(settings)):
        report = {"settings": settings, "pi_ref": test(pi_ref), "runs": []}
    done = {(r["kl_beta"], r["lr"]) for r in report["runs"]}
    print(f"pi_ref: {report['pi_ref']}")
    for beta, lr in grid:
        if (beta, lr) in done:
            continue
        ppo_cfg = dataclasses.replace(base, kl_beta=beta, lr=lr, seed=args.seed)
        start = time.time()
        policy, log = train_ppo(
            pi_ref, tokenizer, list(train_pairs["prompt"]), task.train_reward, ppo_cfg,
            rollout_decode, max_prompt, validate=validate, progress=False,
        )  # fmt: skip
        kept = next(r for r in log if r["step"] == log[-1]["kept_step"])
        row = {"kl_beta": beta, "lr": lr, "kept_step": kept["step"],
               "best_val_total": max(r.get("val_total", -1e9) for r in log),
               "reward_calls_at_kept": kept.get("reward_calls", 0),
               "final_rollout_reward": log[-1].get("rollout_reward"),
               "final_kl_ref_rollout": log[-1].get("kl_ref"),
               **test(policy), "seconds": round(time.time() - start, 1)}  # fmt: skip
        report["runs"].append(row)
        print(json.dumps(row))
        save(args.out, report)
    if "a_lol" not in report:
        start = time.time()
        policy, log = train_offline(
            pi_ref, "a_lol", offline, dataclasses.replace(cfg.offline, seed=args.seed),
            tokenizer.pad_token_id, validate=validate, progress=False,
        )  # fmt: skip
        value_samples = len(data["validation"]["prompt"][: cfg.n_value_prompts])
        cost = offline_costs(
            "a_lol", len(offline.encoded), value_samples * cfg.value.samples_per_prompt
        )
        report["a_lol"] = {"kept_step": log[-1]["kept_step"], "steps": log[-1]["step"],
                           "best_val_total": max(r.get("val_total", -1e9) for r in log), **cost,
                           **test(policy), "seconds": round(time.time() - start, 1)}  # fmt: skip
        print(f"a_lol: {report['a_lol']}")
        save(args.out, report)


def save(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
