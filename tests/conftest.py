import atexit
import os
import shutil
import tempfile

from alol_min.lm.models import ModelConfig, make_policy
from alol_min.tasks.chitchat import ChitchatConfig, load_chitchat

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests never touch the user's cache: every session gets a fresh one.
os.environ["ALOL_MIN_CACHE"] = tempfile.mkdtemp(prefix="alol-min-test-cache-")
atexit.register(shutil.rmtree, os.environ["ALOL_MIN_CACHE"], ignore_errors=True)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def chitchat_small():
    """A small, fixed chitchat DatasetDict for fast tests."""

    data, report = load_chitchat(ChitchatConfig(max_train=3000, max_validation=200, max_test=100))
    return data


@pytest.fixture(scope="session")
def micro_policy(chitchat_small):
    """(model, tokenizer, config) of an untrained micro GPT-2 with a BPE trained on the small data."""

    cfg = ModelConfig.preset("micro")
    texts = list(chitchat_small["train"]["prompt"]) + list(chitchat_small["train"]["response"])
    model, tokenizer = make_policy(cfg, texts, seed=0)
    return model, tokenizer, cfg
