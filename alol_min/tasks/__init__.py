"""The tasks, each with its data, its training reward and its test-time reward.

chitchat  real human dialogue (previous turn -> reply), the analogue of the paper's Reddit task;
          reward = `ChitchatReward` (sentiment, safety, TF-IDF diversity, fluency, relevance),
          the same at training and test time.
tiny-hh   a generated assistant world in the HH-RLHF format; a learned Bradley-Terry reward
          model gives the training rewards and a different judge scores the test outputs, as in
          the paper's HHA setup.
hh-rlhf   the paper's HHA setting on Anthropic's HH-RLHF files or the hub (`HHConfig`).
"""

from __future__ import annotations

from alol_min.tasks.base import POOLS, Task, rated_pool
from alol_min.tasks.chitchat import ChitchatConfig, chitchat_task, load_chitchat
from alol_min.tasks.hh_rlhf import HHConfig, hh_rlhf_task, load_hh_rlhf
from alol_min.tasks.tiny_hh import load_tiny_hh, tiny_hh_task

TASKS = ("chitchat", "tiny-hh", "hh-rlhf")


def load_task(
    name: str,
    *,
    data_cfg: ChitchatConfig | None = None,
    n_train: int | None = None,
    hh: HHConfig | None = None,
    n_test: int = 500,
    seed: int = 0,
    verbose: bool = True,
) -> Task:
    """The task `name` with its data and rewards (rewards are trained once and cached).

    `data_cfg`: chitchat's splits; `n_train`: tiny-hh's generated training pairs; `hh`, `n_test`:
    hh-rlhf's source, reward model, seed and test size; `seed`: the seed of chitchat's and tiny-hh's
    reward fit.
    """
    if name == "chitchat":
        return chitchat_task(data_cfg, seed=seed, verbose=verbose)
    if name == "tiny-hh":
        return tiny_hh_task(n_train, seed=seed, verbose=verbose)
    if name == "hh-rlhf":
        return hh_rlhf_task(hh or HHConfig(), n_test=n_test, verbose=verbose)
    raise ValueError(f"unknown task {name!r}; choose one of {TASKS}")


def load_data(name: str, *, data_cfg: ChitchatConfig | None = None, n_train: int | None = None):
    """(DatasetDict, DataReport) of an embedded task's data alone, without its reward."""
    if name == "chitchat":
        return load_chitchat(data_cfg or ChitchatConfig())
    if name == "tiny-hh":
        return load_tiny_hh(**({"n_train": n_train} if n_train else {}))
    raise ValueError(f"load_data reads the embedded tasks (chitchat, tiny-hh), not {name!r}")


__all__ = [
    "POOLS",
    "TASKS",
    "ChitchatConfig",
    "HHConfig",
    "Task",
    "load_data",
    "load_hh_rlhf",
    "load_task",
    "rated_pool",
]
