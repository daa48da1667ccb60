"""Data: MNIST without a network, the in-memory data set, a synthetic digit set and a
device-resident loader, one module each.

* [`load_mnist`][genvae.data.mnist.load_mnist] returns MNIST as an
  [`ImageDataset`][genvae.data.dataset.ImageDataset] of uint8 pixels, fetched and verified offline
  where torchvision's download fails.
* [`synthetic_digits`][genvae.data.synthetic.synthetic_digits] draws a small labelled image set.
* [`BatchLoader`][genvae.data.loader.BatchLoader] keeps a whole split as one float tensor on the
  device and yields shuffled ``(x, y)`` batches with one gather each; with ``world_size > 1`` each
  rank gets its own shard.
"""

from .dataset import AnyData, Binarize, ImageDataset, as_dataset
from .loader import BatchLoader, StreamingLoader
from .mnist import MNIST_MD5, cache_dir, fetch_mnist, load_mnist
from .synthetic import synthetic_digits

__all__ = [
    "AnyData",
    "BatchLoader",
    "Binarize",
    "ImageDataset",
    "StreamingLoader",
    "as_dataset",
    "MNIST_MD5",
    "cache_dir",
    "fetch_mnist",
    "load_mnist",
    "synthetic_digits",
]
