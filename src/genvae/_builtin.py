"""genvae's own part modules: importing them fills the registry through their decorators."""

from . import flows, hierarchy, likelihoods, models, nets, objectives, priors  # noqa: F401
from .data import sources  # noqa: F401
