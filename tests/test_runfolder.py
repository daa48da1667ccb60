"""Run folders: killed writers (SIGKILL at every step of a commit), concurrent trainers, corrupt
files, the NaN guard, and resume that ends bit-identical with no leftovers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from io import BytesIO
from pathlib import Path

import pytest
import torch
from conftest import PoisonedAdam
from fit_worker import OPTIONS, small_vae, train_set

import genvae
from genvae import runfolder
from genvae.cli import main
from genvae.data import BatchLoader
from genvae.runfolder import RunFolderLocked
from genvae.train import fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORKER = Path(__file__).with_name("fit_worker.py")
SET = ("checkpoint.pt", "model.safetensors", "history.json")
EPOCHS = 3


def worker(out: Path, epochs: int, *flags: str, crash_at: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("GENVAE_CRASH_AT", None)
    if crash_at is not None:
        env["GENVAE_CRASH_AT"] = crash_at
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(out), str(epochs), *flags],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def leftovers(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name.endswith((".tmp", ".new")))


def assert_consistent(run: Path) -> int:
    """Every file of the committed set is readable, verified, and describes the manifest's epoch."""
    epoch = runfolder.complete_epoch(run)
    assert epoch is not None
    state = torch.load(BytesIO(runfolder.read_member(run, "checkpoint.pt")), weights_only=True)
    history = json.loads(runfolder.read_member(run, "history.json"))
    assert state["epoch"] == epoch == len(history) == history[-1]["epoch"]
    model = genvae.load(run)
    for k, v in state["model"].items():
        assert torch.equal(v, model.state_dict()[k]), k
    return epoch


@pytest.fixture(scope="module")
def straight() -> dict[str, torch.Tensor]:
    """The weights of an uninterrupted run, which every resumed run must end with."""
    torch.set_num_threads(1)
    model = small_vae()
    fit(model, train_set(), epochs=EPOCHS, **OPTIONS)
    return {k: v.clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- killed writers


@pytest.mark.parametrize(
    ("point", "committed"),
    [
        ("writing:checkpoint.pt", 1),  # half a staged checkpoint on disk
        ("staged:checkpoint.pt", 1),
        ("writing:model.safetensors", 1),
        ("staged:history.json", 1),  # the whole new set staged, no manifest yet
        ("manifest", 2),  # committed, nothing renamed
        ("renamed:checkpoint.pt", 2),  # between the renames
        ("renamed:model.safetensors", 2),
    ],
)
def test_a_writer_killed_at_any_point_of_a_commit_leaves_one_consistent_set(tmp_path, straight, point, committed):
    run = tmp_path / "run"
    proc = worker(run, EPOCHS, crash_at=f"{point}@2")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err
    assert assert_consistent(run) == committed
    resumed = small_vae(seed=7)  # other initial weights: everything must come from the folder
    fit(resumed, train_set(), epochs=EPOCHS, out=run, resume=True, **OPTIONS)
    for k, v in straight.items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert leftovers(run) == []
    assert assert_consistent(run) == EPOCHS


def test_a_kill_between_the_renames_still_reads_the_new_set_before_any_recovery(tmp_path):
    run = tmp_path / "run"
    proc = worker(run, EPOCHS, crash_at="renamed:checkpoint.pt@2")
    proc.communicate(timeout=120)
    assert (run / ".model.safetensors.new").exists()  # the new model is still under its staging name
    genvae.load(run)  # readers take it from there: it matches the manifest
    assert assert_consistent(run) == 2


# --------------------------------------------------------------------------- one writer at a time


def test_a_second_trainer_is_refused_and_the_first_resumes_after_a_kill(tmp_path, capsys):
    run = tmp_path / "run"
    first = worker(run, 1000, "--slow")
    try:
        deadline = time.monotonic() + 120
        while runfolder.complete_epoch(run) is None:
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read() if first.stderr else ""
            time.sleep(0.1)
        for resume in (False, True):  # a new run, and a resume of the running one
            with pytest.raises(RunFolderLocked, match="in use by another process"):
                fit(small_vae(), train_set(), epochs=2, out=run, resume=resume, **OPTIONS)
        config = tmp_path / "elsewhere.toml"
        config.write_text(f'out = "{run}"\nepochs = 2\n')
        before = sorted(p.name for p in run.iterdir())
        assert main(["train", "--config", str(config), "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"pid {first.pid}" in err, err
        assert "config.json" not in before and not (run / "config.json").exists()  # it wrote nothing
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    # the kernel dropped the dead trainer's lock: its folder resumes at once
    result = fit(small_vae(), train_set(), epochs=runfolder.complete_epoch(run) + 1, out=run, resume=True, **OPTIONS)
    assert len(result.history) == runfolder.complete_epoch(run)
    assert leftovers(run) == []


def test_the_lock_is_reentrant_within_a_process_and_names_its_holder(tmp_path):
    run = tmp_path / "run"
    with runfolder.lock(run), runfolder.lock(run):
        assert runfolder.holds_lock(run)
        assert (run / ".lock").read_text().strip() == str(os.getpid())
    assert not runfolder.holds_lock(run)
    with pytest.raises(RuntimeError, match="without holding its lock"):
        runfolder.commit(run, 1, {})


# --------------------------------------------------------------------------- damaged files


@pytest.fixture
def one_epoch(tmp_path) -> Path:
    run = tmp_path / "run"
    fit(small_vae(), train_set(), epochs=1, out=run, **OPTIONS)
    return run


def flip_a_byte_inside_a_tensor(path: Path, tensor: torch.Tensor) -> None:
    data = bytearray(path.read_bytes())
    at = bytes(data).find(tensor.detach().contiguous().numpy().tobytes())
    assert at > 0
    data[at + 5] ^= 0x01
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated": lambda p, t: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "empty": lambda p, t: p.write_bytes(b""),
    "random": lambda p, t: p.write_bytes(os.urandom(4096)),
    "one flipped byte in a tensor": flip_a_byte_inside_a_tensor,
    "missing": lambda p, t: p.unlink(),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_checkpoint_is_a_one_line_error_naming_the_file(one_epoch, damage, capsys):
    tensors = torch.load(one_epoch / "checkpoint.pt", weights_only=True)["model"]
    DAMAGE[damage](one_epoch / "checkpoint.pt", next(v for v in tensors.values() if v.numel() > 100))
    with pytest.raises(ValueError, match=r"checkpoint\.pt.*(manifest|missing)"):
        fit(small_vae(), train_set(), epochs=2, out=one_epoch, resume=True, **OPTIONS)
    (one_epoch / "config.json").write_text(json.dumps({"latent_dim": 4, "epochs": 1}))
    before = (one_epoch / "config.json").read_text()
    assert main(["train", "--out", str(one_epoch), "--resume", "--epochs", "2", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint.pt" in err and "Traceback" not in err, err
    assert (one_epoch / "config.json").read_text() == before  # nothing written before the checks


def test_a_flipped_byte_in_the_model_file_is_refused_by_load(one_epoch):
    model = genvae.load(one_epoch)
    flip_a_byte_inside_a_tensor(one_epoch / "model.safetensors", model.decoder.net[-1].weight)
    with pytest.raises(ValueError, match=r"model\.safetensors.*manifest"):
        genvae.load(one_epoch)


def test_leftovers_of_a_killed_write_are_removed_on_the_next_start(one_epoch):
    junk = [".checkpoint.pt.4242.tmp", ".model.safetensors.new", ".history.json.17.tmp"]
    for name in junk:
        (one_epoch / name).write_bytes(os.urandom(1 << 20))
    fit(small_vae(), train_set(), epochs=2, out=one_epoch, resume=True, **OPTIONS)
    assert leftovers(one_epoch) == []
    assert assert_consistent(one_epoch) == 2


def test_a_checkpoint_without_a_manifest_is_not_trusted(one_epoch):
    (one_epoch / "manifest.json").unlink()
    with pytest.raises(ValueError, match="manifest.json"):
        fit(small_vae(), train_set(), epochs=2, out=one_epoch, resume=True, **OPTIONS)


def test_a_checkpoint_of_another_model_is_a_value_error(one_epoch):
    from genvae import VAE
    from genvae.likelihoods import Bernoulli
    from genvae.nets import MLPDecoder, MLPEncoder
    from genvae.priors import StandardNormal

    other = VAE(
        MLPEncoder((1, 28, 28), 6, hidden=(32,)),
        MLPDecoder(6, (1, 28, 28), hidden=(32,)),
        Bernoulli(),
        StandardNormal(6),
    )
    with pytest.raises(ValueError, match="does not fit this model"):
        fit(other, train_set(), epochs=2, out=one_epoch, resume=True, **OPTIONS)


def test_run_files_get_the_umask_mode(one_epoch):
    mask = os.umask(0)
    os.umask(mask)
    for name in (*SET, "manifest.json"):
        assert (one_epoch / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


# --------------------------------------------------------------------------- NaN guard


@pytest.mark.parametrize("epoch", [1, 2])
def test_nan_weights_after_the_last_step_of_an_epoch_are_never_written(tmp_path, epoch):
    steps = len(BatchLoader(train_set(), OPTIONS["batch_size"]))
    run = tmp_path / "run"
    with pytest.raises(FloatingPointError, match=f"NaN or inf in epoch {epoch}") as info:
        fit(
            small_vae(),
            train_set(),
            epochs=3,
            out=run,
            log_every=1,
            optimizer=lambda p: PoisonedAdam(p, at=epoch * steps),
            **OPTIONS,
        )
    if epoch == 1:
        assert "no checkpoint was kept" in str(info.value)
        assert runfolder.complete_epoch(run) is None and not (run / "checkpoint.pt").exists()
    else:
        assert "the last good checkpoint" in str(info.value) and "epoch 1" in str(info.value)
        assert assert_consistent(run) == 1
        state = torch.load(run / "checkpoint.pt", weights_only=True)
        assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert leftovers(run) == []
