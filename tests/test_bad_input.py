"""Bad input fails early with an error that names the argument, what was expected and what came."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from genvae import CVAE, VAE
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

MNIST = (1, 28, 28)
D = 2


def vae(likelihood: nn.Module | None = None, shape: tuple[int, ...] = MNIST) -> VAE:
    torch.manual_seed(0)
    return VAE(
        MLPEncoder(shape, D, hidden=(8,)),
        MLPDecoder(D, shape, hidden=(8,)),
        likelihood if likelihood is not None else Bernoulli(),
        StandardNormal(D),
    )


def cvae(shape: tuple[int, ...] = (1, 4, 4)) -> CVAE:
    torch.manual_seed(0)
    return CVAE(
        MLPEncoder(shape, D, hidden=(8,), num_classes=3),
        MLPDecoder(D, shape, hidden=(8,), num_classes=3),
        Bernoulli(),
        ConditionalNormal(3, D),
    )


# ---------------------------------------------------------------- data


def test_wrong_data_shape_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"expected x of shape \(B, 1, 28, 28\), got \(32, 784\)"):
        vae().elbo(torch.rand(32, 784))
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\), got \(2, 1, 28, 27\)"):
        vae().encode(torch.rand(2, 1, 28, 27))
    # a single image without its batch dim
    with pytest.raises(ValueError, match=r"got \(1, 28, 28\)"):
        vae().reconstruct(torch.rand(1, 28, 28))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_non_floating_data_is_a_type_error(dtype: torch.dtype) -> None:
    with pytest.raises(TypeError, match="floating dtype"):
        vae().elbo(torch.zeros(2, *MNIST, dtype=dtype))


def test_data_that_is_not_a_tensor_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        vae().elbo(torch.rand(2, *MNIST).numpy())  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("k", [1, 3])
def test_non_finite_data_is_rejected(value: float, k: int) -> None:
    x = torch.rand(2, *MNIST)
    x[1, 0, 3, 4] = value
    with pytest.raises(ValueError, match="finite"):
        vae(Gaussian()).elbo(x, k=k)


@pytest.mark.parametrize("likelihood", [Bernoulli, ContinuousBernoulli])
@pytest.mark.parametrize("value", [-0.01, 1.5])
def test_pixels_outside_the_unit_interval_are_rejected(likelihood: type[nn.Module], value: float) -> None:
    x = torch.rand(2, *MNIST)
    x[0, 0, 0, 0] = value
    with pytest.raises(ValueError, match=rf"support of {likelihood.__name__}.*got values in \[{min(value, 0)}"):
        vae(likelihood()).elbo(x)


def test_any_real_pixels_are_fine_for_a_gaussian() -> None:
    x = 3 * torch.randn(2, *MNIST)
    assert bool(torch.isfinite(vae(Gaussian()).elbo(x).elbo).all())


def test_value_checks_can_be_switched_off_in_a_block_that_restores_them() -> None:
    model = vae()
    x = torch.rand(2, *MNIST) + 1.0  # outside the support; the caller vouched for the data
    with model.validate_args(False):
        assert model.elbo(x).elbo.shape == (2,)
        with pytest.raises(ValueError, match="shape"):  # shapes are still checked
            model.elbo(torch.rand(2, 784))
        with model.validate_args(True):  # nested blocks restore the state around them
            with pytest.raises(ValueError, match="support"):
                model.elbo(x)
        assert not model.validating
    assert model.validating
    with pytest.raises(RuntimeError), model.validate_args(False):  # restored on an exception too
        raise RuntimeError
    assert model.validating
    with pytest.raises(ValueError, match="support"):
        model.elbo(x)


# ---------------------------------------------------------------- labels


def test_label_out_of_range() -> None:
    x = torch.rand(3, 1, 4, 4)
    with pytest.raises(ValueError, match=r"range\(0, 3\).*\[0, 3\]"):
        cvae().elbo(x, torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError, match=r"range\(0, 3\).*\[-1, 1\]"):
        cvae().elbo(x, torch.tensor([0, 1, -1]))
    with pytest.raises(ValueError, match=r"range\(0, 3\)"):
        cvae().sample(2, torch.tensor([5, 0]))


def test_missing_label_for_a_cvae() -> None:
    model = cvae()
    with pytest.raises(ValueError, match="label"):
        model.elbo(torch.rand(3, 1, 4, 4))
    with pytest.raises(ValueError, match="label"):
        model.elbo(torch.rand(3, 1, 4, 4), k=4)
    with pytest.raises(ValueError, match="labels"):
        model.sample(3)
    with pytest.raises(ValueError, match="label"):
        model.decode(torch.randn(3, D))


def test_float_labels_are_a_type_error() -> None:
    with pytest.raises(TypeError, match="integer dtype"):
        cvae().elbo(torch.rand(3, 1, 4, 4), torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(TypeError, match="integer dtype"):
        cvae().sample(2, torch.tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match="integer"):
        cvae().elbo(torch.rand(3, 1, 4, 4), [0, 1, 2])  # type: ignore[arg-type]


def test_labels_of_the_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"expected y of shape \(3,\), got \(2,\)"):
        cvae().elbo(torch.rand(3, 1, 4, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"expected y of shape \(2,\), got \(3,\)"):
        cvae().sample(2, torch.tensor([0, 1, 2]))


def test_a_cvae_needs_a_conditional_part() -> None:
    with pytest.raises(ValueError, match="conditional part"):
        CVAE(MLPEncoder(MNIST, D), MLPDecoder(D, MNIST), Bernoulli(), StandardNormal(D))


def test_model_parts_must_be_callable() -> None:
    with pytest.raises(TypeError, match="prior"):
        VAE(MLPEncoder(MNIST, D), MLPDecoder(D, MNIST), Bernoulli(), "N(0, I)")  # type: ignore[arg-type]


# ---------------------------------------------------------------- sizes in constructors and calls

BAD_CONSTRUCTIONS: list[tuple[str, Callable[[], object], type[Exception], str]] = [
    ("mlp-latent", lambda: MLPEncoder(MNIST, 0), ValueError, "latent_dim"),
    ("mlp-dec-latent", lambda: MLPDecoder(-3, MNIST), ValueError, "latent_dim"),
    ("mlp-hidden", lambda: MLPEncoder(MNIST, D, hidden=(0,)), ValueError, r"hidden\[0\]"),
    ("mlp-hidden-2", lambda: MLPDecoder(D, MNIST, hidden=(16, -1)), ValueError, r"hidden\[1\]"),
    ("mlp-shape", lambda: MLPEncoder((1, 0, 28), D), ValueError, r"data_shape\[1\]"),
    ("mlp-shape-empty", lambda: MLPEncoder((), D), TypeError, "data_shape"),
    ("mlp-latent-float", lambda: MLPEncoder(MNIST, 2.0), TypeError, "latent_dim"),  # type: ignore[arg-type]
    ("mlp-latent-bool", lambda: MLPEncoder(MNIST, True), TypeError, "latent_dim"),
    ("mlp-classes", lambda: MLPEncoder(MNIST, D, num_classes=1), ValueError, "num_classes"),
    (
        "mlp-activation",
        lambda: MLPEncoder(MNIST, D, activation=torch.relu),  # type: ignore[arg-type]
        TypeError,
        "activation",
    ),
    ("conv-shape", lambda: ConvEncoder((1, 0, 28), D), ValueError, r"data_shape\[1\]"),
    ("conv-rank", lambda: ConvEncoder((28, 28), D), ValueError, r"\(C, H, W\)"),
    ("conv-dec-rank", lambda: ConvDecoder(D, (784,)), ValueError, r"\(C, H, W\)"),
    ("conv-channels", lambda: ConvDecoder(D, MNIST, channels=(8, 0)), ValueError, r"channels\[1\]"),
    ("conv-hidden", lambda: ConvEncoder(MNIST, D, hidden=0), ValueError, "hidden"),
    ("std-latent", lambda: StandardNormal(0), ValueError, "latent_dim"),
    ("learned-latent", lambda: LearnedNormal(-1), ValueError, "latent_dim"),
    ("mog-components", lambda: MixtureOfGaussians(D, -1), ValueError, "num_components"),
    ("mog-latent", lambda: MixtureOfGaussians(0, 3), ValueError, "latent_dim"),
    (
        "vamp-pseudo",
        lambda: VampPrior(MLPEncoder(MNIST, D), 0, MNIST),
        ValueError,
        "num_pseudo_inputs",
    ),
    (
        "vamp-shape",
        lambda: VampPrior(MLPEncoder(MNIST, D), 2, (1, 0, 28)),
        ValueError,
        r"data_shape\[1\]",
    ),
    ("vamp-encoder", lambda: VampPrior(None, 2, MNIST), TypeError, "encoder"),  # type: ignore[arg-type]
    ("cond-classes", lambda: ConditionalNormal(0, D), ValueError, "num_classes"),
    ("cond-latent", lambda: ConditionalNormal(3, 0), ValueError, "latent_dim"),
    ("gauss-sigma", lambda: Gaussian(0.0), ValueError, "sigma"),
    ("gauss-sigma-inf", lambda: Gaussian(float("inf")), ValueError, "sigma"),
    (
        "gauss-min-sigma",
        lambda: Gaussian(1.0, learned=True, min_sigma=-1.0),
        ValueError,
        "min_sigma",
    ),
    ("gauss-shape", lambda: Gaussian(1.0, learned=True, shape=(1, 0)), ValueError, r"shape\[1\]"),
    ("bern-event", lambda: Bernoulli(event_dims=0), ValueError, "event_dims"),
    ("cb-event", lambda: ContinuousBernoulli(event_dims=-2), ValueError, "event_dims"),
]


@pytest.mark.parametrize(
    ("make", "error", "name"),
    [c[1:] for c in BAD_CONSTRUCTIONS],
    ids=[c[0] for c in BAD_CONSTRUCTIONS],
)
def test_bad_constructor_arguments_name_the_argument(
    make: Callable[[], object], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name):
        make()


@pytest.mark.parametrize("k", [0, -2])
def test_non_positive_k(k: int) -> None:
    with pytest.raises(ValueError, match="k"):
        vae().elbo(torch.rand(2, *MNIST), k=k)


def test_non_integer_k() -> None:
    with pytest.raises(TypeError, match="k"):
        vae().elbo(torch.rand(2, *MNIST), k=2.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [0, -1])
def test_non_positive_n_in_sample(n: int) -> None:
    with pytest.raises(ValueError, match="expected n"):
        vae().sample(n)


def test_non_positive_interpolation_steps() -> None:
    x = torch.rand(*MNIST)
    with pytest.raises(ValueError, match="steps"):
        vae().interpolate(x, x, steps=0)


def test_gaussian_with_an_int_shape_is_the_one_dimensional_shape() -> None:
    """An int shape is a 1-tuple, as every shape argument in genvae takes it (``shape_tuple``)."""
    from_int = Gaussian(2.0, learned=True, shape=4, event_dims=1)  # type: ignore[arg-type]
    from_tuple = Gaussian(2.0, learned=True, shape=(4,), event_dims=1)
    assert from_int.shape == (4,) and from_int.scale().shape == (4,)
    x, mean = torch.rand(3, 4), torch.rand(3, 4)
    torch.testing.assert_close(from_int(mean).log_prob(x), from_tuple(mean).log_prob(x))
    with pytest.raises(TypeError, match="expected shape to be a non-empty tuple of positive ints, got '4'"):
        Gaussian(1.0, learned=True, shape="4")  # type: ignore[arg-type]
