"""Data preparation shared by both papers: readers, phantoms, splits, tf.data pipelines.

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
