"""The benchmark harness runs at a tiny size and writes valid JSON (targets are reported in
benchmarks/README.md, never timed in tests)."""
import json

import pytest

from benchmarks.run import main
from tests.helpers import table_rows


def test_harness_writes_a_complete_report(tmp_path, monkeypatch):
    monkeypatch.setenv("UMS_REP_CACHE", str(tmp_path / "cache"))
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    assert main(["--quick", "--cases", "echo", "--repeats", "1", "--saving-sets", "echo-homo",
                 "--saving-strategies", "joint", "--saving-epochs", "1", "--out", str(out), "--markdown", str(md)]) == 0
    r = json.loads(out.read_text())
    assert r["matmul_gflops"] > 0
    assert [t["case"] for t in r["training"]] == ["echo"]
    for t in r["training"]:
        assert t["flops_per_step"] > 1e6 and t["peak_rss_mib"] > 100
        assert set(t["modes"]) >= {"fit", "custom", "custom+xla"}
        assert all(m["images_per_s"] > 0 for m in t["modes"].values())
        # the convolutions counted by hand are most of what the profiler counts for the whole step
        # (the rest: bias, activations, the dense head, the loss, and at this tiny size the padding
        # TensorFlow adds around dilated convolutions: 0.76 measured at 64 px, 0.93 at 256 px)
        assert 0.6 * t["flops_per_step"] < t["conv_ceiling"]["flops_per_step"] < t["flops_per_step"]
        assert t["conv_ceiling"]["seconds_per_step"] > 0
    # the input pipeline's rate; its ratio is to the CDAE's training rate, so none without the cdae case
    assert r["input_pipeline"]["images_per_s"] > 0 and r["input_vs_training"] is None
    assert {x["set"] for x in r["latency"]} == {"cxr-hetero", "cxr-homo", "echo-hetero", "echo-homo"}
    (saving,) = r["compute_saving"]
    # one shared strategy is enough to test the harness (each one more is a ~20 s training run)
    assert saving["set"] == "echo-homo" and saving["best_shared"] == "joint" and set(saving["scores"]) == {"joint"}
    # one shared encoder (pretrained with its flow head) and three heads vs three encoders with a head each
    assert saving["shared_params"] == ECHO_ENCODER + 3 * HEAD_2 == 861_001
    assert saving["baseline_params"] == 3 * (ECHO_CONVS + HEAD_2) == 1_676_742
    assert saving["param_ratio"] == pytest.approx(861_001 / 1_676_742, rel=1e-12)
    assert saving["shared_seconds"] > 0 and saving["baseline_seconds"] > 0
    assert saving["time_ratio"] == pytest.approx(saving["shared_seconds"] / saving["baseline_seconds"], rel=1e-12)
    text = md.read_text()
    assert "custom loop / model.fit" in text
    assert f"{861_001:,} / {1_676_742:,} = **{861_001 / 1_676_742:.2f}**" in text


# trainable parameters of the fine-tuning architecture, by hand: the echo encoder's six biased 3×3
# convolutions (widths 32-64-64-128-128-128), with its pretraining head GAP → FC(256) → FC(3); a
# classification head GAP → FC(1024) → FC(2) on its 128 channels (ums_rep.backbone_registry.DEFAULT_HEADS)
ECHO_CONVS = sum(9 * a * b + b for a, b in zip((1, 32, 64, 64, 128, 128), (32, 64, 64, 128, 128, 128)))
ECHO_ENCODER = ECHO_CONVS + (128 * 256 + 256) + (256 * 3 + 3)
HEAD_2 = (128 * 1024 + 1024) + (1024 * 2 + 2)


def test_keras_jax_harness_builds_the_same_models_and_counts_their_flops(tmp_path):
    """benchmarks.keras_jax (the GPU harness where TensorFlow cannot run) trains the package's own
    echo encoder on Keras' JAX backend; XLA's FLOP count matches its convolutions counted by hand."""
    import os
    import subprocess
    import sys

    from benchmarks.run import case_models, conv_layers, conv_train_flops
    out = tmp_path / "jax.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.keras_jax", "--quick", "--cases", "echo",
                           "--policies", "mixed_bfloat16", "--repeats", "1", "--steps", "1",
                           "--out", str(out), "--markdown", str(tmp_path / "j.md")],
                          capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["matmul_tflops"]["float32"] > 0 and r["matmul_tflops"]["bfloat16"] > 0
    (t,) = r["training"]
    # float32 is left out for time: the mixed policy runs every path float32 does, plus the casts
    assert set(t["modes"]) == {"fit, mixed_bfloat16", "jit step, mixed_bfloat16"}
    assert all(m["images_per_s"] > 0 for m in t["modes"].values())
    models, tasks, joint = case_models("echo", tuple(t["input"]))
    assert t["params"] == models["flow"].count_params()  # the same architecture on both backends
    # XLA counts the convolutions' multiply-adds without the taps that land in the zero padding,
    # which the hand count includes, plus the rest of the step (bias, activations, the dense head,
    # the loss, the optimizer). XLA / hand count measured: 0.87 at 64 px (dilations reach far into
    # the padding at this size), 0.97 for the echo encoder and 0.99 for the CDAE at 256 px
    convs = sum(conv_train_flops(layer, t["batch"], grad_x) for layer, grad_x in conv_layers(models))
    assert 0.8 * convs < t["flops_per_step"] < 1.2 * convs, (t["flops_per_step"], convs)
    assert "jit step" in (tmp_path / "j.md").read_text()


def test_mixed_modes_are_timed_beside_float32(monkeypatch):
    """``--mixed``: the custom loop with and without XLA under the mixed policy, in the same run
    as float32, and the table of each mode over float32 and of its own matmul (tiny CDAE)."""
    import keras

    from benchmarks.run import matmul_gflops, mixed_table, train_case
    from ums_rep import precision
    monkeypatch.setattr(precision, "gpu_capability", lambda: None)
    monkeypatch.setattr(precision, "cpu_bf16", lambda *a, **k: True)
    try:
        t = train_case("cdae", quick=True, steps=1, repeats=1, mixed=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert t["mixed_policy"] == "mixed_bfloat16"
    assert set(t["modes"]) == {"fit", "custom", "custom+xla", "custom+mixed", "custom+xla+mixed"}
    assert all(m["images_per_s"] > 0 for m in t["modes"].values())
    report = {"matmul_gflops": matmul_gflops(128, 1), "matmul_gflops_mixed": matmul_gflops(128, 1, "bfloat16"),
              "mixed_policy": t["mixed_policy"], "training": [t]}
    assert report["matmul_gflops_mixed"] > 0
    text = "\n".join(mixed_table(report))
    assert "mixed_bfloat16" in text and [r[0] for r in table_rows(text)].count("cdae") == 2
    assert mixed_table({**report, "training": [{**t, "modes": {"custom": t["modes"]["custom"]}}]}) == []


def test_prepare_case_times_three_sizes_single_process_and_pooled(tmp_path):
    """``--cases prepare`` alone (issue 19): RSNA-layout 16-bit DICOM phantoms prepared at three
    dataset sizes with 1 and 2 workers, each run in its own process. Tiny: 128² inputs and 30-32
    images (``prepare``'s 70/20/10 split needs a class with 10 patients; it starts a pool from 32
    images, so only the 32-image run with 2 workers starts one), two rounds each, the median
    kept. No speed is asserted."""
    from pathlib import Path

    out, md, work = tmp_path / "prep.json", tmp_path / "prep.md", tmp_path / "work"
    assert main(["--cases", "prepare", "--prepare-sizes", "30", "31", "32", "--prepare-side", "128",
                 "--prepare-workers", "1", "2", "--prepare-dir", str(work), "--repeats", "2", "--out", str(out),
                 "--markdown", str(md)]) == 0
    r = json.loads(out.read_text())
    assert "training" not in r and "matmul_gflops" not in r  # prepare alone skips the rest
    p = r["prepare"]
    assert p["input"] == [128, 128] and p["bits_allocated"] == [16] and p["output_side"] == 256
    assert sorted((x["images"], x["workers"]) for x in p["runs"]) == [(n, w) for n in (30, 31, 32) for w in (1, 2)]
    for x in p["runs"]:
        assert x["images_per_s"] > 0 and x["seconds"] > 0 and x["image_seconds"] <= x["seconds"]
        assert len(x["seconds_all"]) == 2 and x["seconds"] == min(x["seconds_all"])  # the lower median of 2
        # every image prepared, in the folder itself as well as in the report
        assert x["images_written"] == x["manifest_rows"] == x["images"]
        assert len(list(Path(x["out"]).glob("images/*.png"))) == x["images"]
        assert (Path(x["out"]) / "manifest.csv").is_file()
        # the child's own peak (Python, pandas, OpenCV, pydicom), not the parent's TensorFlow
        assert 50 < x["peak_rss_main_mib"] < 500, x
        assert x["pool"] == (x["images"] >= 32 and x["workers"] == 2)
        assert (x["peak_rss_worker_mib"] > 0) == x["pool"]
        assert x["peak_rss_mib"] == max(x["peak_rss_main_mib"], x["peak_rss_worker_mib"])
    assert [s["images"] for s in p["speedup"]] == [30, 31, 32] and all(s["x"] > 0 for s in p["speedup"])
    assert [f["workers"] for f in p["fits"]] == [1, 2]
    for f in p["fits"]:
        assert {"slope", "intercept", "max_dev_fit", "slope_origin", "max_dev_origin", "rss_spread"} <= set(f)
        assert f["slope_origin"] > 0 and f["rss_spread"] >= 0
    text = md.read_text()
    # its runs with 1 and 2 workers and its speed-up
    assert "speed-up" in text and [r[0] for r in table_rows(text)].count("32") == 3


def test_modes_and_batch_options_time_only_what_they_name():
    """``--modes`` and ``--batch CASE=N`` (for models whose steps take seconds, e.g. MT-UNet at
    the paper's width and batch 4): only the named modes run, at the named batch."""
    import argparse

    from benchmarks.run import build_parser, train_case
    t = train_case("cdae", quick=True, steps=1, repeats=1, only=("custom",), batch=3)
    assert set(t["modes"]) == {"custom"} and t["batch"] == 3
    args = build_parser().parse_args(["--modes", "custom", "custom+mixed", "--batch", "mtunet-paper=4"])
    assert args.modes == ["custom", "custom+mixed"] and dict(args.batch) == {"mtunet-paper": 4}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--batch", "nosuchcase=4"])
    from benchmarks.run import case_batch_arg
    with pytest.raises(argparse.ArgumentTypeError):
        case_batch_arg("cdae=0")
