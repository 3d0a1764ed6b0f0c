"""Decoding responses from a policy: one documented setting, the same for every method.

Three named decodings (`DECODINGS`), set on a config by `with_decoding(cfg, name)`:
- "beam": beam search, 2 beams, repetition penalty 2.5 (the paper's Reddit setting);
- "greedy": the paper's HHA setting;
- "top-p": seeded nucleus sampling (p 0.9), the same seed for every model, so that a model's
  outputs are deterministic; the decoding that measures a policy's entropy rather than its modes.
`DecodeConfig()` itself is top-p.
"""

from __future__ import annotations

import dataclasses
import logging
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from alol_min.lm.batching import encode_prompts


class _UnpaddedBatchWarning(logging.Filter):
    """Drop transformers' "passing in an `attention_mask`" warning, a false alarm inside
    `generate_responses` (which always passes a mask).

    generate() drops an all-ones attention mask (a batch whose prompts have equal length, common
    since prompts are decoded sorted by length), and GPT-2 then warns because the prompt's last
    token, the <eos> separator, has the pad id. The batch has no padding, so nothing is wrong;
    padded batches keep their mask.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "strongly recommend passing in an `attention_mask`" not in record.getMessage()


@contextmanager
def _no_unpadded_batch_warning():
    logger, quiet = logging.getLogger("transformers.modeling_utils"), _UnpaddedBatchWarning()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


@dataclass
class DecodeConfig:
    """How responses are decoded."""

    max_new_tokens: int | None = 32
    """Longest response in tokens (None: the model's max_response_tokens, filled in by the run)."""
    do_sample: bool = True
    """Sample (True) or search (False)."""
    top_p: float = 0.9
    """Nucleus sampling mass."""
    temperature: float = 1.0
    """Sampling temperature."""
    num_beams: int = 1
    """Beams for beam search (do_sample=False)."""
    repetition_penalty: float = 1.0
    """>1 discourages repeated tokens."""
    seed: int = 1234
    """Seed of the sampling; the same for every model so differences come from the models."""
    batch_size: int = 64
    """Prompts per generate() call."""

    @classmethod
    def paper_beam(cls, max_new_tokens: int = 32) -> "DecodeConfig":
        """The paper's Reddit/WoW decoding: 2 beams, repetition penalty 2.5, no sampling."""
        return with_decoding(cls(max_new_tokens=max_new_tokens), "beam")


DECODINGS: dict[str, dict] = {
    "beam": {"do_sample": False, "num_beams": 2, "repetition_penalty": 2.5},
    "greedy": {"do_sample": False, "num_beams": 1, "repetition_penalty": 1.0},
    "top-p": {"do_sample": True, "num_beams": 1, "repetition_penalty": 1.0},
}
"""The named decodings: the DecodeConfig fields each one sets."""


def with_decoding(cfg: DecodeConfig, name: str) -> DecodeConfig:
    """`cfg` with the search fields of the named decoding (its length, seed and batch kept)."""
    if name not in DECODINGS:
        raise ValueError(f"unknown decoding {name!r}; choose one of {', '.join(DECODINGS)}")
    return dataclasses.replace(cfg, **DECODINGS[name])


def decoding_name(cfg: DecodeConfig) -> str | None:
    """The name of the decoding `cfg` is, or None for a custom one."""
    fields = {k: getattr(cfg, k) for k in ("do_sample", "num_beams", "repetition_penalty")}
    return next((name for name, d in DECODINGS.items() if d == fields), None)


@torch.no_grad()
def generate_responses(
    model, tokenizer, prompts, cfg: DecodeConfig, max_prompt_tokens: int, progress: bool = False
) -> list[str]:
    """Decode one response per prompt (left-padded batches), cut at the first <eos>."""
    model.eval()
    device = next(model.parameters()).device
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    prompt_ids = encode_prompts(tokenizer, prompts, max_prompt_tokens)
    outputs: list[str] = [""] * len(prompt_ids)
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    # the decoding seed must not leak into training's random streams (CPU, and the GPU's when on one)
    with (
        torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
        _no_unpadded_batch_warning(),
    ):
        torch.manual_seed(cfg.seed)
        for start in tqdm(
            range(0, len(order), cfg.batch_size), desc="decode", disable=not progress
        ):
            idx = order[start : start + cfg.batch_size]
            input_ids, attention = left_padded([prompt_ids[i] for i in idx], pad)
            width = input_ids.shape[1]
            generated = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                max_new_tokens=cfg.max_new_tokens,
                do_sample=cfg.do_sample,
                top_p=cfg.top_p if cfg.do_sample else None,
                temperature=cfg.temperature if cfg.do_sample else None,
                top_k=0 if cfg.do_sample else None,
                num_beams=cfg.num_beams,
                repetition_penalty=cfg.repetition_penalty,
                eos_token_id=eos,
                pad_token_id=pad,
            )
            for b, i in enumerate(idx):
                new = generated[b, width:].tolist()
                if eos in new:
                    new = new[: new.index(eos)]
                outputs[i] = tokenizer.decode(new, skip_special_tokens=True).strip()
    return outputs


def left_padded(prompt_ids: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) [B, max length] of prompts padded on the left, for generate()."""
    width = max(len(p) for p in prompt_ids)
    input_ids = torch.full((len(prompt_ids), width), pad, dtype=torch.long)
    attention = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    for b, p in enumerate(prompt_ids):
        input_ids[b, width - len(p) :] = torch.tensor(p)
        attention[b, width - len(p) :] = 1
    return input_ids, attention


@torch.no_grad()
def sample_response_ids(
    model, prompt_ids: list[list[int]], cfg: DecodeConfig, eos: int, pad: int, seed: int
) -> list[list[int]]:
    """One response sampled per prompt (top-p / temperature of `cfg`, always sampling), as token
    ids ending in <eos> unless the length limit cut them: for scoring the sampled tokens
    themselves (PPO's rollouts, the KL to pi_ref), which decoding to text and encoding again
    need not give back. One generate() call; the seed does not leak into the caller's stream."""
    model.eval()
    device = next(model.parameters()).device
    input_ids, attention = left_padded(prompt_ids, pad)
    with (
        torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
        _no_unpadded_batch_warning(),
    ):
        torch.manual_seed(seed)
        out = model.generate(
            input_ids=input_ids.to(device), attention_mask=attention.to(device),
            max_new_tokens=cfg.max_new_tokens, do_sample=True, top_p=cfg.top_p,
            temperature=cfg.temperature, top_k=0, num_beams=1, repetition_penalty=1.0,
            eos_token_id=eos, pad_token_id=pad,
        )  # fmt: skip
    responses = []
    for row in out[:, input_ids.shape[1] :].tolist():
        responses.append(row[: row.index(eos) + 1] if eos in row else row)
    return responses
