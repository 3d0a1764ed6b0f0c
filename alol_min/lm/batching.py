"""From text pairs to token batches, and per-token log-probs of the response.

An example is `prompt <eos> response <eos>`: the prompt is left-truncated (its end matters most),
the response right-truncated, as in the paper. Training targets are the response tokens and the
final <eos>; the loss never sees prompt tokens. A tokenizer with a chat template (an instruct model,
`ModelConfig.prompt_format="chat"`) frames the prompt as the user's message instead:
`<template before the message> prompt <template after it, up to the assistant's turn> response <eos>`,
its <eos> being the template's end-of-turn token; only the prompt itself is truncated, and an HH
dialogue becomes one message (`user_message`).

`response_logprobs` returns log pi(y_t | x, y_<t) on a [B, T] grid with a mask that is 1 on
response targets: exactly the `logp, mask` pair that `losses.method_loss` takes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from alol_min.lm import hh_format


@dataclass
class EncodedPairs:
    """Token ids of (prompt, response) pairs and what truncation did to them."""

    input_ids: list[list[int]]
    """Framed prompt ids (plain: prompt ids + [eos]) + response ids + [eos], one list per pair."""
    response_start: list[int]
    """Index of the first response token in input_ids (the framed prompt's length)."""
    truncated: dict[str, int] = field(default_factory=dict)
    """How many prompts / responses were cut to fit (reported, never silent)."""

    def __len__(self) -> int:
        return len(self.input_ids)

    def select(self, indices) -> "EncodedPairs":
        """The pairs at `indices`, in that order (truncation counts are those of the whole set)."""
        return EncodedPairs(
            [self.input_ids[i] for i in indices],
            [self.response_start[i] for i in indices],
            dict(self.truncated),
        )

    def prompt_ids(self, i: int) -> list[int]:
        """The prompt part (with its <eos> separator) of pair i: what the policy is conditioned on."""
        return self.input_ids[i][: self.response_start[i]]


def encode_pairs(
    tokenizer, prompts, responses, max_prompt_tokens: int, max_response_tokens: int
) -> EncodedPairs:
    """Tokenize pairs: left-truncate prompts, right-truncate responses, frame each prompt
    (`prompt_frame`: plain, the <eos> separator after it) and end each response with <eos>."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    eos = tokenizer.eos_token_id
    before, after = prompt_frame(tokenizer)
    p_ids = tokenizer(prompt_texts(tokenizer, prompts), add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(list(responses), add_special_tokens=False)["input_ids"]
    ids, starts = [], []
    cut_p = cut_r = 0
    for i, (p, r) in enumerate(zip(p_ids, r_ids)):
        if not r:
            raise ValueError(f"row {i}: field 'response' encodes to no tokens")
        if len(p) > max_prompt_tokens:
            p, cut_p = p[-max_prompt_tokens:], cut_p + 1
        if len(r) > max_response_tokens:
            r, cut_r = r[:max_response_tokens], cut_r + 1
        framed = before + p + after
        ids.append(framed + r + [eos])
        starts.append(len(framed))
    return EncodedPairs(ids, starts, {"prompts_truncated": cut_p, "responses_truncated": cut_r})


def user_message(prompt: str) -> str:
    """The user's message of a prompt under the chat format: the text itself; for an HH dialogue
    ("\n\nHuman: ... \n\nAssistant:"), a single human turn's text, or for several turns one line
    per turn ("Human: q1\nAssistant: a1\nHuman: q2"), without the final empty assistant tag that
    the template's assistant turn replaces."""
    try:
        turns = hh_format.turns(prompt)
    except ValueError:  # not an HH dialogue
        return prompt
    if turns and turns[-1] == ("assistant", ""):
        turns = turns[:-1]
    if len(turns) == 1 and turns[0][0] == "human":
        return turns[0][1]
    return "\n".join(
        f"{'Human' if role == 'human' else 'Assistant'}: {text}" for role, text in turns
    )


def prompt_texts(tokenizer, prompts) -> list[str]:
    """The prompts as the policy's format reads them: `user_message` under a chat template."""
    return (
        [user_message(p) for p in prompts]
        if getattr(tokenizer, "chat_template", None)
        else list(prompts)
    )


def prompt_frame(tokenizer) -> tuple[list[int], list[int]]:
    """(ids before the prompt, ids after it): ([], [<eos>]) for the plain format; with a chat
    template, the template's text around a single user message, up to the assistant's turn."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return [], [tokenizer.eos_token_id]
    marker = "\ue000"  # a private-use character no prompt contains
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": marker}], tokenize=False, add_generation_prompt=True
    )
    if text.count(marker) != 1:
        raise ValueError("the tokenizer's chat template does not render the user message once")
    head, tail = text.split(marker)
    encode = lambda t: tokenizer(t, add_special_tokens=False)["input_ids"] if t else []  # noqa: E731
    return encode(head), encode(tail)


def encode_prompts(tokenizer, prompts, max_prompt_tokens: int) -> list[list[int]]:
    """Prompt ids as the policy reads them, framed as in `encode_pairs` (plain: ending in the <eos>
    separator), ready for generation or the value head."""
    before, after = prompt_frame(tokenizer)
    ids = tokenizer(prompt_texts(tokenizer, prompts), add_special_tokens=False)["input_ids"]
    return [before + p[-max_prompt_tokens:] + after for p in ids]


def collate(encoded: EncodedPairs, indices, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch of the pairs at `indices`.

    Returns input_ids, attention_mask [B, L] and response_mask [B, L-1]: response_mask[b, t] = 1
    when token t+1 is a response target (the logits at t predict token t+1).
    """
    rows = [encoded.input_ids[i] for i in indices]
    starts = torch.tensor([encoded.response_start[i] for i in indices])
    lengths = torch.tensor([len(r) for r in rows])
    width = int(lengths.max())
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for b, r in enumerate(rows):
        input_ids[b, : len(r)] = torch.tensor(r)
    positions = torch.arange(width)
    attention_mask = (positions[None, :] < lengths[:, None]).long()
    target = positions[None, 1:]
    response_mask = ((target >= starts[:, None]) & (target < lengths[:, None])).float()
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "response_mask": response_mask,
    }


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log pi(token t+1 | tokens <= t) for every position: [B, L-1]."""
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    return logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)


def response_logprobs(model, batch: dict[str, torch.Tensor]):
    """(logp [B, L-1], mask [B, L-1]): per-token log-probs of the batch's response targets.

    The output layer and softmax run only at response positions: prompt positions need no
    vocabulary distribution, and skipping them saves a large share of a small model's step.
    """
    hidden = transformer_body(model)(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state
    return response_logprobs_from_states(model, hidden, batch), batch["response_mask"]


def transformer_body(model):
    """The causal LM's transformer without its output layer (for a peft model: its base model's)."""
    if hasattr(model, "get_base_model"):  # LoRA adapters wrap the causal LM
        model = model.get_base_model()
    return model.base_model


def response_logprobs_from_states(
    model, hidden: torch.Tensor, batch: dict[str, torch.Tensor]
) -> torch.Tensor:
    """logp [B, L-1] of the response targets from the last hidden states [B, L, d] (zeros elsewhere):
    log softmax(W h_t)[y_t+1] at the positions where batch["response_mask"] is 1."""
    mask = batch["response_mask"]
    select = mask.bool()
    logits = model.get_output_embeddings()(hidden[:, :-1][select]).float()
    targets = batch["input_ids"][:, 1:][select]
    picked = F.log_softmax(logits, dim=-1).gather(-1, targets[:, None]).squeeze(-1)
    logp = torch.zeros(mask.shape, dtype=picked.dtype, device=mask.device)
    logp[select] = picked
    return logp


def scatter_ref_logprobs(
    ref_token_logprobs: list[torch.Tensor], mask: torch.Tensor
) -> torch.Tensor:
    """Place cached per-example response log-probs on the batch's [B, L-1] grid (zeros elsewhere)."""
    out = torch.zeros_like(mask)
    out[mask.bool()] = torch.cat([t.to(mask.dtype) for t in ref_token_logprobs])
    return out


def length_buckets(lengths, batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """Shuffle, then sort within chunks of 50 batches by length: less padding, still random order."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
    perm = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in perm]
