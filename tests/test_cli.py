"""Issue 17, item 6: no INFO flood from checkpoint saves, no retracing warnings, progress bars
named by what they train, and pool workers that do not re-run the command that started them."""
import logging
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_checkpoint_saves_log_no_info_flood_and_bars_say_what_they_train(tmp_path, caplog, capsys):
    import keras
    import numpy as np
    import tensorflow as tf

    from data_prep.cli import setup_logging
    from ums_rep.strategies import FitConfig, fit
    from ums_rep.tasks import Task

    setup_logging()
    caplog.set_level(logging.INFO)
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, {"clean": x}))
    inp = keras.Input((8, 8, 1))
    model = keras.Model(inp, keras.layers.Conv2D(1, 3, padding="same")(inp))
    fit("joint", {"denoise": model}, {"denoise": Task("denoise", "reconstruction")},
        {"denoise": ds.repeat().batch(8, drop_remainder=True)}, {"denoise": ds.batch(8)},
        FitConfig(epochs=2, steps_per_epoch={"denoise": 2}, checkpoint_dir=tmp_path / "ck", label="cdae pretraining"))
    assert (tmp_path / "ck").is_dir()
    flood = [r for r in caplog.records if "Sharding callback" in r.getMessage()]
    assert not flood, f"{len(flood)} records like {flood[0].getMessage()!r}"
    err = capsys.readouterr().err
    assert "cdae pretraining epoch 1/2" in err and "joint epoch" not in err


def test_setup_logging_drops_retracing_warnings(caplog):
    from data_prep.cli import setup_logging
    setup_logging()
    caplog.set_level(logging.INFO)
    tf_log = logging.getLogger("tensorflow")
    tf_log.warning("5 out of the last 5 calls to <function f> triggered tf.function retracing. Tracing is expensive")
    tf_log.warning("something else")
    assert [r.getMessage() for r in caplog.records if r.name == "tensorflow"] == ["something else"]


_POOL_PROBE = """
import os
if __name__ == "__mp_main__":  # a spawned worker re-running the command module
    open(os.environ["MARK"], "a").write("re-imported\\n")
from data_prep.cli import worker_pool
if __name__ == "__main__":
    with worker_pool(2) as pool:
        print(sum(pool.map(abs, [-1, -2, -3])))
    print(__spec__.name, "__file__" in globals())
"""


def test_pool_workers_do_not_rerun_the_command(tmp_path):
    """prepare's and the phantoms' workers skip the ``python -m`` module that started them (for a
    training command: TensorFlow, seconds per worker and its start-up lines again)."""
    (tmp_path / "probe_cmd.py").write_text(_POOL_PROBE)
    env = {**os.environ, "MARK": str(tmp_path / "mark"), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "probe_cmd"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.split() == ["6", "probe_cmd", "True"], out.stderr[-2000:]
    assert not (tmp_path / "mark").exists()
