"""Benchmark: fp32 against bf16 autocast, and LoRA against full fine-tuning, for one policy on this CPU.

For a model (default the pretrained SmolLM2-135M-Instruct), on real chitchat pairs cut to a fixed
length, it times (median of --steps after --warmup, each variant in turn on the same batches):
    step       one training step: forward, backward and AdamW, NLL of the responses, batch B x T
               tokens, for full fine-tuning and for LoRA (rank --lora-r), each in fp32 and bf16
    generate   --new-tokens tokens for --prompts prompts, greedy, fp32 and bf16
    peak       an n x n x n matmul in fp32 and bf16, repeated: the machine's matmul FLOP/s
and reports a step's share of the bf16 peak, counting 6 x params x tokens FLOPs for a full step
(forward 2, backward 4) and 4 x params x tokens for a LoRA step (no weight gradients of the base),
the first step's losses under each precision (they must agree to about 1%), and the speed-ups.
Writes results/measurements/precision_<model>.json. Run it alone on the machine: every number is
a wall time.

    python bench/precision.py                      # SmolLM2-135M, batch 8 x 96 tokens
    python bench/precision.py --model tiny --steps 3 --warmup 1   # a quick check of the script
"""

import argparse
import copy
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from alol_min.lm.batching import collate, encode_pairs, encode_prompts
from alol_min.lm.generation import DecodeConfig, generate_responses
from alol_min.lm.loop import prepare_for_training
from alol_min.lm.models import ModelConfig, make_policy
from alol_min.lm.sft import SFTConfig
from alol_min.tasks.chitchat import ChitchatConfig, load_chitchat

OUT = Path(__file__).resolve().parents[1] / "results" / "measurements"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next(
        (ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []
    )
    return sorted(f for f in flags if f.startswith(("avx512_bf16", "avx512_fp16", "amx")))


def autocast(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)


def timed(fn, steps: int, warmup: int) -> tuple[float, list]:
    """(median seconds of `steps` calls after `warmup` calls, the calls' results)."""
    results, times = [], []
    for k in range(warmup + steps):
        start = time.perf_counter()
        results.append(fn(k))
        if k >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times), results


def matmul_peak(n: int, dtype, repeats: int = 5) -> float:
    """FLOP/s of an n x n x n matmul (2 n^3 FLOPs), median of `repeats`."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)
    seconds, _ = timed(lambda _: torch.matmul(a, b), repeats, 1)
    return 2 * n**3 / seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="a model preset or local folder")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=96, help="tokens per training sequence")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--matmul-n", type=int, default=2048)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    data, _ = load_chitchat(ChitchatConfig(max_train=4000, max_validation=200, max_test=100))
    train = data["train"]
    model_cfg = ModelConfig.for_model(args.model)
    texts = list(train["prompt"]) + list(train["response"])
    base, tok = make_policy(model_cfg, texts if not model_cfg.pretrained else None)
    half = args.tokens // 2
    enc = encode_pairs(tok, train["prompt"], train["response"], half, half)
    long = [i for i, ids in enumerate(enc.input_ids) if len(ids) >= args.tokens]
    if len(long) < args.batch_size * (args.steps + args.warmup):
        raise SystemExit(f"only {len(long)} pairs reach {args.tokens} tokens: lower --tokens")
    enc.input_ids = [ids[: args.tokens] for ids in enc.input_ids]  # every batch exactly B x T
    batches = [long[k * args.batch_size : (k + 1) * args.batch_size] for k in range(len(long))]
    n_params = sum(p.numel() for p in base.parameters())
    tokens = args.batch_size * args.tokens
    peak = {"fp32": matmul_peak(args.matmul_n, torch.float32),
            "bf16": matmul_peak(args.matmul_n, torch.bfloat16)}  # fmt: skip
    steps = {}
    for lora in (0, args.lora_r):
        for bf16 in (False, True):
            model = prepare_for_training(
                copy.deepcopy(base), SFTConfig(lora_r=lora, lora_dropout=0)
            )
            trainable = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(trainable, lr=1e-5)

            def step(k, model=model, optimizer=optimizer, bf16=bf16):
                batch = collate(enc, batches[k], tok.pad_token_id)
                with autocast(bf16):
                    out = model(
                        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                    )
                logits = out.logits[:, :-1].float()
                nll = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), batch["input_ids"][:, 1:].reshape(-1),
                    reduction="none").view(logits.shape[:2])  # fmt: skip
                loss = (nll * batch["response_mask"]).sum() / batch["response_mask"].sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                return float(loss)

            seconds, losses = timed(step, args.steps, args.warmup)
            flops = (4 if lora else 6) * n_params * tokens
            name = f"{'lora' if lora else 'full'}_{'bf16' if bf16 else 'fp32'}"
            steps[name] = {"seconds": round(seconds, 4), "first_loss": round(losses[0], 5),
                           "share_of_bf16_peak": round(flops / seconds / peak["bf16"], 4)}  # fmt: skip
            print(name, steps[name], flush=True)
            del model, optimizer
    prompts = list(data["test"]["prompt"][: args.prompts])
    decode = DecodeConfig(max_new_tokens=args.new_tokens, do_sample=False, batch_size=args.prompts)
    generate = {}
    base.eval()
    for bf16 in (False, True):
        with autocast(bf16):
            seconds, _ = timed(lambda _: generate_responses(base, tok, prompts, decode, half), 1, 1)
        generate["bf16" if bf16 else "fp32"] = round(seconds, 3)
    result = {
        "model": args.model, "params": n_params, "cpu": cpu_name(), "cpu_flags": cpu_flags(),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "batch": [args.batch_size, args.tokens], "lora_r": args.lora_r,
        "matmul_gflops": {k: round(v / 1e9, 1) for k, v in peak.items()}, "matmul_n": args.matmul_n,
        "step": steps,
        "step_speedup_bf16": {k: round(steps[f"{k}_fp32"]["seconds"] / steps[f"{k}_bf16"]["seconds"], 2)
                              for k in ("full", "lora")},
        "step_speedup_lora": {k: round(steps[f"full_{k}"]["seconds"] / steps[f"lora_{k}"]["seconds"], 2)
                              for k in ("fp32", "bf16")},
        "generate_seconds": generate, "generate_prompts": args.prompts,
        "generate_new_tokens": args.new_tokens,
        "prompt_ids_example": len(encode_prompts(tok, prompts[:1], half)[0]),
    }  # fmt: skip
    out = Path(args.out) if args.out else OUT / f"precision_{Path(args.model).name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
