"""The run configuration behind ``genvae train``, and the model it describes.

This is the one place where names on the command line ("mlp", "bernoulli", "vamp") are mapped to
parts; the library itself takes the parts as objects.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from torch import nn

from . import flows, hierarchy, likelihoods, nets, priors
from ._checks import positive_float, positive_int, shape_tuple
from .models import CVAE, VAE
from .objectives import ELBO, IWAE, STL, DReG, FreeBits, Objective
from .protocols import LatentVariableModel
from .schedules import Cyclical, LinearWarmup, Schedule

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["CHOICES", "RunConfig", "build_model", "build_objective", "read_config"]

CHOICES: dict[str, tuple[str, ...]] = {
    "model": ("vae", "cvae", "hvae"),
    "arch": ("mlp", "conv", "resnet"),
    "inference": ("top-down", "bottom-up"),
    "posterior_flow": ("none", "iaf", "planar", "householder"),
    "likelihood": ("bernoulli", "continuous-bernoulli", "gaussian", "discretized-logistic", "logistic-mixture"),
    "learn_sigma": ("none", "global", "pixel"),
    "prior": ("standard", "learned", "mog", "vamp", "conditional"),
    "binarize": ("none", "static", "dynamic"),
    "objective": ("elbo", "iwae", "dreg", "stl"),
    "beta_schedule": ("constant", "linear", "cyclical"),
}

#: What ``--model cvae`` takes where the flags leave these unset: two hidden layers, the KL weighted
#: twice and a learned prior per class, so that a sample drawn for a label shows that label (the
#: one-layer VAE defaults often draw another digit after 10 epochs). Chosen by the sweep of
#: ``benchmarks/cvae_defaults.py``, whose figures are on the results page. β stays 1 with ``dreg``
#: and ``stl``, which estimate a bound's gradient.
CVAE_DEFAULTS: dict[str, Any] = {"hidden": (400, 400), "beta": 2.0, "prior": "conditional"}

#: Importance samples of ``--objective iwae|dreg`` when ``--k`` is not given (Burda et al.'s k = 5).
DEFAULT_IW_K = 5


@dataclass
class RunConfig:
    """Everything ``genvae train`` needs; the defaults are the classic MNIST VAE
    (Kingma & Welling 2014 / the PyTorch example): MLP 784-400-20, Bernoulli on grayscale pixels,
    Adam 1e-3, batch 128."""

    dataset: str = "mnist"  # a name of genvae.data.DATASETS, or the path of a data file or image folder
    model: str = "vae"  # "cvae" conditions encoder and decoder on the one-hot label; "hvae" stacks layers
    arch: str = "mlp"  # conv and resnet: stride-2 conv stacks, the latter with residual blocks
    layers: int | None = None  # stochastic layers of an hvae (None: 2), each of latent_dim
    inference: str = "top-down"  # hvae: Ladder VAE / NVAE order, or bottom-up as in the IWAE paper
    posterior_flow: str = "none"  # IAF (Kingma et al. 2016), planar (Rezende & Mohamed 2015), Householder
    flow_length: int = 2  # flow steps after the Gaussian posterior
    hidden: tuple[int, ...] | None = None  # None: (400,) for mlp, 128 for conv
    channels: tuple[int, ...] = (32, 64)  # conv encoder channels; the decoder mirrors them
    latent_dim: int = 20
    likelihood: str = "bernoulli"
    sigma: float = 1.0  # Gaussian σ (initial value when learned)
    learn_sigma: str = "none"  # Gaussian: fixed σ, one learned σ, or one per pixel
    logistic_components: int = 10  # logistic-mixture: components per pixel (PixelCNN++ uses 10)
    prior: str | None = None  # None: "standard", or the CVAE's default (CVAE_DEFAULTS)
    components: int = 10  # mixture-of-Gaussians prior
    pseudo_inputs: int = 500  # VampPrior, as in Tomczak & Welling (2018)
    binarize: str = "none"  # grayscale pixels, as in the PyTorch example
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    objective: str = "elbo"  # elbo, iwae (Burda et al. 2015), dreg (Tucker et al. 2018), stl (Roeder et al. 2017)
    k: int | None = None  # draws per example; None: 5 for iwae/dreg, 1 otherwise
    free_bits: float | None = None  # λ nats per latent dimension (ELBO only; Kingma et al. 2016)
    beta: float | None = None  # None: 1, or the CVAE's default with elbo/iwae (CVAE_DEFAULTS)
    beta_schedule: str = "constant"  # linear: warm-up (Bowman et al. 2016); cyclical: Fu et al. 2019
    warmup_epochs: int = 0  # epochs over which β rises from 0 (in every cycle for cyclical)
    kl_warmup_epochs: int = 0  # older name of warmup_epochs with a linear schedule; folded into it
    grad_clip: float | None = None
    seed: int = 1
    device: str = "auto"
    compile: bool | str = "auto"  # "auto": genvae.engine decides; a string other than "auto": the mode
    amp: bool | str = "auto"  # bfloat16 autocast; "auto": with compile, on bfloat16 matrix units
    cuda_graph: bool | str = "auto"  # whole-step CUDA graph replay (GPU only); "auto": on a GPU
    train_subset: int | None = None  # first N training images (quick runs)
    test_subset: int | None = None
    out: str | None = None

    def __post_init__(self) -> None:
        self._fill_model_defaults()
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"expected {name} in {{{', '.join(allowed)}}}, got {value!r}")
        if self.hidden is not None:
            self.hidden = shape_tuple("hidden", self.hidden)
        self.channels = shape_tuple("channels", self.channels)
        if not (isinstance(self.dataset, str) and self.dataset):
            raise TypeError(f"expected dataset to be a data set name or a path, got {self.dataset!r}")
        for name in (
            "latent_dim",
            "components",
            "pseudo_inputs",
            "epochs",
            "batch_size",
            "logistic_components",
            "flow_length",
        ):
            positive_int(name, getattr(self, name))
        for name in ("k", "train_subset", "test_subset", "layers"):
            if getattr(self, name) is not None:
                positive_int(name, getattr(self, name))
        positive_float("sigma", self.sigma)
        positive_float("lr", self.lr)
        if self.grad_clip is not None:
            positive_float("grad_clip", self.grad_clip)
        for name in ("seed", "warmup_epochs", "kl_warmup_epochs"):
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
        if self.prior == "conditional" and self.model != "cvae":
            raise ValueError("expected --model cvae with --prior conditional, got --model vae")
        if self.kl_warmup_epochs:
            if self.beta_schedule != "constant" or self.warmup_epochs:
                raise ValueError("expected --kl-warmup-epochs or --beta-schedule/--warmup-epochs, got both")
            self.beta_schedule, self.warmup_epochs, self.kl_warmup_epochs = "linear", self.kl_warmup_epochs, 0
        if not (isinstance(self.beta, (int, float)) and 0 <= self.beta < float("inf")):
            raise ValueError(f"expected beta to be a finite number >= 0, got {self.beta!r}")
        if not (isinstance(self.warmup_epochs, int) and self.warmup_epochs >= 0):
            raise ValueError(f"expected warmup_epochs to be an int >= 0, got {self.warmup_epochs!r}")
        if self.beta_schedule != "constant" and self.warmup_epochs == 0:
            raise ValueError(f"expected --warmup-epochs N >= 1 with --beta-schedule {self.beta_schedule}, got 0")
        if self.k is not None and not (isinstance(self.k, int) and self.k >= 1):
            raise ValueError(f"expected k to be a positive int, got {self.k!r}")
        if self.free_bits is not None:
            if self.objective != "elbo":
                raise ValueError(f"expected --free-bits with --objective elbo, got --objective {self.objective}")
            if not (isinstance(self.free_bits, (int, float)) and 0 <= self.free_bits < float("inf")):
                raise ValueError(f"expected free_bits to be a finite number >= 0, got {self.free_bits!r}")
        if self.objective in ("dreg", "stl") and (self.beta != 1.0 or self.beta_schedule != "constant"):
            raise ValueError(
                f"expected --beta 1 and --beta-schedule constant with --objective {self.objective} (it estimates "
                f"a bound's gradient), got --beta {self.beta} --beta-schedule {self.beta_schedule}"
            )
        self._check_model_shape()
        if self.prior == "vamp" and self.model == "cvae":
            raise ValueError("expected --model vae with --prior vamp (pseudo-inputs carry no label), got --model cvae")

    def _fill_model_defaults(self) -> None:
        """Fields left None take their model's default: a CVAE's are ``CVAE_DEFAULTS``."""
        cvae = self.model == "cvae"
        if self.prior is None:
            self.prior = CVAE_DEFAULTS["prior"] if cvae else "standard"
        if self.beta is None:
            self.beta = CVAE_DEFAULTS["beta"] if cvae and self.objective in ("elbo", "iwae") else 1.0
        if self.hidden is None and cvae and self.arch == "mlp":
            self.hidden = CVAE_DEFAULTS["hidden"]

    def _check_model_shape(self) -> None:
        """The hierarchy and flow options fit the model and the objective."""
        if self.model != "hvae":
            if self.layers not in (None, 1):
                raise ValueError(f"expected --model hvae with --layers {self.layers}, got --model {self.model}")
            if self.inference != "top-down":
                raise ValueError(f"expected --model hvae with --inference {self.inference}, got --model {self.model}")
        elif self.objective == "dreg" and (self.layers or 2) > 1:
            raise ValueError("expected --objective elbo, iwae or stl with --model hvae, got dreg (one layer only)")
        if self.posterior_flow != "none" and (self.objective in ("dreg", "stl") or self.free_bits is not None):
            what = "--free-bits" if self.free_bits is not None else f"--objective {self.objective}"
            raise ValueError(
                f"expected --objective elbo or iwae with --posterior-flow {self.posterior_flow} (a flow's parameters "
                f"cannot be stopped, nor its KL split per dimension), got {what}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return asdict(self)


def read_config(path: str | Path) -> dict[str, Any]:
    """Read a TOML file of ``RunConfig`` fields (dashes or underscores) into a dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"expected a TOML config file, got {str(path)!r}, which does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"expected valid TOML in {str(path)!r}: {err}") from None
    known = {f.name for f in fields(RunConfig)}
    out = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ValueError(f"unknown key {key!r} in {str(path)!r}; expected one of {sorted(known)}")
        out[name] = value
    return out


def build_objective(cfg: RunConfig, steps_per_epoch: int) -> Objective:
    """The objective ``cfg`` describes; β schedules count optimizer steps, ``steps_per_epoch`` a epoch."""
    beta: float | Schedule = cfg.beta
    if cfg.beta_schedule == "linear":
        beta = LinearWarmup(cfg.beta, steps=cfg.warmup_epochs * steps_per_epoch)
    elif cfg.beta_schedule == "cyclical":  # rise over warmup_epochs, hold as long (Fu et al.'s R = 0.5)
        beta = Cyclical(cfg.beta, period=2 * cfg.warmup_epochs * steps_per_epoch, ratio=0.5)
    if cfg.objective == "iwae":
        return IWAE(cfg.k or DEFAULT_IW_K, beta=beta)
    if cfg.objective == "dreg":
        return DReG(cfg.k or DEFAULT_IW_K)
    if cfg.objective == "stl":
        return STL(cfg.k or 1)
    if cfg.free_bits is not None:
        return FreeBits(cfg.free_bits, beta=beta, k=cfg.k or 1)
    return ELBO(beta, k=cfg.k or 1)


def _likelihood(cfg: RunConfig, data_shape: tuple[int, ...]) -> Any:
    event_dims = len(data_shape)
    if cfg.likelihood == "bernoulli":
        return likelihoods.Bernoulli(event_dims=event_dims)
    if cfg.likelihood == "continuous-bernoulli":
        return likelihoods.ContinuousBernoulli(event_dims=event_dims)
    if cfg.likelihood == "discretized-logistic":
        return likelihoods.DiscretizedLogistic(event_dims=event_dims)
    if cfg.likelihood == "logistic-mixture":
        return likelihoods.DiscretizedLogisticMixture(cfg.logistic_components, event_dims=event_dims)
    shape = data_shape if cfg.learn_sigma == "pixel" else ()
    return likelihoods.Gaussian(cfg.sigma, learned=cfg.learn_sigma != "none", shape=shape, event_dims=event_dims)


def _top_prior(cfg: RunConfig, encoder: Any, data_shape: tuple[int, ...], num_classes: int) -> Any:
    if cfg.prior == "standard":
        return priors.StandardNormal(cfg.latent_dim)
    if cfg.prior == "learned":
        return priors.LearnedNormal(cfg.latent_dim)
    if cfg.prior == "mog":
        return priors.MixtureOfGaussians(cfg.latent_dim, cfg.components)
    if cfg.prior == "vamp":
        return priors.VampPrior(encoder, cfg.pseudo_inputs, data_shape)
    return priors.ConditionalNormal(num_classes, cfg.latent_dim)


def _flow_steps(cfg: RunConfig) -> Callable[[int], list[Any]] | None:
    """A function of a latent size D that returns ``cfg.flow_length`` flow steps amortised on the
    base posterior's (μ, log σ); None without ``--posterior-flow``."""
    if cfg.posterior_flow == "none":
        return None
    make = {
        "iaf": lambda d: flows.IAF(d, hidden=(max(2 * d, 64),), context_features=2 * d),
        "planar": lambda d: flows.Planar(d, context_features=2 * d),
        "householder": lambda d: flows.Householder(d, context_features=2 * d),
    }[cfg.posterior_flow]
    return lambda d: [make(d) for _ in range(cfg.flow_length)]


def _check_images(cfg: RunConfig, data_shape: tuple[int, ...]) -> None:
    if len(data_shape) != 3:
        raise ValueError(
            f"expected images (C, H, W) for --arch {cfg.arch}, got data of shape {data_shape}; use --arch mlp"
        )


def build_model(cfg: RunConfig, data_shape: tuple[int, ...], num_classes: int) -> LatentVariableModel:
    """The VAE, CVAE or hierarchical VAE that ``cfg`` describes, for data of ``data_shape`` with
    ``num_classes`` labels."""
    k = num_classes if cfg.model == "cvae" else None
    likelihood = _likelihood(cfg, data_shape)
    out_shape = likelihood.param_shape(data_shape)  # the decoder's output: the likelihood's parameters
    if cfg.model == "hvae":
        top = None if cfg.prior == "vamp" else _top_prior(cfg, None, data_shape, num_classes)  # vamp: built inside
        shape = {
            "likelihood": likelihood,
            "top_down": cfg.inference == "top-down",
            "prior": top,
            "num_pseudo_inputs": cfg.pseudo_inputs if cfg.prior == "vamp" else None,
            "activation": nn.ReLU,
            "flow": _flow_steps(cfg),
        }
        dims = (cfg.latent_dim,) * (cfg.layers or 2)
        if cfg.arch == "mlp":
            return hierarchy.mlp_hierarchy(data_shape, dims, hidden=cfg.hidden or (400,), **shape)
        _check_images(cfg, data_shape)
        return hierarchy.conv_hierarchy(
            data_shape, dims, channels=cfg.channels, blocks=int(cfg.arch == "resnet"), hidden=(cfg.hidden or (400,))[0],
            **shape,
        )  # fmt: skip
    if cfg.arch == "mlp":
        hidden = cfg.hidden or (400,)
        encoder = nets.MLPEncoder(data_shape, cfg.latent_dim, hidden=hidden, num_classes=k)
        decoder = nets.MLPDecoder(cfg.latent_dim, out_shape, hidden=tuple(reversed(hidden)), num_classes=k)
    else:
        _check_images(cfg, data_shape)
        hidden = (cfg.hidden or (128,))[0]
        conv, deconv = (
            (nets.ConvEncoder, nets.ConvDecoder) if cfg.arch == "conv" else (nets.ResNetEncoder, nets.ResNetDecoder)
        )
        encoder = conv(data_shape, cfg.latent_dim, channels=cfg.channels, hidden=hidden, num_classes=k)
        decoder = deconv(
            cfg.latent_dim, out_shape, channels=tuple(reversed(cfg.channels)), hidden=hidden, num_classes=k
        )
    prior = _top_prior(cfg, encoder, data_shape, num_classes)  # a VampPrior shares the Gaussian encoder
    steps = _flow_steps(cfg)
    if steps is not None:
        encoder = flows.FlowEncoder(encoder, steps(cfg.latent_dim))
    return (CVAE if cfg.model == "cvae" else VAE)(encoder, decoder, likelihood, prior)
