"""nbval settings for the notebook series.

stderr is not compared: it carries what legitimately differs between runs (cache "building" vs
"reusing" messages, library warnings). Everything a notebook prints on stdout, and every displayed
value, is compared exactly, after the substitutions in `sanitize.cfg`.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The student notebooks are generated from the solutions: tests/test_exercises.py checks that they
# are up to date and report "not implemented yet", and nbval never runs them. A student works in a
# copy under mine/ (git-ignored), which no test reads.
collect_ignore_glob = ["student/*", "mine/*"]


def pytest_collection_modifyitems(items):
    for item in items:
        notebook = item.parent
        skip = getattr(notebook, "skip_compare", None)
        if skip is not None and "stderr" not in skip:
            notebook.skip_compare = tuple(skip) + ("stderr",)
