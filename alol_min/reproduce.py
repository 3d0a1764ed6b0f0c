"""The main job: pi_ref -> reward -> V_ref -> advantages -> methods x seeds -> test evaluation.

Every stage before the method runs is cached (keyed by its inputs), so a second run reuses them.
Each method run writes `config.json`, `log.jsonl` and `test.json` into
`results/<task>/runs/<method>-s<seed>/`; `results/<task>/summary.csv` has one row per
(method, seed) with every test metric, the steps run and the examples seen.
"""
from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .cache import cache_key, config_inputs, dataset_digest, load_or_build
from .data import ChitchatConfig
from .evaluation import evaluate_policy
from .generation import DecodeConfig
from .losses import METHODS
from .models import ModelConfig
from .offline import OfflineConfig, OfflineData, train_offline
from .pipeline import advantage_summary, fit_value_estimate, reference_pass
from .reference import encode_split, reference_metrics, reference_policy
from .tasks import POOLS, load_task, rated_pool
from .training import SFTConfig
from .values import ValueConfig

DEFAULT_METHODS = ("nll", "a_lol")
"""The default run's headline comparison; --full runs FULL_METHODS over 3 seeds."""
FULL_METHODS = ("nll", "wbc", "r_gold", "r_lol", "a_lol", "a_lol_ref_free", "a_lol_seq", "a_lol_kl", "dpo", "pro")


@dataclass
class ReproduceConfig:
    """One reproduction run."""

    task: str = "chitchat"
    """Embedded task."""
    model: str = "tiny"
    """Model preset of pi_ref and pi_theta."""
    data: ChitchatConfig = field(default_factory=ChitchatConfig)
    """Task data (split sizes)."""
    tiny_hh_train: int | None = None
    """tiny-hh training pairs to generate (None: the generator's default)."""
    methods: tuple[str, ...] = DEFAULT_METHODS
    """Methods to train (keys of losses.METHODS)."""
    seeds: tuple[int, ...] = (0,)
    """Seeds of each method's run."""
    n_offline: int = 20000
    """Training pairs of the offline RL set (random, from the training split)."""
    n_value_prompts: int = 600
    """Validation prompts whose pi_ref samples fit V_ref."""
    n_val_eval: int = 200
    """Validation prompts decoded at each periodic validation (model selection)."""
    n_test: int = 500
    """Test prompts of the final evaluation."""
    sft: SFTConfig = field(default_factory=SFTConfig)
    """pi_ref training."""
    value: ValueConfig = field(default_factory=ValueConfig)
    """V_ref fit."""
    offline: OfflineConfig = field(default_factory=OfflineConfig)
    """Method training."""
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    """Decoding for validation and test (the same for every method)."""
    pool: str = "all"
    """Offline training pairs: "all", or "low-rated" / "high-rated" only (chitchat: conversations' human
    ratings; tiny-hh: label-noise pairs / clean pairs), the noisy-data experiment; results then go to
    results/<task>-<pool>/."""
    decoding_seeds: int = 5
    """pi_ref's test reward is measured under this many decoding seeds: the decoding noise."""
    out_dir: str = "results"
    """Results folder (results/<task>/...)."""
    figures_dir: str = "figures"
    """Where the figures and tables go."""

    @classmethod
    def mode(cls, name: str, **overrides) -> "ReproduceConfig":
        if name == "smoke":
            cfg = cls(model="micro", methods=FULL_METHODS, n_offline=600,
                      data=ChitchatConfig(max_train=4000, max_validation=300, max_test=100), tiny_hh_train=2000, n_value_prompts=60, n_val_eval=40,
                      n_test=60, sft=SFTConfig(steps=40, batch_size=32, eval_every=40, eval_pairs=100),
                      value=ValueConfig(samples_per_prompt=2, epochs=5),
                      offline=OfflineConfig(steps=6, batch_size=8, eval_every=3),
                      decode=DecodeConfig(max_new_tokens=12))
        elif name == "full":
            cfg = cls(methods=FULL_METHODS, seeds=(0, 1, 2))
        elif name == "default":
            cfg = cls(decoding_seeds=1)  # the decoding noise is measured by --full
        else:
            raise ValueError(f"unknown mode {name!r}: smoke, default or full")
        for key, value in overrides.items():
            if value is not None:
                setattr(cfg, key, value)
        if cfg.task == "tiny-hh" and name != "smoke":
            cfg.sft = SFTConfig(steps=500, eval_every=100)  # short, templated replies: learnt in ~2 min
        return cfg


def prepare_offline(cfg: ReproduceConfig, task, model, tokenizer, model_cfg, ref_folder, rejected: bool | None = None):
    """Rewards, V_ref, advantages and pi_ref log-probs of the offline set (cached).

    `rejected`: also score the pairs' rejected replies and take pi_ref's log-probs of them, which only
    the pairwise methods (DPO, PRO) read; None: when `cfg.methods` has one. They are cached apart,
    so a run without pairwise methods skips that pass.
    """
    pool, pool_report = rated_pool(task, cfg.pool)
    if cfg.pool != "all":
        print(f"offline pool {cfg.pool}: {json.dumps(pool_report)}")
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(pool), size=min(cfg.n_offline, len(pool)), replace=False))
    train = pool.select(pick.tolist())
    value_prompts = task.data["validation"]["prompt"][:cfg.n_value_prompts]
    reward_key = {k: v for k, v in task.reward_stats.items() if "seconds" not in k}  # timings differ per build
    inputs = {"task": cfg.task, "pi_ref": str(ref_folder.name), "pool": dataset_digest(pool),
              "reward": reward_key, "n_offline": cfg.n_offline, "value": config_inputs(cfg.value),
              "decode": asdict(cfg.decode), "prompts": cache_key({"p": value_prompts})}
    encoded = encode_split(tokenizer, train, model_cfg)

    def build(folder: Path) -> None:
        head, report = fit_value_estimate(model, tokenizer, value_prompts, task.train_reward, cfg.value, cfg.decode,
                                          model_cfg.max_prompt_tokens)
        torch.save(head.state_dict(), folder / "value_head.pt")
        passed = reference_pass(model, encoded, tokenizer.pad_token_id, head=head, prompts=list(train["prompt"]))
        scores = task.offline_rewards(train)
        summary = advantage_summary(scores["total"], passed["value"])
        arrays = {"index": pick, "value": passed["value"], "advantage": summary["advantage"],
                  "value_samples": report.pop("samples")}
        arrays.update({f"reward_{k}": v for k, v in scores.items()})
        np.savez(folder / "offline.npz", **arrays)
        torch.save({"ref_logp": passed["ref_logp"]}, folder / "ref_logp.pt")
        report.pop("history", None)
        report.pop("heldout_indices", None)
        stats = {k: v for k, v in summary.items() if k != "advantage"}
        (folder / "report.json").write_text(json.dumps({"value": report, "advantage": stats}, indent=1, default=float))

    folder = load_or_build(f"offline-{cfg.task}", inputs, build)
    arrays = dict(np.load(folder / "offline.npz"))
    ref = torch.load(folder / "ref_logp.pt", weights_only=True)
    offline = OfflineData(encoded, arrays["reward_total"], arrays["advantage"], ref["ref_logp"])
    pairwise = any(METHODS[m].pairwise for m in cfg.methods)
    if rejected or (rejected is None and pairwise):
        rejected_responses = task.rejected(train)
        offline.rejected = encode_split(tokenizer, {"prompt": train["prompt"], "response": rejected_responses},
                                        model_cfg)

        def build_rejected(folder: Path) -> None:
            passed = reference_pass(model, offline.rejected, tokenizer.pad_token_id)
            scores = task.train_reward(list(train["prompt"]), rejected_responses)
            np.savez(folder / "rejected.npz", reward_rejected=scores["total"])
            torch.save({"ref_logp_rejected": passed["ref_logp"]}, folder / "ref_logp_rejected.pt")

        rej_inputs = {"task": cfg.task, "pi_ref": str(ref_folder.name), "reward": reward_key,
                      "pairs": cache_key({"p": list(train["prompt"]), "r": list(rejected_responses)})}
        rej_folder = load_or_build(f"offline-rejected-{cfg.task}", rej_inputs, build_rejected)
        arrays["reward_rejected"] = np.load(rej_folder / "rejected.npz")["reward_rejected"]
        offline.reward_rejected = arrays["reward_rejected"]
        offline.ref_logp_rejected = torch.load(rej_folder / "ref_logp_rejected.pt", weights_only=True)["ref_logp_rejected"]
    return offline, json.loads((folder / "report.json").read_text()), arrays, train


def run(cfg: ReproduceConfig, progress: bool = True) -> Path:
    """Run the reproduction; returns results/<task>."""
    start = time.time()
    if cfg.pool not in POOLS:
        raise ValueError(f"unknown pool {cfg.pool!r}; choose one of {POOLS}")
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}")
    out = Path(cfg.out_dir) / (cfg.task if cfg.pool == "all" else f"{cfg.task}-{cfg.pool}")
    (out / "runs").mkdir(parents=True, exist_ok=True)
    task = load_task(cfg.task, data_cfg=cfg.data, n_train=cfg.tiny_hh_train)
    data, reward = task.data, task.train_reward
    print(f"{cfg.task}: {task.report}")
    model_cfg = ModelConfig.preset(cfg.model)
    model, tokenizer, ref_folder = reference_policy(data, model_cfg, cfg.sft, task=cfg.task, progress=progress)
    print(f"pi_ref: validation reply perplexity {reference_metrics(ref_folder)['val_reply_ppl']:.1f}")
    reward_stats = task.reward_stats
    print(f"reward: {', '.join(reward.components)}; fit: {json.dumps(reward_stats, default=float)}")
    offline, prep, _, _ = prepare_offline(cfg, task, model, tokenizer, model_cfg, ref_folder)
    v, a = prep["value"], prep["advantage"]
    print(f"V_ref: held-out R^2 {v.get('heldout_r2', float('nan')):.3f} (noise ceiling "
          f"{v.get('noise_heldout', {}).get('ceiling_r2', float('nan')):.3f}); leftover fraction "
          f"{a['leftover_fraction']:.3f}; corr(A, R) {a['corr_advantage_reward']:.3f}")
    (out / "prepare.json").write_text(json.dumps({"reward": reward_stats, **prep}, indent=1, default=float))
    counts, edges = np.histogram(offline.advantage, bins=40)
    (out / "advantage_hist.json").write_text(json.dumps({
        "edges": edges.round(5).tolist(), "counts": counts.tolist(),
        "leftover_fraction": float((offline.advantage > 0).mean())}))
    val_prompts = data["validation"]["prompt"][-cfg.n_val_eval:]
    test_prompts = data["test"]["prompt"][:cfg.n_test]

    def validate(policy):
        scores, _ = evaluate_policy(policy, tokenizer, val_prompts, reward, cfg.decode, model_cfg.max_prompt_tokens)
        return {k: round(v, 4) for k, v in scores.items()}

    ref_val: dict = {}  # pi_ref's validation scores (every run's step 0): taken from the first run trained

    rows = []
    ref_scores, _ = evaluate_policy(model, tokenizer, test_prompts, task.test_reward, cfg.decode, model_cfg.max_prompt_tokens)
    rows.append({"method": "pi_ref", "seed": "", "steps": 0, "examples_seen": 0, **ref_scores})
    decoding_noise(cfg, out, model, tokenizer, test_prompts, task.test_reward, model_cfg, ref_scores["total"])
    for method in cfg.methods:
        for seed in cfg.seeds:
            run_dir = out / "runs" / f"{method}-s{seed}"
            done = run_dir / "test.json"
            if done.exists():  # resume: a finished run is not repeated
                rows.append(json.loads(done.read_text()))
                continue
            offline_cfg = OfflineConfig(**{**asdict(cfg.offline), "seed": seed})
            policy, log = train_offline(model, method, offline, offline_cfg, tokenizer.pad_token_id,
                                        validate=validate, run_dir=run_dir, progress=progress,
                                        initial_scores=ref_val or None)
            ref_val = ref_val or {k[4:]: v for k, v in log[0].items() if k.startswith("val_")}
            scores, responses = evaluate_policy(policy, tokenizer, test_prompts, task.test_reward, cfg.decode,
                                                model_cfg.max_prompt_tokens)
            row = {"method": method, "seed": seed, "steps": log[-1]["step"],
                   "examples_seen": log[-1]["examples_seen"], **scores}
            (run_dir / "samples.json").write_text(json.dumps(
                [{"prompt": p, "response": r} for p, r in zip(test_prompts[:20], responses[:20])], indent=1))
            done.write_text(json.dumps(row))
            rows.append(row)
            print(f"{METHODS[method].label} seed {seed}: test total {scores['total']:.3f}")
    write_summary(with_finished_runs(rows, out), out / "summary.csv")
    from .plots import plot_all, plot_noisy

    written = plot_all(out, Path(cfg.figures_dir), out.name) + [plot_noisy(out.parent, Path(cfg.figures_dir), cfg.task)]
    for path in filter(None, written):
        print(f"wrote {path}")
    print(f"done in {time.time() - start:.0f} s; results in {out}")
    return out


def decoding_noise(cfg: ReproduceConfig, out: Path, model, tokenizer, prompts, reward, model_cfg, first: float):
    """pi_ref's test reward under cfg.decoding_seeds decoding seeds (the first is the one every method
    is evaluated with): their sd is the decoding noise, to set beside the spread over training seeds.
    Written to out/decoding_noise.json (kept when it exists)."""
    path = out / "decoding_noise.json"
    if cfg.decoding_seeds < 2 or path.exists():
        return
    seeds, totals = [cfg.decode.seed], [first]
    for k in range(1, cfg.decoding_seeds):
        decode = DecodeConfig(**{**asdict(cfg.decode), "seed": cfg.decode.seed + k})
        scores, _ = evaluate_policy(model, tokenizer, prompts, reward, decode, model_cfg.max_prompt_tokens)
        seeds.append(decode.seed)
        totals.append(scores["total"])
    sd = float(np.std(totals, ddof=1))
    path.write_text(json.dumps({"policy": "pi_ref", "prompts": len(prompts), "seeds": seeds,
                                "total": [round(t, 4) for t in totals], "sd": round(sd, 4)}, indent=1))
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
            writer.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
