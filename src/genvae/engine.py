"""The former home of [`genvae.engines`][genvae.engines]: ``choose_engine`` and its thresholds,
re-exported while the command line and the pages still import them from here."""

from .engines.choice import AUTO, COMPILE_MIN_STEPS, GRAPH_MIN_STEPS, Engine, choose_engine

__all__ = ["AUTO", "COMPILE_MIN_STEPS", "GRAPH_MIN_STEPS", "Engine", "choose_engine"]
