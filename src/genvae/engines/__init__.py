"""Engines: the ways [`fit`][genvae.train.fit] runs its one training step.

    engine = choose_engine(model, device, steps)        compile, amp, cuda_graph resolved
    step = make_step(model, objective, optimizer, engine, step=count, running=running)
    step(Batch(x, y))                                   one optimizer step, device work only

| module | what it holds |
| --- | --- |
| [`eager`][genvae.engines.eager] | ``train_step``, the one step every engine wraps; ``Batch`` |
| [`compiled_loss`][genvae.engines.compiled_loss] | the loss through ``torch.compile`` |
| [`whole_step`][genvae.engines.whole_step] | loss, gradients and Adam's update as one CPU program |
| [`cuda_graph`][genvae.engines.cuda_graph] | the whole step replayed as one CUDA graph |
| [`choice`][genvae.engines.choice] | ``Engine`` and ``choose_engine``: the rules for ``"auto"`` |
| [`hardware`][genvae.engines.hardware] | bfloat16 matrix units of a CPU or a GPU |
| [`factory`][genvae.engines.factory] | ``make_step``: an engine becomes a step |
"""

from .choice import AUTO, COMPILE_MIN_STEPS, GRAPH_MIN_STEPS, Engine, choose_engine
from .eager import Batch, Step, objective_loss, train_step
from .factory import make_step
from .hardware import bf16_matrix_units, native_bf16

__all__ = [
    "AUTO",
    "COMPILE_MIN_STEPS",
    "GRAPH_MIN_STEPS",
    "Batch",
    "Engine",
    "Step",
    "bf16_matrix_units",
    "choose_engine",
    "make_step",
    "native_bf16",
    "objective_loss",
    "train_step",
]
