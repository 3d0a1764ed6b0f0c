"""The main job's configuration: one dataclass, `ReproduceConfig`, and its named presets.

Every field is a command-line flag (`python -m alol_min reproduce --help`): the CLI is derived from
these dataclasses by tyro, which reads each field's docstring as its help, so the defaults and the
help text live here once. A nested config's fields are dotted flags (`--offline.lr`,
`--sft.steps`, `--eval-decode.num-beams`); the hh-rlhf options are top-level (`--source`).

Presets are named configs, one per (preset, task) in `PRESETS`; flags then override fields.
`check_config` refuses a config before any work is done, naming the flag.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import tyro

from alol_min.lm.generation import DECODINGS, DecodeConfig
from alol_min.lm.models import ModelConfig
from alol_min.lm.sft import SFTConfig
from alol_min.losses import method_spec
from alol_min.ppo import PPOConfig
from alol_min.run.train import OfflineConfig
from alol_min.tasks import POOLS, TASKS, ChitchatConfig, HHConfig
from alol_min.values import ValueConfig

DEFAULT_METHODS = ("nll", "a_lol")
"""The default run's headline comparison."""
FULL_METHODS = (
    "nll",
    "wbc",
    "r_gold",
    "r_lol",
    "a_lol",
    "a_lol_ref_free",
    "a_lol_seq",
    "a_lol_kl",
    "dpo",
    "pro",
    "ppo",
)
"""The paper's methods and baselines, and PPO, its online contrast (the `full` preset trains each
over 3 seeds)."""


@dataclass
class ReproduceConfig:
    """One reproduction run: pi_ref -> reward -> V_ref -> advantages -> methods x seeds -> test."""

    preset: Literal["default", "smoke", "full", "gpt2-scale", "gpu"] = "default"
    """Named starting point (see `PRESETS`): default = NLL and A-LoL, one seed; full = every method
    over 3 seeds and the decoding noise; smoke = every method with tiny budgets (CI); gpt2-scale =
    the pretrained SmolLM2-135M, 8 methods x 2 seeds sized for hours of a CPU; gpu = the same job
    at full size for one GPU (the paper's batch of 16, every method x 3 seeds)."""
    task: Literal["chitchat", "tiny-hh", "hh-rlhf"] = "chitchat"
    """The task: chitchat (real dialogue), tiny-hh (a generated HH-format world) or hh-rlhf (the
    paper's HHA data: needs --source)."""
    model: str = "tiny"
    """pi_ref's and pi_theta's model: a preset (micro, tiny, gpt2, smollm2-135m) or a pretrained
    folder or hub name."""
    max_prompt_tokens: int | None = None
    """Override the model's prompt length (None: the model preset's)."""
    max_response_tokens: int | None = None
    """Override the model's response length (None: the model preset's)."""
    ref_sft: bool = True
    """Fine-tune pi_ref by NLL on the task's training replies (the recipe's first step);
    --no-ref-sft when the model already is a reference policy (an SFT or instruct checkpoint)."""
    methods: tuple[str, ...] = DEFAULT_METHODS
    """Methods to train, space-separated (keys of losses.METHODS)."""
    seeds: tuple[int, ...] = (0,)
    """Seeds of each method's run, space-separated."""
    data: ChitchatConfig = field(default_factory=ChitchatConfig)
    """chitchat only: how its splits are built."""
    tiny_hh_train: int | None = None
    """tiny-hh only: training pairs to generate (None: the generator's default)."""
    hh: Annotated[HHConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=HHConfig)
    """hh-rlhf only: the data source and the reward model."""
    n_offline: int = 20000
    """Training pairs of the offline RL set (random, from the task's offline pool)."""
    n_value_prompts: int = 600
    """Validation prompts whose pi_ref samples fit V_ref."""
    n_val_eval: int = 200
    """Validation prompts decoded at each periodic validation (model selection); 0: no validation,
    the last step is kept."""
    n_test: int = 500
    """Test prompts of the final evaluation."""
    sft: SFTConfig = field(default_factory=SFTConfig)
    """pi_ref's NLL training."""
    value: ValueConfig = field(default_factory=ValueConfig)
    """The V_ref fit."""
    offline: OfflineConfig = field(default_factory=OfflineConfig)
    """Every offline method's training (the seed is each run's)."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    """PPO's training (--methods ppo; the seed is each run's): rollouts of the offline set's
    prompts, sampled as the top-p test view samples."""
    n_kl_prompts: int = 64
    """Prompts whose sampled replies measure KL(pi_theta || pi_ref) at each validation (validation
    prompts) and at test (test prompts), for every method; 0: not measured."""
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    """Decoding of pi_ref's samples that V_ref is fit on."""
    eval_decode: DecodeConfig = field(default_factory=DecodeConfig)
    """Decoding for validation and test (the same for every method); its search fields are set by
    --decoding."""
    decoding: Literal["beam", "greedy", "top-p"] = "beam"
    """Validation and test decoding: beam (2 beams, repetition penalty 2.5: the paper's Reddit
    setting, chitchat's default), greedy (the paper's HHA setting, hh-rlhf's default) or top-p
    (seeded nucleus sampling, p 0.9; tiny-hh's default, see TINY_HH_DECODING)."""
    second_view: Literal["auto", "top-p", "greedy", "beam", "none"] = "auto"
    """A second test decoding of every run (summary-<view>.csv beside summary.csv): the same
    checkpoints seen under another decoding; auto: top-p, or the paper's decoding of the task's
    analogue (PAPER_DECODING) when --decoding is top-p; none to skip it."""
    pool: Literal["all", "low-rated", "high-rated"] = "all"
    """Offline training pairs: all, or only low- / high-quality ones (chitchat: the conversations'
    human ratings; tiny-hh: label-noise / clean pairs), the noisy-data experiment; results then go
    to <out-dir>/<task>-<pool>/."""
    decoding_seeds: int = 1
    """pi_ref's test reward is measured under this many sampling seeds (>= 2: the decoding noise of
    the test decoding that samples, --decoding or --second-view top-p; greedy and beam have none)."""
    prepare_only: bool = False
    """Stop after pi_ref, the reward, V_ref and the advantages (cached): run this once before
    `accelerate launch`."""
    out_dir: str = "runs"
    """This run's folder (<out-dir>/<task>/...), kept out of git; the run ends by comparing itself
    with the reference in --reference-dir."""
    figures_dir: str | None = None
    """Where the figures and tables go (None: <out-dir>/figures; figures/ with --write-reference)."""
    reference_dir: str = "results"
    """The committed reference results that a run is compared with."""
    write_reference: bool = False
    """Regenerate the committed reference: write into --reference-dir and figures/ (the only way a
    run writes there)."""
    progress: bool = True
    """Show progress bars."""

    def model_config(self) -> ModelConfig:
        overrides = {
            "max_prompt_tokens": self.max_prompt_tokens,
            "max_response_tokens": self.max_response_tokens,
        }
        return ModelConfig.for_model(
            self.model, **{k: v for k, v in overrides.items() if v is not None}
        )


def _with(cfg: ReproduceConfig, **changes) -> ReproduceConfig:
    return dataclasses.replace(copy.deepcopy(cfg), **changes)


OFFLINE_FULL = tuple(m for m in FULL_METHODS if m != "ppo")
"""hh-rlhf's full preset: PPO on HHA needs a budget of its own (the paper ran TRL's trainer)."""
DEFAULT = ReproduceConfig()
FULL = ReproduceConfig(preset="full", methods=FULL_METHODS, seeds=(0, 1, 2), decoding_seeds=5)
SMOKE = ReproduceConfig(
    preset="smoke",
    model="micro",
    methods=FULL_METHODS,
    n_offline=600,
    data=ChitchatConfig(max_train=4000, max_validation=300, max_test=100),
    tiny_hh_train=2000,
    n_value_prompts=60,
    n_val_eval=40,
    n_test=60,
    sft=SFTConfig(steps=40, batch_size=32, eval_every=40, eval_pairs=100),
    value=ValueConfig(samples_per_prompt=2, epochs=5),
    offline=OfflineConfig(steps=6, batch_size=8, eval_every=3),
    ppo=PPOConfig(steps=3, rollout_prompts=8, minibatch_size=4, epochs=1, eval_every=2),
    n_kl_prompts=16,
    decode=DecodeConfig(max_new_tokens=12),
    eval_decode=DecodeConfig(max_new_tokens=12),
    decoding_seeds=5,
)
SCALE_METHODS = (
    "nll",
    "wbc",
    "a_lol",
    "a_lol_seq",
    "a_lol_ref_free",
    "a_lol_no_clamp",
    "dpo",
    "ppo",
)
"""The gpt2-scale set: the paper's main variants, two baselines, PPO, and A-LoL with A < 0 kept
(whether a fluent pi_ref makes V and the leftover filter matter)."""
GPT2_SCALE = ReproduceConfig(
    preset="gpt2-scale",
    model="smollm2-135m",
    max_prompt_tokens=64,
    max_response_tokens=48,
    methods=SCALE_METHODS,
    seeds=(0, 1),
    n_offline=2000,
    n_value_prompts=200,
    n_val_eval=64,
    n_test=200,
    sft=SFTConfig(steps=300, batch_size=8, lr=5e-5, warmup_steps=20, eval_every=150,
                  eval_pairs=200, bf16=True),
    value=ValueConfig(samples_per_prompt=4),
    offline=OfflineConfig(steps=100, batch_size=8, lr=2e-5, warmup_steps=10, eval_every=25,
                          bf16=True),
    ppo=PPOConfig(steps=30, rollout_prompts=16, minibatch_size=8, epochs=2, lr=1e-5, eval_every=10),
    n_kl_prompts=32,
)  # fmt: skip
"""SmolLM2-135M-Instruct (its own tokenizer and chat template) on chitchat, or on tiny-hh with its
own decoding (top-p, greedy as the second view): 2,000 training pairs, prompts cut
to 64 tokens and replies to 48; pi_ref by 300 NLL steps; V from 200 prompts x 4 samples (with 2,
the noise ceiling is too noisy to estimate: RESULTS.md, "The gpt2-scale preset"); every method
at batch 8 in bf16 autocast, lr 2e-5 (the paper's full-fine-tuning rate), 100 nominal steps,
validating 64 prompts every 25; 200 test prompts. `bench/precision.py` measures the step costs
it is sized from."""
GPU = _with(
    GPT2_SCALE, preset="gpu", methods=FULL_METHODS, seeds=(0, 1, 2), n_offline=20000,
    n_value_prompts=600, n_val_eval=200, n_test=500, max_prompt_tokens=128,
    max_response_tokens=64, sft=_with(GPT2_SCALE.sft, steps=1000, batch_size=16),
    value=ValueConfig(), offline=_with(GPT2_SCALE.offline, steps=300, batch_size=16, eval_every=50),
    ppo=_with(GPT2_SCALE.ppo, steps=60, rollout_prompts=64, minibatch_size=16), n_kl_prompts=64,
)  # fmt: skip
"""The gpt2-scale job at full size for one GPU (`bench/gpu_check.sh`): the paper's batch of 16,
every method x 3 seeds, 20,000 training pairs, the main job's validation and test sizes."""
PAPER_DECODING = {"chitchat": "beam", "tiny-hh": "greedy", "hh-rlhf": "greedy"}
"""The paper's decoding for each task's analogue: Reddit's beam search, HHA's greedy."""
TINY_HH_DECODING = "top-p"
"""tiny-hh validates and tests under top-p, with greedy (the paper's HHA decoding) as the second
view: greedy replies of tiny-hh's pi_ref already score near the judge's ceiling of 1, so that
model selection under greedy can rarely beat pi_ref (RESULTS.md, "Decoding")."""
TINY_HH_SFT = SFTConfig(steps=500, eval_every=100)
"""tiny-hh's replies are short and templated: pi_ref learns them in 500 steps."""
HHA_OFFLINE = OfflineConfig(
    steps=9000, batch_size=4, grad_accum=4, lr=2e-5, warmup_steps=0, grad_clip=0.3, eval_every=900
)
"""The paper's HHA optimisation as full fine-tuning: 16 sequences per step, 9000 nominal steps
(scaled by the leftover fraction for the A-LoL samplers, validation every 900 likewise), gradient
clip 0.3, lr 2e-5 constant: the paper's rate for full fine-tuning (its QLoRA adapters use 2e-4,
which `--offline.lr 2e-4` gives)."""
HHA = dict(
    task="hh-rlhf",
    methods=("a_lol",),
    n_offline=10**9,
    n_value_prompts=280,
    n_val_eval=280,
    offline=HHA_OFFLINE,
    decode=DecodeConfig(max_new_tokens=None),
    eval_decode=DecodeConfig(max_new_tokens=None),
    decoding="greedy",
    second_view="none",
)
"""hh-rlhf: every training pair, 280 validation prompts (V and model selection), greedy decoding
for validation and test (the paper's HHA decoding), replies as long as the model's response length,
no second view (decoding is the expensive part of an hh-rlhf evaluation)."""

PRESETS: dict[tuple[str, str], ReproduceConfig] = {
    ("default", "chitchat"): DEFAULT,
    ("full", "chitchat"): FULL,
    ("smoke", "chitchat"): SMOKE,
    ("default", "tiny-hh"): _with(DEFAULT, task="tiny-hh", sft=TINY_HH_SFT, decoding=TINY_HH_DECODING),
    ("full", "tiny-hh"): _with(FULL, task="tiny-hh", sft=TINY_HH_SFT, decoding=TINY_HH_DECODING),
    ("smoke", "tiny-hh"): _with(SMOKE, task="tiny-hh", decoding=TINY_HH_DECODING),
    ("gpt2-scale", "chitchat"): GPT2_SCALE,
    ("gpu", "chitchat"): GPU,
    ("gpt2-scale", "tiny-hh"): _with(GPT2_SCALE, task="tiny-hh", decoding=TINY_HH_DECODING),
    ("gpu", "tiny-hh"): _with(GPU, task="tiny-hh", decoding=TINY_HH_DECODING),
    ("default", "hh-rlhf"): _with(DEFAULT, **HHA),
    ("full", "hh-rlhf"): _with(FULL, **{**HHA, "methods": OFFLINE_FULL}, decoding_seeds=1),
    ("smoke", "hh-rlhf"): _with(
        SMOKE, task="hh-rlhf", methods=("a_lol",), hh=HHConfig(n_val=24, rm_steps=20), n_test=8,
        n_value_prompts=16, n_val_eval=8, eval_decode=DecodeConfig(max_new_tokens=8),
        decoding="greedy", second_view="none",
    ),
}  # fmt: skip


def preset(name: str = "default", task: str = "chitchat") -> ReproduceConfig:
    """A fresh copy of the named preset for `task`."""
    if (name, task) not in PRESETS:
        raise ConfigError(
            "--preset",
            f"no preset {name!r} for task {task!r}; presets: "
            + ", ".join(sorted({n for n, t in PRESETS if t == task})),
        )
    return copy.deepcopy(PRESETS[(name, task)])


class ConfigError(ValueError):
    """A config that cannot run, with the flag to blame."""

    def __init__(self, flag: str, message: str):
        super().__init__(f"{flag}: {message}")
        self.flag = flag


def flag(path: str) -> str:
    """The command-line flag of a config field path ("offline.eval_every" -> "--offline.eval-every")."""
    return "--" + path.replace("_", "-")


def _positive(cfg, prefix: str, names: tuple[str, ...], minimum: int = 1) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value < minimum:
            raise ConfigError(flag(prefix + name), f"must be >= {minimum}, got {value}")


def _unique(values, what: str, name: str) -> None:
    if not values:
        raise ConfigError(flag(name), f"give at least one {what}")
    repeated = sorted({str(v) for v in values if list(values).count(v) > 1})
    if repeated:
        raise ConfigError(flag(name), f"{what} {', '.join(repeated)} given more than once")


def check_config(cfg: ReproduceConfig) -> None:
    """Raise ConfigError if `cfg` cannot run as asked: an unknown or repeated method or seed, a zero
    or negative count, or an option that the chosen task or estimator would ignore."""
    for method in cfg.methods:
        try:
            method_spec(method)
        except ValueError as error:
            raise ConfigError("--methods", str(error)) from None
    _unique(cfg.methods, "method", "methods")
    _check_decoding(cfg)
    _check_folders(cfg)
    _unique(cfg.seeds, "seed", "seeds")
    if any(seed < 0 for seed in cfg.seeds):
        raise ConfigError("--seeds", f"seeds must be >= 0, got {cfg.seeds}")
    if cfg.task not in TASKS:
        raise ConfigError("--task", f"unknown task {cfg.task!r}; choose one of {TASKS}")
    if cfg.pool not in POOLS:
        raise ConfigError("--pool", f"unknown pool {cfg.pool!r}; choose one of {POOLS}")
    _positive(cfg, "", ("n_offline", "n_value_prompts", "n_test", "decoding_seeds"))
    _positive(cfg, "", ("n_val_eval",), minimum=0)
    _positive(cfg, "", ("max_prompt_tokens", "max_response_tokens", "tiny_hh_train"))
    _positive(cfg.sft, "sft.", ("steps", "batch_size", "eval_every", "eval_pairs", "grad_accum"))
    _positive(cfg.offline, "offline.", ("steps", "batch_size", "eval_every", "grad_accum"))
    _positive(cfg.ppo, "ppo.", ("steps", "rollout_prompts", "minibatch_size", "epochs", "eval_every",
                                "kl_horizon"))  # fmt: skip
    _positive(cfg, "", ("n_kl_prompts",), minimum=0)
    if cfg.ppo.rollout_prompts % cfg.ppo.minibatch_size:
        raise ConfigError("--ppo.rollout-prompts", f"must be a multiple of --ppo.minibatch-size "
                          f"({cfg.ppo.minibatch_size}), got {cfg.ppo.rollout_prompts}")  # fmt: skip
    _positive(cfg.value, "value.", ("samples_per_prompt", "epochs", "batch_size", "neighbours"))
    for name in ("decode", "eval_decode"):
        _positive(getattr(cfg, name), f"{name}.", ("max_new_tokens", "num_beams", "batch_size"))
    _positive(cfg.hh, "", ("n_val", "reward_max_tokens", "rm_steps", "max_rows"))
    default_value = ValueConfig()
    for name in cfg.value.unused_fields():
        if getattr(cfg.value, name) != getattr(default_value, name):
            raise ConfigError(flag("value." + name), "is used only by --value.estimator neighbours")
    _check_task_options(cfg)


def _check_decoding(cfg: ReproduceConfig) -> None:
    base = preset(cfg.preset, cfg.task).eval_decode
    for name in DECODINGS[cfg.decoding]:
        if getattr(cfg.eval_decode, name) != getattr(base, name):
            raise ConfigError(
                flag("eval_decode." + name),
                f"is set by --decoding ({cfg.decoding}: {DECODINGS[cfg.decoding]}); "
                "choose --decoding beam, greedy or top-p instead",
            )
    if cfg.second_view == cfg.decoding:
        raise ConfigError("--second-view", f"is the same decoding as --decoding {cfg.decoding}")


def second_view(cfg: ReproduceConfig) -> str:
    """The second test decoding, "auto" resolved: top-p, or the paper's decoding under top-p."""
    if cfg.second_view != "auto":
        return cfg.second_view
    return "top-p" if cfg.decoding != "top-p" else PAPER_DECODING[cfg.task]


def _check_folders(cfg: ReproduceConfig) -> None:
    """A run writes into the committed reference only when asked to (--write-reference)."""
    if cfg.write_reference and cfg.out_dir != preset(cfg.preset, cfg.task).out_dir:
        raise ConfigError(
            "--write-reference", "writes into --reference-dir; it cannot go with --out-dir"
        )
    if not cfg.write_reference and Path(cfg.out_dir).resolve() == Path(cfg.reference_dir).resolve():
        raise ConfigError(
            "--out-dir",
            f"{cfg.out_dir} is the committed reference (--reference-dir); write elsewhere, or pass "
            "--write-reference to regenerate it",
        )


def _check_task_options(cfg: ReproduceConfig) -> None:
    """Options of one task are refused for another, instead of being ignored."""
    base = preset(cfg.preset, cfg.task)
    if cfg.task != "hh-rlhf":
        for f in dataclasses.fields(HHConfig):
            if getattr(cfg.hh, f.name) != getattr(base.hh, f.name):
                raise ConfigError(
                    flag(f.name), f"is an option of --task hh-rlhf, not of {cfg.task}"
                )
    elif cfg.hh.source is None:
        raise ConfigError(
            "--source",
            "--task hh-rlhf needs a source: Anthropic/hh-rlhf, a folder or a .jsonl[.gz] file",
        )
    if cfg.hh.test_reward_model and not cfg.hh.reward_model:
        raise ConfigError(
            "--test-reward-model",
            "needs --reward-model (without one, a Bradley-Terry "
            "reward model scores both training and test)",
        )
    if cfg.hh.reward_allow_pickle and not cfg.hh.reward_model:
        raise ConfigError(
            "--reward-allow-pickle", "needs --reward-model (the weights it would let in)"
        )
    if cfg.hh.reward_model and cfg.hh.rm_steps != base.hh.rm_steps:
        raise ConfigError(
            "--rm-steps", "trains the Bradley-Terry reward model, which --reward-model replaces"
        )
    if cfg.task != "chitchat" and cfg.data != base.data:
        raise ConfigError("--data.*", f"chitchat's split options do not apply to --task {cfg.task}")
    if cfg.task != "tiny-hh" and cfg.tiny_hh_train != base.tiny_hh_train:
        raise ConfigError("--tiny-hh-train", f"is an option of --task tiny-hh, not of {cfg.task}")
    if cfg.pool != "all" and cfg.task == "hh-rlhf":
        raise ConfigError("--pool", "hh-rlhf has no quality labels: only pool 'all' exists")
    if not cfg.ref_sft and not cfg.model_config().pretrained:
        raise ConfigError(
            "--no-ref-sft", f"needs a pretrained model, but {cfg.model!r} is built from its config"
        )
