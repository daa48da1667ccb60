"""genvae: modular variational autoencoders for PyTorch.

Compose a model from an encoder, a decoder, a likelihood and a prior::

    from genvae import VAE
    from genvae.nets import MLPEncoder, MLPDecoder
    from genvae.likelihoods import Bernoulli
    from genvae.priors import StandardNormal

    model = VAE(MLPEncoder((1, 28, 28), 20), MLPDecoder(20, (1, 28, 28)), Bernoulli(), StandardNormal(20))
    loss = model.elbo(x).loss
"""

from .io import load, save
from .kl import kl_divergence
from .models import CVAE, ELBO, VAE
from .protocols import Decoder, Encoder, Likelihood, Prior

__version__ = "0.1.0"

__all__ = [
    "CVAE",
    "ELBO",
    "VAE",
    "Decoder",
    "Encoder",
    "Likelihood",
    "Prior",
    "kl_divergence",
    "load",
    "save",
]
