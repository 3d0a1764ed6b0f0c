"""The HH-RLHF dialogue format and the prompt formats built from it.

An HH text is a dialogue of turns "\n\nHuman: ..." / "\n\nAssistant: ..."; a prompt is the dialogue
up to and including the final "\n\nAssistant:", the response the text after it.
"""

from __future__ import annotations

import re

ROLES = {"Human": "human", "Assistant": "assistant"}
_TURN = re.compile(r"\n\n(Human|Assistant):")
PAPER_SYSTEM_LINE = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.\n"
)


def turns(text: str) -> list[tuple[str, str]]:
    """Parse an HH dialogue into [(role, text), ...], role "human" or "assistant", text stripped.

    A leading "Human:" without the blank line is accepted. Raises ValueError when there is text
    before the first turn marker (the string is not in the HH format).
    """
    if text.startswith(("Human:", "Assistant:")):
        text = "\n\n" + text
    parts = _TURN.split(text)
    if parts[0].strip():
        raise ValueError("text before the first Human/Assistant turn")
    return [(ROLES[parts[i]], parts[i + 1].strip()) for i in range(1, len(parts), 2)]


def render(dialogue: list[tuple[str, str]]) -> str:
    """The canonical HH text of parsed turns (inverse of `turns` up to whitespace)."""
    names = {v: k for k, v in ROLES.items()}
    return "".join(
        f"\n\n{names[role]}: {text}" if text else f"\n\n{names[role]}:" for role, text in dialogue
    )


def split_dialogue(text: str) -> tuple[list[tuple[str, str]], str]:
    """(turns before the final assistant turn, final assistant response). ValueError if malformed."""
    dialogue = turns(text)
    if not dialogue or dialogue[-1][0] != "assistant":
        raise ValueError("no final assistant turn")
    return dialogue[:-1], dialogue[-1][1]


def prompt_text(context: list[tuple[str, str]]) -> str:
    """HH text of a prompt: its turns, then the empty "\\n\\nAssistant:" tag the reply follows."""
    return render(context) + "\n\nAssistant:"


def format_prompt(prompt_hh_text: str, style: str = "plain") -> str:
    """Write an HH prompt for a policy.

    style="plain": one turn per line, "Human: q1\\nAssistant: a1\\nHuman: q2\\nAssistant:".
    style="paper": the paper's LLaMA prompt (docs/method.md §9.1), the system line followed by
        "### Human: q1 ### Assistant: a1 ### Human: q2 ### Assistant:"
      (each turn prefixed " ### Human: " / " ### Assistant: "; the paper's code strips the turns'
      joined text, so the first prefix loses its leading space and the last its trailing space).
    style="hh": the canonical HH text itself.
    """
    context = turns(prompt_hh_text)
    if context and context[-1] == ("assistant", ""):
        context = context[:-1]
    if style == "hh":
        return prompt_text(context)
    if style == "plain":
        return (
            "".join(f"{'Human' if r == 'human' else 'Assistant'}: {t}\n" for r, t in context)
            + "Assistant:"
        )
    if style == "paper":
        body = "".join(f" ### {'Human' if r == 'human' else 'Assistant'}: {t}" for r, t in context)
        return PAPER_SYSTEM_LINE + (body + " ### Assistant: ").strip()
    raise ValueError(f"style must be 'plain', 'paper' or 'hh', got {style!r}")


def oasst_format(prompt_hh_text: str, response: str, eos_token: str) -> str:
    """Input of the OpenAssistant reward models (the paper's `metrics_hh.py`; docs/method.md §9.1).

    Every turn is "<|prompter|>text" or "<|assistant|>text" followed by the RM tokenizer's EOS; the
    response is appended to the final "<|assistant|>" tag, which gets its EOS too:
        <|prompter|>q1</s><|assistant|>a1</s><|prompter|>q2</s><|assistant|>y</s>
    """
    context = turns(prompt_hh_text)
    if context and context[-1] == ("assistant", ""):
        context = context[:-1]
    tags = {"human": "<|prompter|>", "assistant": "<|assistant|>"}
    parts = [tags[role] + text for role, text in context] + ["<|assistant|>" + response.strip()]
    return "".join(part + eos_token for part in parts)
