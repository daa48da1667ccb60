"""Metrics for trained models: likelihood bounds, reconstruction quality, sample quality."""

from .likelihood import ELBOSummary, evaluate_elbo, evaluate_iw_nll, iw_nll

__all__ = ["ELBOSummary", "evaluate_elbo", "evaluate_iw_nll", "iw_nll"]
