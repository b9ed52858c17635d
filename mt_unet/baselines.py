"""The other models of MT-UNet's benchmark (MT-UNet Section 5.1, Tables 1–2).

Classifiers come from ``keras.applications`` with ``weights=None`` and a one-channel input
(no ImageNet download; our images are mean-normalised grey levels): ResNet50,
InceptionResNetV2 (needs ≥ 75 px per side) and EfficientNetV2-S (its built-in rescaling is
switched off). Each ends in global average pooling and a Dense softmax.

Saliency models are written from their papers' descriptions, with VGG16-style blocks whose width
scales with ``base`` (64 = VGG16, the paper preset; quick 8 and tiny 4, so they train on a CPU). No
pretrained encoders exist offline here, so all start from random weights, as MT-UNet does:

* ``simplenet`` — SimpleNet (Reddy et al., ICPR 2020): a VGG16 encoder and a light decoder of
  ×2 bilinear upsampling + one 3×3 conv + ReLU per stage, no skip connections;
* ``msinet`` — MSINet (Kroner et al., Neural Networks 2020): a VGG16 encoder whose last two
  pooling strides are removed (block 5 dilated by 2), the outputs of blocks 3–5 concatenated,
  an ASPP module (1×1 conv, 3×3 convs dilated 4, 8, 12 and image pooling), and a decoder of
  three ×2 upsampling + 3×3 conv stages;
* ``vggssm`` — a VGG-based saliency model: the VGG16 encoder and a decoder that mirrors it
  block by block (3, 3, 3, 2, 2 convolutions after each ×2 upsampling). The MT-UNet paper names
  it without an architecture; this symmetric form is our reading.

Every saliency output is resized to the input and softmax-normalised over all pixels
(:class:`ums_rep.heads.SpatialSoftmax`), like MT-UNet's, so the same KLD loss and metrics apply.
"""
from __future__ import annotations

import keras
from keras import layers

from ums_rep.heads import SpatialSoftmax
from mt_unet.tasks import DISEASE, SALIENCY

VGG_BLOCKS = (2, 2, 3, 3, 3)


# --------------------------------------------------------------------------- classifiers

def _application(app_name: str, shape, n_classes: int, **kwargs) -> keras.Model:
    app = getattr(keras.applications, app_name)
    min_side = 75 if app_name == "InceptionResNetV2" else 32
    if min(shape[:2]) < min_side:
        raise ValueError(f"{app_name} needs inputs of at least {min_side}×{min_side} px; got {tuple(shape[:2])} "
                         "(use a larger --shape or preset)")
    inputs = keras.Input(shape, name="image")
    base = app(weights=None, include_top=False, input_shape=tuple(shape), pooling="avg", **kwargs)
    out = layers.Dense(n_classes, activation="softmax", name=f"{DISEASE}.out", dtype="float32")(base(inputs))
    return keras.Model(inputs, {DISEASE: out}, name=app_name.lower())


def resnet50(shape, n_classes: int = 3) -> keras.Model:
    return _application("ResNet50", shape, n_classes)


def inception_resnet_v2(shape, n_classes: int = 3) -> keras.Model:
    return _application("InceptionResNetV2", shape, n_classes)


def efficientnet_v2s(shape, n_classes: int = 3) -> keras.Model:
    return _application("EfficientNetV2S", shape, n_classes, include_preprocessing=False)


# --------------------------------------------------------------------------- saliency models

def _conv(x, filters, name, dilation=1, kernel=3):
    return layers.Conv2D(filters, kernel, padding="same", dilation_rate=dilation, activation="relu", name=name)(x)


def vgg_encoder(inputs, base: int = 64, dilate_last: bool = False):
    """VGG16's five blocks (2, 2, 3, 3, 3 convs; widths base·(1, 2, 4, 8, 8)), each followed by
    2×2 max-pooling; returns every block's output. ``dilate_last`` (MSINet) keeps stride 8:
    block 4's pooling has stride 1 and block 5 is dilated by 2, with no pooling after it."""
    widths = (base, 2 * base, 4 * base, 8 * base, 8 * base)
    outs, x = [], inputs
    for b, (n, w) in enumerate(zip(VGG_BLOCKS, widths), start=1):
        for i in range(n):
            x = _conv(x, w, f"vgg.block{b}.conv{i + 1}", dilation=2 if (dilate_last and b == 5) else 1)
        outs.append(x)
        if dilate_last and b >= 4:
            if b == 4:
                x = layers.MaxPooling2D(3, strides=1, padding="same", name=f"vgg.block{b}.pool")(x)
        else:
            x = layers.MaxPooling2D(2, name=f"vgg.block{b}.pool")(x)
    return outs, x


def _saliency_output(x, shape, name: str) -> keras.Model:
    x = layers.Conv2D(1, 1, name=f"{SALIENCY}.logits", dtype="float32")(x)
    if tuple(x.shape[1:3]) != tuple(shape[:2]):
        x = layers.Resizing(shape[0], shape[1], interpolation="bilinear", name=f"{SALIENCY}.resize",
                            dtype="float32")(x)
    return SpatialSoftmax(name=f"{SALIENCY}.out", dtype="float32")(x)


def simplenet(shape, base: int = 64) -> keras.Model:
    inputs = keras.Input(shape, name="image")
    _, x = vgg_encoder(inputs, base)
    widths = (8 * base, 4 * base, 2 * base, base, base // 2)
    for i, w in enumerate(widths, start=1):
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"dec{i}.upsample")(x)
        x = _conv(x, w, f"dec{i}.conv")
    return keras.Model(inputs, {SALIENCY: _saliency_output(x, shape, "simplenet")}, name="simplenet")


def msinet(shape, base: int = 64) -> keras.Model:
    inputs = keras.Input(shape, name="image")
    outs, _ = vgg_encoder(inputs, base, dilate_last=True)
    b3 = layers.MaxPooling2D(2, name="msi.block3.pool")(outs[2])  # block 3 at stride 8, as 4 and 5
    x = layers.Concatenate(name="msi.concat")([b3, outs[3], outs[4]])
    aspp_w = 4 * base
    branches = [_conv(x, aspp_w, "aspp.conv1x1", kernel=1)]
    branches += [_conv(x, aspp_w, f"aspp.rate{r}", dilation=r) for r in (4, 8, 12)]
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="aspp.pool")(x)
    pooled = _conv(pooled, aspp_w, "aspp.pool.conv", kernel=1)
    pooled = layers.UpSampling2D(size=tuple(x.shape[1:3]), name="aspp.pool.upsample")(pooled)
    x = layers.Concatenate(name="aspp.concat")(branches + [pooled])
    x = _conv(x, aspp_w, "aspp.project", kernel=1)
    for i, w in enumerate((2 * base, base, base // 2), start=1):
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"dec{i}.upsample")(x)
        x = _conv(x, w, f"dec{i}.conv")
    return keras.Model(inputs, {SALIENCY: _saliency_output(x, shape, "msinet")}, name="msinet")


def vggssm(shape, base: int = 64) -> keras.Model:
    inputs = keras.Input(shape, name="image")
    _, x = vgg_encoder(inputs, base)
    widths = (8 * base, 8 * base, 4 * base, 2 * base, base)
    for b, (n, w) in enumerate(zip(reversed(VGG_BLOCKS), widths), start=1):
        x = layers.UpSampling2D(2, name=f"dec{b}.upsample")(x)
        for i in range(n):
            x = _conv(x, w, f"dec{b}.conv{i + 1}")
    return keras.Model(inputs, {SALIENCY: _saliency_output(x, shape, "vggssm")}, name="vggssm")


# name -> (tasks, builder(shape, n_classes, base_filters, variant)) for mt_unet.model.build
BASELINES = {
    "resnet50": ((DISEASE,), lambda s, c, b, v: resnet50(s, c)),
    "inceptionresnetv2": ((DISEASE,), lambda s, c, b, v: inception_resnet_v2(s, c)),
    "efficientnetv2s": ((DISEASE,), lambda s, c, b, v: efficientnet_v2s(s, c)),
    "simplenet": ((SALIENCY,), lambda s, c, b, v: simplenet(s, b)),
    "msinet": ((SALIENCY,), lambda s, c, b, v: msinet(s, b)),
    "vggssm": ((SALIENCY,), lambda s, c, b, v: vggssm(s, b)),
}
