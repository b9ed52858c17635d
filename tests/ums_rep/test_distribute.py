"""``--distribute``: two local worker processes under ``MultiWorkerMirroredStrategy`` (TF_CONFIG on
localhost ports) train the joint strategy to the same weights as one process with the same global
batch, and only the chief writes the run folder."""
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

WORKER = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    import numpy as np
    from ums_rep import runs
    dist = runs.distribution(sys.argv[1])  # first: MultiWorkerMirroredStrategy before any tensor
    import keras, tensorflow as tf
    from ums_rep.backbones import echo_encoder
    from ums_rep.models import build_shared
    from ums_rep.tasks import TASK_SETS
    from ums_rep.strategies import FitConfig, fit
    out = runs.run_dir(sys.argv[2], "distribute", "test", dist=dist)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 32, 32, 1)).astype("float32")
    y = {"label": np.eye(2, dtype="float32")[rng.integers(0, 2, 32)]}
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    keras.utils.set_random_seed(0)
    specs = TASK_SETS["echo-homo"]["tasks"]
    with dist.scope():
        models, enc = build_shared(echo_encoder((32, 32, 1), strides=2), "echo", specs)
        for m in models.values():  # dropout masks differ per replica: switch it off here
            for layer in m.layers:
                if isinstance(layer, keras.layers.Dropout):
                    layer.rate = 0.0
    tasks = {s.task.name: s.task for s in specs}
    fit("joint", models, tasks, {t: ds.repeat().batch(8, drop_remainder=True) for t in tasks},
        {t: ds.batch(8) for t in tasks}, FitConfig(epochs=2, steps_per_epoch={t: 2 for t in tasks},
        progress=False, restore_best=False, checkpoint_dir=out / "checkpoints"), dist=dist)
    sums = [float(np.sum(np.abs(w.numpy()))) for m in models.values() for w in m.weights]
    # batch norm: moving statistics of the global batch on every worker, as on one device
    from ums_rep.layers import BatchNorm
    from ums_rep.tasks import Task
    xs = rng.normal(size=(32, 8, 8, 1)).astype("float32") * np.arange(1, 33, dtype="float32")[:, None, None, None]
    bn_ds = tf.data.Dataset.from_tensor_slices((xs, {"clean": xs}))
    with dist.scope():
        inp = keras.Input((8, 8, 1))
        bn_model = keras.Model(inp, keras.layers.Conv2D(1, 3, padding="same")(BatchNorm(name="bn")(inp)))
    fit("joint", {"denoise": bn_model}, {"denoise": Task("denoise", "reconstruction")},
        {"denoise": bn_ds.repeat().batch(8, drop_remainder=True)}, {"denoise": bn_ds.batch(8)},
        FitConfig(epochs=1, steps_per_epoch={"denoise": 2}, progress=False, restore_best=False), dist=dist)
    bn = bn_model.get_layer("bn")
    assert not bn.synchronized  # restored after training: the saved model is that of one device
    sums += [float(np.sum(bn.moving_mean.numpy())), float(np.sum(bn.moving_variance.numpy()))]
    (out / "weights.json").write_text(json.dumps(sums))
    runs.discard_worker_folder(out, dist)
    print(json.dumps({"replicas": dist.num_replicas_in_sync, "chief": runs.is_chief(dist), "out": str(out),
                      "weights": sums}))
''')



def _wait(procs, timeout=180):
    """Every process's stderr once all have ended; any still running at the timeout is killed."""
    try:
        return [p.communicate(timeout=timeout)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()

def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _env(tf_config=None):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    if tf_config:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def _last_json(text):
    return json.loads(text.strip().splitlines()[-1])


def test_two_workers_train_like_one_process_and_only_the_chief_writes(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    out = tmp_path / "run"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, "multiworker", str(out)], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=_env({"cluster": cluster, "task": {"type": "worker", "index": i}}))
             for i in range(2)]
    single = subprocess.run([sys.executable, "-c", WORKER, "none", str(tmp_path / "single")], text=True,
                            capture_output=True, env=_env(), timeout=120)
    results = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=120)
            assert p.returncode == 0, stderr[-3000:]
            results.append(_last_json(stdout))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert single.returncode == 0, single.stderr[-3000:]
    one = _last_json(single.stdout)
    chief, worker = results
    assert chief["replicas"] == worker["replicas"] == 2 and one["replicas"] == 1
    assert chief["chief"] and not worker["chief"]
    # the two workers hold the same weights, those of one process with the same global batch
    np.testing.assert_allclose(chief["weights"], worker["weights"], rtol=1e-6)
    np.testing.assert_allclose(chief["weights"], one["weights"], rtol=1e-4, atol=1e-7)
    # only the chief wrote the run folder; the worker wrote a temporary folder, removed at the end
    assert chief["out"] == str(out) and worker["out"] != str(out)
    assert json.loads((out / "weights.json").read_text()) == chief["weights"]
    assert (out / "checkpoints" / "state.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "single"]
    assert not os.path.exists(worker["out"])


def test_distribution_choices(monkeypatch):
    from ums_rep import runs
    import tensorflow as tf
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert runs.distribution("none") is tf.distribute.get_strategy()
    assert runs.distribution("auto") is tf.distribute.get_strategy()  # no TF_CONFIG, no GPUs here
    assert runs.is_chief(runs.distribution("none"))
    with pytest.raises(ValueError, match="needs TF_CONFIG"):
        runs.distribution("multiworker")
    with pytest.raises(ValueError, match="expected one of"):
        runs.distribution("horovod")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}))
    assert runs.cluster_workers() == 2


def test_pretrain_command_on_two_workers_writes_one_run_folder(tmp_path):
    """``python -m ums_rep.pretrain --distribute multiworker`` started twice with TF_CONFIG: one
    run folder, the chief's; the worker's temporary folder is gone when it ends."""
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ums_rep.pretrain", "--backbone", "echo", "--preset", "tiny", "--epochs", "1",
           "--distribute", "multiworker", "--out", str(out), "--no-progress"]
    procs = []
    for i in range(2):
        env = _env({"cluster": cluster, "task": {"type": "worker", "index": i}})
        env["UMS_REP_CACHE"] = str(tmp_path / f"cache{i}")  # each machine its own cache
        procs.append(subprocess.Popen(cmd, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env))
    logs = _wait(procs)
    assert [p.returncode for p in procs] == [0, 0], logs[1][-3000:] + logs[0][-3000:]
    assert f"wrote {out} (" in logs[0] and f"wrote {out} (" not in logs[1]
    worker_dir = logs[1].split("ums_rep.pretrain: wrote ")[1].split(" (")[0]
    assert "ums_rep-workers" in worker_dir and not os.path.exists(worker_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache0", "cache1", "run"]
    body = json.loads((out / "results.json").read_text())
    assert body["tasks"]["flow"]["metrics"]


def _state_epoch(folder):
    try:
        return json.loads((folder / "checkpoints" / "state.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return None


def test_two_workers_resume_after_one_is_killed(tmp_path):
    """A worker killed mid-run: the chief stops on the lost peer; both started again with
    ``--resume RUN_DIR`` continue from their last epoch (each from its own checkpoints)."""
    import hashlib
    import signal
    import tempfile
    import time
    out = tmp_path / "run"
    worker_dir = Path(tempfile.gettempdir()).resolve() / "ums_rep-workers"
    worker_dir /= f"run-{hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:8]}-worker1"
    assert not worker_dir.exists()

    def start(extra):
        cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
        procs = []
        for i in range(2):
            env = _env({"cluster": cluster, "task": {"type": "worker", "index": i}})
            env["UMS_REP_CACHE"] = str(tmp_path / "cache")
            procs.append(subprocess.Popen([sys.executable, "-m", "ums_rep.pretrain", *extra, "--distribute",
                                           "multiworker", "--no-progress"], text=True, env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        return procs

    procs = start(["--backbone", "echo", "--preset", "tiny", "--epochs", "30", "--out", str(out)])
    try:
        deadline = time.time() + 120
        while time.time() < deadline and all(p.poll() is None for p in procs):
            done = {_state_epoch(out), _state_epoch(worker_dir)}
            if len(done) == 1 and None not in done and done.pop() >= 2:  # both saved the same epoch
                break
            time.sleep(0.1)
        procs[1].send_signal(signal.SIGKILL)
        _, chief_log = procs[0].communicate(timeout=120)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert procs[1].returncode == -signal.SIGKILL and procs[0].returncode != 0, chief_log[-2000:]
    assert not (out / "results.json").exists()
    stopped_at = _state_epoch(out)
    procs = start(["--resume", str(out)])
    logs = _wait(procs)
    assert [p.returncode for p in procs] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    assert f"resumed from {out / 'checkpoints'} after epoch {stopped_at}" in logs[0]
    assert f"resumed from {worker_dir / 'checkpoints'} after epoch {stopped_at}" in logs[1]
    assert (out / "results.json").is_file() and not worker_dir.exists()
