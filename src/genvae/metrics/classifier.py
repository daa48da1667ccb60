"""The image classifiers behind genvae's FID and conditional accuracy.

A LeNet-style convnet sized from the data shape: conv C→32 (5×5) · pool · conv 32→64 (5×5) · pool ·
fc →128 · fc 128→classes. Its 128 penultimate features define genvae's FID on that data set.
[`mnist_classifier`][genvae.metrics.classifier.mnist_classifier] trains it on the MNIST training
split on first use, checks that its test accuracy is at least
[`MIN_ACCURACY`][genvae.metrics.classifier.MIN_ACCURACY], and caches it with its SHA-256;
[`classifier_for`][genvae.metrics.classifier.classifier_for] does the same for any labelled image
data set, cached by the checksum of its training data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from torch import Tensor, nn

from .._checks import positive_int, shape_tuple
from .._files import atomic_path, write_json
from ..data import BatchLoader, ImageDataset, cache_dir, load_mnist
from ..protocols import LatentVariableModel

__all__ = [
    "MIN_ACCURACY",
    "ImageClassifier",
    "MNISTClassifier",
    "classifier_for",
    "accuracy",
    "conditional_accuracy",
    "mnist_classifier",
    "train_classifier",
]

log = logging.getLogger("genvae.metrics")

MIN_ACCURACY = 0.99
"""The cached MNIST classifier must reach this accuracy on the MNIST test set."""
_EPOCHS = 4  # Adam 1e-3 then 1e-4 for the last epoch: 99.0–99.3 % on MNIST test


class ImageClassifier(nn.Module):
    """LeNet-style classifier of ``(B, C, H, W)`` images in [0, 1] (H, W ≥ 16).

    Args:
        num_classes: number of classes.
        data_shape: ``(C, H, W)`` of one image; MNIST's by default.

    Attributes:
        num_features: width of [`features`][genvae.metrics.classifier.ImageClassifier.features]
            (128), as torchmetrics' FID expects of a custom extractor.
    """

    num_features = 128

    def __init__(self, num_classes: int = 10, data_shape: tuple[int, ...] = (1, 28, 28)) -> None:
        super().__init__()
        self.num_classes = positive_int("num_classes", num_classes)
        self.data_shape = shape_tuple("data_shape", data_shape)
        if len(self.data_shape) != 3 or min(self.data_shape[1:]) < 16:
            raise ValueError(f"expected data_shape (C, H, W) with H, W >= 16, got {self.data_shape}")
        c, h, w = self.data_shape
        side = lambda n: ((n - 4) // 2 - 4) // 2  # noqa: E731 - two (5×5 conv, 2×2 pool) stages
        self.body = nn.Sequential(
            nn.Conv2d(c, 32, 5), nn.ReLU(), nn.MaxPool2d(2),  # (B, 32, (H-4)/2, (W-4)/2)
            nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2),  # (B, 64, 4, 4) for MNIST
            nn.Flatten(), nn.Linear(64 * side(h) * side(w), self.num_features), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(self.num_features, self.num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features: ``(B, C, H, W)`` → ``(B, 128)``."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)``."""
        return self.head(self.body(x))


@torch.no_grad()
def accuracy(classifier: nn.Module, data: ImageDataset, *, batch_size: int = 1000) -> float:
    """Fraction of ``data`` that ``classifier`` labels correctly."""
    classifier.eval()
    device = next(classifier.parameters()).device
    correct = 0
    for x, y in BatchLoader(data, batch_size, shuffle=False, device=device, generator=torch.Generator()):
        correct += int((classifier(x).argmax(-1) == y).sum())
    return correct / len(data)


def train_classifier(
    train: ImageDataset,
    test: ImageDataset,
    *,
    epochs: int = _EPOCHS,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[ImageClassifier, float]:
    """Train an [`ImageClassifier`][genvae.metrics.classifier.ImageClassifier] with Adam (lr / 10 in the last epoch).

    Returns:
        The classifier (eval mode) and its accuracy on ``test``.
    """
    positive_int("epochs", epochs)
    torch.manual_seed(seed)
    model = ImageClassifier(train.num_classes, train.data_shape).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loader = BatchLoader(train, batch_size, device=device, generator=torch.Generator().manual_seed(seed))
    for epoch in range(epochs):
        model.train()
        if epochs > 1 and epoch == epochs - 1:
            for group in opt.param_groups:
                group["lr"] = lr / 10
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval(), accuracy(model, test)


#: The 0.1 name of [`ImageClassifier`][genvae.metrics.classifier.ImageClassifier] (MNIST's shape by default).
MNISTClassifier = ImageClassifier


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cached(
    stem: str,
    model: ImageClassifier,
    train: Callable[[], tuple[ImageClassifier, float]],
    *,
    what: str,
    root: str | Path | None,
    device: str | torch.device,
    min_accuracy: float = 0.0,
    record: dict[str, object] | None = None,
) -> ImageClassifier:
    """``model`` with the weights cached as ``cache_dir(root)/classifier/STEM.safetensors``; where
    there are none, or they do not match the SHA-256 in ``STEM.json``, ``train()`` makes them."""
    folder = cache_dir(root) / "classifier"
    weights, sidecar = folder / f"{stem}.safetensors", folder / f"{stem}.json"
    if weights.is_file() and sidecar.is_file():
        if json.loads(sidecar.read_text()).get("sha256") == _sha256(weights):
            load_model(model, str(weights))
            return model.to(device).eval()
        log.warning("%s does not match its SHA-256; training the classifier again", weights)
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log.warning("training the classifier of %s used by FID and conditional accuracy (once)", what)
    model, acc = train()
    if acc < min_accuracy:
        raise RuntimeError(f"expected the {what} classifier to reach {min_accuracy:.1%} test accuracy, got {acc:.2%}")
    log.warning("the classifier of %s reaches %.2f%% test accuracy", what, 100 * acc)
    with atomic_path(weights) as tmp:
        save_model(model, str(tmp))
    seconds = round(time.perf_counter() - t0, 1)
    write_json(sidecar, {**(record or {}), "sha256": _sha256(weights), "test_accuracy": acc, "seconds": seconds})
    return model.eval()


def mnist_classifier(*, root: str | Path | None = None, device: str | torch.device = "cpu") -> ImageClassifier:
    """The cached MNIST classifier, trained on first use.

    Its test accuracy is at least [`MIN_ACCURACY`][genvae.metrics.classifier.MIN_ACCURACY].

    The weights live in ``cache_dir(root)/classifier/mnist-lenet.safetensors`` beside a JSON file
    with their SHA-256 and test accuracy; a file whose hash does not match is retrained.

    Raises:
        RuntimeError: the trained classifier falls short of [`MIN_ACCURACY`][genvae.metrics.classifier.MIN_ACCURACY].
    """

    def train() -> tuple[ImageClassifier, float]:
        return train_classifier(load_mnist("train", root=root), load_mnist("test", root=root), device=device)

    return _cached(
        "mnist-lenet", ImageClassifier(), train, what="MNIST", root=root, device=device,
        min_accuracy=MIN_ACCURACY, record={"epochs": _EPOCHS},
    )  # fmt: skip


def classifier_for(
    name: str | None, binarize: str = "none", *, root: str | Path | None = None, device: str | torch.device = "cpu"
) -> ImageClassifier:
    """A classifier for the labelled image data set ``name`` (a data set's name or a path), trained on
    its training split on first use and cached by the SHA-256 of that split's images and labels.

    MNIST gets [`mnist_classifier`][genvae.metrics.classifier.mnist_classifier]. Other data sets have
    no accuracy floor: the test accuracy is logged and kept beside the weights.

    Raises:
        ValueError: no name, or data that are not labelled images.
    """
    from ..data.sources import load_data

    if name is None:
        raise ValueError("expected the name or path of the data set the classifier should learn, got None")
    if name == "mnist":
        return mnist_classifier(root=root, device=device)
    data = load_data(name, "train", root=root, binarize=binarize)  # type: ignore[arg-type]
    if data.labels is None or len(data.data_shape) != 3:
        raise ValueError(f"expected labelled images (C, H, W) in {name!r} to train a classifier on")
    digest = hashlib.sha256(data.images.numpy().tobytes() + data.labels.numpy().tobytes()).hexdigest()

    def train() -> tuple[ImageClassifier, float]:
        return train_classifier(data, load_data(name, "test", root=root, binarize=binarize), device=device)  # type: ignore[arg-type]

    return _cached(
        f"lenet-{digest[:16]}", ImageClassifier(data.num_classes or 1, data.data_shape), train, what=name,
        root=root, device=device, record={"data": name, "data_sha256": digest},
    )  # fmt: skip


@torch.no_grad()
def conditional_accuracy(
    model: LatentVariableModel,
    classifier: nn.Module,
    *,
    n_per_class: int = 1000,
    generator: torch.Generator | None = None,
) -> float:
    """Fraction of conditional samples that ``classifier`` assigns to the label they were drawn for.

    Draws ``n_per_class`` images for each label of ``model`` (which must be conditional).
    """
    if model.num_classes is None:
        raise ValueError("expected a conditional model (num_classes set), got an unconditional one")
    positive_int("n_per_class", n_per_class)
    device = next(model.parameters()).device
    classifier.eval()
    correct = 0
    for c in range(model.num_classes):
        y = torch.full((n_per_class,), c, device=device)
        x = model.sample(n_per_class, y, generator=generator)
        correct += int((classifier(x).argmax(-1) == c).sum())
    return correct / (n_per_class * model.num_classes)
