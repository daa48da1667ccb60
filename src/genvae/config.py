"""The run configuration behind ``genvae train``, and the model it describes.

The names on the command line and in config files ("mlp", "bernoulli", "vamp") are registry names
([`genvae.registry`][genvae.registry]): each part registers itself beside its definition, with its
options and requirements, so this module holds no table of parts. A run chooses one part of each
kind it uses; each part's options are set by kind (``options["prior"]["num_components"]``), and a
flat key (``num_components = 20`` in a config file, ``--num-components 20`` on the command line)
sets the option of that name of whichever chosen part has it (see [`place`][genvae.config.place]).
"""

from __future__ import annotations

import json
import sys
from collections import ChainMap
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from . import registry
from ._checks import positive_float, positive_int
from .protocols import LatentVariableModel
from .registry import Entry, Option
from .schedules import Cyclical, Epochs, LinearWarmup, Schedule

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "CHOICES",
    "LEGACY",
    "RunConfig",
    "build_model",
    "build_objective",
    "chosen_parts",
    "place",
    "read_config",
]

CHOICES: dict[str, str] = {
    "model": "model",
    "arch": "encoder",
    "likelihood": "likelihood",
    "prior": "prior",
    "objective": "objective",
    "posterior_flow": "flow",
}
"""The choices of a run: each setting names a part of a registry kind. ``arch`` names the encoder
and the decoder together; ``posterior_flow`` a flow, or "none"."""

SETTING_CHOICES: dict[str, tuple[str, ...]] = {
    "binarize": ("none", "static", "dynamic"),
    "beta_schedule": ("constant", "linear", "cyclical"),
}
"""Settings that are not choices of a part, with the values they take; the others are numbers."""

LEGACY: dict[str, tuple[str, str]] = {
    "components": ("prior", "num_components"),
    "pseudo_inputs": ("prior", "num_pseudo_inputs"),
    "logistic_components": ("likelihood", "num_components"),
    "free_bits": ("objective", "lambda_"),
}
"""Flat keys (and flags) of earlier versions that name an option differently: key -> (kind, option)."""

#: What ``--model cvae`` takes where the flags leave these unset: two hidden layers, the KL weighted
#: twice and a learned prior per class, so that a sample drawn for a label shows that label (the
#: one-layer VAE defaults often draw another digit after 10 epochs). Chosen by the sweep of
#: ``benchmarks/cvae_defaults.py``, whose figures are on the results page. β stays 1 with objectives
#: that estimate a bound's gradient (they have no β).
CVAE_DEFAULTS: dict[str, Any] = {"hidden": (400, 400), "beta": 2.0, "prior": "conditional"}


@dataclass
class RunConfig:
    """Everything ``genvae train`` needs; the defaults are the classic MNIST VAE
    (Kingma & Welling 2014 / the PyTorch example): MLP 784-400-20, Bernoulli on grayscale pixels,
    Adam 1e-3, batch 128.

    Build one with [`RunConfig.from_settings`][genvae.config.RunConfig.from_settings] to accept the
    flat keys of config files and earlier versions.
    """

    dataset: str = "mnist"  # a registered data set name, or the path of a data file or image folder
    model: str = "vae"  # "cvae" conditions encoder and decoder on the one-hot label; "hvae" stacks layers
    arch: str = "mlp"  # the encoder and decoder: mlp; conv and resnet, stride-2 conv stacks
    likelihood: str = "bernoulli"
    prior: str | None = None  # None: "standard", or the CVAE's default (CVAE_DEFAULTS)
    objective: str = "elbo"  # elbo, iwae (Burda et al. 2015), dreg (Tucker et al. 2018), stl, free-bits
    posterior_flow: str = "none"  # IAF (Kingma et al. 2016), planar (Rezende & Mohamed 2015), Householder
    flow_length: int = 2  # flow steps after the Gaussian posterior
    latent_dim: int = 20  # of every layer of an hvae
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> option -> value
    plugins: tuple[str, ...] = ()  # modules imported before the parts were looked up
    binarize: str = "none"  # grayscale pixels, as in the PyTorch example
    beta_schedule: str = "constant"  # linear: warm-up (Bowman et al. 2016); cyclical: Fu et al. 2019
    warmup_epochs: int = 0  # epochs over which β rises from 0 (in every cycle for cyclical)
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    grad_clip: float | None = None
    seed: int = 1
    device: str = "auto"
    compile: bool | str = "auto"  # "auto": the engine decides; a string other than "auto": the mode
    amp: bool | str = "auto"  # bfloat16 autocast; "auto": with compile, on bfloat16 matrix units
    cuda_graph: bool | str = "auto"  # whole-step CUDA graph replay (GPU only); "auto": on a GPU
    train_subset: int | None = None  # first N training images (quick runs)
    test_subset: int | None = None
    out: str | None = None

    def __post_init__(self) -> None:
        if self.prior is None:
            self.prior = CVAE_DEFAULTS["prior"] if self.model == "cvae" else "standard"
        for setting, kind in CHOICES.items():
            value = getattr(self, setting)
            if setting == "posterior_flow" and value == "none":
                continue
            try:
                registry.entry(kind, value)
            except ValueError:
                extra = ("none",) if setting == "posterior_flow" else ()
                allowed = ", ".join((*extra, *registry.names(kind)))
                raise ValueError(f"expected {setting} in {{{allowed}}}, got {value!r}") from None
        for setting, allowed in SETTING_CHOICES.items():
            if getattr(self, setting) not in allowed:
                raise ValueError(f"expected {setting} in {{{', '.join(allowed)}}}, got {getattr(self, setting)!r}")
        self._check_numbers()
        self.plugins = tuple(self.plugins)
        if not all(isinstance(p, str) and p for p in self.plugins):
            raise TypeError(f"expected plugins to be module names, got {self.plugins!r}")
        self.options = self._checked_options()
        if self.model == "cvae":
            self._fill_cvae_defaults()
        if self.beta_schedule != "constant" and self.warmup_epochs == 0:
            raise ValueError(f"expected --warmup-epochs N >= 1 with --beta-schedule {self.beta_schedule}, got 0")
        if self.beta_schedule != "constant" and "beta" not in _option_names(self.parts()["objective"]):
            raise ValueError(
                f"expected --beta-schedule constant with --objective {self.objective} (it has no β: it estimates "
                f"a bound's gradient), got --beta-schedule {self.beta_schedule}"
            )
        registry.check(list(self.parts().values()), self.facts())

    def _check_numbers(self) -> None:
        if not (isinstance(self.dataset, str) and self.dataset):
            raise TypeError(f"expected dataset to be a data set name or a path, got {self.dataset!r}")
        for name in ("latent_dim", "epochs", "batch_size", "flow_length"):
            positive_int(name, getattr(self, name))
        for name in ("train_subset", "test_subset"):
            if getattr(self, name) is not None:
                positive_int(name, getattr(self, name))
        positive_float("lr", self.lr)
        if self.grad_clip is not None:
            positive_float("grad_clip", self.grad_clip)
        for name in ("seed", "warmup_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or (name != "seed" and value < 0):
                raise ValueError(f"expected {name} to be an int{'' if name == 'seed' else ' >= 0'}, got {value!r}")
        for name in ("amp", "cuda_graph"):
            if not (isinstance(getattr(self, name), bool) or getattr(self, name) == "auto"):
                raise TypeError(f'expected {name} to be true, false or "auto", got {getattr(self, name)!r}')
        if not (isinstance(self.compile, bool) or (isinstance(self.compile, str) and self.compile)):
            raise TypeError(f'expected compile to be true, false, "auto" or a torch.compile mode, got {self.compile!r}')
        for name in ("device", "out"):
            if not isinstance(getattr(self, name), str) and not (name == "out" and self.out is None):
                raise TypeError(f"expected {name} to be a string, got {getattr(self, name)!r}")

    def _checked_options(self) -> dict[str, dict[str, Any]]:
        """The options, each of a chosen part that has it, as a value its type allows."""
        if not isinstance(self.options, Mapping):
            raise TypeError(f"expected options to map kinds to {{option: value}}, got {self.options!r}")
        parts = self.parts()
        checked: dict[str, dict[str, Any]] = {}
        for kind, values in self.options.items():
            if kind not in parts:
                used = ", ".join(parts)
                raise ValueError(f"expected options of the run's parts ({used}), got options of {kind!r}")
            if not isinstance(values, Mapping):
                raise TypeError(f"expected options[{kind!r}] to map option names to values, got {values!r}")
            for name, value in values.items():
                option = _option(parts[kind], name)
                checked.setdefault(kind, {})[name] = _typed(parts[kind], option, value)
        return checked

    def _fill_cvae_defaults(self) -> None:
        for name in ("hidden", "beta"):
            for kind, part in self.parts().items():
                if name in _option_names(part) and name not in self.options.get(kind, {}):
                    default = CVAE_DEFAULTS[name]
                    if isinstance(default, type(part.option(name).default)):
                        self.options.setdefault(kind, {})[name] = default

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], *, strict: bool = True) -> RunConfig:
        """A configuration from flat settings: fields, ``options = {kind: {option: value}}`` (a TOML
        table ``[options.prior]``), and option names (or the [`LEGACY`][genvae.config.LEGACY] keys)
        placed on the chosen part that has them (see [`place`][genvae.config.place]).

        Args:
            settings: the settings.
            strict: refuse a flat key that no chosen part has; without it such keys are dropped,
                as a ``config.json`` of an earlier version records every option of every part.

        Raises:
            ValueError: an unknown key, or an option no chosen part has, or two have.
        """
        known = {f.name for f in fields(cls)}
        base = {k: v for k, v in settings.items() if k in known and k != "options"}
        options: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (settings.get("options") or {}).items()}
        flat = {k: v for k, v in settings.items() if k not in known}
        warmup = flat.pop("kl_warmup_epochs", 0)
        if warmup:  # the older name of a linear warm-up
            if base.get("beta_schedule", "constant") != "constant" or base.get("warmup_epochs"):
                raise ValueError("expected --kl-warmup-epochs or --beta-schedule/--warmup-epochs, got both")
            base.update(beta_schedule="linear", warmup_epochs=warmup)
        if flat.get("free_bits") is not None and base.get("objective", "elbo") == "elbo":
            base["objective"] = "free-bits"  # the older way to ask for free bits
        flat = {k: v for k, v in flat.items() if v is not None}
        draft = cls(**{**base, "options": {}})  # the chosen parts, before their options
        parts = draft.parts()
        for key, value in flat.items():
            try:
                placed = place(key, parts)
            except ValueError:
                if strict:
                    raise
                continue
            for kind, name in placed:
                options.setdefault(kind, {}).setdefault(name, _mirrored(kind, value))
        return cls(**{**base, "options": options})

    def parts(self) -> dict[str, Entry]:
        """The chosen part of each kind the run uses, by kind; see [`chosen_parts`][genvae.config.chosen_parts]."""
        return chosen_parts(self.model, self.arch, self.likelihood, self.prior or "standard", self.objective,
                            self.posterior_flow)  # fmt: skip

    def facts(self) -> dict[str, Any]:
        """What the parts' requirements are checked against before any data is read."""
        parts = self.parts()
        model = parts["model"]
        layers = self.options.get("model", {}).get("layers", _default(model, "layers", 1))
        return {**{setting: getattr(self, setting) for setting in CHOICES}, "layers": layers}

    def option(self, kind: str, name: str) -> Any:
        """The value of option ``name`` of the chosen ``kind``: as set, else the part's default."""
        given = self.options.get(kind, {})
        return given[name] if name in given else self.parts()[kind].option(name).default

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (what a run writes as ``config.json``; ``--config`` reads it back)."""
        out = asdict(self)
        out["plugins"] = list(self.plugins)
        return out


def _option_names(part: Entry) -> tuple[str, ...]:
    return tuple(o.name for o in part.options)


def _default(part: Entry, name: str, otherwise: Any) -> Any:
    return part.option(name).default if name in _option_names(part) else otherwise


def _option(part: Entry, name: str) -> Option:
    try:
        option = part.option(name)
    except KeyError as err:
        raise ValueError(err.args[0]) from None
    if not option.textual:
        raise ValueError(f"{part.kind} {part.name!r} option {name!r} is set from Python only ({option.describe()})")
    return option


def _typed(part: Entry, option: Option, value: Any) -> Any:
    """``value`` (text from a flag, or a value from a config file) as a value of ``option``."""
    where = f"{part.kind} {part.name!r} option {option.name!r}"
    if isinstance(value, str) and option.choices is None:
        try:
            value = option.parse(value)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
    if isinstance(value, list):
        value = tuple(value)
    try:
        option.parse(_text(value))  # a value of the right type writes text its type reads back
    except ValueError:
        raise ValueError(f"{where}: expected {option.describe()}, got {value!r}") from None
    return value


def _text(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return str(value).lower()
    return "none" if value is None else str(value)


def _mirrored(kind: str, value: Any) -> Any:
    """A decoder mirrors its encoder: a tuple option given once (``hidden``) is reversed for it."""
    return tuple(reversed(value)) if kind == "decoder" and isinstance(value, (tuple, list)) else value


def chosen_parts(
    model: str, arch: str, likelihood: str, prior: str, objective: str, posterior_flow: str = "none"
) -> dict[str, Entry]:
    """The registry entries a run uses, by kind: the model; the ``arch`` encoder and decoder where
    the model is built from them (a hierarchy builds its own); the likelihood; the prior; the
    objective; and the flow, unless ``posterior_flow`` is "none"."""
    entries = {"model": registry.entry("model", model)}
    if "encoder" in entries["model"].facts:
        entries["encoder"] = registry.entry("encoder", arch)
        entries["decoder"] = registry.entry("decoder", arch)
    entries["likelihood"] = registry.entry("likelihood", likelihood)
    entries["prior"] = registry.entry("prior", prior)
    entries["objective"] = registry.entry("objective", objective)
    if posterior_flow != "none":
        entries["flow"] = registry.entry("flow", posterior_flow)
    return entries


def place(key: str, parts: Mapping[str, Entry]) -> list[tuple[str, str]]:
    """Where a flat key sets an option: ``(kind, option)`` pairs among the chosen ``parts``.

    The rule: ``kind.option`` (or a ``--kind-option`` flag) names the kind; a bare option name (or a
    [`LEGACY`][genvae.config.LEGACY] key) sets the option of that name of the one chosen part that
    has it; the encoder and decoder count as one part (the decoder mirrors the encoder). A name
    that two other chosen parts share must name its kind.

    Raises:
        ValueError: no chosen part has the option, or two parts of different kinds have it.
    """
    kind, dot, name = key.rpartition(".")
    if dot:
        return [(kind, name)] if kind in parts else _no_part(key, parts)
    if key in LEGACY:
        kind, name = LEGACY[key]
        return [(kind, name)] if kind in parts and name in _option_names(parts[kind]) else _no_part(key, parts)
    having = [kind for kind, part in parts.items() if key in _option_names(part)]
    if not having:
        return _no_part(key, parts)
    if len({"encoder" if k == "decoder" else k for k in having}) > 1:
        kinds = " and ".join(f"{k} {parts[k].name!r}" for k in having)
        flags = " or ".join(f"--{k}-{key.replace('_', '-')}" for k in having)
        raise ValueError(f"option {key!r} belongs to {kinds}; name its part: {flags}")
    return [(kind, key) for kind in having]


def _no_part(key: str, parts: Mapping[str, Entry]) -> list[tuple[str, str]]:
    offered = "; ".join(
        f"{kind} {part.name!r}: {', '.join(o.name for o in part.options if o.textual) or 'none'}"
        for kind, part in parts.items()
    )
    raise ValueError(f"no part of this run has an option {key!r}; the options are {offered}")


def read_config(path: str | Path) -> dict[str, Any]:
    """Read a TOML file, or a run's ``config.json``, of settings into a dict (dashes become
    underscores; a table ``[options.prior]`` sets the prior's options).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not valid TOML or JSON.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"expected a TOML or JSON config file, got {str(path)!r}, which does not exist")
    text = path.read_text()
    try:
        raw = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise ValueError(f"expected valid {kind} in {str(path)!r}: {err}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"expected a table of settings in {str(path)!r}, got {type(raw).__name__}")
    return {key.replace("-", "_"): value for key, value in raw.items()}


def build_objective(cfg: RunConfig) -> Any:
    """The objective ``cfg`` chooses, with its options; a β schedule's length is in
    [`Epochs`][genvae.schedules.Epochs], which ``fit`` turns into its optimizer steps."""
    options = dict(cfg.options.get("objective", {}))
    if cfg.beta_schedule != "constant":
        options["beta"] = _schedule(cfg, cfg.option("objective", "beta"))
    return registry.build(cfg.parts()["objective"], {}, options)


def _schedule(cfg: RunConfig, beta: float) -> Schedule:
    if cfg.beta_schedule == "linear":
        return LinearWarmup(beta, steps=Epochs(cfg.warmup_epochs))  # type: ignore[arg-type]
    return Cyclical(beta, period=Epochs(2 * cfg.warmup_epochs), ratio=0.5)  # type: ignore[arg-type]  # Fu et al.


class _Facts(Mapping[str, Any]):
    """The run's facts, each computed on first use (a prior is built only if the model takes one)."""

    def __init__(self, cfg: RunConfig, data_shape: tuple[int, ...], num_classes: int | None) -> None:
        self.cfg, self.parts = cfg, cfg.parts()
        self.known: dict[str, Any] = {
            "data_shape": data_shape,
            "event_dims": len(data_shape),
            "num_classes": num_classes,
            "latent_dim": cfg.latent_dim,
            "arch": cfg.arch,
        }
        self.make = {
            "likelihood": self._likelihood,
            "flow": self._flow,
            "encoder": self._encoder,
            "decoder": self._decoder,
            "prior": self._prior,
        }
        self.base_encoder: Any = None  # the Gaussian encoder, before a flow wraps it

    def __getitem__(self, name: str) -> Any:
        if name not in self.known:
            if name not in self.make:
                raise KeyError(name)
            self.known[name] = self.make[name]()
        return self.known[name]

    def __contains__(self, name: object) -> bool:
        return name in self.known or name in self.make

    def __iter__(self) -> Iterator[str]:
        return iter({**self.known, **self.make})

    def __len__(self) -> int:
        return len({**self.known, **self.make})

    def build(self, kind: str, **facts: Any) -> Any:
        return registry.build(self.parts[kind], ChainMap(facts, self), self.cfg.options.get(kind, {}))

    def _likelihood(self) -> Any:
        return self.build("likelihood")

    def _flow(self) -> Any:
        if "flow" not in self.parts:
            return None
        length = self.cfg.flow_length
        return lambda d: [self.build("flow", latent_dim=d, context_features=2 * d) for _ in range(length)]

    def _base_encoder(self) -> Any:
        if self.base_encoder is None:
            self.base_encoder = self.build("encoder")
        return self.base_encoder

    def _encoder(self) -> Any:
        from .flows import FlowEncoder

        base = self._base_encoder()
        self["decoder"], self["prior"]  # in this order, so that a seed gives the weights it always gave
        steps = self["flow"]
        return base if steps is None else FlowEncoder(base, steps(self.cfg.latent_dim))

    def _decoder(self) -> Any:
        shape = self["likelihood"].param_shape(self.known["data_shape"])  # the likelihood's parameters
        return self.build("decoder", data_shape=shape)

    def _prior(self) -> Any:
        if "encoder" in self.parts:
            return self.build("prior", encoder=self._base_encoder())
        return lambda encoder: self.build("prior", encoder=encoder)  # the model builds its own encoder


def build_model(cfg: RunConfig, data_shape: tuple[int, ...], num_classes: int | None) -> LatentVariableModel:
    """The model that ``cfg`` describes, for data of ``data_shape`` with ``num_classes`` labels.

    Raises:
        ValueError: a part's requirement that the data does not meet (images for a conv
            encoder, labels for a CVAE), or a value a part refuses.
    """
    parts = cfg.parts()
    conditional = parts["model"].provides.get("conditional", False)
    image = len(data_shape) == 3
    registry.check(list(parts.values()), {**cfg.facts(), "image": image, "labelled": num_classes is not None})
    facts = _Facts(cfg, tuple(data_shape), num_classes if conditional else None)
    if "encoder" in parts:
        facts["encoder"]  # the parts in the order that gives a seed's weights
    return registry.build(parts["model"], facts, cfg.options.get("model", {}))
