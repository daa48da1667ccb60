"""VAE and CVAE: an encoder, a decoder, a likelihood and a prior, composed.

    q = encoder(x, y)                  q(z | x[, y]), batch (B,), event (D,)
    z = q.rsample((k,))                (k, B, D)
    p_x = likelihood(decoder(z, y))    p(x | z[, y]), event = data shape
    terms = Terms(p_x.log_prob(x), ((q, prior(y), z),))

``model.terms`` is what every objective ([`genvae.objectives`][genvae.objectives]) consumes; ``model.elbo`` is the
ELBO objective (the importance-weighted bound for ``k > 1``, Burda et al., 2015,
https://arxiv.org/abs/1509.00519) applied to those terms.

What every model shell shares is a public function here, used by [`VAE`][genvae.models.VAE],
[`CVAE`][genvae.models.CVAE] and [`HierarchicalVAE`][genvae.hierarchy.HierarchicalVAE] alike (and
by a user's own model): [`attach_parts`][genvae.models.attach_parts] and
[`check_input`][genvae.models.check_input] for setup and input checks,
[`chunked_log_likelihood`][genvae.models.chunked_log_likelihood] for a large k in bounded memory,
[`elbo`][genvae.models.elbo], [`interpolate`][genvae.models.interpolate],
[`sample`][genvae.models.sample], [`draw_prior`][genvae.models.draw_prior] and
[`sample_with`][genvae.models.sample_with].
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import torch
from torch import Tensor, nn
from torch.distributions import Distribution
from torch.utils.checkpoint import checkpoint

from ._checks import check_data, check_labels, positive_int
from .objectives import ELBO, IWAE
from .protocols import Decoder, Encoder, LatentVariableModel, Likelihood, Prior
from .registry import register
from .terms import ELBOOutput, LatentLayer, Terms

__all__ = [
    "CVAE",
    "IW_CHUNK_ELEMENTS",
    "VAE",
    "attach_parts",
    "check_input",
    "chunk_size",
    "chunked_log_likelihood",
    "draw_prior",
    "elbo",
    "fit_likelihood",
    "interpolate",
    "sample",
    "sample_with",
    "value_checks",
]

#: Upper bound on the elements of one decoder pass over importance samples (k_chunk · B · pixels):
#: 2**25 float32 values is 128 MiB, so ``terms(x, k=5000)`` runs in bounded memory.
IW_CHUNK_ELEMENTS = 2**25


# --------------------------------------------------------------------------- setup and checks


def attach_parts(
    model: nn.Module,
    *,
    encoder: Encoder,
    decoder: Decoder,
    likelihood: Likelihood,
    prior: Prior,
    label_required: bool = False,
) -> None:
    """Set a model's four parts and what the shared functions read of it.

    Sets ``model.encoder``, ``decoder``, ``likelihood``, ``prior``; ``data_shape`` (the encoder's
    or decoder's, where one declares it, and the likelihood's ``event_dims`` from it);
    ``num_classes`` (the first of the prior, encoder and decoder that declares it);
    ``label_required``; and ``validating = True``.

    Raises:
        TypeError: a part that is not callable.
        ValueError: ``label_required`` without a conditional part, or a likelihood whose
            ``event_dims`` disagrees with the data shape.
    """
    for name, part in (("encoder", encoder), ("decoder", decoder), ("likelihood", likelihood), ("prior", prior)):
        if not callable(part):
            raise TypeError(f"expected {name} to be callable (an nn.Module), got {type(part).__name__}")
    model.encoder, model.decoder, model.likelihood, model.prior = encoder, decoder, likelihood, prior
    shape = getattr(encoder, "data_shape", None) or getattr(decoder, "data_shape", None)
    model.data_shape = tuple(shape) if shape is not None else None
    if model.data_shape is not None:
        fit_likelihood(likelihood, model.data_shape)
    found = [getattr(m, "num_classes", None) for m in (prior, encoder, decoder)]
    model.num_classes = next((n for n in found if n is not None), None)
    model.label_required = label_required
    if label_required and model.num_classes is None:
        raise ValueError(
            f"expected a conditional part (num_classes set on the encoder, decoder or prior) "
            f"for {type(model).__name__}, got none"
        )
    model.validating = True


def fit_likelihood(likelihood: Likelihood, data_shape: tuple[int, ...]) -> None:
    """Give ``likelihood`` the number of data dimensions, or refuse one that disagrees."""
    dims = getattr(likelihood, "event_dims", "absent")
    if dims is None:
        likelihood.event_dims = len(data_shape)  # type: ignore[attr-defined]
    elif dims != "absent" and dims != len(data_shape):
        raise ValueError(
            f"expected likelihood event_dims={len(data_shape)} for data of shape {data_shape}, got "
            f"{type(likelihood).__name__}(event_dims={dims}); leave event_dims unset and the model sets it"
        )


@contextmanager
def value_checks(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Within the block, ``model`` checks (``True``) or skips (``False``) its inputs' values.

    The value checks (finite, in the likelihood's support, labels in range) read tensors back to
    the host; shapes and dtypes are always checked. The previous state is restored on exit.
    ``fit`` checks the data once and trains inside ``validate_args(False)``.
    """
    previous = model.validating
    model.validating = bool(enabled)
    try:
        yield
    finally:
        model.validating = previous


def check_input(model: nn.Module, x: Tensor, y: Tensor | None = None, *, name: str = "x") -> None:
    """Check a batch for ``model`` (set up by [`attach_parts`][genvae.models.attach_parts]).

    Always: ``x`` is ``(B, *data_shape)`` of the model's dtype, and ``y`` is ``(B,)`` integers
    (required where ``model.label_required``). Where ``model.validating``: ``x`` is finite and in
    the likelihood's support, and the labels are in ``range(num_classes)``.

    Raises:
        TypeError, ValueError: naming what was wrong and what was expected.
    """
    check_data(name, x, model.data_shape)
    weight = next(model.parameters(), None)
    dtype = weight.dtype if weight is not None else x.dtype  # a model without weights takes any precision
    if x.dtype != dtype:
        raise ValueError(
            f"expected {name} of the model's dtype {dtype}, got {x.dtype}; cast it with {name}.to({dtype})"
        )
    if y is None:
        if model.label_required:
            raise ValueError(
                f"expected a label tensor y of shape ({x.shape[0]},) for a {type(model).__name__}, got None"
            )
    else:
        check_labels(y, x.shape[0], model.num_classes, values=model.validating)
    if model.validating:
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"expected finite values in {name}, got NaN or inf")
        support = getattr(model.likelihood, "support", None)
        if support is not None and not bool(support.check(x).all()):
            lo, hi = float(x.min()), float(x.max())
            raise ValueError(
                f"expected {name} in the support of {type(model.likelihood).__name__} "
                f"({support}), got values in [{lo:g}, {hi:g}]"
            )


# --------------------------------------------------------------------------- bounds


def chunk_size(x: Tensor) -> int:
    """Draws per pass for the batch ``x``: the most whose decoder outputs (draws · ``x.numel()``)
    stay within [`IW_CHUNK_ELEMENTS`][genvae.models.IW_CHUNK_ELEMENTS], at least one."""
    return max(1, IW_CHUNK_ELEMENTS // max(1, x.numel()))


def _log_likelihood(model: nn.Module, z: Tensor, x: Tensor, y: Tensor | None) -> Tensor:
    """log p(x | z) ``(k, B)`` for ``z (k, B, *event)``; the likelihood's event shape must be x's."""
    px = model.likelihood(model.decoder(z, y))
    if tuple(px.event_shape) != tuple(x.shape[1:]):
        raise ValueError(
            f"expected the likelihood's event shape to be the data shape {tuple(x.shape[1:])}, got "
            f"{tuple(px.event_shape)} from {type(model.likelihood).__name__}; its log_prob would sum over "
            "the wrong dimensions"
        )
    return px.log_prob(x)


def chunked_log_likelihood(model: nn.Module, z: Tensor, x: Tensor, y: Tensor | None = None) -> Tensor:
    """log p(x | z) ``(k, B)`` = ``model.likelihood(model.decoder(z, y)).log_prob(x)``, in bounded memory.

    The decoder runs over the k draws in passes of [`chunk_size`][genvae.models.chunk_size] draws,
    recomputed in the backward pass when gradients are on, so that a large k (``k = 5000``) takes
    memory for one pass, with the same values as one pass over all k.

    Args:
        model: has ``decoder`` and ``likelihood``.
        z: ``(k, B, *event)`` the codes the decoder reads.
        x: ``(B, *data_shape)``.
        y: ``(B,)`` labels where the model uses them.
    """
    k, chunk = z.shape[0], chunk_size(x)
    if k <= chunk:
        return _log_likelihood(model, z, x, y)  # (k, B)
    parts = [z[i : i + chunk] for i in range(0, k, chunk)]
    if torch.is_grad_enabled():
        return torch.cat([checkpoint(_log_likelihood, model, p, x, y, use_reentrant=False) for p in parts])
    return torch.cat([_log_likelihood(model, p, x, y) for p in parts])


def elbo(
    model: LatentVariableModel, x: Tensor, y: Tensor | None = None, *, beta: float = 1.0, k: int = 1
) -> ELBOOutput:
    """The ELBO terms of a batch: the [`ELBO`][genvae.objectives.ELBO] objective on
    ``model.terms(x, y, k=k)`` (the [`IWAE`][genvae.objectives.IWAE] bound for ``k > 1``).

    A convenience for reading a model's bound and its two terms; training takes an objective
    (``fit(model, data, objective=ELBO(beta))``).

    Args:
        x: ``(B, *data_shape)``; ``y`` ``(B,)`` labels where used.
        beta: weight of the KL in ``loss`` (β-VAE, https://openreview.net/forum?id=Sy2fzU9gl);
            ``elbo`` is always the β = 1 bound.
        k: number of importance samples; ``k = 1`` is the standard single-sample ELBO.
    """
    objective = ELBO(beta) if positive_int("k", k) == 1 else IWAE(k, beta=beta)
    terms = model.terms(x, y, k=k)
    value = objective(terms)
    return ELBOOutput(value.bound, terms.log_likelihood.mean(0), terms.kl().mean(0), value.loss)


# --------------------------------------------------------------------------- generation


def sample_with(dist: Distribution, shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
    """``dist.sample(shape)`` drawn from ``generator``'s stream when one is given (reproducible).

    The default generator of ``generator``'s device is seeded from it inside ``fork_rng``, so the
    global random state is left as it was; the generator must be on the distribution's device.
    """
    if generator is None:
        return dist.sample(shape)
    seed = int(torch.randint(2**62, (), generator=generator, device=generator.device))
    if generator.device.type == "cuda":
        index = generator.device.index if generator.device.index is not None else torch.cuda.current_device()
        with torch.random.fork_rng(devices=[index]), torch.cuda.device(index):
            torch.cuda.manual_seed(seed)
            return dist.sample(shape)
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        return dist.sample(shape)


def draw_prior(
    model: nn.Module, n: int, y: Tensor | None = None, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor | None]:
    """``n`` draws z ~ p(z[ | y]) of ``model.prior``, ``(n, *event)``, and the checked labels.

    Raises:
        ValueError: ``n`` not a positive int, labels of another shape or out of range, or none
            where the model requires them.
    """
    positive_int("n", n)
    if y is not None:
        y = check_labels(y, n, model.num_classes, values=True).to(next(model.parameters()).device)
    elif model.label_required:
        raise ValueError(f"expected labels y of shape ({n},) to sample from a {type(model).__name__}, got None")
    p = model.prior(y)
    return sample_with(p, (n,) if p.batch_shape == () else (), generator), y  # (n, *event)


@torch.no_grad()
def sample(
    model: nn.Module,
    n: int,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
    mean: bool = True,
    decode: Callable[[Tensor, Tensor | None], Distribution] | None = None,
) -> Tensor:
    """Draw ``n`` examples: z ~ p(z[|y]) ([`draw_prior`][genvae.models.draw_prior]), then the mean
    of p(x | z[, y]) (or a draw, ``mean=False``).

    Args:
        model: has ``prior``, and ``decode`` unless ``decode`` is given.
        n: number of examples.
        y: labels ``(n,)`` for a conditional model.
        generator: a ``torch.Generator`` on the model's device for reproducible draws.
        mean: the mean of p(x | z[, y]); ``False``: a draw from it.
        decode: ``(z (n, *event), y)`` → p(x | z[, y]); by default ``model.decode``. A hierarchical
            model passes one that draws its lower layers from ``generator`` on the way down.

    Returns:
        ``(n, *data_shape)``.
    """
    z, y = draw_prior(model, n, y, generator)  # (n, *event)
    px = (model.decode if decode is None else decode)(z, y)
    return px.mean if mean else sample_with(px, (), generator)


@torch.no_grad()
def interpolate(model: LatentVariableModel, x0: Tensor, x1: Tensor, steps: int = 10, y: Tensor | None = None) -> Tensor:
    """Decode ``steps`` points on the line between the posterior means of two examples.

    Args:
        model: any model with ``encode`` and ``decode``.
        x0: the first example, ``(*data_shape)``.
        x1: the last example, ``(*data_shape)``.
        y: one label (a 0-d or ``(1,)`` tensor) for a conditional model.

    Returns:
        ``(steps, *data_shape)``, from x0's code to x1's.
    """
    positive_int("steps", steps)
    yy = None if y is None else y.reshape(1)
    z0 = model.encode(x0.unsqueeze(0), yy).mean  # (1, *event)
    z1 = model.encode(x1.unsqueeze(0), yy).mean
    t = torch.linspace(0, 1, steps, device=z0.device, dtype=z0.dtype)  # (steps,)
    t = t.reshape(steps, *[1] * (z0.dim() - 1))  # (steps, 1, …)
    z = (1 - t) * z0 + t * z1  # (steps, *event)
    return model.decode(z, None if yy is None else yy.expand(steps)).mean


def _declared(parts: tuple[object, ...], attribute: str) -> object | None:
    """The first of ``parts`` that declares ``attribute`` (not None), else None."""
    return next((getattr(p, attribute) for p in parts if getattr(p, attribute, None) is not None), None)


# --------------------------------------------------------------------------- the models


@register("model", "vae", provides={"conditional": False})
class VAE(nn.Module):
    """A variational autoencoder (Kingma & Welling, 2014, https://arxiv.org/abs/1312.6114).

    Args:
        encoder: x → q(z | x); see [`genvae.protocols.Encoder`][genvae.protocols.Encoder].
        decoder: z → likelihood parameters.
        likelihood: parameters → p(x | z).
        prior: p(z).

    Labels are optional and passed to every part (unconditional parts ignore them).
    """

    label_required = False

    def __init__(self, encoder: Encoder, decoder: Decoder, likelihood: Likelihood, prior: Prior) -> None:
        super().__init__()
        attach_parts(
            self,
            encoder=encoder,
            decoder=decoder,
            likelihood=likelihood,
            prior=prior,
            label_required=self.label_required,
        )

    def validate_args(self, enabled: bool = True) -> AbstractContextManager[None]:
        """Within the block, check (``True``) or skip (``False``) the input's values; see
        [`value_checks`][genvae.models.value_checks]."""
        return value_checks(self, enabled)

    # ------------------------------------------------------------------ parts
    def encode(self, x: Tensor, y: Tensor | None = None) -> Distribution:
        """The posterior q(z | x[, y]): ``x (B, *data_shape)`` → batch ``(B,)``, event ``(D,)``.

        The caller decides: ``.rsample()`` for a draw, ``.mean`` for the posterior mean.
        """
        check_input(self, x, y)
        return self.encoder(x, y)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Distribution:
        """p(x | z[, y]) for ``z (*S, B, D)``: event shape = data shape, batch ``(*S, B)``."""
        if self.label_required and y is None:
            raise ValueError(
                f"expected a label tensor y of shape ({z.shape[-2] if z.dim() > 1 else 1},) for a CVAE, got None"
            )
        return self.likelihood(self.decoder(z, y))

    # ------------------------------------------------------------------ terms and bounds
    def terms(self, x: Tensor, y: Tensor | None = None, *, k: int = 1) -> Terms:
        """What every objective needs, for ``k`` reparameterised draws z ~ q(z | x[, y]) per example.

        Args:
            x: ``(B, *data_shape)``.
            y: ``(B,)`` labels where the model uses them.
            k: draws per example; the decoder runs over them in passes of bounded size
                ([`chunked_log_likelihood`][genvae.models.chunked_log_likelihood]).

        Returns:
            [`Terms`][genvae.terms.Terms]: log p(x | z) ``(k, B)`` and one layer (q, p(z[|y]), z ``(k, B, D)``).
        """
        check_input(self, x, y)
        q = self.encoder(x, y)
        z = q.rsample((positive_int("k", k),))  # (k, B, D)
        return Terms(chunked_log_likelihood(self, z, x, y), (LatentLayer(q, self.prior(y), z),))

    def elbo(self, x: Tensor, y: Tensor | None = None, *, beta: float = 1.0, k: int = 1) -> ELBOOutput:
        """The ELBO terms of ``x (B, *data_shape)``: [`genvae.models.elbo`][genvae.models.elbo]."""
        return elbo(self, x, y, beta=beta, k=k)

    def forward(self, x: Tensor, y: Tensor | None = None, *, k: int = 1) -> Terms:
        """Same as `terms` (so that wrappers such as DDP see the computation)."""
        return self.terms(x, y, k=k)

    # ------------------------------------------------------------------ generation
    def sample(
        self, n: int, y: Tensor | None = None, *, generator: torch.Generator | None = None, mean: bool = True
    ) -> Tensor:
        """``(n, *data_shape)``: z ~ p(z[|y]), then the mean of p(x | z) (or a draw, ``mean=False``);
        labels ``y (n,)`` for a conditional model, a ``generator`` on the model's device for
        reproducible draws (see [`genvae.models.sample`][genvae.models.sample])."""
        return sample(self, n, y, generator=generator, mean=mean)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Mean of p(x | z = posterior mean): ``(B, *data_shape)`` → same shape."""
        return self.decode(self.encode(x, y).mean, y).mean

    def interpolate(self, x0: Tensor, x1: Tensor, steps: int = 10, y: Tensor | None = None) -> Tensor:
        """``(steps, *data_shape)`` decoded between two posterior means (see
        [`genvae.models.interpolate`][genvae.models.interpolate])."""
        return interpolate(self, x0, x1, steps, y)

    @property
    def latent_dim(self) -> int | None:
        """D, where a part declares it."""
        found = _declared((self.encoder, self.decoder, self.prior), "latent_dim")
        return None if found is None else int(found)  # type: ignore[call-overload]


@register("model", "cvae", requires={"labelled": True}, provides={"conditional": True})
class CVAE(VAE):
    """A conditional VAE (Sohn et al., 2015): a [`VAE`][genvae.models.VAE] with a label required everywhere.

    The encoder, decoder or prior must be conditional (``num_classes`` set); every call takes
    ``y (B,)`` int64 labels in ``range(num_classes)``.
    """

    label_required = True
