"""MT-UNet: one UNet for gaze saliency and chest X-ray disease classification, uncertainty-weighted (MTL1-3)."""
import data_prep  # noqa: F401  (TensorFlow CPU defaults, set before TensorFlow loads)
