"""save/load: exact round trips for every kind of part, and refusal of bad or untrusted files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

import genvae
from genvae import CVAE, VAE, load, save
from genvae.io import describe
from genvae.likelihoods import Bernoulli, ContinuousBernoulli, Gaussian
from genvae.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from genvae.priors import (
    ConditionalNormal,
    LearnedNormal,
    MixtureOfGaussians,
    StandardNormal,
    VampPrior,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHAPE = (1, 6, 6)
D = 3
FORMAT_KEY = "genvae.model"
M = TypeVar("M", bound=nn.Module)


def randomise(model: M, seed: int = 0) -> M:
    """Overwrite every parameter with random values, so a freshly initialised copy cannot match."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return model


def mlp_vae() -> VAE:
    return VAE(
        MLPEncoder(SHAPE, D, hidden=(8,), activation=nn.Tanh),
        MLPDecoder(D, SHAPE, hidden=(8,)),
        Bernoulli(),
        StandardNormal(D),
    )


def conv_cvae() -> CVAE:
    return CVAE(
        ConvEncoder(SHAPE, D, channels=(4,), hidden=8, num_classes=3),
        ConvDecoder(D, SHAPE, channels=(4,), hidden=8, num_classes=3),
        ContinuousBernoulli(),
        ConditionalNormal(3, D),
    )


def vamp_vae() -> VAE:
    encoder = MLPEncoder(SHAPE, D, hidden=(8,))
    return VAE(encoder, MLPDecoder(D, SHAPE, hidden=(8,)), Bernoulli(), VampPrior(encoder, 4, SHAPE))


def gaussian_vae() -> VAE:
    return VAE(
        MLPEncoder(SHAPE, D, hidden=(8,)),
        MLPDecoder(D, SHAPE, hidden=(8,)),
        Gaussian(0.5, learned=True, shape=SHAPE, min_sigma=0.05),
        LearnedNormal(D),
    )


def mog_vae() -> VAE:
    return VAE(
        MLPEncoder(SHAPE, D, hidden=(8,)),
        MLPDecoder(D, SHAPE, hidden=(8,)),
        Gaussian(0.25),
        MixtureOfGaussians(D, 5),
    )


MODELS = [mlp_vae, conv_cvae, vamp_vae, gaussian_vae, mog_vae]


def seeded_elbo(model: VAE | CVAE, x: Tensor, y: Tensor | None) -> Tensor:
    torch.manual_seed(11)
    with torch.no_grad():
        return model.elbo(x, y, k=3).elbo


def rewrite(path: Path, edit: Callable[[dict[str, Any]], None], tensors: dict[str, Tensor] | None = None) -> None:
    """Rewrite a saved model file with its description edited (and optionally other tensors)."""
    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata())
        stored = {k: f.get_tensor(k) for k in f.keys()}
    spec = json.loads(metadata[FORMAT_KEY])
    edit(spec)
    metadata[FORMAT_KEY] = json.dumps(spec)
    save_file(tensors if tensors is not None else stored, str(path), metadata=metadata)


@pytest.mark.parametrize("make", MODELS, ids=lambda f: f.__name__)
def test_round_trip_is_exact(make: Callable[[], VAE | CVAE], tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = randomise(make())
    path = save(model, tmp_path / "m.safetensors")
    assert path == tmp_path / "m.safetensors"
    # no temporary files left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    torch.manual_seed(99)  # a different init: only the stored weights can make the copy match
    loaded = load(path)
    assert isinstance(loaded, (VAE, CVAE))
    assert type(loaded) is type(model) and not loaded.training
    assert describe(loaded) == describe(model)
    ref, got = model.state_dict(), loaded.state_dict()
    assert ref.keys() == got.keys()
    for key in ref:
        assert torch.equal(ref[key], got[key]), key
    x = torch.rand(5, *SHAPE)
    y = torch.tensor([0, 1, 2, 0, 1]) if isinstance(model, CVAE) else None
    model.eval()
    assert torch.equal(seeded_elbo(model, x, y), seeded_elbo(loaded, x, y))
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert torch.equal(
        model.sample(4, None if y is None else y[:4], generator=g()),
        loaded.sample(4, None if y is None else y[:4], generator=g()),
    )


def test_vamp_prior_encoder_is_shared_after_load(tmp_path: Path) -> None:
    model = randomise(vamp_vae())
    assert describe(model)["model"]["args"]["prior"]["args"]["encoder"] == {"ref": "model.encoder"}
    loaded = load(save(model, tmp_path / "v.safetensors"))
    assert isinstance(loaded, VAE) and isinstance(loaded.prior, VampPrior)
    prior_encoder, encoder = loaded.prior.encoder, loaded.encoder
    assert isinstance(encoder, MLPEncoder) and isinstance(prior_encoder, MLPEncoder)
    assert prior_encoder is encoder
    with torch.no_grad():  # one set of weights: changing the model's encoder changes the prior
        next(encoder.parameters()).add_(1.0)
    assert torch.equal(next(prior_encoder.parameters()), next(encoder.parameters()))


def test_save_to_a_folder_and_load_the_folder(tmp_path: Path) -> None:
    model = randomise(mlp_vae())
    path = save(model, tmp_path)
    assert path == tmp_path / "model.safetensors"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
    assert torch.equal(load(tmp_path).state_dict()["decoder.net.0.weight"], model.state_dict()["decoder.net.0.weight"])


def test_a_failed_save_leaves_no_temporary_file_and_keeps_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save(randomise(mlp_vae()), tmp_path / "m.safetensors")
    before = path.read_bytes()

    def crash(model: nn.Module, filename: str, metadata: dict[str, str] | None = None) -> None:
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(genvae.io, "save_model", crash)
    with pytest.raises(OSError, match="disk full"):
        save(randomise(mlp_vae(), seed=1), path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    assert path.read_bytes() == before


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(tmp_path / "nope.safetensors")


def test_load_a_safetensors_file_without_a_genvae_header(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="genvae description"):
        load(path)


def test_load_a_file_that_is_not_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\x00" * 3 + b"not a safetensors file")
    with pytest.raises(ValueError, match="safetensors"):
        load(path)


def test_load_a_wrong_format_version(tmp_path: Path) -> None:
    path = save(mlp_vae(), tmp_path / "m.safetensors")
    rewrite(path, lambda spec: spec.update(version=99))
    with pytest.raises(ValueError, match="version"):
        load(path)


def test_load_with_an_edited_latent_dim(tmp_path: Path) -> None:
    path = save(mlp_vae(), tmp_path / "m.safetensors")

    def edit(spec: dict[str, Any]) -> None:
        for part in ("encoder", "decoder", "prior"):
            spec["model"]["args"][part]["args"]["latent_dim"] = D + 2

    rewrite(path, edit)
    with pytest.raises(ValueError, match="do not match"):
        load(path)


def test_load_weights_of_another_model(tmp_path: Path) -> None:
    a = save(mlp_vae(), tmp_path / "a.safetensors")
    # b has extra parameters: σ and the learned prior
    b = save(gaussian_vae(), tmp_path / "b.safetensors")
    with safe_open(str(a), framework="pt") as f:
        a_tensors = {k: f.get_tensor(k) for k in f.keys()}
    rewrite(b, lambda spec: None, tensors=a_tensors)
    with pytest.raises(ValueError, match="do not match"):
        load(b)
    # c has the same keys as a, with other sizes
    c = save(
        VAE(
            MLPEncoder(SHAPE, D, hidden=(9,)),
            MLPDecoder(D, SHAPE, hidden=(8,)),
            Bernoulli(),
            StandardNormal(D),
        ),
        tmp_path / "c.safetensors",
    )
    rewrite(c, lambda spec: None, tensors=a_tensors)
    with pytest.raises(ValueError, match="do not match"):
        load(c)


@pytest.mark.parametrize("where", ["model", "likelihood", "activation"])
def test_load_refuses_untrusted_classes(tmp_path: Path, where: str) -> None:
    path = save(mlp_vae(), tmp_path / "m.safetensors")

    def edit(spec: dict[str, Any]) -> None:
        if where == "model":
            spec["model"]["class"] = "os.system"
        elif where == "likelihood":
            spec["model"]["args"]["likelihood"] = {
                "class": "os.system",
                "args": {"command": "true"},
            }
        else:
            spec["model"]["args"]["encoder"]["args"]["activation"] = {"type": "subprocess.Popen"}

    rewrite(path, edit)
    with pytest.raises(ValueError, match="trusted"):
        load(path)


def test_load_refuses_untrusted_callables_reached_through_a_trusted_module(tmp_path: Path) -> None:
    path = save(mlp_vae(), tmp_path / "m.safetensors")
    # harmless stand-in for genvae.io.os.system, which would run a shell command on load
    rewrite(path, lambda spec: spec["model"].update({"class": "genvae.io.os.getpid", "args": {}}))
    with pytest.raises(ValueError, match="trusted"):
        load(path)


class UserEncoder(nn.Module):
    """A part from outside genvae whose constructor arguments are readable attributes."""

    def __init__(self, data_shape: tuple[int, ...], latent_dim: int) -> None:
        super().__init__()
        self.data_shape, self.latent_dim = tuple(data_shape), latent_dim
        self.linear = nn.Linear(int(torch.tensor(self.data_shape).prod()), 2 * latent_dim)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Distribution:
        mu, logvar = self.linear(x.flatten(1)).chunk(2, dim=-1)
        return Independent(Normal(mu, (0.5 * logvar).exp()), 1)


def test_user_parts_load_only_when_trusted(tmp_path: Path) -> None:
    model = randomise(VAE(UserEncoder(SHAPE, D), MLPDecoder(D, SHAPE, hidden=(8,)), Bernoulli(), StandardNormal(D)))
    path = save(model, tmp_path / "u.safetensors")
    with pytest.raises(ValueError, match="trusted"):
        load(path)
    loaded = load(path, trusted=(UserEncoder.__module__ + ".",))
    assert isinstance(loaded, VAE) and isinstance(loaded.encoder, UserEncoder)
    x = torch.rand(3, *SHAPE)
    assert torch.equal(seeded_elbo(model.eval(), x, None), seeded_elbo(loaded, x, None))


def test_undescribable_parts_are_refused_before_writing(tmp_path: Path) -> None:
    class Opaque(nn.Module):
        def __init__(self, size: int) -> None:
            super().__init__()
            self.linear = nn.Linear(size, 2 * D)  # `size` is not kept as an attribute

        def forward(self, x: Tensor, y: Tensor | None = None) -> Distribution:
            mu, logvar = self.linear(x.flatten(1)).chunk(2, dim=-1)
            return Independent(Normal(mu, (0.5 * logvar).exp()), 1)

    model = VAE(Opaque(36), MLPDecoder(D, SHAPE, hidden=(8,)), Bernoulli(), StandardNormal(D))
    with pytest.raises(TypeError, match="'size'"):
        save(model, tmp_path / "o.safetensors")
    assert list(tmp_path.iterdir()) == []
