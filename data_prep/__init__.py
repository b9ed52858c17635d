"""Data preparation shared by both papers: readers, phantoms, splits, tf.data pipelines.

Importing any package module first sets TensorFlow's CPU defaults (this module runs before
TensorFlow loads): oneDNN kernels. TensorFlow turns them on by default only on some Intel CPUs;
on the 2-core AMD EPYC we develop and run CI on, they made dense matmul 1.5× and the MT-UNet
training step 2× faster (benchmarks/README.md). ``TF_ENABLE_ONEDNN_OPTS=0`` in the environment
still turns them off.
"""
import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
