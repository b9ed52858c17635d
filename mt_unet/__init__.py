"""MT-UNet: one UNet for gaze saliency and chest X-ray disease classification, uncertainty-weighted (MTL1-3).

Commands: ``train`` (library :mod:`mt_unet.experiment`) and ``evaluate`` (:mod:`mt_unet.scoring`).

Layout (docs/extending.md, "Commands and libraries"; ``tests/test_layout.py`` enforces it): every
command is a thin ``<verb>.py`` shell — ``build_parser()``, ``main(argv)`` and an ``if __name__ ==
"__main__"`` guard — that parses its arguments and calls one library module named for what it
holds (a noun); no other module has a ``__main__`` guard, and no library is named as a command.
"""
import data_prep  # noqa: F401  (TensorFlow CPU defaults, set before TensorFlow loads)
