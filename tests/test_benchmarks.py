"""The benchmark harness runs at a tiny size and writes valid JSON (targets are reported in
benchmarks/README.md, never timed in tests)."""
import json

from benchmarks.run import main


def test_harness_writes_a_complete_report(tmp_path, monkeypatch):
    monkeypatch.setenv("UMS_REP_CACHE", str(tmp_path / "cache"))
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    assert main(["--quick", "--cases", "echo", "--repeats", "1", "--saving-sets", "echo-homo",
                 "--saving-epochs", "1", "--out", str(out), "--markdown", str(md)]) == 0
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
    assert r["input_pipeline"]["images_per_s"] > 0 and r["input_vs_training"] > 0
    assert {x["set"] for x in r["latency"]} == {"cxr-hetero", "cxr-homo", "echo-hetero", "echo-homo"}
    (saving,) = r["compute_saving"]
    assert saving["set"] == "echo-homo" and saving["best_shared"] in ("independent", "alternating", "joint")
    assert 0 < saving["param_ratio"] < 1  # one shared encoder vs three separate ones
    assert saving["time_ratio"] > 0
    assert "custom loop / model.fit" in md.read_text()
