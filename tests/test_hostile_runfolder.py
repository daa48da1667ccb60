"""Run folders from a hostile or careless hand: manifests naming paths outside the folder, links
in place of the lock, staged files and members, edited records, a full disk, a reader beside a
writer, and resumes that fail without changing a byte. Real files, links and processes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch
from fit_worker import OPTIONS, small_vae, train_set
from safetensors.torch import save_model

import genvae
from genvae import runfolder
from genvae.cli import main
from genvae.io import FORMAT
from genvae.train import fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORKER = Path(__file__).with_name("fit_worker.py")
SMALL = ["--epochs", "1", "--latent-dim", "2", "--hidden", "16", "--batch-size", "50", "--device", "cpu"]
SMALL += ["--no-progress"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A labelled 8-bit image file: 100 images of 8 × 8, two classes."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (100,), generator=g)
    x = (torch.rand(100, 1, 8, 8, generator=g) * 255).to(torch.uint8)
    path = tmp_path_factory.mktemp("data") / "small.npz"
    np.savez(path, x=x.numpy(), y=y.numpy())
    return path


@pytest.fixture
def run(tmp_path, data, capsys) -> Path:
    """A one-epoch run folder written by ``genvae train``."""
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), *SMALL, "--out", str(out)]) == 0
    capsys.readouterr()
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every entry under ``folder`` but the lock (which records the pid of its last holder): the
    bytes of files, the targets of links, folders as empty."""
    out = {}
    for root, dirs, files in os.walk(folder):  # links to folders are listed, not followed
        for name in dirs + files:
            p = Path(root, name)
            if p == folder / runfolder.LOCK_FILE:
                continue
            key = str(p.relative_to(folder))
            out[key] = os.readlink(p).encode() if p.is_symlink() else b"" if p.is_dir() else p.read_bytes()
    return out


def reseal(run: Path, name: str, data: bytes) -> None:
    """Write ``data`` as member ``name`` and update the manifest to match, as a careful editor would."""
    (run / name).write_bytes(data)
    manifest = json.loads((run / runfolder.MANIFEST).read_text())
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (run / runfolder.MANIFEST).write_text(json.dumps(manifest))


def one_line_error(capsys, code: int) -> str:
    """The error of a command that failed with exit status 2: one line, the last, no traceback
    (``genvae train`` may have said what it is about to train before its checks failed)."""
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.count("error:") == 1, err
    last = err.splitlines()[-1]
    assert last.startswith("genvae ") and "error:" in last, err
    return last


# --------------------------------------------------------------------------- the folder is a boundary


@pytest.mark.parametrize("name", ["ABSOLUTE", "../victim.txt", "sub/../../victim.txt", "config.json", ".lock"])
def test_a_manifest_naming_a_path_outside_the_set_is_refused_and_nothing_is_touched(run, tmp_path, capsys, name):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    name = str(victim) if name == "ABSOLUTE" else name
    payload = b"overwritten\n"
    manifest = json.loads((run / runfolder.MANIFEST).read_text())
    manifest["files"][name] = {"sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)}
    (run / runfolder.MANIFEST).write_text(json.dumps(manifest))
    staged = Path(f"{run}/.{name}.new")  # where a writer that trusts the name looks for the staged file
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_bytes(payload)  # its hash matches
    before = snapshot(run)
    for argv in (["train", *SMALL, "--out", str(run)], ["train", *SMALL, "--out", str(run), "--resume"]):
        err = one_line_error(capsys, main(argv))
        assert "to name only members of a run folder" in err and repr(name) in err, err
    for argv in (["info", str(run)], ["sample", str(run), "-o", str(tmp_path / "s.png")]):
        assert "to name only members" in one_line_error(capsys, main(argv))
    with pytest.raises(ValueError, match="to name only members"):
        runfolder.verify(run)
    assert victim.read_text() == "precious\n" and staged.read_bytes() == payload
    assert snapshot(run) == before


def test_a_lock_that_is_a_link_is_refused_and_its_target_keeps_its_bytes(run, tmp_path, capsys):
    target = tmp_path / "target.txt"
    target.write_text("keep me\n")
    (run / runfolder.LOCK_FILE).unlink()
    (run / runfolder.LOCK_FILE).symlink_to(target)
    err = one_line_error(capsys, main(["train", *SMALL, "--out", str(run), "--resume", "--epochs", "2"]))
    assert "to be a regular file, got a symbolic link" in err and ".lock" in err, err
    assert target.read_text() == "keep me\n"
    with pytest.raises(ValueError, match="symbolic link"), runfolder.lock(run):
        pass


@pytest.mark.parametrize("staged", [".checkpoint.pt.new", ".history.json.new", ".model.safetensors.new"])
def test_a_dangling_staged_link_is_removed_and_never_written_through(run, tmp_path, staged, capsys):
    target = tmp_path / "elsewhere" / "written-through"
    target.parent.mkdir()
    (run / staged).symlink_to(target)
    assert main(["train", *SMALL, "--out", str(run), "--resume", "--epochs", "2"]) == 0
    assert not target.exists()
    for name in ("checkpoint.pt", "model.safetensors", "history.json"):
        assert (run / name).is_file() and not (run / name).is_symlink(), name
    assert runfolder.verify(run) == 2


def test_a_link_planted_under_a_staging_name_during_training_is_not_written_through(tmp_path):
    """The writer itself meets the link (no recovery runs between): the commit removes it."""
    run, target = tmp_path / "run", tmp_path / "target"
    target.write_text("keep me\n")
    calls = []

    def plant(stats, model) -> None:
        calls.append(stats.epoch)
        (run / ".checkpoint.pt.new").symlink_to(target)

    fit(small_vae(), train_set(), epochs=3, out=run, callbacks=[plant], **OPTIONS)
    assert calls == [1, 2, 3] and target.read_text() == "keep me\n"
    assert not (run / "checkpoint.pt").is_symlink() and runfolder.verify(run) == 3


@pytest.mark.parametrize("member", ["checkpoint.pt", "model.safetensors", "history.json"])
def test_a_member_that_is_a_link_is_never_read_through(run, tmp_path, member, capsys):
    """A link to a copy with the right bytes: following it would pass the checksum."""
    copy = tmp_path / "outside"
    copy.write_bytes((run / member).read_bytes())
    (run / member).unlink()
    (run / member).symlink_to(copy)
    with pytest.raises(ValueError, match="got a symbolic link"):
        runfolder.read_member(run, member)
    err = one_line_error(capsys, main(["train", *SMALL, "--out", str(run), "--resume", "--epochs", "2"]))
    assert "symbolic link" in err and member in err, err


@pytest.mark.parametrize("record", ["config.json", "fit.json", "metrics.json"])
def test_a_record_that_is_a_link_is_never_read(run, tmp_path, record, capsys):
    secret = tmp_path / "secret.json"
    secret.write_text('{"secret": "do not print"}')
    (run / record).unlink()
    (run / record).symlink_to(secret)
    err = one_line_error(capsys, main(["info", str(run)]))
    assert "symbolic link" in err and "do not print" not in err, err


def test_a_manifest_that_is_not_utf8_is_one_line_naming_it(run, capsys):
    (run / runfolder.MANIFEST).write_bytes(b'{"format": "genvae.run", "epoch": 1, "files": {"\xff": 1}}')
    for argv in (["info", str(run)], ["train", *SMALL, "--out", str(run), "--resume"]):
        err = one_line_error(capsys, main(argv))
        assert "manifest.json" in err and "UTF-8" in err, err


def test_a_resume_that_fails_leaves_every_file_byte_identical(run, capsys):
    """A checkpoint that passes its checksum but is not one; config.json and fit.json would be
    rewritten by a resume that got further."""
    reseal(run, "checkpoint.pt", b"not a checkpoint at all")
    (run / ".history.json.new").write_bytes(b"a leftover of a killed write")
    before = snapshot(run)
    err = one_line_error(capsys, main(["train", *SMALL, "--out", str(run), "--resume", "--epochs", "3"]))
    assert "expected a genvae checkpoint" in err, err
    assert snapshot(run) == before


def test_a_checkpoint_with_a_pickle_payload_is_refused_in_one_line_without_running_it(run, tmp_path, capsys):
    marker = tmp_path / "ran"
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["payload"] = Exploit(str(marker))
    torch.save(state, tmp_path / "evil.pt")
    reseal(run, "checkpoint.pt", (tmp_path / "evil.pt").read_bytes())
    before = snapshot(run)
    err = one_line_error(capsys, main(["train", *SMALL, "--out", str(run), "--resume", "--epochs", "2"]))
    assert "expected a genvae checkpoint" in err, err
    assert not marker.exists() and snapshot(run) == before


class Exploit:
    """Unpickling this would create a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


# --------------------------------------------------------------------------- edited records


@pytest.mark.parametrize(
    ("member", "content", "message"),
    [
        ("history.json", [{}], r"record \[0\] of .*history.json"),
        ("history.json", {"epoch": 1}, "to be a list of epoch records"),
        ("history.json", [{"epoch": "one"}], r"record \[0\]"),
    ],
)
def test_an_edited_history_with_a_matching_manifest_is_one_line(run, capsys, member, content, message):
    reseal(run, member, json.dumps(content).encode())
    err = one_line_error(capsys, main(["info", str(run)]))
    assert re.search(message, err), err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"train": "oops"}, r"fit.train in .*fit.json.* to be an object or null, got 'oops'"),
        ({"train": {"source": 3}}, r"train.source in .*fit.json"),
        ([1, 2], "to be a JSON object"),
    ],
)
@pytest.mark.parametrize("command", ["info", "eval"])
def test_an_edited_fit_record_is_one_line(run, tmp_path, capsys, content, message, command):
    (run / "config.json").unlink()  # so the commands read fit.json for the data
    (run / "fit.json").write_text(json.dumps(content))
    err = one_line_error(capsys, main([command, str(run)]))
    assert re.search(message, err), err


# --------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("device", ["meta", "mps", "cpu:3", "xla"])
def test_an_unsupported_device_is_refused_before_anything_is_written(tmp_path, data, capsys, device):
    out = tmp_path / "never"
    err = one_line_error(capsys, main(["train", "--data", str(data), *SMALL, "--device", device, "--out", str(out)]))
    assert f"got {device!r}" in err and not out.exists(), err


def test_an_absurd_sample_count_is_refused_naming_the_limit(run, tmp_path, capsys):
    err = one_line_error(capsys, main(["sample", str(run), "--n", str(10**15), "-o", str(tmp_path / "s.png")]))
    assert "expected --n at most" in err and "memory" in err, err
    assert not (tmp_path / "s.png").exists()


@pytest.mark.parametrize("command", ["info", "sample", "eval"])
def test_a_model_file_that_is_not_a_latent_variable_model_is_one_line(tmp_path, capsys, command):
    folder = tmp_path / "linear"
    folder.mkdir()
    spec = {"format": FORMAT, "version": 1, "model": {"class": "torch.nn.modules.linear.Linear", "args": {}}}
    spec["model"]["args"] = {"in_features": 3, "out_features": 2}
    save_model(torch.nn.Linear(3, 2), str(folder / "model.safetensors"), metadata={FORMAT: json.dumps(spec)})
    assert isinstance(genvae.load(folder), torch.nn.Linear)  # a valid model file
    argv = [command, str(folder)] + (["-o", str(tmp_path / "s.png")] if command == "sample" else [])
    err = one_line_error(capsys, main(argv))
    assert "to hold a latent-variable model" in err and "torch.nn.modules.linear.Linear" in err, err


# --------------------------------------------------------------------------- a full disk


def limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_during_a_commit_is_one_line_and_the_last_epoch_is_intact(run, data):
    before = {name: (run / name).read_bytes() for name in ("checkpoint.pt", "model.safetensors", "history.json")}
    limit = (run / "checkpoint.pt").stat().st_size // 2  # room for the records, not for a checkpoint
    proc = subprocess.run(
        [sys.executable, "-m", "genvae", "train", "--data", str(data), *SMALL, "--out", str(run), "--resume"]
        + ["--epochs", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit_file_size(limit),
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "(disk full?)" in lines[-1], proc.stderr
    assert "the last committed epoch 1 is intact" in lines[-1], lines[-1]
    assert runfolder.verify(run) == 1
    assert {name: (run / name).read_bytes() for name in before} == before
    assert not [p.name for p in run.iterdir() if p.name.endswith(".new")]


# --------------------------------------------------------------------------- a reader beside a writer

READ_SECONDS = 20


def test_a_reader_beside_a_training_run_never_reports_damage(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    writer = subprocess.Popen(
        [sys.executable, str(WORKER), str(run), "100000"], env=env, stderr=subprocess.PIPE, text=True
    )
    errors: list[str] = []
    epochs: set[int] = set()
    reads = 0
    try:
        deadline = time.monotonic() + 120
        while runfolder.complete_epoch(run) is None:
            assert writer.poll() is None and time.monotonic() < deadline, writer.stderr.read()
            time.sleep(0.05)
        end = time.monotonic() + READ_SECONDS
        while time.monotonic() < end:
            try:
                epochs.add(runfolder.verify(run))  # every member, as a resume checks them
                runfolder.read_member(run, "history.json")
                genvae.load(run)
                if hasattr(runfolder, "read_set"):  # one epoch's files, all of them from that epoch
                    epoch, files = runfolder.read_set(run, ["checkpoint.pt", "history.json"])
                    state = torch.load(BytesIO(files["checkpoint.pt"]), weights_only=True)
                    assert state["epoch"] == epoch == len(json.loads(files["history.json"]))
                reads += 1
            except (ValueError, FileNotFoundError) as err:
                errors.append(str(err))
        assert writer.poll() is None, writer.stderr.read()
    finally:
        writer.kill()
        writer.wait(timeout=60)
    print(f"{reads} reads of {len(epochs)} epochs in {READ_SECONDS} s, {len(errors)} errors")
    assert errors == [], f"{len(errors)} false errors in {reads} reads, e.g. {errors[0]}"
    assert len(epochs) >= 10, f"the writer committed too seldom to test anything: {sorted(epochs)}"
