"""The Python blocks of README.md, DESCRIPTION.md and docs/: each one uses only names it defines or
imports, and each one runs, in page order and each in a namespace of its own, except those marked in
the page as not run. A block titled as a file (```` ```python title="my_parts.py" ````) is a user's
module: it is written to the page's working folder before the page's blocks run, so that they
(and the command line, with ``--plugin my_parts``) import it as a user would.

A block that trains on MNIST runs here as written on a stand-in of the same shape (``STAND_IN``),
with the few numbers that would still take minutes made smaller (``QUICK``). A block preceded by
an HTML comment ``<!-- not run: reason -->`` (a GPU, a compilation of half a minute) is checked for
names only; ``NOT_RUN`` counts them, so that marking one more is a change of this file too."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "DESCRIPTION.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(?:<!-- not run: ([^\n]*?) -->\n)?```python\n(.*?)```", re.S)
FILE_BLOCK = re.compile(r'```python title="([\w.]+\.py)"\n(.*?)```', re.S)

#: The blocks marked ``<!-- not run: … -->`` in all the pages.
NOT_RUN = 2

#: Prepended to every page's blocks: one torch thread, and ``load_mnist`` (as the blocks import it
#: from ``genvae.data``) giving synthetic digits of MNIST's shape (``synthetic_digits``), 2000
#: training and 500 test images, with the same arguments and the same binarizations.
STAND_IN = """
import torch
torch.set_num_threads(1)
import genvae.data
import genvae.data.mnist
from genvae.data import synthetic_digits
from genvae.data.dataset import ImageDataset, check_binarize

def load_mnist(split, *, binarize="none", root=None, seed=0):
    if split not in ("train", "test"):
        raise ValueError(f"expected split 'train' or 'test', got {split!r}")
    check_binarize(binarize)
    digits = synthetic_digits(2000 if split == "train" else 500, seed=0 if split == "train" else 1)
    return ImageDataset(digits.images, digits.labels, 10, binarize, seed)

genvae.data.load_mnist = genvae.data.mnist.load_mnist = load_mnist
"""

#: Text of a block → what runs instead, where the stand-in alone would still take long. Every entry
#: must match some block.
QUICK = {
    "epochs=10": "epochs=1",  # README, getting started: ten epochs of training
    "evaluate_iw_nll(model, test, k=1000)": "evaluate_iw_nll(model, test, k=20)",  # 500 × 1000 draws
}


class Block(NamedTuple):
    page: Path
    index: int
    code: str
    not_run: str | None  # why the block is not run, from its page; None for a block that runs

    @property
    def name(self) -> str:
        return f"{self.page.name} block {self.index}"


def blocks(page: Path) -> list[Block]:
    return [Block(page, i, m[2], m[1]) for i, m in enumerate(BLOCK.finditer(page.read_text()))]


ALL = [block for page in PAGES for block in blocks(page)]


def quick(code: str) -> str:
    for text, instead in QUICK.items():
        code = code.replace(text, instead)
    return code


def files(page: Path) -> dict[str, str]:
    """The user's modules a page shows, by file name."""
    return {m[1]: m[2] for m in FILE_BLOCK.finditer(page.read_text())}


def test_every_block_uses_only_names_it_defines_or_imports(tmp_path: Path) -> None:
    for block in ALL:
        (tmp_path / f"{block.page.stem}_{block.index}.py").write_text(block.code)
    for page in PAGES:
        for name, code in files(page).items():
            (tmp_path / f"{page.stem}_file_{name}").write_text(code)
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--isolated", "--select", "F821", "--output-format",
         "concise", str(tmp_path)],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_blocks_not_run_are_marked_with_a_reason_and_counted() -> None:
    marked = [f"{b.name}: {b.not_run}" for b in ALL if b.not_run is not None]
    assert all(line.split(": ", 1)[1].strip() for line in marked), marked
    assert len(marked) == NOT_RUN, "\n".join(marked)
    comments = sum(page.read_text().count("<!-- not run:") for page in PAGES)
    assert comments == NOT_RUN, "a <!-- not run: … --> comment that is not right before a ```python block"


def test_every_quick_substitution_matches_a_block() -> None:
    unused = [text for text in QUICK if not any(text in b.code for b in ALL if b.not_run is None)]
    assert unused == [], f"QUICK entries that no block that runs contains: {unused}"


@pytest.mark.parametrize("page", [p for p in PAGES if any(b.not_run is None for b in blocks(p))], ids=lambda p: p.name)
def test_the_blocks_of_a_page_run(page: Path, tmp_path: Path) -> None:
    runs = [b for b in blocks(page) if b.not_run is None]
    for name, code in files(page).items():
        (tmp_path / name).write_text(code)
    script = "\n".join(
        [STAND_IN, *(f"exec(compile({quick(b.code)!r}, {b.name!r}, 'exec'), {{'__name__': '__main__'}})" for b in runs)]
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_docstrings_use_the_cross_references_mkdocstrings_resolves_not_sphinx_roles() -> None:
    role = re.compile(r":(class|func|meth|data|attr|mod|obj):`")
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in sorted((ROOT / "src").rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if role.search(line)
    ]
    assert found == [], "write [`name`][genvae.module.name] instead of Sphinx roles:\n" + "\n".join(found)
