"""A training process for the run-folder tests, killed for real by them.

``python fit_worker.py OUT EPOCHS [--resume] [--slow]`` trains the small model below on synthetic
digits into run folder OUT; ``--slow`` sleeps after each epoch, so a test can act while it holds
the folder's lock. ``$GENVAE_CRASH_AT`` (see genvae.runfolder) kills it at a named point.
"""

from __future__ import annotations

import sys
import time

import torch

from genvae import VAE
from genvae.data import ImageDataset, synthetic_digits
from genvae.likelihoods import Bernoulli
from genvae.nets import MLPDecoder, MLPEncoder
from genvae.priors import StandardNormal
from genvae.train import fit

SHAPE = (1, 28, 28)
OPTIONS = {"batch_size": 64, "device": "cpu", "progress": False}


def small_vae(seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    return VAE(MLPEncoder(SHAPE, 4, hidden=(32,)), MLPDecoder(4, SHAPE, hidden=(32,)), Bernoulli(), StandardNormal(4))


def train_set() -> ImageDataset:
    return synthetic_digits(256, seed=0)


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    out, epochs = argv[0], int(argv[1])
    callbacks = [lambda stats, model: time.sleep(0.5)] if "--slow" in argv else []
    fit(small_vae(), train_set(), epochs=epochs, out=out, resume="--resume" in argv, callbacks=callbacks, **OPTIONS)


if __name__ == "__main__":
    main(sys.argv[1:])
