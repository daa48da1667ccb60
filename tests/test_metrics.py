"""Metrics against independent computations: FID vs a float64 scipy reference, SSIM and MSE by hand,
IW-NLL chunking, classifier and conditional accuracy on synthetic digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg
from torch import nn

from genvae.data import synthetic_digits
from genvae.metrics import (
    MNISTClassifier,
    accuracy,
    conditional_accuracy,
    fid,
    iw_nll,
    mse,
    reconstruction_metrics,
    ssim,
    train_classifier,
)
from genvae.metrics.fid import _Features


@pytest.fixture(scope="module")
def digits():
    return synthetic_digits(1200, seed=0), synthetic_digits(400, seed=1)


@pytest.fixture(scope="module")
def classifier(digits):
    torch.set_num_threads(max(1, torch.get_num_threads()))
    clf, acc = train_classifier(*digits, epochs=2, batch_size=64, seed=0)
    return clf, acc


def reference_fid(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(cov_a @ cov_b).real  # features of a ReLU layer: some are always 0
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


def test_classifier_learns_synthetic_digits(classifier, digits):
    clf, acc = classifier
    assert acc > 0.9
    assert accuracy(clf, digits[1]) == pytest.approx(acc)
    assert clf.features(digits[1].float_images()[:5]).shape == (5, MNISTClassifier.num_features)


def test_fid_matches_scipy_reference_and_grows_with_noise(classifier, digits):
    clf, _ = classifier
    real = digits[0].float_images()[:600]
    g = torch.Generator().manual_seed(0)
    values = []
    for noise in (0.0, 0.1, 0.3):
        fake = (digits[1].float_images()[:400] + noise * torch.randn(400, 1, 28, 28, generator=g)).clamp(0, 1)
        ours = fid(real, fake, clf, batch_size=128)
        with torch.no_grad():
            fr = _Features(clf)(real).double().numpy()
            ff = _Features(clf)(fake).double().numpy()
        assert ours == pytest.approx(reference_fid(fr, ff), rel=2e-3, abs=1e-3)
        values.append(ours)
    assert values[0] < values[1] < values[2]
    assert fid(real, real, clf) < 1e-3 * max(values[2], 1.0)


def test_mse_and_ssim(digits):
    x = digits[1].float_images()[:16]
    noisy = (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert torch.allclose(mse(x, noisy), ((x - noisy) ** 2).mean((1, 2, 3)))
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-6)
    worse = (x + 0.4 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert float(ssim(x, worse)) < float(ssim(x, noisy)) < 1.0
    from torchmetrics.image import StructuralSimilarityIndexMeasure

    assert float(ssim(x, noisy)) == pytest.approx(
        float(StructuralSimilarityIndexMeasure(data_range=1.0)(noisy, x)), rel=1e-5
    )
    with pytest.raises(ValueError, match="same shape"):
        mse(x, x[:3])


class _Templates(nn.Module):
    """A stand-in conditional model whose samples are class templates (or ignore the label)."""

    def __init__(self, templates: torch.Tensor, use_label: bool) -> None:
        super().__init__()
        self.templates = nn.Parameter(templates, requires_grad=False)
        self.use_label, self.num_classes = use_label, templates.shape[0]

    def sample(self, n, y=None, *, generator=None):
        labels = y if self.use_label else torch.zeros_like(y)
        return self.templates[labels]


def test_conditional_accuracy_of_perfect_and_label_blind_models(classifier, digits):
    clf, _ = classifier
    train = digits[0]
    templates = torch.stack([train.float_images()[train.labels == c][0] for c in range(10)])
    assert (clf(templates).argmax(-1) == torch.arange(10)).all()
    assert conditional_accuracy(_Templates(templates, True), clf, n_per_class=5) == 1.0
    assert conditional_accuracy(_Templates(templates, False), clf, n_per_class=5) == pytest.approx(0.1)


def test_iw_nll_chunking_is_exact_and_bounded_by_elbo():
    """In float64, passes of 7 draws (7 + 7 + … + 1) and one pass of 64 each give exactly the
    log-mean-exp of all 64 importance weights, computed here in one piece from the draws they made."""
    from torch.distributions import Normal

    from genvae import VAE
    from genvae.likelihoods import Bernoulli
    from genvae.nets import MLPDecoder, MLPEncoder
    from genvae.priors import StandardNormal

    torch.manual_seed(0)
    model = VAE(MLPEncoder((1, 28, 28), 3, hidden=(16,)), MLPDecoder(3, (1, 28, 28), hidden=(16,)), Bernoulli(),
                StandardNormal(3)).double()  # fmt: skip
    x = synthetic_digits(8, seed=2).float_images().double()
    k = 64

    def by_hand(z: torch.Tensor) -> torch.Tensor:
        """−log 1/k Σ_i p(x, z_i) / q(z_i | x) for all the draws ``z (k, 8, 3)`` at once."""
        with torch.no_grad():
            q = model.encoder(x)
            logits = model.decoder(z)  # (k, 8, 1, 28, 28)
            bce = nn.functional.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
            log_q = Normal(q.mean, q.stddev).log_prob(z).sum(-1)
            log_w = -bce.flatten(2).sum(-1) + Normal(0.0, 1.0).log_prob(z).sum(-1) - log_q  # (k, 8)
        return -(torch.logsumexp(log_w, 0) - np.log(k))

    def iw_nll_and_its_draws(chunk: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        draws, terms = [], model.terms

        def record(xb, y=None, *, k=1):
            out = terms(xb, y, k=k)
            assert torch.equal(xb, x)  # every pass holds the whole batch
            draws.append(out.layers[0].z)
            return out

        model.terms = record
        try:
            return iw_nll(model, x, k, chunk=chunk), draws
        finally:
            del model.terms

    for chunk in (7, 64):
        got, draws = iw_nll_and_its_draws(chunk)
        assert [len(z) for z in draws] == ([7] * 9 + [1] if chunk == 7 else [64])
        assert got.dtype == torch.float64 and got.shape == (8,)
        torch.testing.assert_close(got, by_hand(torch.cat(draws)), rtol=1e-12, atol=1e-10)
    neg_elbo = torch.stack([-model.elbo(x).elbo for _ in range(200)]).mean(0)
    assert (got <= neg_elbo + 0.5).all()


def test_reconstruction_metrics_match_a_hand_computation(digits):
    from genvae import VAE
    from genvae.likelihoods import Bernoulli
    from genvae.nets import MLPDecoder, MLPEncoder
    from genvae.priors import StandardNormal

    model = VAE(MLPEncoder((1, 28, 28), 3, hidden=(16,)), MLPDecoder(3, (1, 28, 28), hidden=(16,)), Bernoulli(),
                StandardNormal(3))  # fmt: skip
    data = digits[1].subset(50)
    got = reconstruction_metrics(model, data, batch_size=16)
    x = data.float_images()
    x_hat = model.reconstruct(x)
    assert got.num_examples == 50
    assert got.mse == pytest.approx(float(((x - x_hat) ** 2).mean()), rel=1e-5)
    assert got.ssim == pytest.approx(float(ssim(x, x_hat)), rel=1e-4)
