"""UMS-Rep: a shared modality-specific representation fine-tuned for many tasks (Hassan et al.),
and the framework both papers share (models, the training loop, options, runs, the report).

Commands: ``pretrain`` (library :mod:`ums_rep.pretraining`), ``finetune`` (:mod:`ums_rep.experiment`),
``scan`` (:mod:`ums_rep.scanning`), ``denoise`` (:mod:`ums_rep.denoising`), ``predict``
(:mod:`ums_rep.inference`), ``report`` (:mod:`ums_rep.reporting`) and ``plan``
(:mod:`ums_rep.reproduce_plan`).

Layout (docs/extending.md, "Commands and libraries"; ``tests/test_layout.py`` enforces it): every
command is a thin ``<verb>.py`` shell — ``build_parser()``, ``main(argv)`` and an ``if __name__ ==
"__main__"`` guard — that parses its arguments and calls one library module named for what it
holds (a noun); no other module has a ``__main__`` guard, and no library is named as a command.
"""
__version__ = "0.1.0"  # setup.cfg reads it

import data_prep  # noqa: F401  (TensorFlow CPU defaults, set before TensorFlow loads)
