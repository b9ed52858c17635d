"""How MT-UNet's tables name the models they compare (MT-UNet Tables 1–3): one home for the
labels that run folders, comparison tables and the claims registry share. Light on purpose (no
TensorFlow), so that the report and the claims can use it."""
from __future__ import annotations

NAMES = {"unets": "UNetS", "unetc": "UNetC", "resnet50": "ResNet50", "inceptionresnetv2": "InceptionResNetV2",
         "efficientnetv2s": "EfficientNetV2-S", "simplenet": "SimpleNet", "msinet": "MSINet", "vggssm": "VGGSSM"}
AUTHORS_LOSS = "authors' loss"  # the label's mark of --loss-form authors


def label(model: str, variant: str = "full", scheme: str = "mtl3", loss_form: str = "paper") -> str:
    """The model's name as the paper's tables write it: ``MT-UNet (MTL3)``, ``MT-UNetB (MTL3)``,
    ``UNetC``; MT-UNet trained with the authors' saliency term (``--loss-form authors``) is
    ``MT-UNet (MTL3, authors' loss)``, so that it never stands in for the paper's model.

    Args:
        model: a name of :func:`mt_unet.model.models` (``mtunet``, ``unetc``, ``resnet50`` ...).
        variant: ``full``, ``bottleneck`` or ``top`` (MT-UNet only).
        scheme: the loss weighting (``mtl1``-``mtl3``, ``dwa``; MT-UNet only).
        loss_form: ``paper`` or ``authors`` (MT-UNet only).

    Returns:
        The label."""
    if model == "mtunet":
        suffix = {"full": "", "bottleneck": "B", "top": "T"}[variant]
        extra = f", {AUTHORS_LOSS}" if loss_form != "paper" else ""
        return f"MT-UNet{suffix} ({scheme.upper()}{extra})"
    return NAMES.get(model, model)
