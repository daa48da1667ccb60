"""Model files of version 2 name registered parts by kind and name; files of version 1 still load.

A file is hostile input: a part it names is looked up among the parts registered so far (genvae's
own, and a plugin's once the caller has imported it), and nothing is imported because a file names
it, which these tests read from ``sys.modules``.
"""

from __future__ import annotations

import importlib
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from genvae import VAE, load, registry, save
from genvae.hierarchy import HierarchicalVAE, mlp_hierarchy
from genvae.io import READABLE_VERSIONS, VERSION, describe
from genvae.likelihoods import Bernoulli
from genvae.nets import MLPDecoder, MLPEncoder
from genvae.priors import StandardNormal, VampPrior

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FIXTURES = Path(__file__).with_name("fixtures")
#: What the version-1 fixtures gave when ``fixtures/write_v1.py`` wrote them.
EXPECTED = json.loads((FIXTURES / "v1_expected.json").read_text())
SHAPE = (1, 4, 4)
D = 2
FORMAT_KEY = "genvae.model"

#: A plugin module: one prior, registered when the module is imported.
PLUGIN = "genvae_io_test_plugin"
PLUGIN_PART = "prior/io-test-wide"
PLUGIN_SOURCE = '''
import torch
from torch import nn
from torch.distributions import Independent, Normal

from genvae.registry import register


@register("prior", "io-test-wide")
class WideNormal(nn.Module):
    """p(z) = N(0, scale² I)."""

    def __init__(self, latent_dim: int, scale: float = 2.0) -> None:
        super().__init__()
        self.latent_dim, self.scale = latent_dim, scale
        self.register_buffer("loc", torch.zeros(latent_dim), persistent=False)

    def forward(self, y=None):
        return Independent(Normal(self.loc, self.scale * torch.ones_like(self.loc)), 1)
'''


def small_vae() -> VAE:
    return VAE(MLPEncoder(SHAPE, D, hidden=(5,)), MLPDecoder(D, SHAPE, hidden=(5,)), Bernoulli(), StandardNormal(D))


def log_weights(model: nn.Module, x: Tensor, seed: int = 1, k: int = 4) -> Tensor:
    """``(k, B)`` log importance weights of ``model`` on ``x``, drawn after ``torch.manual_seed(seed)``."""
    with torch.no_grad():
        torch.manual_seed(seed)
        return model.terms(x, k=k).log_weights()  # type: ignore[operator]


def binary_data(n: int = 3) -> Tensor:
    return (torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(5)) > 0.5).float()


def description(path: Path) -> dict[str, Any]:
    """The description in the model file ``path``."""
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()[FORMAT_KEY])  # type: ignore[no-any-return]


def fixture_description(name: str) -> dict[str, Any]:
    return description(FIXTURES / f"{name}.safetensors")


def fixture_copy(folder: Path, name: str) -> Path:
    """A copy in ``folder`` of the version-1 fixture ``name``, to be edited."""
    path = folder / f"{name}.safetensors"
    path.write_bytes((FIXTURES / f"{name}.safetensors").read_bytes())
    return path


def assert_log_weights_as_recorded(model: nn.Module, name: str) -> None:
    """``model``'s log-weights on the fixture ``name``'s data are those recorded when it was written."""
    expected = EXPECTED[name]
    got = log_weights(model, torch.tensor(expected["x"]), expected["seed"], expected["k"])
    torch.testing.assert_close(got, torch.tensor(expected["log_weights"]), rtol=1e-5, atol=1e-5)


def with_description(path: Path, spec: dict[str, Any]) -> Path:
    """Rewrite the model file ``path`` with the description ``spec`` and the same tensors."""
    with safe_open(str(path), framework="pt") as f:
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    save_file(tensors, str(path), metadata={FORMAT_KEY: json.dumps(spec)})
    return path


def one_line_refusal(path: Path, **kwargs: Any) -> str:
    """The message of the ValueError that loading ``path`` raises: one line that names the file."""
    with pytest.raises(ValueError) as info:
        load(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and repr(str(path)) in message, message
    return message


def parts_of(spec: Any) -> Iterator[dict[str, Any]]:
    """Every part (``{"part"|"class": ..., "args": ...}``) in a description, outermost first."""
    if isinstance(spec, list):
        for item in spec:
            yield from parts_of(item)
    elif isinstance(spec, dict):
        if "args" in spec:
            yield spec
        for item in spec.values():
            yield from parts_of(item)


def genvae_parts_imported() -> None:
    """Import what loading genvae's files imports (genvae's part modules and registered parts), so
    that what a load adds to ``sys.modules`` is what its file made it import."""
    for name in EXPECTED:
        load(FIXTURES / f"{name}.safetensors")
    registry.names("prior")


# --------------------------------------------------------------------------- the format


def test_save_writes_the_version_load_reads() -> None:
    assert VERSION == 2 and READABLE_VERSIONS == (1, 2)
    assert describe(small_vae())["version"] == VERSION


def test_a_registered_part_is_named_by_kind_and_name_and_its_constructors_arguments() -> None:
    encoder = MLPEncoder(SHAPE, D, hidden=(5,))
    model = VAE(encoder, MLPDecoder(D, SHAPE, hidden=(5,)), Bernoulli(), VampPrior(encoder, 3, SHAPE))
    args = describe(model)["model"]["args"]
    assert args["prior"] == {
        "part": "prior/vamp",
        "args": {"encoder": {"ref": "model.encoder"}, "num_pseudo_inputs": 3, "data_shape": list(SHAPE)},
    }
    assert args["encoder"]["part"] == "encoder/mlp" and args["decoder"]["part"] == "decoder/mlp"
    assert args["encoder"]["args"]["activation"] == {"type": "torch.nn.modules.activation.ReLU"}
    assert args["likelihood"] == {"part": "likelihood/bernoulli", "args": {"event_dims": 3}}


def test_every_part_of_a_hierarchy_is_named_by_registry_name_exactly_where_an_entry_names_its_class() -> None:
    model = mlp_hierarchy(SHAPE, (3, 2), likelihood=Bernoulli(), hidden=(5,))
    modules = {type(m) for m in model.modules()}
    named = list(parts_of(describe(model)["model"]))
    assert named
    for part in named:
        if "part" in part:
            kind, name = part["part"].split("/")
            assert registry.entry(kind, name).obj in modules
        else:
            cls = next(c for c in modules if f"{c.__module__}.{c.__qualname__}" == part["class"])
            assert registry.entry_of(cls) is None, part["class"]


def test_a_hierarchy_round_trips_through_version_2(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = mlp_hierarchy(SHAPE, (3, 2), likelihood=Bernoulli(), hidden=(5,)).eval()
    loaded = load(save(model, tmp_path / "h.safetensors"))
    assert type(loaded) is type(model) and describe(loaded) == describe(model)
    x = binary_data()
    assert torch.equal(log_weights(loaded, x), log_weights(model, x))


# --------------------------------------------------------------------------- names a file may not use


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A plugin module on the path, not imported; whatever it registers is forgotten afterwards."""
    (tmp_path / f"{PLUGIN}.py").write_text(PLUGIN_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.names("prior")  # genvae's own entries, before the copies are taken
    monkeypatch.setattr(registry, "_REGISTRY", {kind: dict(named) for kind, named in registry._REGISTRY.items()})
    monkeypatch.setattr(registry, "_BY_OBJECT", dict(registry._BY_OBJECT))
    yield PLUGIN
    sys.modules.pop(PLUGIN, None)


def saved_with_prior(folder: Path, prior: dict[str, Any]) -> Path:
    """A small VAE's file whose prior (which has no weights) is described as ``prior``."""
    path = save(small_vae(), folder / "m.safetensors")
    spec = describe(small_vae())
    spec["model"]["args"]["prior"] = prior
    return with_description(path, spec)


#: Priors that a file may not name, with what the refusal must say besides the file and the path.
REFUSED_PRIORS: dict[str, tuple[dict[str, Any], str, list[str]]] = {
    "an unregistered part": (
        {"part": "prior/nonexistent", "args": {"latent_dim": D}},
        "model.args.prior.part",
        ["expected a registered prior, one of 'standard'", "got 'nonexistent'", "--plugin MODULE"],
    ),
    "a plugin's part, its module not imported": (
        {"part": PLUGIN_PART, "args": {"latent_dim": D}},
        "model.args.prior.part",
        ["got 'io-test-wide'", "--plugin MODULE", "import MODULE"],
    ),
    "a plugin's class by module path": (
        {"class": f"{PLUGIN}.WideNormal", "args": {"latent_dim": D}},
        "model.args.prior.class",
        ["trusted", f"got '{PLUGIN}.WideNormal'"],
    ),
    "a class argument by module path": (
        {"part": "prior/standard", "args": {"latent_dim": {"type": f"{PLUGIN}.WideNormal"}}},
        "model.args.prior.args.latent_dim.type",
        ["trusted"],
    ),
    "a module path as a part's name": (
        {"part": "genvae.priors.StandardNormal", "args": {"latent_dim": D}},
        "model.args.prior.part",
        ["expected a registered part 'kind/name' (kind one of encoder, decoder"],
    ),
    "an unknown kind": (
        {"part": "gadget/standard", "args": {"latent_dim": D}},
        "model.args.prior.part",
        ["kind one of", "got 'gadget/standard'"],
    ),
    "a name that is not a string": ({"part": 3, "args": {}}, "model.args.prior.part", ["got 3"]),
    "a registered function, not a module": (
        {"part": "data/mnist", "args": {}},
        "model.args.prior.part",
        ["expected a part whose entry is a module class", "'data/mnist'"],
    ),
}


@pytest.mark.parametrize("case", REFUSED_PRIORS)
def test_a_part_the_caller_did_not_register_or_trust_is_refused_naming_the_file_and_nothing_is_imported(
    tmp_path: Path, plugin: str, case: str
) -> None:
    prior, where, says = REFUSED_PRIORS[case]
    path = saved_with_prior(tmp_path, prior)
    genvae_parts_imported()
    before = set(sys.modules)
    message = one_line_refusal(path)
    assert f"{where} in {str(path)!r}: expected " in message
    for words in says:
        assert words in message, message
    assert set(sys.modules) == before and plugin not in sys.modules


def test_a_plugins_part_loads_once_the_caller_has_imported_its_module(tmp_path: Path, plugin: str) -> None:
    path = saved_with_prior(tmp_path, {"part": PLUGIN_PART, "args": {"latent_dim": D, "scale": 3.0}})
    one_line_refusal(path)
    module = importlib.import_module(plugin)
    loaded = load(path)
    assert isinstance(loaded.prior, module.WideNormal) and loaded.prior.scale == 3.0
    assert describe(loaded)["model"]["args"]["prior"] == {"part": PLUGIN_PART, "args": {"latent_dim": D, "scale": 3.0}}


def test_a_version_1_file_cannot_name_a_part_by_registry_name(tmp_path: Path) -> None:
    path = fixture_copy(tmp_path, "v1_vamp_vae")
    spec = fixture_description("v1_vamp_vae")
    spec["model"]["args"]["prior"]["part"] = "prior/vamp"
    del spec["model"]["args"]["prior"]["class"]
    message = one_line_refusal(with_description(path, spec))
    assert "model.args.prior in" in message and "an object with keys ['args', 'part']" in message


# --------------------------------------------------------------------------- version 1


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_version_1_file_loads_with_the_log_weights_it_had(name: str) -> None:
    assert fixture_description(name)["version"] == 1
    model = load(FIXTURES / f"{name}.safetensors")
    assert_log_weights_as_recorded(model, name)
    with torch.no_grad():
        reconstruction = model.reconstruct(torch.tensor(EXPECTED[name]["x"]))  # type: ignore[operator]
    torch.testing.assert_close(reconstruction, torch.tensor(EXPECTED[name]["reconstruction"]))
    if isinstance(model, VAE):
        assert isinstance(model.prior, VampPrior) and model.prior.encoder is model.encoder
    else:
        assert isinstance(model, HierarchicalVAE) and model.num_layers == 2


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_version_1_file_saved_again_is_version_2_and_loads_the_same(tmp_path: Path, name: str) -> None:
    model = load(FIXTURES / f"{name}.safetensors")
    again = load(save(model, tmp_path / "again.safetensors"))
    assert description(tmp_path / "again.safetensors")["version"] == 2
    x = torch.tensor(EXPECTED[name]["x"])
    assert torch.equal(log_weights(again, x), log_weights(model, x))


MARKER_SOURCE = """
import torch
from torch import nn


class Marker(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
"""


@pytest.mark.parametrize("version", READABLE_VERSIONS)
def test_a_module_under_a_part_package_is_not_imported_because_a_file_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: int
) -> None:
    hierarchy = importlib.import_module("genvae.hierarchy")
    if not hasattr(hierarchy, "__path__"):
        pytest.skip("genvae.hierarchy is a module here, not a package")
    (tmp_path / "io_test_unimported.py").write_text(MARKER_SOURCE)
    monkeypatch.setattr(hierarchy, "__path__", [*hierarchy.__path__, str(tmp_path)])  # importable, not imported
    path = marker_file(tmp_path / "m.safetensors", version, "genvae.hierarchy.io_test_unimported.Marker")
    genvae_parts_imported()
    before = set(sys.modules)
    message = one_line_refusal(path)
    assert "model.class in" in message and "genvae.hierarchy.io_test_unimported.Marker" in message
    assert set(sys.modules) == before


def marker_module(monkeypatch: pytest.MonkeyPatch, name: str) -> type[nn.Module]:
    """A module ``name`` (imported: in ``sys.modules``) that defines a part ``Marker`` of one weight."""
    module = types.ModuleType(name)
    exec(MARKER_SOURCE, vars(module))  # noqa: S102 - the source above, as if the module were a file
    module.Marker.__module__ = name
    monkeypatch.setitem(sys.modules, name, module)
    return module.Marker  # type: ignore[no-any-return]


def marker_file(path: Path, version: int, name: str = "genvae.hierarchy.Marker") -> Path:
    """A file of ``version`` whose model is the class ``name``, of one weight of 1.5."""
    spec = {"format": FORMAT_KEY, "version": version, "model": {"class": name, "args": {}}}
    save_file({"w": torch.full((1,), 1.5)}, str(path), metadata={FORMAT_KEY: json.dumps(spec)})
    return path


@pytest.mark.parametrize("version", READABLE_VERSIONS)
def test_a_genvae_class_name_finds_the_class_in_a_module_under_the_one_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: int
) -> None:
    genvae_parts_imported()  # as the hierarchy, now a module, becomes a package
    marker = marker_module(monkeypatch, "genvae.hierarchy.io_test_cells")
    loaded = load(marker_file(tmp_path / "m.safetensors", version))
    assert type(loaded) is marker and loaded.w.item() == 1.5  # type: ignore[operator]


def test_a_genvae_class_name_that_two_modules_define_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    genvae_parts_imported()
    for name in ("genvae.hierarchy.io_test_a", "genvae.hierarchy.io_test_b"):
        marker_module(monkeypatch, name)
    message = one_line_refusal(marker_file(tmp_path / "m.safetensors", 1))
    assert "model.class in" in message and "genvae.hierarchy.io_test_a.Marker, genvae.hierarchy.io_test_b.Marker" in (
        message
    )


# --------------------------------------------------------------------------- a version-1 hierarchy, made by from_ladder


def test_a_version_1_hierarchy_is_read_into_its_parts_and_made_by_from_ladder(monkeypatch: pytest.MonkeyPatch) -> None:
    hierarchy = sys.modules["genvae.hierarchy"]
    made = getattr(hierarchy, "from_ladder", HierarchicalVAE)  # a stand-in while genvae has none
    calls: list[tuple[Any, ...]] = []

    def from_ladder(*args: Any) -> nn.Module:
        calls.append(args)
        return made(*args)

    monkeypatch.setattr(hierarchy, "from_ladder", from_ladder, raising=False)
    model = load(FIXTURES / "v1_hierarchy.safetensors")
    assert len(calls) == 1
    encoder, down, priors, decoder, likelihood, prior = calls[0]
    assert type(encoder).__qualname__ == "LadderEncoder"
    assert isinstance(down, tuple) and len(down) == 1 and isinstance(priors, tuple) and len(priors) == 1
    assert isinstance(decoder, MLPDecoder) and isinstance(likelihood, Bernoulli) and isinstance(prior, StandardNormal)
    assert not model.training
    assert_log_weights_as_recorded(model, "v1_hierarchy")


def test_a_from_ladder_that_makes_weights_the_file_does_not_hold_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules["genvae.hierarchy"], "from_ladder", lambda *parts: nn.Linear(2, 2), raising=False)
    message = one_line_refusal(FIXTURES / "v1_hierarchy.safetensors")
    assert "expected a model made of the file's weights, got 'weight'" in message


def test_a_version_1_hierarchy_of_malformed_parts_is_refused_at_the_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # the constructor stands in for from_ladder where genvae has none: the parts are refused first
    monkeypatch.setattr(sys.modules["genvae.hierarchy"], "from_ladder", HierarchicalVAE, raising=False)
    path = fixture_copy(tmp_path, "v1_hierarchy")
    spec = fixture_description("v1_hierarchy")
    spec["model"]["args"]["down"] = 3
    message = one_line_refusal(with_description(path, spec))
    assert "model in" in message and "expected arguments that a version-1 HierarchicalVAE accepts" in message
    assert "expected down to be a list of parts" in message


class Refuses(nn.Module):
    """A part whose constructor refuses its argument with a message of several lines, as some of torch's do."""

    def __init__(self, lines: int) -> None:
        super().__init__()
        raise ValueError("\n".join(f"line {i}" for i in range(lines)))


def test_a_constructors_message_of_several_lines_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    part = {"class": f"{Refuses.__module__}.Refuses", "args": {"lines": 3}}
    save_file(
        {"w": torch.zeros(1)},
        str(path),
        metadata={FORMAT_KEY: json.dumps({"format": FORMAT_KEY, "version": 2, "model": part})},
    )
    message = one_line_refusal(path, trusted=(f"{Refuses.__module__}.",))
    assert "expected arguments that" in message and "line 0 line 1 line 2" in message
