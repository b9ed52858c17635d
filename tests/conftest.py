"""Shared fixtures: small phantom datasets in every published layout, made once per session."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from data_prep.phantoms.layouts import LAYOUTS, generate

PHANTOM_N = 30
PHANTOM_SIZE = 64


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory):
    """``ROOT/<layout>`` for every layout (the ``--data ROOT`` convention), 30 images of 64 px."""
    root = tmp_path_factory.mktemp("phantoms")
    for layout in LAYOUTS:
        generate(layout, root / layout, n=PHANTOM_N, seed=3, size=PHANTOM_SIZE, progress=False)
    return root


# The longest modules first (longest-processing-time-first scheduling): under `pytest -n 2 --dist
# loadfile` (.ci/run) each then runs beside the short ones instead of alone at the end.
LONGEST_FIRST = ("tests/ums_rep/test_main_job.py", "tests/test_notebooks.py", "tests/test_benchmarks.py",
                 "tests/ums_rep/test_distribute.py", "tests/test_reproduce.py", "tests/test_reliability.py",
                 "tests/ums_rep/test_scan.py")


def pytest_collection_modifyitems(session, config, items):
    def rank(item):
        path = item.nodeid.split("::")[0]
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)
    items.sort(key=rank)  # stable: the order within each module, and of the others, is kept
