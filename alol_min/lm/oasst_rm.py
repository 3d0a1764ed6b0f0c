"""The OpenAssistant reward models (the paper's HHA rewards), loadable without remote code.

The paper trains with `OpenAssistant/oasst-rm-2.1-pythia-1.4b-epoch-2.5` and tests with
`OpenAssistant/oasst-rm-2-pythia-6.9b-epoch-1`. Their config.json says
`model_type: "gpt_neox_reward_model"`, `architectures: ["GPTNeoXRewardModel"]`: a class that lives
in the Open-Assistant training code (LAION-AI/Open-Assistant,
model/model_training/models/reward_model.py), not in transformers nor on the hub, so plain
`AutoModelForSequenceClassification` cannot build them and this project never runs remote code.
The model is small enough to write again here, with the same weight names, so the hub checkpoints
load as they are:

    gpt_neox.*   a GPT-NeoX (Pythia) backbone, `GPTNeoXModel`: hidden states h_1..h_T
    out_proj.*   Linear(hidden_size, 1) with bias

    r(x, y) = out_proj(pool(h, m)),     m_t = attention mask (1 = real token, 0 = padding)
    pool = "last" (config default):  h_{t*},  t* = max { t : m_t = 1 }   (the last real token)
    pool = "mean":                   sum_t m_t h_t / sum_t m_t

`logits` is r with shape [B, 1]; `rewards.SequenceClassifierReward` reads sigmoid(r). It pads on
the right, so the last real token is the final EOS of the OpenAssistant format and the real tokens
keep their positions; the mask, not the pad id, finds that token (the pad id may equal EOS). The
original's "mean" branch multiplies [B, T, H] by an unbroadcast [B, T] mask; here it is the masked
mean it means. The published RMs
use "last".

Importing this module registers the classes with AutoConfig and AutoModelForSequenceClassification
(`SequenceClassifierReward` imports it, so a user just passes the hub name or a local folder).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, GPTNeoXConfig
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXModel, GPTNeoXPreTrainedModel

POOLINGS = ("last", "mean")


class GPTNeoXRewardModelConfig(GPTNeoXConfig):
    """GPT-NeoX config plus `pooling` ("last" or "mean"; missing or null means "last", as upstream).

    The head has one output, so the config always says num_labels = 1 (hub configs carry no
    id2label, which transformers would otherwise read as 2 labels).
    """

    model_type = "gpt_neox_reward_model"
    pooling: str | None = "last"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.pooling = self.pooling or "last"
        self.num_labels = 1


def pool_hidden_states(
    hidden: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str
) -> torch.Tensor:
    """[B, T, H] hidden states -> [B, H], by the formula of the module docstring."""
    if pooling not in POOLINGS:
        raise ValueError(
            f"unknown pooling {pooling!r} in the reward model's config: expected one of {POOLINGS}"
        )
    if attention_mask is None:
        return hidden[:, -1] if pooling == "last" else hidden.mean(dim=1)
    mask = attention_mask.to(hidden.dtype)
    if pooling == "mean":
        return (hidden * mask.unsqueeze(-1)).sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1)
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    last = (positions * attention_mask.long()).argmax(dim=1)  # highest position whose mask is 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class GPTNeoXRewardModel(GPTNeoXPreTrainedModel):
    """OpenAssistant's reward model: `gpt_neox` backbone, `out_proj` head, one scalar per sequence."""

    config_class = GPTNeoXRewardModelConfig
    config: GPTNeoXRewardModelConfig

    def __init__(self, config: GPTNeoXRewardModelConfig):
        if config.pooling not in POOLINGS:
            raise ValueError(
                f"unknown pooling {config.pooling!r} in the reward model's config: "
                f"expected one of {POOLINGS}"
            )
        super().__init__(config)
        self.gpt_neox = GPTNeoXModel(config)
        self.out_proj = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        """`logits` [B, 1] = out_proj(pooled hidden state); no loss (the RM is only scored here)."""
        kwargs.pop("token_type_ids", None)  # GPT-NeoX has no segment embeddings
        hidden = self.gpt_neox(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            **kwargs,
        ).last_hidden_state
        logits = self.out_proj(pool_hidden_states(hidden, attention_mask, self.config.pooling))
        return SequenceClassifierOutput(logits=logits)


AutoConfig.register(GPTNeoXRewardModelConfig.model_type, GPTNeoXRewardModelConfig, exist_ok=True)
AutoModelForSequenceClassification.register(
    GPTNeoXRewardModelConfig, GPTNeoXRewardModel, exist_ok=True
)
