"""VAE and CVAE: an encoder, a decoder, a likelihood and a prior, composed.

    q = encoder(x, y)                  q(z | x[, y]), batch (B,), event (D,)
    z = q.rsample((k,))                (k, B, D)
    p_x = likelihood(decoder(z, y))    p(x | z[, y]), event = data shape
    terms = Terms(p_x.log_prob(x), ((q, prior(y), z),))

``model.terms`` is what every objective ([`genvae.objectives`][genvae.objectives]) consumes; ``model.elbo`` is the
ELBO objective (the importance-weighted bound for ``k > 1``, Burda et al., 2015,
https://arxiv.org/abs/1509.00519) applied to those terms.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Distribution
from torch.utils.checkpoint import checkpoint

from ._checks import check_data, check_labels, positive_int
from .objectives import ELBO, IWAE
from .protocols import Decoder, Encoder, Likelihood, Prior
from .terms import LatentLayer, Terms

__all__ = ["CVAE", "ELBOOutput", "VAE", "IW_CHUNK_ELEMENTS"]

#: Upper bound on the elements of one decoder pass over importance samples (k_chunk · B · pixels):
#: 2**25 float32 values is 128 MiB, so ``terms(x, k=5000)`` runs in bounded memory.
IW_CHUNK_ELEMENTS = 2**25


@dataclass(frozen=True)
class ELBOOutput:
    """Per-example terms of the evidence lower bound, in nats (what [`elbo`][genvae.models.VAE.elbo] returns).

    Attributes:
        elbo: ``(B,)`` the bound on log p(x): log p(x|z) − KL for k = 1, the IW bound for k > 1.
        log_likelihood: ``(B,)`` the reconstruction term E_q[log p(x|z)] (single or k-sample mean).
        kl: ``(B,)`` KL(q(z|x) ‖ p(z)), closed form or its Monte-Carlo estimate.
        loss: scalar to minimise: −mean(log_likelihood − β·kl) (k = 1) or −mean(β-weighted IW bound).
    """

    elbo: Tensor
    log_likelihood: Tensor
    kl: Tensor
    loss: Tensor


def _sample_with(dist: Distribution, shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
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


class _LatentVariableModel(nn.Module):
    """The shared implementation of [`VAE`][genvae.models.VAE] and [`CVAE`][genvae.models.CVAE].

    Not a base class to inherit: the contract is
    [`LatentVariableModel`][genvae.protocols.LatentVariableModel].
    """

    label_required = False

    def __init__(self, encoder: Encoder, decoder: Decoder, likelihood: Likelihood, prior: Prior) -> None:
        super().__init__()
        for name, part in (("encoder", encoder), ("decoder", decoder), ("likelihood", likelihood), ("prior", prior)):
            if not callable(part):
                raise TypeError(f"expected {name} to be callable (an nn.Module), got {type(part).__name__}")
        self.encoder, self.decoder, self.likelihood, self.prior = encoder, decoder, likelihood, prior
        shape = getattr(encoder, "data_shape", None) or getattr(decoder, "data_shape", None)
        self.data_shape: tuple[int, ...] | None = tuple(shape) if shape is not None else None
        if self.data_shape is not None:
            _fit_likelihood(likelihood, self.data_shape)
        found = [getattr(m, "num_classes", None) for m in (prior, encoder, decoder)]
        self.num_classes: int | None = next((n for n in found if n is not None), None)
        if self.label_required and self.num_classes is None:
            raise ValueError(
                f"expected a conditional part (num_classes set on the encoder, decoder or prior) "
                f"for {type(self).__name__}, got none"
            )
        self.validating = True

    @contextmanager
    def validate_args(self, enabled: bool = True) -> Iterator[None]:
        """Within the block, check (``True``) or skip (``False``) the input's values.

        The value checks (finite, in the likelihood's support, labels in range) read tensors back to
        the host; shapes and dtypes are always checked. The previous state is restored on exit.
        ``fit`` checks the data once and trains inside ``validate_args(False)``.
        """
        previous = self.validating
        self.validating = bool(enabled)
        try:
            yield
        finally:
            self.validating = previous

    # ------------------------------------------------------------------ checks
    def _check(self, x: Tensor, y: Tensor | None, name: str = "x") -> None:
        check_data(name, x, self.data_shape)
        weight = next(self.parameters(), None)
        dtype = weight.dtype if weight is not None else x.dtype  # a model without weights takes any precision
        if x.dtype != dtype:
            raise ValueError(
                f"expected {name} of the model's dtype {dtype}, got {x.dtype}; cast it with {name}.to({dtype})"
            )
        if y is None:
            if self.label_required:
                raise ValueError(f"expected a label tensor y of shape ({x.shape[0]},) for a CVAE, got None")
        else:
            check_labels(y, x.shape[0], self.num_classes, values=self.validating)
        if self.validating:
            if not bool(torch.isfinite(x).all()):
                raise ValueError(f"expected finite values in {name}, got NaN or inf")
            support = getattr(self.likelihood, "support", None)
            if support is not None and not bool(support.check(x).all()):
                lo, hi = float(x.min()), float(x.max())
                raise ValueError(
                    f"expected {name} in the support of {type(self.likelihood).__name__} "
                    f"({support}), got values in [{lo:g}, {hi:g}]"
                )

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ parts
    def encode(self, x: Tensor, y: Tensor | None = None) -> Distribution:
        """The posterior q(z | x[, y]): ``x (B, *data_shape)`` → batch ``(B,)``, event ``(D,)``.

        The caller decides: ``.rsample()`` for a draw, ``.mean`` for the posterior mean.
        """
        self._check(x, y)
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
            k: draws per example. The decoder runs over them in chunks of at most
                [`IW_CHUNK_ELEMENTS`][genvae.models.IW_CHUNK_ELEMENTS] output values (recomputed in
                the backward pass when gradients are on), so a large k runs in bounded memory with
                the same draws.

        Returns:
            [`Terms`][genvae.terms.Terms]: log p(x | z) ``(k, B)`` and one layer (q, p(z[|y]), z ``(k, B, D)``).
        """
        self._check(x, y)
        q = self.encoder(x, y)
        z = q.rsample((positive_int("k", k),))  # (k, B, D)
        chunk = max(1, IW_CHUNK_ELEMENTS // max(1, x.numel()))
        if k <= chunk:
            log_px = self._log_likelihood(z, x, y)  # (k, B)
        else:
            parts = [z[i : i + chunk] for i in range(0, k, chunk)]
            if torch.is_grad_enabled():
                log_px = torch.cat([checkpoint(self._log_likelihood, p, x, y, use_reentrant=False) for p in parts])
            else:
                log_px = torch.cat([self._log_likelihood(p, x, y) for p in parts])
        return Terms(log_px, (LatentLayer(q, self.prior(y), z),))

    def _log_likelihood(self, z: Tensor, x: Tensor, y: Tensor | None) -> Tensor:
        """log p(x | z) ``(k, B)`` for ``z (k, B, D)``; the likelihood's event shape must be x's."""
        px = self.likelihood(self.decoder(z, y))
        if tuple(px.event_shape) != tuple(x.shape[1:]):
            raise ValueError(
                f"expected the likelihood's event shape to be the data shape {tuple(x.shape[1:])}, got "
                f"{tuple(px.event_shape)} from {type(self.likelihood).__name__}; its log_prob would sum over "
                "the wrong dimensions"
            )
        return px.log_prob(x)

    def elbo(self, x: Tensor, y: Tensor | None = None, *, beta: float = 1.0, k: int = 1) -> ELBOOutput:
        """The ELBO terms for a batch ``x (B, *data_shape)`` (``y (B,)`` labels where used).

        The [`ELBO`][genvae.objectives.ELBO] objective on `terms` (the
        [`IWAE`][genvae.objectives.IWAE] bound for ``k > 1``).

        Args:
            beta: weight of the KL in ``loss`` (β-VAE, https://openreview.net/forum?id=Sy2fzU9gl);
                ``elbo`` is always the β = 1 bound.
            k: number of importance samples; ``k = 1`` is the standard single-sample ELBO.
        """
        objective = ELBO(beta) if positive_int("k", k) == 1 else IWAE(k, beta=beta)
        terms = self.terms(x, y, k=k)
        value = objective(terms)
        return ELBOOutput(value.bound, terms.log_likelihood.mean(0), terms.kl().mean(0), value.loss)

    def forward(self, x: Tensor, y: Tensor | None = None, *, k: int = 1) -> Terms:
        """Same as `terms` (so that wrappers such as DDP see the computation)."""
        return self.terms(x, y, k=k)

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def sample(
        self, n: int, y: Tensor | None = None, *, generator: torch.Generator | None = None, mean: bool = True
    ) -> Tensor:
        """Draw ``n`` images: z ~ p(z[|y]), then the mean of p(x | z) (or a draw, ``mean=False``).

        Args:
            n: number of images.
            y: labels ``(n,)`` for a conditional model.
            generator: a ``torch.Generator`` on the model's device for reproducible draws.

        Returns:
            ``(n, *data_shape)``.
        """
        positive_int("n", n)
        if y is not None:
            y = check_labels(y, n, self.num_classes, values=True).to(self._device())
        elif self.label_required:
            raise ValueError(f"expected labels y of shape ({n},) to sample from a CVAE, got None")
        p = self.prior(y)
        z = _sample_with(p, (n,) if p.batch_shape == () else (), generator)  # (n, D)
        px = self.decode(z, y)
        return px.mean if mean else _sample_with(px, (), generator)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Mean of p(x | z = posterior mean): ``(B, *data_shape)`` → same shape."""
        return self.decode(self.encode(x, y).mean, y).mean

    @torch.no_grad()
    def interpolate(self, x0: Tensor, x1: Tensor, steps: int = 10, y: Tensor | None = None) -> Tensor:
        """Decode ``steps`` points on the line between the posterior means of two images.

        Args:
            x0: the first image, ``(*data_shape)``.
            x1: the last image, ``(*data_shape)``.
            y: one label (a 0-d or ``(1,)`` tensor) for a conditional model.

        Returns:
            ``(steps, *data_shape)``, from x0's code to x1's.
        """
        positive_int("steps", steps)
        yy = None if y is None else y.reshape(1)
        z0 = self.encode(x0.unsqueeze(0), yy).mean  # (1, D)
        z1 = self.encode(x1.unsqueeze(0), yy).mean
        t = torch.linspace(0, 1, steps, device=z0.device, dtype=z0.dtype)[:, None]  # (steps, 1)
        z = (1 - t) * z0 + t * z1  # (steps, D)
        return self.decode(z, None if yy is None else yy.expand(steps)).mean

    @property
    def latent_dim(self) -> int | None:
        """D, where a part declares it."""
        for part in (self.encoder, self.decoder, self.prior):
            if getattr(part, "latent_dim", None) is not None:
                return int(part.latent_dim)
        return None


def _fit_likelihood(likelihood: Likelihood, data_shape: tuple[int, ...]) -> None:
    """Give ``likelihood`` the number of data dimensions, or refuse one that disagrees."""
    dims = getattr(likelihood, "event_dims", "absent")
    if dims is None:
        likelihood.event_dims = len(data_shape)  # type: ignore[attr-defined]
    elif dims != "absent" and dims != len(data_shape):
        raise ValueError(
            f"expected likelihood event_dims={len(data_shape)} for data of shape {data_shape}, got "
            f"{type(likelihood).__name__}(event_dims={dims}); leave event_dims unset and the model sets it"
        )


class VAE(_LatentVariableModel):
    """A variational autoencoder (Kingma & Welling, 2014, https://arxiv.org/abs/1312.6114).

    Args:
        encoder: x → q(z | x); see [`genvae.protocols.Encoder`][genvae.protocols.Encoder].
        decoder: z → likelihood parameters.
        likelihood: parameters → p(x | z).
        prior: p(z).

    Labels are optional and passed to every part (unconditional parts ignore them).
    """


class CVAE(_LatentVariableModel):
    """A conditional VAE (Sohn et al., 2015): the same parts, with a label required everywhere.

    The encoder, decoder or prior must be conditional (``num_classes`` set); every call takes
    ``y (B,)`` int64 labels in ``range(num_classes)``.
    """

    label_required = True
