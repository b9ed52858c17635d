"""Data preparation shared by both papers: readers, phantoms, splits, tf.data pipelines.

Commands: ``prepare`` (library :mod:`data_prep.preparation`) and ``phantoms``
(``data_prep/phantoms/__main__.py``; :mod:`data_prep.phantoms.layouts`).

Layout (docs/extending.md, "Commands and libraries"; ``tests/test_layout.py`` enforces it): every
command is a thin ``<verb>.py`` shell — ``build_parser()``, ``main(argv)`` and an ``if __name__ ==
"__main__"`` guard — that parses its arguments and calls one library module named for what it
holds (a noun); no other module has a ``__main__`` guard, and no library is named as a command.

Importing any package module first sets TensorFlow's CPU defaults (this module runs before
TensorFlow loads): oneDNN kernels. TensorFlow turns them on by default only on some Intel CPUs;
on the 2-core AMD EPYC we develop and run CI on, they took dense matmul from 102 to 150 GFLOP/s
and MT-UNet quick's custom-loop training from 34.8 to 70.2 images/s (measured with and without). ``TF_ENABLE_ONEDNN_OPTS=0`` in the environment
still turns them off.

TensorFlow's C++ INFO lines are off too (``TF_CPP_MIN_LOG_LEVEL=1``; its warnings and errors
still show; ``TF_CPP_MIN_LOG_LEVEL=0`` in the environment brings the INFO lines back). The oneDNN
notice ignores that level and TensorFlow prints it once per native library it loads, i.e. twice;
the commands load TensorFlow through :func:`data_prep.cli.import_tensorflow`, which prints it once.
"""
import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
