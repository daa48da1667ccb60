"""Hostile data files and image folders, written in their exact on-disk formats: each is refused
with one line that names it, from the Python API and from ``genvae train`` (exit status 2, one line
on stderr, no traceback), without hanging and without allocating what the file merely declares."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genvae import VAE
from genvae.cli import main
from genvae.data import dataset, files
from genvae.data.dataset import ImageDataset, as_dataset
from genvae.data.files import load_file
from genvae.likelihoods import Gaussian
from genvae.nets import MLPDecoder, MLPEncoder
from genvae.priors import StandardNormal
from genvae.train import fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Seconds a ``genvae train`` subprocess may take to refuse a folder (it imports torch first) before
#: the test calls it hung.
HANG_S = 120


def tiny_run(data: Path, out: Path, *flags: str) -> list[str]:
    """``genvae train`` arguments for one epoch of a tiny model on ``data``."""
    return [
        "train", "--data", str(data), "--epochs", "1", "--train-subset", "2", "--batch-size", "2",
        "--latent-dim", "2", "--hidden", "8", "--device", "cpu", "--no-progress", "--out", str(out), *flags,
    ]  # fmt: skip


def refused_by_cli(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> str:
    """Run ``genvae train`` on ``data`` in this process; assert exit status 2 and one line on stderr,
    a warning counting as a line (a real run would print it); return that line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(tiny_run(data, tmp_path / "run", *flags))
    lines = capsys.readouterr().err.splitlines() + [f"{w.category.__name__}: {w.message}" for w in caught]
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("genvae train: error: ") and "Traceback" not in lines[0]
    return lines[0]


def refused_by_cli_process(data: Path, tmp_path: Path) -> str:
    """Run ``genvae train`` on ``data`` in a subprocess that may not hang; assert exit status 2 and
    one line on stderr; return it."""
    proc = subprocess.run(
        [sys.executable, "-m", "genvae", *tiny_run(data, tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=HANG_S,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[0].startswith("genvae train: error: ")
    return lines[0]


def at(path: Path) -> Path:
    """``path``, its folder made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def link(path: Path, target: Path) -> Path:
    """A symbolic link at ``path`` to ``target`` (skip where links cannot be made)."""
    try:
        os.symlink(target, at(path), target_is_directory=target.is_dir())
    except (OSError, NotImplementedError) as err:
        pytest.skip(f"cannot make a symbolic link here: {err}")
    return path


def gray(path: Path, value: int, size: tuple[int, int] = (3, 2)) -> Path:
    """A small grayscale PNG of one ``value`` (``size`` is W, H)."""
    Image.new("L", size, value).save(at(path))
    return path


# --------------------------------------------------------------------------- huge images


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def black_png(path: Path, width: int, height: int, rows: int = 100) -> Path:
    """A valid 8-bit grayscale PNG of ``width`` × ``height`` black pixels, in milliseconds and a few
    hundred kilobytes: one deflate block of ``rows`` rows, ended by a full flush (which resets the
    compressor, so every such block compresses to the same bytes), is repeated; the Adler-32 of
    ``n`` zero bytes is ``(n % 65521) << 16 | 1``."""
    assert height % rows == 0
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = deflate.compress(bytes((1 + width) * rows)) + deflate.flush(zlib.Z_FULL_FLUSH)  # filter 0 + pixels
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # the final, empty block
    adler = (((1 + width) * height) % 65521) << 16 | 1
    idat = b"\x78\xda" + block * (height // rows) + end + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale, no interlace
    png = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    at(path).write_bytes(png)
    return path


def test_a_20000_by_20000_image_is_refused_from_its_header(tmp_path, capsys):
    big = black_png(tmp_path / "huge" / "c" / "big.png", 20000, 20000)  # 400 MB decoded
    pil_limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ValueError) as err:
        load_file(tmp_path / "huge")
    msg = str(err.value)
    assert str(big) in msg and "400000000 pixels" in msg and f"{files.MAX_IMAGE_PIXELS:,} pixels" in msg, msg
    assert "\n" not in msg and Image.MAX_IMAGE_PIXELS == pil_limit  # PIL's global is left alone
    line = refused_by_cli(tmp_path / "huge", tmp_path, capsys)
    assert str(big) in line and "400000000 pixels" in line


def test_the_pixel_limit_is_genvaes_constant_checked_before_decoding(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "MAX_IMAGE_PIXELS", 12)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # PIL checks nothing
    gray(tmp_path / "ok" / "c" / "a.png", 7, (4, 3))
    assert load_file(tmp_path / "ok").images.shape == (1, 1, 3, 4)  # 12 pixels: at the limit
    gray(tmp_path / "big" / "c" / "a.png", 7, (13, 1))
    with pytest.raises(ValueError, match="at most 12 pixels .*got 13 × 1 = 13 pixels"):
        load_file(tmp_path / "big")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6)  # PIL would warn, and refuse above 12
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_file(tmp_path / "ok").images.shape == (1, 1, 3, 4)


# --------------------------------------------------------------------------- links


def test_a_folder_linked_into_itself_is_refused_naming_the_link(tmp_path, capsys):
    gray(tmp_path / "loop" / "c" / "a.png", 1)
    self_link = link(tmp_path / "loop" / "c" / "self", tmp_path / "loop" / "c")  # os.walk read a.png 41 times
    with pytest.raises(ValueError, match="link loop") as err:
        load_file(tmp_path / "loop")
    msg = str(err.value)
    assert repr(str(self_link)) in msg and "\n" not in msg
    assert str(self_link) in refused_by_cli(tmp_path / "loop", tmp_path, capsys)


def test_two_links_of_a_folder_to_itself_are_refused_without_hanging(tmp_path):
    gray(tmp_path / "loops" / "c" / "a.png", 1)
    first = link(tmp_path / "loops" / "c" / "l1", tmp_path / "loops" / "c")
    link(tmp_path / "loops" / "c" / "l2", tmp_path / "loops" / "c")  # 2**40 paths through the two links
    line = refused_by_cli_process(tmp_path / "loops", tmp_path)  # first, so that a hang cannot hang the suite
    assert "link loop" in line and repr(str(first)) in line
    with pytest.raises(ValueError, match="link loop") as err:
        load_file(tmp_path / "loops")
    assert repr(str(first)) in str(err.value)


def test_a_link_to_the_folder_above_is_a_loop(tmp_path):
    gray(tmp_path / "up" / "c" / "a.png", 1)
    up = link(tmp_path / "up" / "c" / "sub" / "up", tmp_path / "up")
    with pytest.raises(ValueError, match="link loop") as err:
        load_file(tmp_path / "up")
    assert repr(str(up)) in str(err.value)


def test_links_are_followed_but_no_folder_or_image_is_read_twice(tmp_path, capsys):
    shared = tmp_path / "elsewhere"
    gray(shared / "a.png", 10)
    gray(shared / "b.png", 20)
    gray(tmp_path / "data" / "real" / "x.png", 30)
    link(tmp_path / "data" / "linked", shared)  # a class folder elsewhere
    ds = load_file(tmp_path / "data")
    assert ds.images[:, 0, 0, 0].tolist() == [10, 20, 30] and ds.labels.tolist() == [0, 0, 1]

    twice = link(tmp_path / "data" / "same", shared)  # a second way to the same folder
    with pytest.raises(ValueError, match="reached once") as err:
        load_file(tmp_path / "data")
    assert repr(str(twice)) in str(err.value) and "\n" not in str(err.value)
    assert str(twice) in refused_by_cli(tmp_path / "data", tmp_path, capsys)
    twice.unlink()

    copy = link(tmp_path / "data" / "real" / "y.png", shared / "a.png")  # the same image in two classes
    with pytest.raises(ValueError, match="reached once") as err:
        load_file(tmp_path / "data")
    assert repr(str(copy)) in str(err.value) and repr(str(shared / "a.png")) in str(err.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_without_being_opened(tmp_path, capsys):
    gray(tmp_path / "fifo" / "c" / "a.png", 1)
    os.mkfifo(tmp_path / "fifo" / "c" / "b.png")  # opening it would wait for a writer
    line = refused_by_cli_process(tmp_path / "fifo", tmp_path)
    assert "not a regular file" in line and str(tmp_path / "fifo" / "c" / "b.png") in line
    with pytest.raises(ValueError, match="not a regular file"):
        load_file(tmp_path / "fifo")
    os.mkfifo(tmp_path / "data.npz")
    with pytest.raises(ValueError, match="neither") as err:
        load_file(tmp_path / "data.npz")
    assert str(tmp_path / "data.npz") in str(err.value)


# --------------------------------------------------------------------------- labels


def test_a_label_of_2_to_the_40_is_refused_before_a_cvae_is_built(tmp_path, capsys):
    path = tmp_path / "labels.npz"
    y = np.arange(20) % 2
    y[3] = 2**40  # num_classes = max(y) + 1 made a 35 TB embedding
    np.savez(path, x=np.zeros((20, 4, 4), np.uint8), y=y)
    with pytest.raises(ValueError, match="below 1000") as err:
        load_file(path)
    msg = str(err.value)
    assert str(path) in msg and str(2**40) in msg and "\n" not in msg
    line = refused_by_cli(path, tmp_path, capsys, "--model", "cvae")
    assert str(path) in line and str(2**40) in line


def test_the_class_bound_is_the_number_of_examples_with_a_floor(tmp_path):
    floor = dataset.CLASS_BOUND_FLOOR
    x = np.zeros((2 * floor, 2), np.float32)
    y = np.arange(2 * floor)  # as many classes as examples: the largest label is N - 1
    np.savez(tmp_path / "many.npz", x=x, y=y)
    assert load_file(tmp_path / "many.npz").num_classes == 2 * floor
    y[0] = 2 * floor
    np.savez(tmp_path / "more.npz", x=x, y=y)
    with pytest.raises(ValueError, match=f"below {2 * floor}"):
        load_file(tmp_path / "more.npz")
    np.savez(tmp_path / "few.npz", x=x[:3], y=np.array([0, 5, floor - 1]))  # a sample of a large set
    assert load_file(tmp_path / "few.npz").num_classes == floor
    np.savez(tmp_path / "too_many.npz", x=x[:3], y=np.array([0, 5, floor]))
    with pytest.raises(ValueError, match=f"below {floor}.*got a largest label of {floor}"):
        load_file(tmp_path / "too_many.npz")
    np.savez(tmp_path / "unsigned.npz", x=x[:3], y=np.array([0, 1, 2**64 - 1], np.uint64))
    with pytest.raises(ValueError, match="fit int64, got 18446744073709551615"):
        load_file(tmp_path / "unsigned.npz")


def test_tensors_given_to_the_python_api_are_bounded_alike():
    x, y = torch.zeros(6, 3), torch.tensor([0, 1, 2, 2**40, 1, 0])
    with pytest.raises(ValueError, match=f"below 1000.*got a largest label of {2**40}"):
        ImageDataset.from_tensors(x, y)
    with pytest.raises(ValueError, match="below 1000"):
        as_dataset(torch.utils.data.TensorDataset(x, y))  # a map-style data set, collated
    model = VAE(MLPEncoder((3,), 2, hidden=(4,)), MLPDecoder(2, (3,), hidden=(4,)), Gaussian(), StandardNormal(2))
    with pytest.raises(ValueError, match="below 1000"):
        fit(model, (x, y), epochs=1, device="cpu", progress=False)
    assert ImageDataset.from_tensors(x, y % 7, num_classes=2000).num_classes == 2000  # an explicit count stands
    with pytest.raises(ValueError, match="non-negative labels, got -1"):
        ImageDataset.from_tensors(x, torch.tensor([0, 1, -1, 0, 1, 0]))
    with pytest.raises(TypeError, match="integer dtype"):
        ImageDataset.from_tensors(x, torch.zeros(6))


# --------------------------------------------------------------------------- tensors and arrays


def coo(path: Path) -> None:
    indices = torch.tensor([[0, 1], [1, 0]])
    torch.save({"x": torch.sparse_coo_tensor(indices, torch.ones(2), (4, 3)).coalesce()}, path)


def quantized(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized tensors are deprecated
        torch.save({"x": torch.quantize_per_tensor(torch.rand(4, 3), 0.1, 0, torch.quint8)}, path)


def nested(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the nested tensor API is a prototype
        torch.save({"x": torch.nested.nested_tensor([torch.zeros(2, 3), torch.zeros(3, 3)])}, path)


# (file, its writer, the key named, what the message says of the tensor)
TENSORS = [
    ("sparse.pt", coo, "x", "layout torch.sparse_coo"),
    ("csr.pt", lambda p: torch.save({"x": torch.eye(3).to_sparse_csr()}, p), "x", "layout torch.sparse_csr"),
    ("sparse_y.pt", lambda p: torch.save({"x": torch.zeros(3, 2), "y": torch.eye(3).long()[0].to_sparse()}, p), "y",
     "layout torch.sparse_coo"),
    ("quantized.pt", quantized, "x", "quantized dtype torch.quint8"),
    ("complex.pt", lambda p: torch.save(torch.zeros(4, 3, dtype=torch.complex64), p), "x", "dtype torch.complex64"),
    ("nested.pt", nested, "x", "a nested tensor"),
    ("meta.pt", lambda p: torch.save({"x": torch.empty(4, 3, device="meta")}, p), "x", "on the meta device"),
    ("float8.pt", lambda p: torch.save(torch.zeros(4, 3).to(torch.float8_e4m3fn), p), "x", "float8_e4m3fn"),
    ("expanded.pt", lambda p: torch.save(torch.zeros(1, dtype=torch.uint8).expand(2**10, 1, 256, 256), p), "x",
     "67,108,864 elements of which 1 are stored"),  # 64 MiB from a one-byte storage
]  # fmt: skip


@pytest.mark.parametrize("name, write, key, got", TENSORS, ids=[case[0] for case in TENSORS])
def test_tensors_that_are_not_plain_data_are_refused_in_one_line(name, write, key, got, tmp_path, capsys):
    path = tmp_path / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # what torch says of sparse tensors as it makes them
        write(path)
    with pytest.raises(ValueError) as err:
        load_file(path)
    msg = str(err.value)
    assert f"expected {key} in {str(path)!r}" in msg and got in msg and "\n" not in msg, msg
    assert isinstance(err.value, TypeError)  # as the other refused dtypes are
    line = refused_by_cli(path, tmp_path, capsys)  # torch.load's warnings are not printed
    assert str(path) in line and got in line


class Payload:
    """An object whose unpickling would touch ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, ...]]:
        return (os.system, (f"touch {self.marker}",))


def object_y(path: Path) -> None:
    y = np.array([0, 1, 0, Payload(path.with_suffix(".ran"))], dtype=object)
    np.savez(path, x=np.zeros((4, 2), np.float32), y=y)


# (file, its writer, what the message must say)
ARRAYS = [
    ("object_y.npz", object_y, ["array 'y'", "allow_pickle=False"]),
    ("object_x.npz", lambda p: np.savez(p, x=np.array([[None, 1]], dtype=object)), ["array 'x'", "allow_pickle"]),
    ("records.npy", lambda p: np.save(p, np.zeros(3, [("a", "<i4"), ("b", "<f4")])), ["x in", "('a', '<i4')"]),
    ("records_y.npz", lambda p: np.savez(p, x=np.zeros((3, 2)), y=np.zeros(3, [("a", "<i4")])), ["y in", "'<i4'"]),
    ("complex.npy", lambda p: np.save(p, np.zeros((3, 2), np.complex64)), ["x in", "dtype complex64"]),
    ("dates.npz", lambda p: np.savez(p, x=np.zeros((3, 2), "datetime64[s]")), ["x in", "dtype datetime64[s]"]),
]


@pytest.mark.parametrize("name, write, says", ARRAYS, ids=[case[0] for case in ARRAYS])
def test_arrays_that_are_not_plain_numbers_are_refused_without_unpickling(name, write, says, tmp_path, capsys):
    path = tmp_path / name
    write(path)
    with pytest.raises(ValueError) as err:
        load_file(path)
    msg = str(err.value)
    assert str(path) in msg and all(s in msg for s in says) and "\n" not in msg, msg
    assert not path.with_suffix(".ran").exists()  # nothing in the file was run
    assert str(path) in refused_by_cli(path, tmp_path, capsys)
