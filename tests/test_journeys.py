"""Issue 17's newcomer journeys, one test per failure: --resume and --out never take over or
overwrite another command's run (2); report and every --compare accept any mix of run folders,
and a head scan works for every task (3); model-file and image errors are one line (5); runs
started together on one empty cache all succeed (7)."""
import argparse
import json
import os
import subprocess
import sys
import threading
import time

import keras
import pytest

from data_prep import datasets
from data_prep.io import ImageReadError, read_image
from ums_rep import runs


# --------------------------------------------------------------------------- 7: a shared cache

PHANTOM_CHILD = """
import os, sys, time
from data_prep import datasets
go = sys.argv[1]
while not os.path.exists(go):
    time.sleep(0.005)
print(datasets.phantom("shenzhen", n=int(sys.argv[2]), seed=0, size=64))
"""


def test_concurrent_commands_share_one_phantom_cache(tmp_path):
    env = {**os.environ, "UMS_REP_CACHE": str(tmp_path / "cache")}
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", PHANTOM_CHILD, str(go), "24"], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    time.sleep(1.0)  # every child imported and waiting
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-1500:] for _, err in outs]
    folder = tmp_path / "cache" / "phantoms" / "shenzhen-n24-s0-px64"
    assert {o.strip() for o, _ in outs} == {str(folder)}
    assert len(datasets.load("shenzhen", folder)) == 24
    assert not [p for p in folder.parent.iterdir() if p.name.endswith(".tmp")]


def test_concurrent_callers_prepare_a_cache_entry_once(tmp_path, monkeypatch):
    monkeypatch.setenv("UMS_REP_CACHE", str(tmp_path / "cache"))
    datasets.phantom("shenzhen", n=40, seed=0, size=64)
    calls, real = [], runs.prepare

    def counted(*a, **k):
        calls.append(a)
        time.sleep(0.3)  # a slow preparation: the others must wait, not read it half-written
        return real(*a, **k)

    monkeypatch.setattr(runs, "prepare", counted)
    barrier, got, errors = threading.Barrier(3), [], []

    def call():
        barrier.wait()
        try:
            got.append(runs.prepared_data("shenzhen", None, size=32, phantom_n=40, phantom_size=64, progress=False))
        except Exception as e:  # noqa: BLE001  reported below
            errors.append(e)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(calls) == 1
    assert len({p.info["prepared"] for p in got}) == 1
    assert all(len(p.manifest) == 40 and p.info["dataset"] == "shenzhen" for p in got)
