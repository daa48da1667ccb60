"""save/load: exact round trips for every kind of part, and refusal of bad or untrusted files.

Files are edited here as version 1 wrote them, every part named by its class's module path (see
``version_1``): what a version-2 file adds, parts named by registry name, is tested in test_io_v2.py.
"""

from __future__ import annotations

import copy
import functools
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

import genvae
from genvae import CVAE, VAE, load, registry, save
from genvae.io import (
    _CREATED_ALLOWANCE,
    _CREATED_PER_STORED_BYTE,
    _MAX_DEPTH,
    _MAX_HEADER_BYTES,
    MODEL_FILE,
    describe,
)
from genvae.likelihoods import Bernoulli, ContinuousBernoulli, Gaussian
from genvae.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from genvae.priors import (
    ConditionalNormal,
    LearnedNormal,
    MixtureOfGaussians,
    StandardNormal,
    VampPrior,
)
from genvae.runfolder import commit, lock

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


def version_1(value: Any) -> Any:
    """A description (or a value of one) as version 1 wrote it: a registered part ``{"part":
    "kind/name", ...}`` named by its class's module path, ``{"class": "genvae.priors.VampPrior", ...}``."""
    if isinstance(value, list):
        return [version_1(item) for item in value]
    if not isinstance(value, dict):
        return value
    written = {key: version_1(item) for key, item in value.items()}
    if "part" in written:
        cls = registry.entry(*written.pop("part").split("/")).obj
        written = {"class": f"{cls.__module__}.{cls.__qualname__}", **written}
    return {**written, "version": 1} if "version" in written else written


def rewrite(path: Path, edit: Callable[[dict[str, Any]], object], tensors: dict[str, Tensor] | None = None) -> None:
    """Rewrite a saved model file with its description written as version 1 did (``version_1``) and
    edited by ``edit`` (and optionally other tensors)."""
    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata())
        stored = {k: f.get_tensor(k) for k in f.keys()}
    spec = version_1(json.loads(metadata[FORMAT_KEY]))
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
    with pytest.raises(TypeError, match=r"'size'.*e\.g\. self\.size = size"):
        save(model, tmp_path / "o.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_trusted_takes_prefixes_not_one_string(tmp_path: Path) -> None:
    path = save(mlp_vae(), tmp_path / "m.safetensors")
    with pytest.raises(TypeError, match="tuple of module prefixes"):
        load(path, trusted="genvae.")  # type: ignore[arg-type]


def test_a_package_main_module_is_refused_even_under_a_trusted_prefix(tmp_path: Path) -> None:
    path = save(mlp_vae(), tmp_path / "m.safetensors")
    rewrite(path, lambda spec: spec["model"].update({"class": "genvae.__main__.Command", "args": {}}))
    before = set(sys.modules)
    with pytest.raises(ValueError, match=r"model\.class in .*trusted"):
        load(path, trusted=("genvae.",))
    assert set(sys.modules) == before


def test_a_shape_mismatch_names_the_key_both_shapes_and_the_file(tmp_path: Path) -> None:
    path = save(mlp_vae(), tmp_path / "m.safetensors")
    rewrite(path, lambda spec: spec["model"]["args"]["encoder"]["args"].update(hidden=[9]))
    with pytest.raises(ValueError) as info:
        load(path)
    message = str(info.value)
    assert str(path) in message and "'encoder.net.0.weight'" in message
    assert "(9, 36)" in message and "(8, 36)" in message


def test_a_tensor_of_another_kind_of_dtype_is_refused(tmp_path: Path) -> None:
    path = save(mlp_vae(), tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors["decoder.net.0.bias"] = tensors["decoder.net.0.bias"].to(torch.int64)
    rewrite(path, lambda spec: None, tensors=tensors)
    with pytest.raises(ValueError, match=r"do not match.*'decoder\.net\.0\.bias'.*torch\.int64"):
        load(path)


def test_a_model_saved_in_double_precision_loads_in_double_precision(tmp_path: Path) -> None:
    model = randomise(mlp_vae()).double()
    loaded = load(save(model, tmp_path / "d.safetensors"))
    got = loaded.state_dict()
    for key, value in model.state_dict().items():
        assert got[key].dtype == torch.float64 and torch.equal(got[key], value), key


def test_a_run_folder_model_is_verified_against_its_manifest(tmp_path: Path) -> None:
    model = randomise(mlp_vae())
    run = tmp_path / "run"
    with lock(run):
        commit(run, 1, {MODEL_FILE: lambda path: save(model, path)})
    key = "decoder.net.0.weight"
    assert torch.equal(load(run).state_dict()[key], model.state_dict()[key])
    data = bytearray((run / MODEL_FILE).read_bytes())
    data[-1] ^= 0x01  # one bit of one weight
    (run / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(ValueError, match="manifest"):
        load(run)


# --------------------------------------------------------------------------- malformed files

#: How deep the encoder's ``hidden`` list sits: description > model > args > encoder > args > hidden.
HIDDEN_DEPTH = 6


def encoder_args(spec: dict[str, Any], part: str = "encoder") -> dict[str, Any]:
    return spec["model"]["args"][part]["args"]


def nested(depth: int, leaf: Any) -> Any:
    """``leaf`` inside ``depth`` lists."""
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def write_description(path: Path, text: str) -> Path:
    """A safetensors file whose genvae description is ``text``, verbatim (it need not be JSON)."""
    save_file({"w": torch.zeros(1)}, str(path), metadata={FORMAT_KEY: text})
    return path


def write_layout(path: Path, header: bytes, tensors: bytes = b"", *, length: int | None = None) -> Path:
    """A file laid out as safetensors: the header's length (8 bytes, little-endian), header, tensors."""
    size = len(header) if length is None else length
    path.write_bytes(size.to_bytes(8, "little") + header + tensors)
    return path


def edited(edit: Callable[[dict[str, Any]], object]) -> Callable[[Path], Path]:
    """A maker of a saved small VAE's file with its description edited by ``edit``."""

    def make(folder: Path) -> Path:
        path = save(mlp_vae(), folder / "m.safetensors")
        rewrite(path, edit)
        return path

    return make


def empty(folder: Path) -> Path:
    path = folder / "m.safetensors"
    path.write_bytes(b"")
    return path


def truncated(folder: Path) -> Path:
    path = save(mlp_vae(), folder / "m.safetensors")
    path.write_bytes(path.read_bytes()[:-16])
    return path


def f32(name: str, shape: list[int], start: int, end: int) -> dict[str, Any]:
    return {name: {"dtype": "F32", "shape": shape, "data_offsets": [start, end]}}


def layout(header: Any, tensors: bytes = b"", *, length: int | None = None) -> Callable[[Path], Path]:
    return lambda folder: write_layout(folder / "m.safetensors", json.dumps(header).encode(), tensors, length=length)


#: A flaw in the description: the file maker and the JSON path the error must name.
MALFORMED_DESCRIPTIONS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "a part without a class": (
        edited(lambda s: s["model"]["args"]["likelihood"].pop("class")),
        "model.args.likelihood",
    ),
    "args that are a list": (
        edited(lambda s: s["model"]["args"]["encoder"].update(args=[1, 2])),
        "model.args.encoder.args",
    ),
    "a class that is not a string": (
        edited(lambda s: s["model"]["args"]["encoder"].update({"class": 3})),
        "model.args.encoder.class",
    ),
    "a class that is not a module": (
        edited(lambda s: s["model"]["args"]["encoder"].update({"class": "genvae.models.ELBOOutput"})),
        "model.args.encoder.class",
    ),
    "a reference to no part": (
        edited(lambda s: s["model"]["args"].update(prior={"ref": "model.nowhere"})),
        "model.args.prior.ref",
    ),
    "a reference to a part built later": (
        edited(lambda s: s["model"]["args"].update(encoder={"ref": "model.decoder"})),
        "model.args.encoder.ref",
    ),
    "an argument of the wrong type": (
        edited(lambda s: encoder_args(s).update(latent_dim="three")),
        "model.args.encoder",
    ),
    "an unknown argument": (edited(lambda s: encoder_args(s).update(colour="red")), "model.args.encoder"),
    "an object that is no value": (
        edited(lambda s: encoder_args(s).update(hidden=[8, {"size": 8}])),
        "model.args.encoder.args.hidden[1]",
    ),
    "a model that is not a part": (edited(lambda s: s.update(model=[1])), "model"),
    "nesting beyond the limit": (
        edited(lambda s: encoder_args(s).update(hidden=nested(100, 8))),
        "model.args.encoder.args.hidden" + "[0]" * (_MAX_DEPTH + 1 - HIDDEN_DEPTH),
    ),
}

#: A flaw in the file: the file maker and what the error must say besides the file's name.
MALFORMED_FILES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "a description that is not JSON": (lambda d: write_description(d / "m.safetensors", "{"), "invalid JSON"),
    "a description that is not an object": (lambda d: write_description(d / "m.safetensors", "[1]"), "got [1]"),
    "a description nested 100000 deep": (
        lambda d: write_description(d / "m.safetensors", "[" * 100_000 + "]" * 100_000),
        "nested too deeply",
    ),
    "a description without a format": (edited(lambda s: s.pop("format")), "got format None"),
    "an empty file": (empty, "got 0 bytes"),
    "a header length beyond the file": (layout({}, length=1000), "got a header length of 1000"),
    "a header that is not JSON": (lambda d: write_layout(d / "m.safetensors", b"{not json}"), "not JSON"),
    "a header that is not an object": (layout([]), "got a header that is []"),
    "a tensor of an unknown dtype": (
        layout({"w": {"dtype": "F33", "shape": [1], "data_offsets": [0, 4]}}, bytes(4)),
        "'dtype': 'F33'",
    ),
    "a tensor larger than its bytes": (
        layout(f32("w", [1000], 0, 4), bytes(4)),
        "'shape': [1000]",
    ),
    "tensors that overlap": (
        layout({**f32("a", [100], 0, 400), **f32("b", [100], 0, 400)}, bytes(400)),
        "of 800 bytes",
    ),
    "a truncated file": (truncated, "within the"),
    "a lazy module, whose weights have no size": (
        edited(lambda s: s.update(model={"class": "torch.nn.modules.linear.LazyLinear", "args": {"out_features": 3}})),
        "expected a tensor 'weight' of a known size, got a lazy module's",
    ),
}


@pytest.mark.parametrize("case", MALFORMED_DESCRIPTIONS)
def test_a_malformed_description_is_a_value_error_naming_its_json_path_and_the_file(tmp_path: Path, case: str) -> None:
    make, where = MALFORMED_DESCRIPTIONS[case]
    path = make(tmp_path)
    with pytest.raises(ValueError) as info:
        load(path)
    assert f"{where} in {str(path)!r}: expected " in str(info.value)


@pytest.mark.parametrize("case", MALFORMED_FILES)
def test_a_malformed_file_is_a_value_error_naming_the_file_and_the_flaw(tmp_path: Path, case: str) -> None:
    make, flaw = MALFORMED_FILES[case]
    path = make(tmp_path)
    with pytest.raises(ValueError) as info:
        load(path)
    assert str(path) in str(info.value) and flaw in str(info.value)


@pytest.mark.parametrize("beyond", [False, True])
def test_a_description_is_refused_for_its_depth_only_beyond_the_limit(tmp_path: Path, beyond: bool) -> None:
    innermost = _MAX_DEPTH + beyond  # depth of the innermost list
    path = edited(lambda s: encoder_args(s).update(hidden=nested(innermost - HIDDEN_DEPTH + 1, 8)))(tmp_path)
    with pytest.raises(ValueError) as info:  # at the limit, MLPEncoder refuses hidden=((...(8,)...),)
        load(path)
    assert ("nested at most" in str(info.value)) is beyond


@pytest.mark.parametrize("beyond", [False, True])
def test_a_header_is_refused_unread_only_beyond_the_size_limit(tmp_path: Path, beyond: bool) -> None:
    header = b"{}" + b" " * (_MAX_HEADER_BYTES - 2 + beyond)
    path = write_layout(tmp_path / "m.safetensors", header)
    with pytest.raises(ValueError) as info:
        load(path)
    message = str(info.value)
    assert ("at most 16 MiB" in message) is beyond
    assert ("genvae description" in message) is not beyond  # read, and found to hold no description


def test_buffers_the_file_does_not_hold_are_refused_only_beyond_the_memory_budget(tmp_path: Path) -> None:
    path = save(mlp_vae(), tmp_path / "m.safetensors")
    stored_bytes = path.stat().st_size  # an upper bound of the bytes of its tensors
    within = stored_bytes // 4  # float32 elements of the prior's mean, which is not stored
    beyond = (_CREATED_PER_STORED_BYTE * stored_bytes + _CREATED_ALLOWANCE) // 4 + 1
    rewrite(path, lambda spec: encoder_args(spec, "prior").update(latent_dim=within))
    loaded = load(path)
    assert isinstance(loaded, VAE) and isinstance(loaded.prior, StandardNormal)
    assert loaded.prior.latent_dim == within
    rewrite(path, lambda spec: encoder_args(spec, "prior").update(latent_dim=beyond))
    with pytest.raises(ValueError, match=r"model\.args\.prior in .*expected tensors of at most \d+ bytes"):
        load(path)


@pytest.mark.parametrize("layers", [3, 40])
def test_modules_are_refused_for_their_number_only_far_beyond_the_files_tensors(tmp_path: Path, layers: int) -> None:
    path = save(mlp_vae(), tmp_path / "m.safetensors")  # 8 tensors: 2 linear layers in each net
    rewrite(path, lambda spec: encoder_args(spec).update(hidden=[8] * layers))
    with pytest.raises(ValueError) as info:
        load(path)
    assert ("modules, parameters and buffers" in str(info.value)) is (layers == 40)
    assert ("do not match" in str(info.value)) is (layers == 3)


@pytest.mark.parametrize("where", ["header", "description"])
@pytest.mark.parametrize("beyond", [False, True])
def test_json_is_refused_unparsed_only_beyond_its_count_of_values(tmp_path: Path, where: str, beyond: bool) -> None:
    limit = genvae.io._MAX_JSON_VALUES
    values = "[" + ",".join(["0"] * (limit - 1 + beyond)) + "]"  # a list and its items: limit (+ 1) values
    if where == "header":
        header = values.encode()
    else:  # commas escaped in the header's string: only the description has them
        escaped = json.dumps(values).replace(",", "\\u002c")
        header = f'{{"__metadata__": {{"{FORMAT_KEY}": {escaped}}}}}'.encode()
    path = write_layout(tmp_path / "m.safetensors", header)
    with pytest.raises(ValueError) as info:
        load(path)
    message = str(info.value)
    assert str(path) in message
    assert (f"at most {limit} values" in message) is beyond
    assert ("got [0, 0" in message or "header that is [0, 0" in message) is not beyond  # parsed, and refused


#: Strings a fuzzed description or header draws from: real class names, forbidden ones, references
#: and argument names, so that examples reach past the first check.
WORDS = [
    "genvae.models.VAE",
    "genvae.nets.MLPEncoder",
    "genvae.priors.StandardNormal",
    "torch.nn.modules.linear.Linear",
    "torch.nn.modules.activation.ReLU",
    "genvae.__main__.Command",
    "os.system",
    "prior/vamp",
    "encoder/mlp",
    "model/vae",
    "data/mnist",
    "model",
    "model.encoder",
    "F32",
    "I64",
]
KEYS = [
    "class",
    "part",
    "args",
    "ref",
    "type",
    "latent_dim",
    "data_shape",
    "hidden",
    "encoder",
    "dtype",
    "shape",
    "data_offsets",
]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2**70) | st.floats() | st.sampled_from(WORDS),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=3),
    max_leaves=16,
)


def subtrees(value: Any, where: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """The paths (keys and indices) of every value nested in ``value``, its own ``()`` first."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    return [where, *(path for key, item in items for path in subtrees(item, (*where, key)))]


def replaced(value: Any, where: tuple[str | int, ...], new: Any) -> Any:
    """A copy of ``value`` with the value at path ``where`` replaced by ``new``."""
    if not where:
        return new
    copy = json.loads(json.dumps(value))
    parent = copy
    for key in where[:-1]:
        parent = parent[key]
    parent[where[-1]] = new
    return copy


def loads_or_names_the_file(path: Path) -> None:
    """Load ``path``: it must give a model, or a ValueError that names the file."""
    try:
        assert isinstance(load(path), nn.Module)
    except ValueError as err:
        assert str(path) in str(err), err


@functools.cache
def vamp_file(version: int) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The description of ``version`` of a VampPrior VAE (whose prior refers to the encoder) and its
    stored tensors."""
    model = vamp_vae()
    with tempfile.TemporaryDirectory() as folder:
        path = save(model, Path(folder) / "v.safetensors")
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    return (version_1(describe(model)) if version == 1 else describe(model)), tensors


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_a_description_with_any_part_replaced_loads_or_is_a_value_error(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    spec, tensors = vamp_file(data.draw(st.sampled_from([1, 2])))
    fuzzed = replaced(spec, data.draw(st.sampled_from(subtrees(spec))), data.draw(JSON_VALUES))
    path = tmp_path_factory.getbasetemp() / "fuzzed-description.safetensors"
    save_file(tensors, str(path), metadata={FORMAT_KEY: json.dumps(fuzzed)})
    loads_or_names_the_file(path)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_a_header_with_any_part_replaced_loads_or_is_a_value_error(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    spec, tensors = vamp_file(data.draw(st.sampled_from([1, 2])))
    path = tmp_path_factory.getbasetemp() / "fuzzed-header.safetensors"
    save_file(tensors, str(path), metadata={FORMAT_KEY: json.dumps(spec)})
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    fuzzed = replaced(header, data.draw(st.sampled_from(subtrees(header))), data.draw(JSON_VALUES))
    write_layout(path, json.dumps(fuzzed).encode(), raw[8 + size :])
    loads_or_names_the_file(path)


# --------------------------------------------------------------------------- crafted files, in a fresh process

#: Classes a file may name that must be refused before their module is imported.
FORBIDDEN_CLASSES = ["genvae.__main__.Command", "os.system", "subprocess.Popen", "builtins.eval", "genvae.io.os.system"]

#: Descriptions that ask for far more memory or time than their 2.6 MB file's weights justify.
CRAFTED_SIZES: dict[str, Callable[[dict[str, Any]], object]] = {
    "latent_dim=500000": lambda s: [
        encoder_args(s, p).update(latent_dim=500_000) for p in ("encoder", "decoder", "prior")
    ],
    "a 20000x20000 layer": lambda s: encoder_args(s).update(hidden=[20_000, 20_000]),
    "hidden=[1]*200000": lambda s: encoder_args(s).update(hidden=[1] * 200_000),
    "a prior of latent_dim=10**8": lambda s: encoder_args(s, "prior").update(latent_dim=10**8),
    "a VampPrior of 10**6 pseudo-inputs": lambda s: s["model"]["args"].update(
        prior={
            "class": "genvae.priors.VampPrior",
            "args": {"encoder": {"ref": "model.encoder"}, "num_pseudo_inputs": 10**6, "data_shape": [1, 28, 28]},
        }
    ),
}
MAX_EXTRA_MIB = 100
MAX_SECONDS = 1.0


def mnist_mlp_vae() -> VAE:
    """The 784-400-20 MLP VAE, whose file (2.6 MB) the crafted ones start from."""
    shape = (1, 28, 28)
    return VAE(MLPEncoder(shape, 20), MLPDecoder(20, shape), Bernoulli(), StandardNormal(20))


def naming_the_model(name: str, spec: dict[str, Any]) -> None:
    spec["model"] = {"class": name, "args": {}}


@pytest.fixture(scope="module")
def crafted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every crafted file loaded in one fresh process: the report of ``crafted_load.py``, with its
    results keyed by case."""
    folder = tmp_path_factory.mktemp("crafted")
    base = save(mnist_mlp_vae(), folder / "base.safetensors")
    edits: dict[str, Callable[[dict[str, Any]], object]] = {
        name: functools.partial(naming_the_model, name) for name in FORBIDDEN_CLASSES
    }
    edits.update(CRAFTED_SIZES)
    files = []
    for i, edit in enumerate(edits.values()):
        files.append(folder / f"case{i}.safetensors")
        files[-1].write_bytes(base.read_bytes())
        rewrite(files[-1], edit)
    return load_in_a_fresh_process(dict(zip(edits, files)))


def start_crafted_load(paths: list[Path]) -> subprocess.Popen[str]:
    """``crafted_load.py`` started on ``paths`` in a fresh process."""
    script = Path(__file__).with_name("crafted_load.py")
    command = [sys.executable, str(script), *map(str, paths)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def crafted_load_report(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """The report, once it has ended, of a process started by ``start_crafted_load``."""
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    return json.loads(stdout.splitlines()[-1])


def load_in_a_fresh_process(files: dict[str, Path]) -> dict[str, Any]:
    """The report of ``crafted_load.py`` on ``files``, loaded one after the other in one fresh
    process, with its results keyed as ``files`` is."""
    report = crafted_load_report(start_crafted_load(list(files.values())))
    report["results"] = dict(zip(files, report["results"]))
    return report


@pytest.mark.parametrize("name", FORBIDDEN_CLASSES)
def test_a_class_outside_the_allowed_modules_is_refused_before_anything_is_imported(
    crafted: dict[str, Any], name: str
) -> None:
    result = crafted["results"][name]
    assert result["outcome"] == "ValueError", result
    assert "model.class in" in result["message"] and "trusted" in result["message"]
    assert result["new_modules"] == []
    assert not crafted["main_imported"]


@pytest.mark.parametrize("case", CRAFTED_SIZES)
def test_a_crafted_size_is_refused_in_little_memory_and_time(crafted: dict[str, Any], case: str) -> None:
    result = crafted["results"][case]
    print(f"{case}: {result['outcome']} after {result['seconds']:.3f} s")
    assert result["outcome"] == "ValueError", result
    assert result["seconds"] < MAX_SECONDS
    if result["peak_kib"] is None:
        pytest.skip("peak memory is read from /proc/self/status, which this system lacks")
    # the peak during this load, over the memory resident before the first load: an upper bound
    extra_mib = (result["peak_kib"] - crafted["rss_before_kib"]) / 1024
    print(f"{case}: peak {extra_mib:.1f} MiB over the memory resident before the first load")
    assert extra_mib < MAX_EXTRA_MIB


# --------------------------------------------------------------------------- what constructors build, counted first

#: Layers copied by torch's TransformerEncoder and TransformerDecoder: 3.0 and 4.0 MiB of weights.
LAYER_ARGS = {"d_model": 256, "nhead": 1, "dim_feedforward": 1024}
EMPTY_SEQUENTIAL = {"class": "torch.nn.modules.container.Sequential", "args": {}}


def transformer(kind: str, num_layers: int) -> dict[str, Any]:
    """torch's TransformerEncoder or TransformerDecoder (``kind``) of ``num_layers`` copies of a layer
    with ``LAYER_ARGS``."""
    layer = {"class": f"torch.nn.modules.transformer.Transformer{kind}Layer", "args": LAYER_ARGS}
    args = {f"{kind.lower()}_layer": layer, "num_layers": num_layers}
    return {"class": f"torch.nn.modules.transformer.Transformer{kind}", "args": args}


#: Descriptions in files of 388 bytes to 6.5 MB whose constructors, built without counting them
#: first, grew memory by 471, 473, 503, 263 and 345 MiB before they were refused: deep copies of a
#: layer with weights, deep copies of a module without any, and parts built by the description; each
#: with the number of empty tensors its file holds besides one of 4 bytes (each allows 4 more
#: modules, parameters and buffers, so that bytes run out first).
CRAFTED_GROWTH: dict[str, tuple[dict[str, Any], int]] = {
    "TransformerEncoder of 150 copies of a 3 MiB layer": (transformer("Encoder", 150), 0),
    "TransformerEncoder of 150 copies of a 3 MiB layer, in a file of 1000 empty tensors": (
        transformer("Encoder", 150),
        1000,
    ),
    "TransformerDecoder of 120 copies of a 4 MiB layer": (transformer("Decoder", 120), 0),
    "ModuleList of 100000 activations": (
        {
            "class": "torch.nn.modules.container.ModuleList",
            "args": {"modules": [{"class": "torch.nn.modules.activation.ReLU", "args": {}}] * 100_000},
        },
        0,
    ),
    "Sequential copied 150000 times": (
        {
            "class": "torch.nn.modules.transformer.TransformerEncoder",
            "args": {"encoder_layer": EMPTY_SEQUENTIAL, "num_layers": 150_000, "enable_nested_tensor": False},
        },
        0,
    ),
}


def described(model: dict[str, Any]) -> str:
    """The description, as a file holds it, of the part ``model``."""
    return json.dumps({"format": FORMAT_KEY, "version": 1, "model": model})


def one_tensor_file(path: Path, model: dict[str, Any], empty_tensors: int = 0) -> Path:
    """A file describing ``model`` and holding one tensor of 4 bytes (and ``empty_tensors`` of none):
    a budget of 16 MiB and 8 bytes."""
    tensors = {"w": torch.zeros(1), **{f"empty{i}": torch.zeros(0) for i in range(empty_tensors)}}
    save_file(tensors, str(path), metadata={FORMAT_KEY: described(model)})
    return path


#: The budget of ``one_tensor_file``'s files, in bytes.
ONE_TENSOR_BUDGET = _CREATED_PER_STORED_BYTE * 4 + _CREATED_ALLOWANCE


@pytest.fixture(scope="module")
def crafted_growth(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Each ``CRAFTED_GROWTH`` file loaded in a fresh process of its own (memory that one load frees
    may stay resident, and hide the next load's growth), all at once: ``crafted_load.py``'s result
    for each case."""
    folder = tmp_path_factory.mktemp("crafted-growth")
    procs = {
        case: start_crafted_load([one_tensor_file(folder / f"case{i}.safetensors", model, empty)])
        for i, (case, (model, empty)) in enumerate(CRAFTED_GROWTH.items())
    }
    return {case: crafted_load_report(proc)["results"][0] for case, proc in procs.items()}


@pytest.mark.parametrize("case", CRAFTED_GROWTH)
def test_a_crafted_file_is_refused_before_its_parts_grow_beyond_the_budget(
    crafted_growth: dict[str, dict[str, Any]], case: str
) -> None:
    result = crafted_growth[case]
    assert result["outcome"] == "ValueError", result
    assert repr(result["file"]) in result["message"], result
    print(f"{case}: refused after {result['seconds']:.3f} s: {result['message'][:160]}")
    if result["peak_kib"] is None:
        pytest.skip("peak memory is read from /proc/self/status, which this system lacks")
    grown_mib = (result["peak_kib"] - result["peak_before_kib"]) / 1024
    allowed_mib = ONE_TENSOR_BUDGET / 2**20 + 64
    print(f"{case}: peak memory grew by {grown_mib:.1f} MiB (at most {allowed_mib:.1f}: the budget plus 64 MiB)")
    assert grown_mib <= allowed_mib


class Counted(nn.Module):
    """A part without weights that counts the instances made of it, built or deep-copied."""

    made = 0

    def __init__(self) -> None:
        super().__init__()
        Counted.made += 1

    def __setstate__(self, state: dict[str, Any]) -> None:  # how copy.deepcopy fills a copy
        super().__setstate__(state)
        Counted.made += 1


COUNTED = {"class": f"{Counted.__module__}.Counted", "args": {}}
#: Modules, parameters and buffers that a file of one tensor allows (4 per tensor, plus 64).
ONE_TENSOR_OBJECTS = 4 + 64


@pytest.mark.parametrize(
    "model",
    [
        {"class": "torch.nn.modules.container.ModuleList", "args": {"modules": [COUNTED] * 1000}},
        {
            "class": "torch.nn.modules.transformer.TransformerEncoder",
            "args": {"encoder_layer": COUNTED, "num_layers": 1000, "enable_nested_tensor": False},
        },
    ],
    ids=["parts in a ModuleList", "copies in a TransformerEncoder"],
)
def test_modules_without_weights_are_counted_before_they_are_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: dict[str, Any]
) -> None:
    monkeypatch.setattr(Counted, "made", 0)
    path = one_tensor_file(tmp_path / "m.safetensors", model)
    with pytest.raises(ValueError, match=r"model.* in .*: expected at most \d+ modules, parameters and buffers"):
        load(path, trusted=(Counted.__module__ + ".",))
    assert 0 < Counted.made <= ONE_TENSOR_OBJECTS
    assert "__deepcopy__" not in vars(nn.Module)  # copies are counted only while a file is loaded


#: Elements of a float32 tensor of 256 MiB, far beyond the budget of ``one_tensor_file``'s files.
BIG = 2**26


def expanded() -> Tensor:
    """One element viewed as ``BIG``: it takes 4 bytes, and a copy of it 256 MiB."""
    return torch.zeros(1).expand(BIG)


#: Calls that a part's constructor may make with sizes from its description, each creating a tensor
#: far larger than anything counted before it (all but the last at once; the last 64 tensors of 1 MiB).
GROWING_CALLS: dict[str, Callable[[], object]] = {
    "clone of an expanded view": lambda: expanded().clone(),
    "torch.clone of an expanded view": lambda: torch.clone(expanded()),
    "contiguous of an expanded view": lambda: expanded().contiguous(),
    "empty_like": lambda: torch.empty_like(expanded()),
    "zeros_like": lambda: torch.zeros_like(expanded()),
    "ones_like": lambda: torch.ones_like(expanded()),
    "full_like": lambda: torch.full_like(expanded(), 2.0),
    "rand_like": lambda: torch.rand_like(expanded()),
    "randn_like": lambda: torch.randn_like(expanded()),
    "randint_like": lambda: torch.randint_like(expanded(), 5),
    "repeat": lambda: torch.zeros(1).repeat(BIG),
    "tile": lambda: torch.zeros(1).tile((BIG,)),
    "repeat_interleave": lambda: torch.zeros(1).repeat_interleave(BIG),
    "repeat_interleave of repeats": lambda: torch.repeat_interleave(torch.tensor([BIG])),
    "cat": lambda: torch.cat([expanded(), expanded()]),
    "stack": lambda: torch.stack([expanded(), expanded()]),
    "tensor of a range": lambda: torch.tensor(range(2**22)),  # 32 MiB of int64
    "new_tensor of a range": lambda: torch.zeros(1).new_tensor(range(2**22)),
    "resize_": lambda: torch.zeros(1).resize_(BIG),
    "normal of a size": lambda: torch.normal(0.0, 1.0, size=(BIG,)),
    "tril_indices": lambda: torch.tril_indices(2**13, 2**13),
    "hann_window": lambda: torch.hann_window(BIG),
    "empty_permuted": lambda: torch.empty_permuted((BIG,), (0,)),
    "deep copies of a tensor": lambda: [copy.deepcopy(t) for t in [torch.zeros(2**18)] * 64],
}


class Grows(nn.Module):
    """A part whose constructor makes what ``GROWING_CALLS[call]`` makes."""

    def __init__(self, call: str) -> None:
        super().__init__()
        self.call = call
        self.made = GROWING_CALLS[call]()


@pytest.mark.parametrize("call", GROWING_CALLS)
def test_tensors_a_constructor_makes_from_others_are_counted_before_they_are_made(tmp_path: Path, call: str) -> None:
    path = one_tensor_file(tmp_path / "m.safetensors", {"class": f"{Grows.__module__}.Grows", "args": {"call": call}})
    with pytest.raises(ValueError, match=r"model in .*: expected tensors of at most \d+ bytes in all"):
        load(path, trusted=(Grows.__module__ + ".",))


class Clones(nn.Module):
    """A part holding ``count`` deep copies of ``layer``, as torch's TransformerEncoder does."""

    def __init__(self, layer: nn.Module, count: int) -> None:
        super().__init__()
        self.layer, self.count = layer, count
        self.copies = nn.ModuleList(copy.deepcopy(layer) for _ in range(count))


def test_a_model_of_deep_copies_loads_bit_equal(tmp_path: Path) -> None:
    model = randomise(Clones(mlp_vae(), 3))
    path = save(model, tmp_path / "m.safetensors")
    loaded = load(path, trusted=(Clones.__module__ + ".",))
    assert isinstance(loaded, Clones) and describe(loaded) == describe(model)
    ref, got = model.state_dict(), loaded.state_dict()
    assert ref.keys() == got.keys()
    for key in ref:
        assert torch.equal(ref[key], got[key]), key
    assert "__deepcopy__" not in vars(nn.Module)


class Normed(nn.Module):
    """A part whose layer is weight-normalised by a parametrization, which a deep copy must support."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.features = features
        self.linear = nn.utils.parametrizations.weight_norm(nn.Linear(features, features))


def test_a_part_parametrized_while_it_loads_can_be_deep_copied(tmp_path: Path) -> None:
    model = randomise(Normed(3))
    loaded = load(save(model, tmp_path / "m.safetensors"), trusted=(Normed.__module__ + ".",))
    copied = copy.deepcopy(loaded)  # torch gives a parametrized class a deep copy only if modules have none
    x = torch.rand(2, 3)
    assert torch.equal(copied.linear(x), model.eval().linear(x))
