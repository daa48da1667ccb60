"""The Python blocks of README.md and docs/: each one uses only names it defines or imports, and the
quick ones run as written, each in a namespace of its own."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "DESCRIPTION.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Blocks that train on MNIST for many epochs, need a GPU or read a run folder made elsewhere are
#: only checked for names here; the rest run.
SLOW = re.compile(r"load_mnist\(|\"cuda\"|load\(\"runs/")


def blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), re.S)


ALL = [(page, i, code) for page in PAGES for i, code in enumerate(blocks(page))]


def test_every_block_uses_only_names_it_defines_or_imports(tmp_path: Path) -> None:
    for page, i, code in ALL:
        (tmp_path / f"{page.stem}_{i}.py").write_text(code)
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--isolated", "--select", "F821", "--output-format",
         "concise", str(tmp_path)],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("page", [p for p in PAGES if any(not SLOW.search(c) for c in blocks(p))], ids=lambda p: p.name)
def test_the_quick_blocks_of_a_page_run_as_written(page: Path, tmp_path: Path) -> None:
    script = "\n".join(
        [
            "import torch",
            "torch.set_num_threads(1)",
            *(f"exec(compile({code!r}, {f'{page.name} block {i}'!r}, 'exec'), {{'__name__': '__main__'}})"
              for i, code in enumerate(blocks(page)) if not SLOW.search(code)),
        ]
    )  # fmt: skip
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
