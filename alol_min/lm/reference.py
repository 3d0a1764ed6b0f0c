"""The reference policy pi_ref: the model fine-tuned by NLL on the task's training responses.

pi_ref is the behaviour policy the offline data is treated as coming from; every method then
starts pi_theta from it, A-LoL's advantage is measured against it, and its per-token log-probs
give the importance weight r = pi_theta(y|x) / pi_ref(y|x). It is trained once and cached, keyed by
a hash of the data, the model config, the training config and the seed.
"""

from __future__ import annotations

import json
from pathlib import Path

from alol_min.cache import (
    cache_key,
    config_inputs,
    dataset_digest,
    load_or_build,
    source_digest,
)
from alol_min.lm.batching import encode_pairs
from alol_min.lm.models import ModelConfig, load_policy, make_policy, save_policy
from alol_min.lm.sft import SFTConfig, train_nll


def encode_split(tokenizer, split, model_cfg: ModelConfig):
    return encode_pairs(
        tokenizer,
        split["prompt"],
        split["response"],
        model_cfg.max_prompt_tokens,
        model_cfg.max_response_tokens,
    )


PI_REF_SOURCE = (
    "alol_min.lm.sft",
    "alol_min.lm.models",
    "alol_min.lm.batching",
    "alol_min.lm.loop",
)
"""The modules whose source is part of pi_ref's cache key: an edit of one retrains pi_ref."""


def reference_policy(
    data,
    model_cfg: ModelConfig,
    sft_cfg: SFTConfig,
    *,
    task: str = "chitchat",
    progress: bool = True,
    verbose: bool = True,
):
    """(model, tokenizer, folder) of pi_ref for `data` (a DatasetDict with train and validation).

    The folder holds the weights (safetensors), tokenizer, `config.json`, `log.jsonl` and
    `metrics.json` (final validation reply perplexity). Reused when every input matches.
    """
    inputs = {
        "task": task,
        "train": dataset_digest(data["train"]),
        "validation": dataset_digest(data["validation"]),
        "model": config_inputs(model_cfg),
        "sft": config_inputs(sft_cfg),
        "source": source_digest(*PI_REF_SOURCE),
    }

    def build(folder: Path) -> None:
        texts = list(data["train"]["prompt"]) + list(data["train"]["response"])
        model, tokenizer = make_policy(model_cfg, texts, seed=sft_cfg.seed)
        train_enc = encode_split(tokenizer, data["train"], model_cfg)
        val_enc = encode_split(tokenizer, data["validation"], model_cfg)
        if verbose:
            n_params = sum(p.numel() for p in model.parameters())
            print(
                f"pi_ref: {model_cfg.name}, {n_params / 1e6:.2f}M params, vocab {len(tokenizer)}, "
                f"{len(train_enc):,} training pairs (truncated: {train_enc.truncated})"
            )
        log = train_nll(
            model,
            train_enc,
            val_enc,
            sft_cfg,
            tokenizer.pad_token_id,
            run_dir=folder,
            progress=progress,
        )
        save_policy(model, tokenizer, folder)
        metrics = {
            "val_reply_ppl": log[-1]["val_reply_ppl"],
            "train_seconds": log[-1]["seconds"],
            "steps": sft_cfg.steps,
            "examples_seen": log[-1]["examples_seen"],
        }
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=1))
        (folder / "run_config.json").write_text(json.dumps(inputs, indent=1, default=str))

    folder = load_or_build(f"pi_ref-{task}", inputs, build, verbose=verbose)
    model, tokenizer = load_policy(folder)
    model.eval()
    return model, tokenizer, folder


def reference_metrics(folder) -> dict:
    return json.loads((Path(folder) / "metrics.json").read_text())


def pretrained_reference(model_cfg: ModelConfig):
    """(model, tokenizer, key folder) of a model that already is a reference policy (an SFT or
    instruct checkpoint, or a saved pi_ref): no NLL training. The folder's name is a cache key of
    where the weights come from, so later stages key on it as on a trained pi_ref."""
    if not model_cfg.pretrained:
        raise ValueError(
            f"a pretrained reference needs a pretrained model, but {model_cfg.name!r} is built from its config"
        )
    model, tokenizer = make_policy(model_cfg)
    model.eval()
    local = Path(model_cfg.pretrained)
    where = local.resolve() if local.exists() else model_cfg.pretrained
    return model, tokenizer, Path(cache_key({"pi_ref": str(where)}))
