"""MT-UNet's tiny / quick / paper presets (Section 3), registered as the ``mt_unet`` stage of
:mod:`ums_rep.presets` (whose docstring says what each name means); ``image`` is (H, W), and
training stops where :mod:`mt_unet.schedule` says (there is no ``stop``).
"""
from __future__ import annotations

from ums_rep import presets

STAGE = "mt_unet"
MT_UNET = {
    "tiny": {"image": (64, 48), "base": 4, "epochs": 2, "batch": 4, "lr_patience": 1, "lr": 1e-3, "seeds": 1,
             "n": 40, "phantom_size": 96},
    "quick": {"image": (96, 64), "base": 8, "epochs": 20, "batch": 8, "lr_patience": 3, "lr": 1e-3, "seeds": 3,
              "n": 300, "phantom_size": 256},
    "paper": {"image": (640, 416), "base": 64, "epochs": 500, "batch": 6, "lr_patience": 40, "lr": 1e-4, "seeds": 5,
              "n": 1083, "phantom_size": 640},
}
presets.register(STAGE, MT_UNET)


def preset(name: str, **overrides) -> dict:
    """A copy of MT-UNet's preset ``name`` with the overrides that are not None in place
    (:func:`ums_rep.presets.preset` of the ``mt_unet`` stage).

    Args:
        name: ``"tiny"``, ``"quick"`` or ``"paper"``.
        **overrides: Values to use instead of the preset's; None leaves the preset's.

    Returns:
        A new dict: the entry with the overrides applied.
    """
    return presets.preset(name, STAGE, **overrides)
