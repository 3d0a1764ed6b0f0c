"""nbval settings for the notebook series.

stderr is not compared: it carries what legitimately differs between runs (cache "building" vs
"reusing" messages, library warnings). Everything a notebook prints on stdout, and every displayed
value, is compared exactly, after the substitutions in `sanitize.cfg`.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The student notebooks are a student's to edit: tests/test_exercises.py checks that they are
# generated from the solutions and print "not implemented yet", and nbval never runs them.
collect_ignore_glob = ["student/*"]


def pytest_collection_modifyitems(items):
    for item in items:
        notebook = item.parent
        skip = getattr(notebook, "skip_compare", None)
        if skip is not None and "stderr" not in skip:
            notebook.skip_compare = tuple(skip) + ("stderr",)
