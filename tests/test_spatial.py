"""Spatial latent layers (C, H, W): the KL per element and free bits against float64 references,
a convolutional hierarchy with latent maps (its bounds, save and load, a large k in passes of
bounded size with the draws of one pass), and the 0.2 layout read through from_ladder against the
0.2 code itself."""

from __future__ import annotations

import io as stdio
import math
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from torch import Tensor
from torch.distributions import Independent, Normal
from torch.distributions import kl_divergence as torch_kl
from torch.overrides import TorchFunctionMode

import genvae
import genvae.models
from genvae import ELBO, IWAE, FreeBits
from genvae.hierarchy import (
    GaussianHead,
    HierarchicalVAE,
    LadderEncoder,
    MLPBlock,
    SpatialCell,
    build_hvae,
    conv_hierarchy,
    from_ladder,
    mlp_hierarchy,
)
from genvae.kl import kl_per_dim
from genvae.likelihoods import Bernoulli
from genvae.nets import MLPDecoder
from genvae.priors import StandardNormal
from genvae.registry import build, entry
from genvae.terms import LatentLayer, Terms

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[1]


def spatial(top_down: bool = True, seed: int = 0) -> HierarchicalVAE:
    """Three layers over 8×8 binary images: two maps of 3@4×4, a top vector of 5; float64."""
    torch.manual_seed(seed)
    model = conv_hierarchy(
        (1, 8, 8), (3, 3, 5), likelihood=Bernoulli(), channels=(4,), hidden=6, top_down=top_down, spatial_latents=True
    )
    return model.double()


def images(n: int, seed: int = 1) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g, dtype=F64).bernoulli(generator=g)


def maps(shape: tuple[int, ...], seed: int) -> Independent:
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(shape, generator=g, dtype=F64)
    scale = torch.rand(shape, generator=g, dtype=F64) + 0.3
    return Independent(Normal(loc, scale), 3)


# --------------------------------------------------------------------------- KL per element, free bits


def test_the_kl_per_element_of_latent_maps_is_torchs_elementwise_kl_and_sums_to_the_layers_kl() -> None:
    q, p = maps((4, 2, 3, 3), seed=0), maps((4, 2, 3, 3), seed=1)  # batch (B,), event (C, H, W)
    z = q.rsample((5,))  # (k, B, C, H, W)
    per = kl_per_dim(q, p, z)
    assert per.shape == (5, 4, 2, 3, 3)
    torch.testing.assert_close(per, torch_kl(q.base_dist, p.base_dist).expand(5, 4, 2, 3, 3), rtol=0, atol=0)
    torch.testing.assert_close(per.flatten(2).sum(-1), LatentLayer(q, p, z).kl())
    with pytest.raises(ValueError, match="same event shape"):
        kl_per_dim(q, Independent(Normal(torch.zeros(4, 18), torch.ones(4, 18)), 1), z)


def test_free_bits_floors_each_element_of_a_latent_map_and_of_a_vector_layer_by_hand() -> None:
    q_map, p_map = maps((6, 2, 2, 2), seed=2), maps((6, 2, 2, 2), seed=3)
    q_vec = Independent(Normal(torch.randn(6, 3, dtype=F64), torch.rand(6, 3, dtype=F64) + 0.5), 1)
    p_vec = Independent(Normal(torch.zeros(6, 3, dtype=F64), torch.ones(6, 3, dtype=F64)), 1)
    z_map, z_vec = q_map.rsample((2,)), q_vec.rsample((2,))
    log_px = torch.randn(2, 6, dtype=F64)
    terms = Terms(log_px, (LatentLayer(q_vec, p_vec, z_vec), LatentLayer(q_map, p_map, z_map)))
    kl_map = torch_kl(q_map.base_dist, p_map.base_dist)  # (B, C, H, W), by torch.distributions
    kl_vec = torch_kl(q_vec.base_dist, p_vec.base_dist)  # (B, D)
    lam = float(kl_map.mean(0).median())
    out = FreeBits(lam)(terms)
    floored = kl_map.mean(0).clamp(min=lam).sum() + kl_vec.mean(0).clamp(min=lam).sum()
    torch.testing.assert_close(out.loss, -log_px.mean() + floored)
    torch.testing.assert_close(out.bound, (log_px - kl_map.flatten(1).sum(-1) - kl_vec.sum(-1)).mean(0))
    assert bool((kl_map.mean(0) < lam).any()) and bool((kl_map.mean(0) > lam).any())  # both sides of the floor


# --------------------------------------------------------------------------- the spatial hierarchy


@pytest.mark.parametrize("top_down", [True, False], ids=["top-down", "bottom-up"])
def test_a_spatial_hierarchy_has_latent_maps_below_a_vector_top_and_cells_of_each_kind(top_down: bool) -> None:
    model, x = spatial(top_down), images(4)
    assert [type(cell).__name__ for cell in model.cells] == ["SpatialCell", "SpatialCell", "GaussianCell"]
    terms = model.terms(x, k=2)
    assert [layer.z.shape for layer in terms.layers] == [(2, 4, 5), (2, 4, 3, 4, 4), (2, 4, 3, 4, 4)]
    assert terms.log_likelihood.shape == (2, 4) and bool(torch.isfinite(terms.log_weights()).all())
    assert model.sample(3).shape == (3, 1, 8, 8) and model.reconstruct(x).shape == x.shape
    assert model.latent_shape == (5,)


@pytest.mark.parametrize("top_down", [True, False], ids=["top-down", "bottom-up"])
def test_the_iw_bound_of_a_spatial_hierarchy_is_above_the_elbo_and_tightens_with_k(top_down: bool) -> None:
    model, x = spatial(top_down, seed=4), images(16, seed=5)
    torch.manual_seed(6)
    with torch.no_grad():
        means = {k: torch.stack([IWAE(k)(model.terms(x, k=k)).bound.mean() for _ in range(40)]) for k in (1, 5, 50)}
        elbo = torch.stack([ELBO()(model.terms(x)).bound.mean() for _ in range(40)])
    m = {k: float(v.mean()) for k, v in means.items()}
    assert m[1] < m[5] < m[50]  # in expectation over 40 × 16 draws
    assert float(elbo.mean()) < m[50]
    se = float((means[5] - means[1]).std() / math.sqrt(40))
    assert m[5] - m[1] > 3 * se  # the tightening is beyond the noise


def test_a_spatial_hierarchy_saves_and_loads_with_bit_equal_log_weights(tmp_path) -> None:
    model, x = spatial(), images(3)
    loaded = genvae.load(genvae.save(model, tmp_path / "model.safetensors"))
    assert [type(c) for c in loaded.cells] == [type(c) for c in model.cells]
    torch.manual_seed(8)
    before = model.terms(x, k=4).log_weights()
    torch.manual_seed(8)
    assert torch.equal(loaded.terms(x, k=4).log_weights(), before)


class LargestTensor(TorchFunctionMode):
    """Records the elements of the largest tensor any torch function returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(value, Tensor):
                self.largest = max(self.largest, value.numel())
        return out


CASES = {
    "spatial-top-down": lambda: spatial(True),
    "spatial-bottom-up": lambda: spatial(False),
    "mlp-top-down": lambda: mlp_hierarchy((1, 8, 8), (4, 3, 2), likelihood=Bernoulli(), hidden=(12,)).double(),
    "mlp-bottom-up": lambda: mlp_hierarchy(
        (1, 8, 8), (4, 3, 2), likelihood=Bernoulli(), hidden=(12,), top_down=False
    ).double(),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_large_k_runs_in_passes_of_bounded_size_with_the_log_weights_of_one_pass(case: str, monkeypatch) -> None:
    torch.manual_seed(0)
    model, x, k = CASES[case](), images(2), 300
    with torch.no_grad():
        torch.manual_seed(9)
        whole = model.terms(x, k=k)
        monkeypatch.setattr(genvae.models, "IW_CHUNK_ELEMENTS", 4 * x.numel())  # passes of 4 draws
        torch.manual_seed(9)
        with LargestTensor() as passes:
            parted = model.terms(x, k=k)
        with LargestTensor() as one:
            monkeypatch.setattr(genvae.models, "IW_CHUNK_ELEMENTS", 2**25)
            torch.manual_seed(9)
            model.terms(x, k=k)
    assert torch.equal(parted.log_weights(), whole.log_weights())  # the same draws, to the bit
    for a, b in zip(parted.layers, whole.layers):
        assert torch.equal(a.z, b.z) and torch.equal(a.kl(), b.kl())
    # Kept whole are the draws and the layers' parameters, (k, B, *event); a pass makes nothing larger,
    # where one pass over all k makes the decoder's outputs or the feature maps for every draw.
    kept = k * x.shape[0] * max(math.prod(layer.z.shape[2:]) for layer in whole.layers)
    assert passes.largest <= kept < one.largest


def test_the_hvae_entry_builds_each_arch_from_facts_and_a_prior_function() -> None:
    hvae = entry("model", "hvae")
    assert [o.name for o in hvae.options][:5] == ["layers", "inference", "hidden", "channels", "spatial_latents"]
    facts = {
        "arch": "conv",
        "data_shape": (1, 8, 8),
        "latent_dim": 5,
        "likelihood": Bernoulli(),
        "flow": None,
        "num_classes": None,
        "prior": lambda encoder: genvae.priors.VampPrior(encoder, 3, (1, 8, 8)),
    }
    model = build(hvae, facts, {"layers": 3, "spatial_latents": True, "latent_channels": 2, "channels": (4,)})
    assert isinstance(model.cells[0], SpatialCell) and model.prior.encoder is model.encoder
    terms = model.terms(images(2).float(), k=2)
    assert [layer.z.shape[2:] for layer in terms.layers] == [(5,), (2, 4, 4), (2, 4, 4)]
    resnet = build_hvae("resnet", (1, 8, 8), 3, Bernoulli(), prior=StandardNormal(3), channels=(4,), hidden=(6,))
    assert resnet.cells[0].up.blocks == 1 and isinstance(resnet.prior, StandardNormal)
    with pytest.raises(ValueError, match="expected arch 'conv' or 'resnet' with spatial latents"):
        build_hvae("mlp", (1, 8, 8), 3, Bernoulli(), spatial_latents=True)


# --------------------------------------------------------------------------- the 0.2 layout


OLD = "e889bd9"
OLD_SCRIPT = """
import sys, torch
from genvae.hierarchy import mlp_hierarchy
from genvae.likelihoods import Bernoulli
from genvae.priors import VampPrior
torch.manual_seed(0)
route = sys.argv[2] == "top-down"
model = mlp_hierarchy((1, 3, 3), (4, 3, 2), likelihood=Bernoulli(), hidden=((8,), (6, 5), (4,)), top_down=route,
                      num_pseudo_inputs=4).double()
g = torch.Generator().manual_seed(1)
x = torch.rand(5, 1, 3, 3, generator=g, dtype=torch.float64).bernoulli(generator=g)
torch.manual_seed(7)
log_w = model.terms(x, k=6).log_weights()
torch.save({"state": model.state_dict(), "x": x, "log_w": log_w}, sys.argv[1])
"""


@pytest.fixture(scope="module")
def old_source(tmp_path_factory) -> Path:
    """genvae's source at the last commit of the 0.2 layout, unpacked from git (no worktree)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and this repository's history")
    done = subprocess.run(["git", "-C", str(ROOT), "archive", OLD, "src"], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"commit {OLD} is not in this checkout")
    root = tmp_path_factory.mktemp("old")
    with tarfile.open(fileobj=stdio.BytesIO(done.stdout)) as archive:
        archive.extractall(root, filter="data")
    return root / "src"


@pytest.mark.parametrize("route", ["top-down", "bottom-up"])
def test_from_ladder_reuses_the_old_layouts_parts_and_gives_its_log_weights_to_the_bit(
    route: str, old_source: Path, tmp_path
) -> None:
    out = tmp_path / "old.pt"
    env = {"PYTHONPATH": str(old_source), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", OLD_SCRIPT, str(out), route], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    old = torch.load(out, weights_only=True)

    # The parts of the 0.2 layout, built as a loader of 0.2 files would and filled from its state dict.
    top_down = route == "top-down"
    up = [MLPBlock((1, 3, 3), 8), MLPBlock(8 if top_down else 4, 5, hidden=(6,)), MLPBlock(5 if top_down else 3, 4)]
    heads = [GaussianHead(8 + 6, 4, hidden=(8,)), GaussianHead(5 + 4, 3, hidden=(5,)), GaussianHead(4, 2)]
    if not top_down:
        heads = [GaussianHead(8, 4), GaussianHead(5, 3), GaussianHead(4, 2)]
    down = [MLPBlock(3, 6, hidden=(5,)), MLPBlock(2, 4)]
    conditionals = [GaussianHead(6, 4), GaussianHead(4, 3)]
    encoder = LadderEncoder(up, heads, top_down=top_down)
    container = torch.nn.Module()
    container.encoder, container.down_blocks = encoder, torch.nn.ModuleList(down)
    container.prior_blocks = torch.nn.ModuleList(conditionals)
    container.decoder = MLPDecoder(4, (1, 3, 3), hidden=(8,), activation=torch.nn.Tanh)
    container.prior = genvae.priors.VampPrior(encoder, 4, (1, 3, 3))
    container.double().load_state_dict(old["state"])

    model = from_ladder(encoder, down, conditionals, container.decoder, Bernoulli(), container.prior)
    assert model.cells[1].up is up[1] and model.cells[1].posterior is heads[1]  # the very modules
    assert model.cells[0].prior_head is conditionals[0] and model.cells[2].down is down[1]
    assert model.prior.encoder is model.encoder
    torch.manual_seed(7)
    assert torch.equal(model.terms(old["x"], k=6).log_weights(), old["log_w"])
