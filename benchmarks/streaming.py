"""fit on a data set larger than genvae holds in memory: the streaming path's images per second.

    python benchmarks/streaming.py [--images 2800000] [--workers 1] [--threads 2] [--steps 2000]

Writes MNIST's training images, tiled, into a memory-mapped ``.npy`` file of ``--images`` 8-bit
images (by default more bytes than ``genvae.data.dataset.IN_MEMORY_BYTES``, so ``fit`` streams it
through a ``DataLoader`` on its own), wraps it in a map-style ``Dataset`` that reads one image per
item, and trains the MLP VAE 784-400-20 at batch 128 on the first ``--steps`` batches of an epoch
(a ``Subset`` of the streamed set, which ``fit`` still streams: ``in_memory=False``), for two
epochs. For comparison the same images are trained on the device-resident path. Reported: the
second epoch's images per second (``EpochStats.images_per_second``) of each, round-robin over
``--rounds``, medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from genvae import VAE
from genvae.data import ImageDataset, load_mnist
from genvae.data.dataset import IN_MEMORY_BYTES
from genvae.likelihoods import Bernoulli
from genvae.nets import MLPDecoder, MLPEncoder
from genvae.priors import StandardNormal
from genvae.train import fit

RESULTS = Path(__file__).with_name("results") / "streaming.json"


class MemmapImages(torch.utils.data.Dataset):
    """Items ``(image (1, 28, 28) uint8, label)`` read one at a time from memory-mapped ``.npy`` files."""

    def __init__(self, images: Path, labels: Path) -> None:
        self.images_path, self.labels_path = images, labels
        self.images = np.load(images, mmap_mode="r")
        self.labels = np.load(labels, mmap_mode="r")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(np.array(self.images[i])), int(self.labels[i])


def write_files(folder: Path, n: int) -> tuple[Path, Path]:
    train = load_mnist("train")
    images, labels = folder / "x.npy", folder / "y.npy"
    x = np.lib.format.open_memmap(images, mode="w+", dtype=np.uint8, shape=(n, 1, 28, 28))
    src = train.images.numpy()
    for i in range(0, n, len(src)):
        m = min(len(src), n - i)
        x[i : i + m] = src[:m]
    x.flush()
    np.save(labels, np.resize(train.labels.numpy(), n))
    return images, labels


def model() -> VAE:
    torch.manual_seed(0)
    return VAE(MLPEncoder((1, 28, 28), 20), MLPDecoder(20, (1, 28, 28)), Bernoulli(), StandardNormal(20))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2_800_000)
    p.add_argument("--steps", type=int, default=2000, help="batches of 128 per timed epoch")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="genvae-stream-") as tmp:
        images, labels = write_files(Path(tmp), args.images)
        data = MemmapImages(images, labels)
        size = len(data) * 784
        subset = torch.utils.data.Subset(data, range(args.steps * 128))
        held = ImageDataset.from_tensors(torch.from_numpy(np.array(data.images[: args.steps * 128])))
        rates: dict[str, list[float]] = {"streamed": [], "device-resident": []}
        for _ in range(args.rounds):
            for name, source, options in (
                ("streamed", subset, {"in_memory": False, "num_workers": args.workers}),
                ("device-resident", held, {}),
            ):
                result = fit(model(), source, epochs=2, batch_size=128, device="cpu", progress=False, **options)
                rates[name].append(result.history[-1].images_per_second)  # the second epoch's loop
    record = {
        "data_bytes": size,
        "in_memory_limit_bytes": IN_MEMORY_BYTES,
        "images": args.images,
        "timed_images_per_epoch": args.steps * 128,
        "workers": args.workers,
        "threads": args.threads,
        "images_per_second": {k: statistics.median(v) for k, v in rates.items()},
        "rounds": rates,
        "model": "MLP VAE 784-400-20, batch 128, fit eager; the second epoch's training loop",
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
