"""A-LoL under 2 CPU processes (torchrun + Accelerate over gloo) equals 1 process with the same global batch.

The test saves a micro policy and its offline data, then runs this file as a worker: once as a
plain process (batch 8) and once under `torchrun --nproc_per_node 2` (batch 4 per process).
Each worker records, per step, the global batch the sampler drew and the indices its process trained
on, and writes them with its loss curve to `rank<r>.json`.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from alol_min.lm.batching import encode_pairs
from alol_min.lm.models import load_policy, save_policy
from alol_min.run import train as offline
from alol_min.run.prepare import reference_pass
from alol_min.run.train import OfflineConfig, OfflineData, train_offline

STEPS, GLOBAL_BATCH = 4, 8


def worker(folder: Path) -> None:

    model, tokenizer = load_policy(folder / "policy")
    data = torch.load(folder / "data.pt", weights_only=False)
    drawn, trained = [], []
    draw_batch, batch_loss = offline.draw_batch, offline.batch_loss

    def recording_draw(*args, **kwargs):
        batch = draw_batch(*args, **kwargs)
        drawn.append(batch.tolist())
        return batch

    def recording_loss(model, method, data, indices, *args, **kwargs):
        trained.append(list(indices))
        return batch_loss(model, method, data, indices, *args, **kwargs)

    offline.draw_batch, offline.batch_loss = recording_draw, recording_loss
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cfg = OfflineConfig(
        steps=STEPS,
        batch_size=GLOBAL_BATCH // world,
        lr=1e-3,
        warmup_steps=1,
        scale_steps_by_leftover=False,
    )
    policy, log = train_offline(model, "a_lol", data, cfg, tokenizer.pad_token_id, progress=False)
    rank = int(os.environ.get("RANK", "0"))
    out = folder / f"world{world}"
    out.mkdir(exist_ok=True)
    (out / f"rank{rank}.json").write_text(
        json.dumps({"drawn": drawn, "trained": trained, "loss": [row["loss"] for row in log]})
    )
    if rank == 0:
        torch.save(policy.state_dict(), out / "policy.pt")


@pytest.fixture(scope="module")
def saved_setup(micro_policy, chitchat_small, tmp_path_factory):

    model, tokenizer, cfg = micro_policy
    train = chitchat_small["train"].select(range(64))
    enc = encode_pairs(
        tokenizer,
        train["prompt"],
        train["response"],
        cfg.max_prompt_tokens,
        cfg.max_response_tokens,
    )
    advantage = np.random.default_rng(0).normal(
        size=len(enc)
    )  # about half the examples have A <= 0
    reward = 1 / (1 + np.exp(-advantage))
    data = OfflineData(
        enc, reward, advantage, reference_pass(model, enc, tokenizer.pad_token_id)["ref_logp"]
    )
    folder = tmp_path_factory.mktemp("distributed")
    save_policy(model, tokenizer, folder / "policy")
    torch.save(data, folder / "data.pt")
    return folder, advantage


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(folder: Path, processes: int) -> list[dict]:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    # torchrun sets RANK / WORLD_SIZE; Accelerate then runs MULTI_CPU over gloo. (`accelerate launch
    # --cpu --num_processes 2` starts a single process here: its CPU multi-process path wants MPI.)
    launcher = (
        []
        if processes == 1
        else [
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(processes),
            "--master_port",
            str(_free_port()),
        ]
    )
    result = subprocess.run(
        [sys.executable, *launcher, __file__, str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = folder / f"world{processes}"
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]


def test_two_processes_equal_one_with_the_same_global_batch(saved_setup):
    folder, advantage = saved_setup
    (single,) = _launch(folder, 1)
    ranks = _launch(folder, 2)
    # the sampler draws the same global index lists on every rank, and the same as one process does
    assert len(single["drawn"]) == STEPS and all(len(b) == GLOBAL_BATCH for b in single["drawn"])
    assert ranks[0]["drawn"] == ranks[1]["drawn"] == single["drawn"]
    for step, batch in enumerate(single["drawn"]):
        # each rank trains on its own shard, batch[rank::2]; together the shards are the batch
        assert [r["trained"][step] for r in ranks] == [batch[0::2], batch[1::2]]
        assert sorted(ranks[0]["trained"][step] + ranks[1]["trained"][step]) == sorted(batch)
        assert single["trained"][step] == batch
    every_index = [i for r in ranks for b in r["trained"] for i in b]
    assert (advantage[every_index] > 0).all(), "a rank trained on an example with A <= 0"
    # the same loss curve and the same final weights (DDP averages the two shards' gradients)
    assert ranks[0]["loss"] == ranks[1]["loss"]
    np.testing.assert_allclose(ranks[0]["loss"], single["loss"], rtol=1e-4)
    one = torch.load(folder / "world1" / "policy.pt")
    two = torch.load(folder / "world2" / "policy.pt")
    start = load_policy(folder / "policy")[0].state_dict()
    for name in one:
        # One batch and two averaged shards sum in another order, and Adam's normalisation can
        # magnify that last-bit difference on a near-zero gradient; so the bar is relative to how
        # far training moved the tensor. A rank whose gradients were not averaged would be off by
        # a whole update.
        moved = (one[name] - start[name]).abs().max().item()
        off = (two[name] - one[name]).abs().max().item()
        assert off <= 0.02 * moved + 1e-7, (name, off, moved)


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
