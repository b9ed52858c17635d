"""MT-UNet and its single-task and ablation relatives (MT-UNet Section 3.1, Figure 1).

One standard UNet: per level two 3×3 conv + BN + ReLU, 2×2 max-pooling down; up, ×2 upsampling
+ 3×3 conv + BN + ReLU, concatenation with the skip, two conv blocks (the authors' code; filters
64–1024 at the paper's width, ≈34.6 M parameters). Batch norm uses momentum 0.9, PyTorch's
default (0.1 in its convention) that the authors trained with; Keras' 0.99 leaves the moving
statistics far from the batch statistics in short runs. Outputs, keyed by task:

* ``saliency`` — :func:`ums_rep.heads.saliency_head` on the last decoder stage: a (H, W, 1) map
  softmax-normalised over all pixels;
* ``disease`` — :func:`ums_rep.heads.classification_head` on GAP(bottleneck) ⊕ GAP(top) →
  Dense(64) → Dropout(0.25) → Dense(C) softmax.

Variants: ``full`` (MT-UNet), ``bottleneck`` (MT-UNetB: bottleneck features only), ``top``
(MT-UNetT: last decoder stage only). :func:`unet_s` and :func:`unet_c` are the single-task UNets
(UNetS, UNetC) of Table 1. :func:`build` builds any model of the comparison by name, including
the baselines of :mod:`mt_unet.baselines`.
"""
from __future__ import annotations

import keras
from keras import layers

from mt_unet import baselines
from mt_unet.tasks import DISEASE, SALIENCY
from ums_rep.heads import classification_head, saliency_head
from ums_rep.layers import BatchNorm

VARIANTS = ("full", "bottleneck", "top")
PAPER_FILTERS = (64, 128, 256, 512, 1024)
BN_MOMENTUM = 0.9


def filters_for(base: int) -> tuple:
    """Five UNet widths ``base·(1, 2, 4, 8, 16)``; base 64 is the paper's."""
    return tuple(base * 2 ** i for i in range(5))


def _conv_block(x, filters: int, name: str):
    for i in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}.conv{i}")(x)
        x = BatchNorm(momentum=BN_MOMENTUM, name=f"{name}.bn{i}")(x)
        x = layers.ReLU(name=f"{name}.relu{i}")(x)
    return x


def unet_features(inputs, filters=PAPER_FILTERS):
    """The UNet body: returns ``(bottleneck, top)`` feature maps."""
    skips, x = [], inputs
    for i, f in enumerate(filters[:-1]):
        x = _conv_block(x, f, f"unet.down{i + 1}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"unet.pool{i + 1}")(x)
    bottleneck = x = _conv_block(x, filters[-1], "unet.bottleneck")
    for i, (f, skip) in enumerate(zip(reversed(filters[:-1]), reversed(skips))):
        name = f"unet.up{i + 1}"
        x = layers.UpSampling2D(2, name=f"{name}.upsample")(x)
        x = layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"{name}.conv0")(x)
        x = BatchNorm(momentum=BN_MOMENTUM, name=f"{name}.bn0")(x)
        x = layers.ReLU(name=f"{name}.relu0")(x)
        x = layers.Concatenate(name=f"{name}.concat")([skip, x])
        x = _conv_block(x, f, name)
    return bottleneck, x


def _check_shape(shape, filters):
    levels = len(filters) - 1
    if len(shape) != 3 or shape[0] % 2 ** levels or shape[1] % 2 ** levels:
        raise ValueError(f"UNet input {tuple(shape)}: height and width must be multiples of {2 ** levels} "
                         f"(e.g. 640×416), with one channel last")


def mt_unet(shape=(640, 416, 1), n_classes: int = 3, filters=PAPER_FILTERS, variant: str = "full",
            saliency: bool = True, classification: bool = True, name: str | None = None) -> keras.Model:
    """MT-UNet (``variant`` full / bottleneck / top). ``saliency``/``classification`` drop a
    task's output: UNetC and UNetS."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown MT-UNet variant {variant!r}; expected one of {VARIANTS}")
    if not (saliency or classification):
        raise ValueError("a model needs at least one output")
    _check_shape(shape, filters)
    inputs = keras.Input(shape, name="image")
    bottleneck, top = unet_features(inputs, filters)
    outputs = {}
    if saliency:
        outputs[SALIENCY] = saliency_head(top, SALIENCY, filters=filters[0], momentum=BN_MOMENTUM)
    if classification:
        feats = {"full": [bottleneck, top], "bottleneck": [bottleneck], "top": [top]}[variant]
        outputs[DISEASE] = classification_head(feats, n_classes, DISEASE, units=64, dropout=0.25)
    default = {"full": "mt_unet", "bottleneck": "mt_unet_b", "top": "mt_unet_t"}[variant]
    if not saliency:
        default = "unet_c"
    elif not classification:
        default = "unet_s"
    return keras.Model(inputs, outputs, name=name or default)


def unet_s(shape=(640, 416, 1), filters=PAPER_FILTERS) -> keras.Model:
    """UNetS: the UNet with the saliency output only."""
    return mt_unet(shape, filters=filters, classification=False)


def unet_c(shape=(640, 416, 1), n_classes: int = 3, filters=PAPER_FILTERS) -> keras.Model:
    """UNetC: the UNet with the classification output only (bottleneck ⊕ top features)."""
    return mt_unet(shape, n_classes, filters=filters, saliency=False)


# name -> (tasks it predicts, builder(shape, n_classes, base_filters, variant))
def _unet_family():
    return {
        "mtunet": ((SALIENCY, DISEASE), lambda s, c, b, v: mt_unet(s, c, filters_for(b), variant=v)),
        "unets": ((SALIENCY,), lambda s, c, b, v: unet_s(s, filters_for(b))),
        "unetc": ((DISEASE,), lambda s, c, b, v: unet_c(s, c, filters_for(b))),
    }


def models() -> dict:
    """Every model of the comparison: ``{name: (tasks, builder)}``."""
    return {**_unet_family(), **baselines.BASELINES}


def build(name: str, shape, n_classes: int = 3, base_filters: int = 64, variant: str = "full"):
    """``(model, tasks)`` for a model of the comparison by name."""
    table = models()
    if name not in table:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(table)}")
    tasks, builder = table[name]
    if variant != "full" and name != "mtunet":
        raise ValueError(f"--variant {variant} applies to mtunet only, not {name}")
    return builder(tuple(shape), n_classes, base_filters, variant), tasks
