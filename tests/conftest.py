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
