"""Benchmark: the cost of an A-LoL training step against an NLL step (tiny preset, batch 32).

A-LoL needs pi_ref's log-probs for its importance weight. The paper's code runs pi_ref at every
step; here they are computed once (`run.prepare.reference_pass`) and read from the cache. This script
times, on the same batches, interleaved (median of N steps each):
    nll            forward + backward of pi_theta
    a_lol cached   the same + the cached ref log-probs, the ratio and the clip
    a_lol online   the paper's way: an extra no-grad forward of pi_ref every step
Run: python bench/step_cost.py [--steps 30]
"""

import argparse
import copy
import statistics
import time

import numpy as np
import torch

from alol_min.lm.batching import collate, response_logprobs
from alol_min.lm.models import ModelConfig, make_policy
from alol_min.lm.reference import encode_split
from alol_min.run.prepare import reference_pass
from alol_min.run.train import OfflineConfig, OfflineData, batch_loss
from alol_min.tasks.chitchat import ChitchatConfig, load_chitchat


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    torch.manual_seed(0)
    data, _ = load_chitchat(ChitchatConfig(max_train=5000))
    cfg = ModelConfig.preset("tiny")
    model, tok = make_policy(cfg, list(data["train"]["prompt"]) + list(data["train"]["response"]))
    enc = encode_split(tok, data["train"], cfg)
    ref_model = copy.deepcopy(model).eval()
    cached = reference_pass(ref_model, enc, tok.pad_token_id)["ref_logp"]
    rng = np.random.default_rng(0)
    offline = OfflineData(enc, rng.uniform(0, 1, len(enc)), rng.normal(0.2, 0.3, len(enc)), cached)
    opt_cfg = OfflineConfig()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)

    def step(kind, idx):
        start = time.perf_counter()
        if kind == "a_lol online":
            batch = collate(enc, idx, tok.pad_token_id)
            with torch.no_grad():  # the paper's extra pi_ref forward; its result equals the cache
                response_logprobs(ref_model, batch)
        loss, _ = batch_loss(
            model, "nll" if kind == "nll" else "a_lol", offline, idx, opt_cfg, tok.pad_token_id
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    times = {"nll": [], "a_lol cached": [], "a_lol online": []}
    for i in range(args.steps + 3):
        idx = torch.randint(len(enc), (args.batch_size,), generator=gen).tolist()
        for kind in times:
            t = step(kind, idx)
            if i >= 3:  # warm-up
                times[kind].append(t)
    nll = statistics.median(times["nll"])
    print(
        f"tiny preset, batch {args.batch_size}, median of {args.steps} interleaved steps, "
        f"{torch.get_num_threads()} threads"
    )
    for kind, values in times.items():
        print(
            f"  {kind:13s} {statistics.median(values) * 1000:7.1f} ms   "
            f"ratio to NLL {statistics.median(values) / nll:.3f}"
        )


if __name__ == "__main__":
    main()
