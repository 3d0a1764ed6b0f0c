"""alol-min: A-LoL (Advantage-Leftover Lunch RL), a minimal teaching implementation.

The five concepts of the method are the modules at the top, one file each:
rewards (R), values (V_ref), advantage (A = R - V, leftovers, priority sampling), importance
(r = pi_theta / pi_ref, clipped) and losses (every method). Around them, by role:
lm/ (tokenizer, models, batching, decoding, NLL training, pi_ref), tasks/ (each task's data and
rewards), run/ (prepare, train, evaluate, reproduce, plots, scorecard), extensions/ (what is not
in the paper), and cli.py / cache.py.
"""

import importlib
import os as _os

# The embedded default never needs the hub; users who name a hub resource can unset these.
_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"

_EXPORTS = {
    "load_chitchat": "tasks.chitchat",
    "ChitchatConfig": "tasks.chitchat",
    "load_hh_rlhf": "tasks.hh_rlhf",
    "load_tiny_hh": "tasks.tiny_hh",
    "load_task": "tasks",
    "method_loss": "losses",
    "pairwise_loss": "losses",
    "METHODS": "losses",
    "compute_advantage": "advantage",
    "leftover_fraction": "advantage",
    "sequence_importance_weight": "importance",
    "ValueHead": "values",
}


def __getattr__(name):
    """Lazy public API (`alol_min.load_hh_rlhf`, `alol_min.method_loss`, ...): importing the
    package stays fast, each name loads its module on first use."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'alol_min' has no attribute {name!r}")
