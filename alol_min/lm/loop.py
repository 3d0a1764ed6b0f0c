"""The Accelerate plumbing both training loops share (pi_ref's NLL in `lm.sft`, every method in
`run.train`): the accelerator, the global batch's micro-batches, policy log-probs under DDP, and
the JSON-lines log.

One optimiser step sees a global batch of G = batch_size x grad_accum x processes examples; each
process keeps batch[rank::processes] and splits it into grad_accum micro-batches, and each
micro-batch's loss is weighted so that the update is that of the mean over the global batch.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from transformers.pytorch_utils import Conv1D

from alol_min.lm.batching import response_logprobs, token_logprobs


def make_accelerator(cfg):
    """An Accelerator for `cfg` (CPU when there is no GPU; bf16 autocast when cfg.bf16)."""

    if cfg.grad_accum < 1:
        raise ValueError(f"grad_accum must be >= 1, got {cfg.grad_accum}")
    precision = "bf16" if cfg.bf16 else "no"
    state = AcceleratorState._shared_state
    if state and str(state.get("_mixed_precision", precision)) != precision:
        # Accelerate keeps one precision per process; a notebook or test may train fp32 after bf16.
        # This resets the precision only: the process group (PartialState) stays as it is.
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=precision)


@dataclass
class LoraOptions:
    """LoRA options of a training config (`SFTConfig`, `OfflineConfig`): see `with_lora`."""

    lora_r: int = 0
    """LoRA rank; 0 trains every weight (full fine-tuning)."""
    lora_alpha: float = 16.0
    """LoRA scale alpha: the update is (alpha / r) B A (the paper's scripts list r 64, alpha 16)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA branch's input."""


def adamw(model, cfg) -> torch.optim.AdamW:
    """AdamW over the parameters that train (with LoRA: the adapters only)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)


def policy_device() -> torch.device:
    """Where this process runs its policies: its GPU (LOCAL_RANK under torchrun / accelerate launch)
    when there is one, else the CPU; the Accelerator of `make_accelerator` picks the same."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def prepare_for_training(model, cfg):
    """The model to train: with LoRA adapters when cfg.lora_r > 0 (`with_lora`), gradient
    checkpointing on if asked (non-reentrant: works under DDP and with frozen inputs), train mode."""
    if getattr(cfg, "lora_r", 0) > 0:  # a LoraOptions config
        model = with_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)
    if cfg.grad_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    return model


def with_lora(model, r: int, alpha: float, dropout: float):
    """LoRA adapters (Hu et al. 2021) on every linear layer but the output layer, through `peft`:
    W x + (alpha / r) B A x, A [r, d_in] random, B [d_out, r] zero, so training starts at pi_ref and
    only A and B learn. The adapters live inside `model`'s own modules; `finish_training` merges
    them into W (W <- W + (alpha / r) B A) and returns the plain model."""
    try:
        from peft import LoraConfig, get_peft_model  # noqa: PLC0415 (optional dependency)
    except ImportError as error:
        raise ImportError("lora_r > 0 needs peft: pip install 'alol-min[lora]'") from error
    gpt2_style = any(isinstance(m, Conv1D) for m in model.modules())  # weights stored [d_in, d_out]
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear",
                        fan_in_fan_out=gpt2_style)  # fmt: skip
    return get_peft_model(model, config)


def micro_batches(global_batch, rank: int, world: int, grad_accum: int) -> list[list[int]]:
    """This process's grad_accum micro-batches of a global batch: batch[rank::world], split in order.

    Every process must run the same number of micro-steps (DDP synchronises on the last one), so
    a global batch needs at least world x grad_accum examples.
    """
    batch = list(global_batch)
    if len(batch) < world * grad_accum:
        raise ValueError(
            f"a global batch of {len(batch)} cannot feed {world} processes x {grad_accum} micro-steps"
        )
    share = batch[rank::world]
    bounds = [round(k * len(share) / grad_accum) for k in range(grad_accum + 1)]
    return [share[bounds[k] : bounds[k + 1]] for k in range(grad_accum)]


def policy_logprobs(model, batch: dict[str, torch.Tensor]):
    """`lm.batching.response_logprobs`, also for a model wrapped in DistributedDataParallel.

    DDP synchronises gradients only for a forward that goes through its wrapper, so a wrapped model
    runs its full forward (the output layer at every position) and the response targets are masked
    after; a bare model skips the output layer at prompt positions. Same numbers either way.
    """
    if not isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return response_logprobs(model, batch)
    mask = batch["response_mask"]
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return token_logprobs(logits, batch["input_ids"]) * mask, mask


def _sync_on_last(accelerator, model, last: bool):
    """DDP all-reduces gradients in every backward; skip that on all but the last micro-step."""
    return contextlib.nullcontext() if last else accelerator.no_sync(model)


def finish_training(model, cfg):
    """Undo `prepare_for_training`: checkpointing off, LoRA adapters merged into the weights (the
    plain model, trained in place, is returned), eval mode."""
    if cfg.grad_checkpointing:
        model.gradient_checkpointing_disable()
    if hasattr(model, "merge_and_unload"):  # a peft model
        model = model.merge_and_unload()
    return model.eval()


class JsonlLog:
    """A JSON-lines log: `write(row)` appends one line (the file is opened per row, with `with`, so
    a crash leaves every finished row on disk). `path` None: rows are dropped (non-main processes)."""

    def __init__(self, path: Path | None):
        self.path = path
        if path is not None:
            path.write_text("")

    def write(self, row: dict) -> None:
        if self.path is not None:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(row) + "\n")
