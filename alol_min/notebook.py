"""One call at the top of every notebook: offline, quiet, seeded, and the same output on every run.

    from alol_min.notebook import setup
    setup()

Offline: no hub or dataset downloads (HF_HUB_OFFLINE, HF_DATASETS_OFFLINE). Quiet: progress bars
and library warnings are silenced, so a notebook's checked output is only what it prints itself
(nbval compares it against the committed output). Seeded: Python, NumPy and torch.
"""

from __future__ import annotations

import os
import random
import warnings


def setup(seed: int = 0, threads: int | None = None) -> None:
    """Set the environment for a reproducible notebook run."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["TQDM_DISABLE"] = "1"
    warnings.filterwarnings("ignore")
    # lazy: the hub switches above must be set before these libraries are first imported
    import datasets  # noqa: PLC0415
    import matplotlib.pyplot as plt  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    if threads:
        torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    plt.rcParams.update(
        {"figure.figsize": (6.4, 3.6), "figure.dpi": 90, "axes.grid": True, "grid.alpha": 0.3}
    )
