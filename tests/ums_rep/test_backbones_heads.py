"""Backbones and heads: names, shapes, serialisation, training, and heads attached to backbones."""
import numpy as np
import pytest
import tensorflow as tf

import keras
from tests.helpers import check_builder
from ums_rep.backbone_registry import get as backbone
from ums_rep.backbones import cdae, echo_encoder, encoder
from ums_rep.heads import classification_head, saliency_head, segmentation_head


def test_cdae_builder(tmp_path):
    model = cdae((64, 64, 1))
    check_builder(model, (64, 64, 1), {"cdae.enc1.relu": (32, 32, 32), "cdae.enc4.relu": (4, 4, 256),
                                       "cdae.out": (64, 64, 1)}, tmp_path)
    assert model.count_params() == 786_881  # paper: 800,067 (see ums_rep.backbones)
    strides = [model.get_layer(f"cdae.enc{i}.conv").strides for i in range(1, 5)]
    assert strides == [(2, 2)] * 4
    assert not any(isinstance(l, keras.layers.MaxPooling2D) for l in model.layers)


def test_cdae_rejects_bad_shapes():
    with pytest.raises(ValueError, match="multiple of 16"):
        cdae((60, 60, 1))
    with pytest.raises(ValueError, match="four encoder widths"):
        cdae((64, 64, 1), filters=(8, 16))


def test_echo_encoder_builder(tmp_path):
    """The paper's encoder (Section 4.2): six 3×3 "same" convolutions without stride, ReLU,
    dilation 2 in layers 4–6, GAP → FC → Dropout(0.5) → FC(3); 460,115 parameters reported."""
    model = echo_encoder((64, 64, 1))
    check_builder(model, (64, 64, 1), {"echo.conv6.relu": (64, 64, 128), "echo.flow.out": (3,)}, tmp_path,
                  loss_fn=lambda p: keras.losses.categorical_crossentropy(tf.one_hot([0, 2], 3), p))
    assert model.count_params() == 458_563  # paper: 460,115 (0.34% more; see ums_rep.backbones)
    convs = [model.get_layer(f"echo.conv{i}.conv") for i in range(1, 7)]
    assert [c.dilation_rate for c in convs] == [(1, 1)] * 3 + [(2, 2)] * 3
    assert [c.strides for c in convs] == [(1, 1)] * 6 and all(c.kernel_size == (3, 3) for c in convs)
    assert not any(isinstance(l, (keras.layers.MaxPooling2D, keras.layers.BatchNormalization)) for l in model.layers)
    assert model.get_layer("echo.flow.dropout").rate == 0.5
    fast = echo_encoder((64, 64, 1), strides=2)  # the CPU presets: same parameters, quarter resolution
    assert fast.count_params() == model.count_params()
    assert tuple(fast.get_layer("echo.conv6.relu").output.shape[1:]) == (16, 16, 128)


def test_classification_head_size_is_close_to_the_papers():
    """Tables 4–10 report 295,715 parameters per classification head; on the CDAE's 256 channels a
    1,024-unit FC gives 265,218 (the nearest power of two; ums_rep.backbone_registry.DEFAULT_HEADS)."""
    from ums_rep.backbone_registry import DEFAULT_HEADS
    inp = keras.Input((4, 4, 256))
    head = keras.Model(inp, classification_head(inp, 2, name="cls", units=DEFAULT_HEADS["head_units"]))
    assert head.count_params() == 265_218
    assert abs(head.count_params() / 295_715 - 1) < 0.11


@pytest.mark.parametrize("kernel,dilation,dropout", [(5, 3, 0.1), (7, 2, 0.3)])
def test_echo_search_space(kernel, dilation, dropout):
    model = echo_encoder((32, 32, 1), kernel_size=kernel, dilation=dilation, dropout=dropout)
    conv4 = model.get_layer("echo.conv4.conv")
    assert conv4.kernel_size == (kernel, kernel) and conv4.dilation_rate == (dilation, dilation)
    assert model.get_layer("echo.flow.dropout").rate == dropout
    with pytest.raises(ValueError):
        echo_encoder((32, 32, 1), kernel_size=4)


@pytest.mark.parametrize("kind,shape,filters,steps", [("cdae", (64, 64, 1), (32, 64, 128, 256), None),
                                                       ("echo", (64, 64, 1), (32, 64, 64, 128, 128, 128), 2)])
def test_heads_attach_to_each_backbone(kind, shape, filters, steps, tmp_path):
    keras.utils.set_random_seed(0)
    source = cdae(shape) if kind == "cdae" else echo_encoder(shape, strides=2)
    enc = encoder(source, kind)
    assert encoder(source).layers[-1] is enc.layers[-1]  # kind None: found by its feature layer
    feats = enc.output
    outputs = {"cls": classification_head(feats, 2, name="cls"),
               "seg": segmentation_head(feats, filters, name="seg", steps=steps),
               "sal": saliency_head(feats, name="sal")}
    model = keras.Model(enc.inputs, outputs)
    x = np.random.default_rng(1).normal(size=(2, *shape)).astype("float32")
    out = model(x)
    assert out["cls"].shape == (2, 2) and np.allclose(out["cls"].numpy().sum(1), 1, atol=1e-5)
    assert out["seg"].shape == (2, *shape[:2], 1) and (0 <= out["seg"].numpy()).all() and (out["seg"].numpy() <= 1).all()
    np.testing.assert_allclose(out["sal"].numpy().sum(axis=(1, 2, 3)), 1.0, atol=1e-5)
    check_builder(model, shape, {"cls.out": (2,), "seg.out": (*shape[:2], 1)}, tmp_path)
    # heads share the backbone's encoder weights
    conv = backbone(kind).feature_layer.replace(".relu", ".conv")
    assert model.get_layer(conv) is source.get_layer(conv)


def test_lambda_layers_are_refused(tmp_path):
    from ums_rep.runs import load_model, save_model
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Lambda(lambda t: t * 2)(inp))
    save_model(model, tmp_path / "evil.keras")
    with pytest.raises(ValueError, match="(?i)lambda|safe_mode"):
        load_model(tmp_path / "evil.keras")


def test_a_run_folders_backbone_is_read_from_its_files_first(tmp_path):
    """``backbone_registry.of_run``: model_config.json's backbone, else args.json's ``--backbone``,
    else the feature layer the model has; one ValueError naming an unreadable args.json."""
    import json

    from ums_rep import backbone_registry, model_config
    from ums_rep.tasks import Task
    inp = keras.Input((8, 8, 1))
    cdae_looking = keras.Model(inp, keras.layers.Activation("relu", name=backbone("cdae").feature_layer)(inp))
    assert backbone_registry.of_run(tmp_path, cdae_looking).name == "cdae"  # no files: the feature layer
    (tmp_path / "args.json").write_text(json.dumps({"backbone": "echo"}))
    assert backbone_registry.of_run(tmp_path, cdae_looking).name == "echo"  # the older runs' args.json
    config = model_config.describe("ums_rep.pretrain", "pretrain", backbone("cdae"), (8, 8, 1),
                                   {"denoise": Task("denoise", "reconstruction")}, [model_config.fold_entry(None, "normalizer.json", {"model.keras": {"denoise": None}})])
    model_config.write(tmp_path, config)
    (tmp_path / "args.json").write_text(json.dumps({"backbone": "echo"}))
    assert backbone_registry.of_run(tmp_path, cdae_looking).name == "cdae"  # model_config.json first
    (tmp_path / model_config.FILE).unlink()
    (tmp_path / "args.json").write_text("{not json")
    with pytest.raises(ValueError, match="args.json: cannot read"):
        backbone_registry.of_run(tmp_path, cdae_looking)
