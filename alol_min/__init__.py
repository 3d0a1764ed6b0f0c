"""alol-min: A-LoL (Advantage-Leftover Lunch RL), a minimal teaching implementation.

The package follows the method's data flow, one file per stop:
data -> models (tokenizer, GPT-2) -> training (pi_ref by NLL) -> rewards -> values (V_ref)
-> advantage (A = R - V, leftovers, priority sampling) -> importance (r = pi_theta / pi_ref)
-> losses (every method) -> evaluation -> plots.
"""
import os as _os

# The embedded default never needs the hub; users who name a hub resource can unset these.
_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"

_EXPORTS = {
    "load_chitchat": "data", "ChitchatConfig": "data", "load_hh_rlhf": "hh", "load_tiny_hh": "tiny_hh",
    "load_task": "tasks", "method_loss": "losses", "pairwise_loss": "losses", "METHODS": "losses",
    "compute_advantage": "advantage", "leftover_fraction": "advantage",
    "sequence_importance_weight": "importance", "ValueHead": "values",
}


def __getattr__(name):
    """Lazy public API (`alol_min.load_hh_rlhf`, `alol_min.method_loss`, ...): importing the
    package stays fast, each name loads its module on first use."""
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'alol_min' has no attribute {name!r}")
