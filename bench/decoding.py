"""Decode a task's pi_ref (the policy every method starts from) under each named decoding and
score it: the evidence for each task's default decoding.

    python bench/decoding.py --task chitchat --prompts 500 --out results/measurements/decoding_chitchat.json

For each of beam (2 beams, repetition penalty 2.5), greedy, greedy with repetition penalty 2.5 and
top-p 0.9: the test reward (every component), mean length in words, distinct-1/2/3, the share of
replies that repeat a word 3-gram, the share of distinct replies, the seconds taken, and
the first replies. pi_ref and the reward come from the cache that `reproduce` builds.
"""

import argparse
import json
import time
from dataclasses import replace

from alol_min.lm.generation import DecodeConfig, with_decoding
from alol_min.lm.reference import reference_policy
from alol_min.run.config import preset
from alol_min.run.evaluate import evaluate_policy
from alol_min.tasks import load_task


def repeats_a_trigram(text: str) -> bool:
    """Does the reply contain some word 3-gram twice ("I'm not sure I'm not sure")?"""
    words = text.lower().split()
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    return len(grams) != len(set(grams))


def decodings(max_new_tokens: int) -> dict[str, DecodeConfig]:
    base = DecodeConfig(max_new_tokens=max_new_tokens)
    return {
        "beam": with_decoding(base, "beam"),
        "greedy": with_decoding(base, "greedy"),
        "greedy, repetition penalty 2.5": replace(
            with_decoding(base, "greedy"), repetition_penalty=2.5
        ),
        "top-p": with_decoding(base, "top-p"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="chitchat", choices=("chitchat", "tiny-hh"))
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    cfg = preset("default", args.task)
    task = load_task(args.task, verbose=False)
    model_cfg = cfg.model_config()
    model, tokenizer, _ = reference_policy(
        task.data, model_cfg, cfg.sft, task=args.task, progress=False, verbose=False
    )
    prompts = task.data["test"]["prompt"][: args.prompts]
    out = {"task": args.task, "policy": "pi_ref", "prompts": len(prompts), "decodings": {}}
    length = cfg.eval_decode.max_new_tokens or model_cfg.max_response_tokens  # as `reproduce` tests
    out["max_new_tokens"] = length
    for name, decode in decodings(length).items():
        start = time.time()
        scores, responses = evaluate_policy(
            model, tokenizer, prompts, task.test_reward, decode, model_cfg.max_prompt_tokens
        )
        row = {k: round(v, 4) for k, v in scores.items()}
        repeats = sum(repeats_a_trigram(r) for r in responses)
        row["repeated_trigram_share"] = round(repeats / len(responses), 4)
        row["unique_reply_share"] = round(len(set(responses)) / len(responses), 4)
        row["seconds"] = round(time.time() - start, 1)
        row["samples"] = [
            {"prompt": p[-160:], "response": r}
            for p, r in zip(prompts[: args.samples], responses[: args.samples])
        ]
        out["decodings"][name] = row
        print(f"{name:32s} total {row['total']:.3f}  length {row['length']:.1f}  "
              f"distinct-2 {row['distinct_2']:.3f}  unique {row['unique_reply_share']:.2f}  "
              f"repeated 3-gram {row['repeated_trigram_share']:.2f}  {row['seconds']} s")  # fmt: skip
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(out, handle, indent=1, ensure_ascii=False)
            handle.write("\n")


if __name__ == "__main__":
    main()
