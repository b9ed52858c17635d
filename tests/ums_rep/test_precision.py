"""Mixed precision (issue 19): policy choice, float32 outputs, loss parity with float32, and
models and checkpoints that load in either precision. Tiny shapes; every test leaves the global
policy at float32."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from mt_unet.model import mt_unet
from mt_unet.tasks import DISEASE, SALIENCY, TASKS
from ums_rep import precision
from ums_rep.backbones import cdae
from ums_rep.engine import Engine
from ums_rep.runs import load_model, save_model
from ums_rep.tasks import Task
from ums_rep.weighting import mtl

BF16_RTOL = 2e-2  # bfloat16 keeps 8 significant bits: a loss agrees with float32 to about 1%
FP16_RTOL = 5e-3  # float16 keeps 11
# after one update: Adam's first step moves every weight by ≈ lr·sign(g), so gradients near 0
# whose sign differs between precisions move weights apart (float16 saliency KLD: 1.2% measured)
AFTER_UPDATE_RTOL = 3e-2


@pytest.fixture(autouse=True)
def float32_policy():
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


def _hardware(monkeypatch, cpu=False, gpu=None):
    monkeypatch.setattr(precision, "cpu_bf16", lambda *a, **k: cpu)
    monkeypatch.setattr(precision, "gpu_capability", lambda: gpu)


@pytest.mark.parametrize("cpu, gpu, auto, mixed", [
    (False, None, "float32", "mixed_bfloat16"),  # no native bfloat16: auto stays float32
    (True, None, "mixed_bfloat16", "mixed_bfloat16"),  # AVX512-BF16 / AMX
    (False, (8, 0), "mixed_bfloat16", "mixed_bfloat16"),  # A100, H100
    (False, (7, 5), "mixed_float16", "mixed_float16"),  # T4: float16 tensor cores
    (False, (6, 1), "float32", "mixed_float16"),  # no 16-bit tensor cores
])
def test_choice_follows_the_hardware(monkeypatch, cpu, gpu, auto, mixed):
    _hardware(monkeypatch, cpu, gpu)
    assert precision.choose("auto")[0] == auto
    assert precision.choose("mixed")[0] == mixed
    assert precision.choose("float32")[0] == "float32"
    assert precision.set_precision("auto") == auto
    assert keras.mixed_precision.global_policy().name == auto
    with pytest.raises(ValueError, match="unknown precision"):
        precision.choose("half")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    with_bf16, without = tmp_path / "a", tmp_path / "b"
    with_bf16.write_text("processor : 0\nflags : fpu sse2 avx512f avx512_bf16 amx_tile\n")
    without.write_text("processor : 0\nflags : fpu sse2 avx2 avx512f\n")
    assert precision.cpu_bf16(with_bf16) and not precision.cpu_bf16(without)
    assert not precision.cpu_bf16(tmp_path / "missing")


def test_outputs_stay_float32_under_mixed():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = cdae((32, 32, 1), filters=(4, 4, 8, 8))
    assert model.get_layer("cdae.enc1.conv").compute_dtype == "bfloat16"
    assert model.output.dtype == "float32"
    assert model(np.zeros((1, 32, 32, 1), "float32")).dtype == tf.float32
    net = mt_unet((32, 32, 1), filters=(4, 8, 8, 8, 8))
    assert {k: v.dtype for k, v in net.output.items()} == {SALIENCY: "float32", DISEASE: "float32"}
    assert mtl("mtl1", SALIENCY, DISEASE).trainable_variables[0].dtype == tf.float32


def _cdae_setup(policy, weights):
    keras.mixed_precision.set_global_policy(policy)
    model = cdae((32, 32, 1), filters=(4, 8, 8, 16))
    model.set_weights(weights)
    task = Task("denoise", "reconstruction")
    return Engine("joint", {"denoise": model}, {"denoise": task}, {"joint": keras.optimizers.SGD(0.05)})


def _mt_unet_setup(policy, weights):
    keras.mixed_precision.set_global_policy(policy)
    net = mt_unet((32, 32, 1), filters=(4, 8, 8, 8, 8))
    net.get_layer(f"{DISEASE}.dropout").rate = 0.0  # the same forward pass in both precisions
    net.set_weights(weights)
    return Engine("joint", {"model": net}, dict(TASKS), {"joint": keras.optimizers.Adam(1e-3)},
                  weighting=mtl("mtl3", SALIENCY, DISEASE), joint_model=net)


def _batches():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 32, 32, 1)).astype("float32")
    clean = (x * 0.5).astype("float32")
    sal = rng.random((4, 32, 32, 1)).astype("float32")
    sal /= sal.sum(axis=(1, 2, 3), keepdims=True)
    label = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
    return ({"denoise": (tf.constant(x), {"clean": tf.constant(clean)})},
            (tf.constant(x), {"saliency": tf.constant(sal), "label": tf.constant(label)}))


def _two_steps(setup, weights, policy, batch):
    engine = setup(policy, weights)
    step = engine.step_fn("joint")
    return [{t: float(v) for t, v in step(batch).items()} for _ in range(2)]


@pytest.mark.parametrize("name", ["cdae", "mt_unet"])
@pytest.mark.parametrize("policy, rtol", [("mixed_bfloat16", BF16_RTOL), ("mixed_float16", FP16_RTOL)])
def test_mixed_step_matches_float32(name, policy, rtol):
    """From the same weights, a training step's losses agree with float32 to ``rtol`` relative
    (and the next step's, after the update, to ``AFTER_UPDATE_RTOL``); float16 runs through the
    loss-scaling optimizer."""
    keras.utils.set_random_seed(1)
    setup = {"cdae": _cdae_setup, "mt_unet": _mt_unet_setup}[name]
    ref_model = cdae((32, 32, 1), filters=(4, 8, 8, 16)) if name == "cdae" else mt_unet((32, 32, 1), filters=(4, 8, 8, 8, 8))
    weights = ref_model.get_weights()
    batch = _batches()[0 if name == "cdae" else 1]
    ref = _two_steps(setup, weights, "float32", batch)
    got = _two_steps(setup, weights, policy, batch)
    for step_ref, step_got, tol in zip(ref, got, (rtol, AFTER_UPDATE_RTOL)):
        for t in step_ref:
            assert np.isfinite(step_got[t])
            assert step_got[t] == pytest.approx(step_ref[t], rel=tol), (t, ref, got)
    if policy == "mixed_float16":
        keras.mixed_precision.set_global_policy(policy)
        engine = setup(policy, weights)
        assert isinstance(engine.optimizers["joint"], keras.optimizers.LossScaleOptimizer)


def test_mixed_model_loads_and_predicts_under_float32(tmp_path):
    x = np.random.default_rng(2).normal(size=(2, 32, 32, 1)).astype("float32")
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    mixed = cdae((32, 32, 1), filters=(4, 8, 8, 16))
    save_model(mixed, tmp_path / "mixed.keras")
    tf.train.Checkpoint(model=mixed).write(str(tmp_path / "ckpt"))
    mixed_pred = mixed.predict(x, verbose=0)

    keras.mixed_precision.set_global_policy("float32")
    loaded = load_model(tmp_path / "mixed.keras", expect="encoder")
    assert {layer.compute_dtype for layer in loaded.layers} == {"float32"}
    reference = cdae((32, 32, 1), filters=(4, 8, 8, 16))
    tf.train.Checkpoint(model=reference).read(str(tmp_path / "ckpt")).assert_existing_objects_matched()
    expected = reference.predict(x, verbose=0)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mixed_pred, expected, rtol=0.1, atol=0.05 * np.abs(expected).max())

    # and the other way: saved under float32, loaded (and restored) under mixed_bfloat16
    save_model(reference, tmp_path / "float32.keras")
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    back = load_model(tmp_path / "float32.keras")
    assert back.predict(x, verbose=0).dtype == np.float32
    np.testing.assert_allclose(back.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
    again = cdae((32, 32, 1), filters=(4, 8, 8, 16))
    tf.train.Checkpoint(model=again).read(str(tmp_path / "ckpt")).assert_existing_objects_matched()
    for a, b in zip(again.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_follow_policy_leaves_matching_models_alone():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = cdae((32, 32, 1), filters=(4, 8, 8, 16))
    assert precision.follow_policy(model) is model
    f32 = precision.follow_policy(model, "float32")
    assert f32 is not model  # (the input layer's policy is the global one; its tensor is float32)
    assert {layer.compute_dtype for layer in f32.layers[1:]} == {"float32"}


def test_every_training_command_takes_precision():
    from ums_rep.options import PRECISIONS
    from mt_unet import train
    from ums_rep import finetune, pretrain
    assert PRECISIONS == precision.MODES
    for command in (pretrain, finetune, train):
        assert command.build_parser().parse_args([]).precision == "float32"
        assert command.build_parser().parse_args(["--precision", "auto"]).precision == "auto"
        with pytest.raises(SystemExit):
            command.build_parser().parse_args(["--precision", "half"])


def test_a_run_records_the_policy_it_used(tmp_path, tmp_path_factory, monkeypatch):
    """``--precision mixed`` on a CPU trains in bfloat16 (emulated where the CPU lacks it), keeps
    the CDAE's output float32, and results.json says which policy ran."""
    import json

    from ums_rep.pretrain import main
    monkeypatch.setenv("UMS_REP_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    _hardware(monkeypatch, cpu=True)
    out = tmp_path / "cdae"
    assert main(["--backbone", "cdae", "--preset", "tiny", "--out", str(out), "--epochs", "1",
                 "--precision", "mixed", "--no-progress"]) == 0
    assert json.loads((out / "results.json").read_text())["config"]["precision"] == "mixed_bfloat16"
    assert json.loads((out / "args.json").read_text())["precision"] == "mixed"
    keras.mixed_precision.set_global_policy("float32")
    model = load_model(out / "model.keras")
    assert {layer.compute_dtype for layer in model.layers} == {"float32"}


def _saved_policies(path) -> set:
    import json
    import zipfile
    config = json.loads(zipfile.ZipFile(path).read("config.json"))
    found = set()

    def walk(o):
        if isinstance(o, dict):
            if o.get("class_name") == "DTypePolicy":
                found.add(o["config"]["name"])
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(config)
    return found


@pytest.mark.parametrize("command", ["pretrain", "mt_unet"])
def test_a_mixed_run_trains_in_mixed_precision(command, tmp_path, tmp_path_factory, monkeypatch):
    """What a run records is what it ran: the saved model's layers carry the mixed policy (MT-UNet's
    run once cleared the Keras session after choosing it, which resets the policy to float32)."""
    monkeypatch.setenv("UMS_REP_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    _hardware(monkeypatch, cpu=True)
    out = tmp_path / command
    if command == "pretrain":
        from ums_rep.pretrain import main
        assert main(["--backbone", "cdae", "--preset", "tiny", "--out", str(out), "--epochs", "1",
                     "--precision", "mixed", "--no-progress"]) == 0
        model = out / "model.keras"
    else:
        from mt_unet.train import main
        assert main(["--preset", "tiny", "--seeds", "1", "--epochs", "1", "--out", str(out),
                     "--precision", "mixed", "--no-progress"]) == 0
        model = next(out.glob("seed*/model.keras"))
    keras.mixed_precision.set_global_policy("float32")
    assert "mixed_bfloat16" in _saved_policies(model)


def test_grad_cam_under_mixed_is_float32():
    from ums_rep.derive import grad_cam
    from ums_rep.heads import classification_head

    def build():
        backbone = cdae((32, 32, 1), filters=(4, 8, 8, 16))
        feats = backbone.get_layer("cdae.enc4.relu").output
        return keras.Model(backbone.input, classification_head(feats, 2, "abnormal", units=8))

    x = np.random.default_rng(3).normal(size=(2, 32, 32, 1))
    keras.utils.set_random_seed(0)
    reference = build()
    want = grad_cam(reference, x, "cdae.enc4.relu")
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = build()
    model.set_weights(reference.get_weights())  # the same weights, computing in bfloat16
    assert model.get_layer("cdae.enc4.conv").compute_dtype == "bfloat16"
    heat = grad_cam(model, x, "cdae.enc4.relu")
    assert heat.dtype == np.float32 and heat.shape == (2, 32, 32) and np.isfinite(heat).all()
    # a heatmap, not a constant: each image's spans [0, 1] and marks a part of the image
    for h in (want, heat):
        assert h.max(axis=(1, 2)) == pytest.approx([1, 1])
        assert h.min(axis=(1, 2)) == pytest.approx([0, 0])
        assert (h.std(axis=(1, 2)) > 0.1).all() and ((h > 0.5).mean(axis=(1, 2)) < 0.9).all()
    # and float32's (bfloat16 keeps 8 significant bits: 1e-3 measured)
    np.testing.assert_allclose(heat, want, atol=0.05)
    assert all(np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99 for a, b in zip(heat, want))
