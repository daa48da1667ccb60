"""Metrics for trained models: likelihood bounds, reconstruction quality, sample quality.

``evaluate_elbo`` and ``iw_nll`` need only torch; SSIM and FID need the ``genvae[metrics]``
extra (torchmetrics). genvae's FID uses the features of a classifier trained for the data set (MNIST's,
or one trained on first use for any labelled image set) and is not comparable with Inception-FID
numbers.
"""

from .classifier import (
    MIN_ACCURACY,
    ImageClassifier,
    MNISTClassifier,
    accuracy,
    classifier_for,
    conditional_accuracy,
    mnist_classifier,
    train_classifier,
)
from .fid import fid, sample_fid
from .image import ReconstructionMetrics, mse, reconstruction_metrics, ssim
from .likelihood import (
    IW_COMPILE_SAMPLES,
    ELBOSummary,
    IWSummary,
    eval_batches,
    evaluate_elbo,
    evaluate_iw_nll,
    evaluating,
    iw_nll,
    native_bf16,
)

__all__ = [
    "IW_COMPILE_SAMPLES",
    "MIN_ACCURACY",
    "ELBOSummary",
    "IWSummary",
    "ImageClassifier",
    "MNISTClassifier",
    "ReconstructionMetrics",
    "accuracy",
    "classifier_for",
    "conditional_accuracy",
    "eval_batches",
    "evaluate_elbo",
    "evaluate_iw_nll",
    "evaluating",
    "fid",
    "iw_nll",
    "mnist_classifier",
    "mse",
    "native_bf16",
    "reconstruction_metrics",
    "sample_fid",
    "ssim",
    "train_classifier",
]
