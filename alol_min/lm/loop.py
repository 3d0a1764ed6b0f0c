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
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

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


def prepare_for_training(model, cfg):
    """Turn on gradient checkpointing if asked (non-reentrant: works under DDP and with frozen inputs)."""
    if cfg.grad_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    return model


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


def finish_training(model, cfg) -> None:
    """Undo `prepare_for_training` (checkpointing off) and switch to eval mode."""
    if cfg.grad_checkpointing:
        model.gradient_checkpointing_disable()
    model.eval()


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
