"""Sequence-level rewards R(x, y): one number per (prompt x, response y), made of named parts.

A-LoL needs only a scalar R(x, y) for each whole response (the advantage is A = R - V_ref(x)),
but the paper's rewards are sums of several scores, each in [0, 1], reported one by one
(the paper's Reddit task; docs/method.md §9.2):

    R(x, y) = sum_c  w_c * R_c(x, y),     R_c in [0, 1],   w_c >= 0 (default 1),
    max_total = sum_c w_c                 (the value head predicts V = sigmoid(.) * max_total).

Every reward here is called as `reward(prompts, responses)` and returns a dict with one float
array per component plus "total". This file holds the interface (`Reward`, `check_pairs`,
`combine`) and `SequenceClassifierReward`: any Hugging Face sequence classifier as a reward (the
paper's kind: DialogRPT, CoLA, OpenAssistant reward models, ...). Each task's own reward parts are
in its module under `tasks/`: chitchat's scorers (`tasks/chitchat_reward.py`, `tasks/relevance.py`),
tiny-hh's judge, and the Bradley-Terry reward model (`tasks/preference.py`).
"""

from __future__ import annotations

import math
import os
from typing import Callable, Sequence

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from alol_min.lm import oasst_rm  # noqa: F401  registers the OpenAssistant RM architecture (no remote code)
from alol_min.lm.hh_format import oasst_format
from alol_min.lm.models import from_hub_or_folder

# ----------------------------------------------------------------------------------------------
# The reward interface


def check_pairs(prompts: Sequence[str], responses: Sequence[str]) -> None:
    """Raise ValueError unless prompts and responses are equally long sequences of str."""
    for name, texts in (("prompts", prompts), ("responses", responses)):
        if isinstance(texts, str) or not hasattr(texts, "__len__"):
            raise ValueError(f"{name} must be a list of strings, got {type(texts).__name__}")
    if len(prompts) != len(responses):
        row = min(len(prompts), len(responses))
        raise ValueError(
            f"got {len(prompts)} prompts and {len(responses)} responses: "
            f"row {row} has no {'response' if len(prompts) > row else 'prompt'}"
        )
    for name, texts in (("prompts", prompts), ("responses", responses)):
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"row {i}: {name}[{i}] is {type(text).__name__}, expected str")


class Reward:
    """Base class: subclasses set `components` and implement `score(prompts, responses)`.

    `__call__` validates the input, refuses a NaN or infinite score (naming the component and row),
    clips every component to [0, 1] and adds "total" = sum_c w_c R_c.
    """

    components: tuple[str, ...] = ()

    def __init__(self, weights: dict[str, float] | None = None):
        weights = dict(weights or {})
        unknown = set(weights) - set(self.components)
        if unknown:
            raise ValueError(
                f"weights for unknown components {sorted(unknown)}; known: {self.components}"
            )
        self.weights = {c: float(weights.get(c, 1.0)) for c in self.components}
        if any(not math.isfinite(w) or w < 0 for w in self.weights.values()):
            raise ValueError(f"weights must be finite and >= 0, got {self.weights}")

    @property
    def max_total(self) -> float:
        """The largest possible total: every component is at most 1."""
        return float(sum(self.weights.values()))

    def score(self, prompts: list[str], responses: list[str]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> dict[str, np.ndarray]:
        check_pairs(prompts, responses)
        if len(prompts) == 0:
            return combine({c: np.zeros(0) for c in self.components}, self.weights, 0)
        raw = self.score(list(prompts), list(responses))
        return combine(raw, self.weights, len(prompts))


def combine(
    components: dict[str, np.ndarray], weights: dict[str, float], n: int
) -> dict[str, np.ndarray]:
    """Clip each component to [0, 1] and add "total" = sum_c w_c R_c. A NaN or infinite score is an
    error naming the component and the row: it never becomes a number silently."""
    out = {}
    for name in weights:
        values = np.asarray(components[name], dtype=np.float64).reshape(-1)
        if values.shape != (n,):
            raise ValueError(f"component {name!r} has {values.size} values for {n} pairs")
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise ValueError(
                f"reward component {name!r} is {values[bad[0]]} at row {bad[0]} "
                f"({len(bad)} of {n} rows are not finite)"
            )
        out[name] = np.clip(values, 0.0, 1.0)
    out["total"] = sum((w * out[c] for c, w in weights.items()), np.zeros(n))
    return out


# ----------------------------------------------------------------------------------------------
# A Hugging Face sequence classifier as a reward


def load_classifier(source: str, allow_pickle: bool = False):
    """A sequence classifier from a folder or the hub, from safetensors weights only, unless
    `allow_pickle`: then a `pytorch_model.bin` is read too (by `torch.load(weights_only=True)`,
    which restores tensors and runs no code). The OpenAssistant reward models ship only .bin."""
    try:
        return from_hub_or_folder(
            AutoModelForSequenceClassification.from_pretrained, source,
            use_safetensors=None if allow_pickle else True, trust_remote_code=False,
        )  # fmt: skip
    except OSError as error:
        causes = [error, error.__cause__, error.__context__]
        if allow_pickle or not any("safetensors" in str(c) for c in causes if c is not None):
            raise
        raise OSError(
            f"{source}: no safetensors weights (only pickle weights such as pytorch_model.bin?); "
            "to read pickle weights pass allow_pickle=True (--reward-allow-pickle)"
        ) from error


class SequenceClassifierReward(Reward):
    """Any `AutoModelForSequenceClassification` as a reward component in [0, 1].

        R(x, y) = sigmoid(logit)                  if the model has one label,
                  softmax(logits)[label_index]    otherwise,

    the logit being read at the last token of the input. The model reads `formatter(x, y)`:
      default   x + eos (or sep) token + y, as DialogRPT;
      "oasst"   the OpenAssistant reward models' format (`lm.hh_format.oasst_format`; docs/method.md §9.1), x an HH
                prompt: <|prompter|>q1<eos><|assistant|>a1<eos>...<|assistant|>y<eos>; the tokenizer
                must know <|prompter|> and <|assistant|> as single tokens (checked);
      a callable (prompt, response) -> str.
    Inputs are truncated from the left to `max_length` tokens (the paper's RM input keeps the last
    1024), so the reply and the end of the prompt are kept. Pass a local folder or hub name (loaded
    with `lm.models.from_hub_or_folder`, no remote code), or a model and its tokenizer. The tokenizer
    gets a pad token (its eos) if it has none.

    Implementation details:
    1. HF's classifiers read the logit at the rightmost token that is not `config.pad_token_id`.
       The "oasst" input ends with eos, and the pad token is often eos too, so HF would read the
       token *before* the final eos. Each batch is therefore padded (on the right) with an id that
       occurs in none of its real tokens, and that id is the model's pad id during the call; the
       attention mask hides pad positions, so the id only decides where the logit is read.
    2. Right padding of a causal model leaves the real tokens' states unchanged, so a score does not
       depend on the batch it is computed in.
    """

    def __init__(
        self,
        model_or_name_or_path,
        tokenizer=None,
        *,
        name: str = "classifier",
        batch_size: int = 16,
        max_length: int = 512,
        device=None,
        label_index: int | None = None,
        formatter: Callable[[str, str], str] | str | None = None,
        allow_pickle: bool = False,
    ):
        self.components = (name,)
        super().__init__()
        if isinstance(model_or_name_or_path, (str, os.PathLike)):
            source = str(model_or_name_or_path)
            tokenizer = tokenizer or from_hub_or_folder(
                AutoTokenizer.from_pretrained, source, trust_remote_code=False
            )
            model = load_classifier(source, allow_pickle)
        else:
            model = model_or_name_or_path
            if tokenizer is None:
                raise ValueError("pass the tokenizer along with a model object")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        num_labels = model.config.num_labels
        if num_labels > 1 and label_index is None:
            raise ValueError(
                f"the model has {num_labels} labels: say which one is the reward with label_index"
            )
        if label_index is not None and not 0 <= label_index < num_labels:
            raise ValueError(f"label_index {label_index} is out of range for {num_labels} labels")
        if batch_size < 1 or max_length < 1:
            raise ValueError("batch_size and max_length must be >= 1")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else next(model.parameters()).device
        self.model = model.to(device).eval()
        self.tokenizer, self.device = tokenizer, device
        self.batch_size, self.max_length, self.label_index = batch_size, max_length, label_index
        self.formatter = self._formatter(formatter, tokenizer)

    @staticmethod
    def _formatter(formatter, tokenizer) -> Callable[[str, str], str]:
        if callable(formatter):
            return formatter
        if formatter == "oasst":
            for tag in ("<|prompter|>", "<|assistant|>"):
                ids = tokenizer(tag, add_special_tokens=False)["input_ids"]
                if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
                    raise ValueError(
                        f"formatter 'oasst': the tokenizer splits {tag} into {len(ids)} tokens; "
                        "use the reward model's own tokenizer (it has the tag as one token)"
                    )
            eos = tokenizer.eos_token
            return lambda prompt, response: oasst_format(prompt, response, eos)
        if formatter is not None:
            raise ValueError(f"formatter must be a callable, 'oasst' or None, got {formatter!r}")
        separator = tokenizer.eos_token or tokenizer.sep_token or " "
        return lambda prompt, response: prompt + separator + response

    def _encode(self, texts: list[str]):
        """Right-padded, left-truncated batch, padded with an id none of its real tokens uses."""
        sides = (self.tokenizer.truncation_side, self.tokenizer.padding_side)
        self.tokenizer.truncation_side, self.tokenizer.padding_side = "left", "right"
        try:
            batch = self.tokenizer(
                texts,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
        finally:
            self.tokenizer.truncation_side, self.tokenizer.padding_side = sides
        real = set(batch["input_ids"][batch["attention_mask"].bool()].tolist())
        pad = self.tokenizer.pad_token_id
        if pad in real:
            vocab = self.model.get_input_embeddings().num_embeddings
            pad = next((i for i in range(vocab) if i not in real), None)
            if pad is None:
                raise ValueError(
                    f"this batch uses every one of the {vocab} token ids: use a smaller batch_size"
                )
        batch["input_ids"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, pad)
        return batch, pad

    def score(self, prompts: list[str], responses: list[str]) -> dict[str, np.ndarray]:

        texts = [self.formatter(p, r) for p, r in zip(prompts, responses)]
        config_pad = self.model.config.pad_token_id
        out = []
        try:
            with torch.no_grad():
                for start in range(0, len(texts), self.batch_size):
                    batch, self.model.config.pad_token_id = self._encode(
                        texts[start : start + self.batch_size]
                    )
                    logits = self.model(**batch.to(self.device)).logits.float()
                    if self.label_index is None:
                        out.append(torch.sigmoid(logits[:, 0]))
                    else:
                        out.append(torch.softmax(logits, dim=-1)[:, self.label_index])
        finally:
            self.model.config.pad_token_id = config_pad
        values = torch.cat(out).cpu().numpy() if out else np.zeros(0)
        return {self.components[0]: values}
