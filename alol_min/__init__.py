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
