"""genvae: modular variational autoencoders for PyTorch.

Compose a model from an encoder, a decoder, a likelihood and a prior, and train it on an
objective::

    from genvae import VAE
    from genvae.nets import MLPEncoder, MLPDecoder
    from genvae.likelihoods import Bernoulli
    from genvae.priors import StandardNormal

    model = VAE(MLPEncoder((1, 28, 28), 20), MLPDecoder(20, (1, 28, 28)), Bernoulli(), StandardNormal(20))
    loss = model.elbo(x).loss                       # the ELBO on a batch x
    loss = IWAE(k=5)(model.terms(x, k=5)).loss     # or any objective on the model's terms
"""

from . import _builtin  # noqa: F401 - genvae's parts register themselves on import
from .io import load, save
from .kl import kl_divergence
from .models import CVAE, VAE
from .objectives import ELBO, IWAE, STL, DReG, FreeBits, Objective, ObjectiveValue
from .protocols import Decoder, Encoder, LatentVariableModel, Likelihood, Prior
from .terms import ELBOOutput, LatentLayer, Terms

__version__ = "0.1.0"

__all__ = [
    "CVAE",
    "ELBO",
    "IWAE",
    "STL",
    "VAE",
    "DReG",
    "Decoder",
    "ELBOOutput",
    "Encoder",
    "FreeBits",
    "LatentLayer",
    "LatentVariableModel",
    "Likelihood",
    "Objective",
    "ObjectiveValue",
    "Prior",
    "Terms",
    "kl_divergence",
    "load",
    "save",
]
