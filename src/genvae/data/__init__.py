"""Data: the sources (MNIST without a network, Fashion-MNIST, KMNIST, EMNIST, CIFAR-10, the user's
files), the in-memory data set, the loaders and a synthetic digit set, one module each.

* [`load_data`][genvae.data.sources.load_data] loads a data set by name, or a user's file or image
  folder by path; each named source registers itself (``@register("data", name)``).
* [`load_mnist`][genvae.data.mnist.load_mnist] returns MNIST as an
  [`ImageDataset`][genvae.data.dataset.ImageDataset] of uint8 pixels, fetched and verified offline
  where torchvision's download fails.
* [`synthetic_digits`][genvae.data.synthetic.synthetic_digits] draws a small labelled image set.
* [`BatchLoader`][genvae.data.loader.BatchLoader] keeps a whole split as one float tensor on the
  device and yields shuffled ``(x, y)`` batches with one gather each; with ``world_size > 1`` each
  rank gets its own shard.
"""

from .cifar import load_cifar10
from .dataset import AnyData, Binarize, ImageDataset, as_dataset
from .files import load_file, load_file_split
from .loader import BatchLoader, StreamingLoader
from .mnist import MNIST_MD5, cache_dir, fetch_mnist, load_mnist
from .mnist_like import EMNIST_BALANCED, FASHION_MNIST, KMNIST, load_idx_images
from .sources import datasets, load_data
from .synthetic import synthetic_digits

__all__ = [
    "EMNIST_BALANCED",
    "FASHION_MNIST",
    "KMNIST",
    "AnyData",
    "BatchLoader",
    "Binarize",
    "ImageDataset",
    "StreamingLoader",
    "as_dataset",
    "MNIST_MD5",
    "cache_dir",
    "datasets",
    "fetch_mnist",
    "load_cifar10",
    "load_data",
    "load_file",
    "load_file_split",
    "load_idx_images",
    "load_mnist",
    "synthetic_digits",
]
