"""Mutation testing of the mathematical core: do the tests catch the bugs they are named for?

Each mutant is one small change to one module (an operator swapped, a comparison moved by one, a
constant changed, a reduction's dim dropped, ``rsample`` ↔ ``sample``, a ``detach`` removed,
``logsumexp`` → ``amax``, a sign flipped), made in a copy of the tree. The test files mapped to that
module then run against it; the mutant is killed when a test fails (or the run times out). A
mutant that survives is either a gap in the tests (a test in ``tests/test_core_mutants.py`` now
kills it) or equivalent to the original on every valid input (``EQUIVALENT`` below, with the
reason).

    python benchmarks/mutate.py                      every module; writes benchmarks/results/mutation.json
    python benchmarks/mutate.py --module kl.py       one module (the record is not written)
    python benchmarks/mutate.py --list               the mutants, without running them
    python benchmarks/mutate.py --sample 40 --all kl.py   every mutant of kl.py, 40 of each other module
    python benchmarks/mutate.py --verify             each KILLED_BY test passes, and fails on its mutant

The record is written again after every mutant, so a run that is stopped (SIGTERM, Ctrl-C) leaves
a record of the mutants that finished, marked ``"complete": false``. ``--recount`` re-sorts its
survivors once ``EQUIVALENT`` or ``KILLED_BY`` has grown; the totals as run stay in ``total_as_run``.

Mutants run one at a time in one process: the parent imports torch and pytest once, and each
mutant runs in a forked child that imports genvae afresh from the mutated copy. The source tree
is never touched.
"""

from __future__ import annotations

import argparse
import ast
import copy
import datetime
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "benchmarks" / "results" / "mutation.json"

#: A test that is slow (25 s) and checks memory, not values.
SLOW = "not test_a_large_k_runs_in_bounded_memory"


@dataclass(frozen=True)
class Target:
    """One module under test.

    Attributes:
        path: the module, relative to the repository root.
        tests: the test files that cover it (found with grep over tests/).
        scope: the functions and classes whose bodies are mutated (qualified names, ``Class`` or
            ``Class.method``); empty for the whole module.
        deselect: a pytest ``-k`` expression that drops slow tests.
    """

    path: str
    tests: tuple[str, ...]
    scope: tuple[str, ...] = ()
    deselect: str = SLOW


NEW_TESTS = "tests/test_core_mutants.py"

TARGETS = {
    "kl.py": Target("src/genvae/kl.py", (NEW_TESTS, "tests/test_kl.py")),
    "terms.py": Target("src/genvae/terms.py", (NEW_TESTS, "tests/test_kl.py", "tests/test_objectives.py")),
    "schedules.py": Target("src/genvae/schedules.py", (NEW_TESTS, "tests/test_objectives.py")),
    "objectives.py": Target("src/genvae/objectives.py", (NEW_TESTS, "tests/test_objectives.py")),
    "metrics/likelihood.py": Target(
        "src/genvae/metrics/likelihood.py",
        (
            NEW_TESTS,
            "tests/test_iw_eval.py",
            "tests/test_metrics.py::test_iw_nll_chunking_is_exact_and_bounded_by_elbo",
            "tests/test_hierarchy.py",
        ),
        scope=("IWSummary", "evaluate_elbo", "_even", "_iw_log_px", "iw_nll", "evaluate_iw_nll"),
    ),
    "flows.py": Target(
        "src/genvae/flows.py",
        (NEW_TESTS, "tests/test_flows.py"),
        scope=(
            "_squared_norm",
            "_push",
            "_made_masks",
            "IAF.__init__",
            "IAF.made",
            "_IAFTransform",
            "Planar.forward",
            "_PlanarTransform",
            "_HouseholderTransform",
            "FlowDistribution",
            "_moments",
        ),
    ),
    "hierarchy.py": Target(
        "src/genvae/hierarchy.py",
        (NEW_TESTS, "tests/test_hierarchy.py"),
        scope=(
            "_merge",
            "KLOnDraws",
            "_kl_on_draws",
            "MLPBlock.forward",
            "GaussianHead.forward",
            "LadderEncoder.features",
            "LadderEncoder.forward",
            "HierarchicalVAE._layers",
            "HierarchicalVAE.terms",
            "HierarchicalVAE._descend",
            "HierarchicalVAE.decode",
            "HierarchicalVAE.sample",
            "HierarchicalVAE.reconstruct",
        ),
    ),
}

#: Mutants written by hand, run whatever the sample: (module, id, the source text, its replacement).
NAMED = (
    (
        "kl.py",
        "named:_monte_carlo_kl: draws without the reparameterisation",
        "z = q.rsample((num_samples,)) if q.has_rsample else q.sample((num_samples,))",
        "z = q.sample((num_samples,))",
    ),
    (
        "objectives.py",
        "named:FreeBits: floor each example's KL instead of the batch mean of each dimension",
        "kl.flatten(0, 1).mean(0).clamp(min=self.lambda_).sum()",
        "kl.clamp(min=self.lambda_).flatten(0, 1).mean(0).sum()",
    ),
)

#: Survivors that no test can kill: the mutant computes what the original does on every valid
#: input. Keyed by module and mutant id (function, operator, change, occurrence), not by line.
EQUIVALENT: dict[tuple[str, str], str] = {
    (
        "kl.py",
        "_kl_independent_standard_normal:constant:1 -> 0#0",
    ): "the fast path for Independent(Normal, 1) is skipped and the generic rule (torch's Normal KL summed "
    "over the event dim) gives the same KL",
    (
        "hierarchy.py",
        "_merge:sign:drop USub#1",
    ): "h is (B, H) by its contract (LadderEncoder.features gives (B, F_l) per layer), so h.shape[1] is h.shape[-1]",
    (
        "hierarchy.py",
        "KLOnDraws.__init__:constant:False -> True#0",
    ): "arg_constraints is empty and no method checks a value (log_prob and the rest hand it to base), so "
    "validate_args=True has nothing to check",
    (
        "kl.py",
        "_kl_independent_standard_normal:compare:== -> !=#0",
    ): "an Independent(Normal, 1) q (the only Normal q whose event shape is p's (D,)) skips the fast path, and "
    "the generic rule (torch's Normal KL summed over the event dim) gives the same KL",
    (
        "kl.py",
        "StandardNormalDistribution.__init__:constant:False -> True#1",
    ): "torch's Independent has no arg_constraints and never checks a value (its log_prob hands it to the base "
    "Normal, whose validate_args=False stays), so the flag checks nothing",
    (
        "metrics/likelihood.py",
        "evaluate_elbo:constant:1 -> 0#0",
    ): "sums is None exactly when n == 0, so max(n, 0) is only reached with n >= 1, where it is n",
    (
        "metrics/likelihood.py",
        "_iw_log_px:constant:1 -> 0#0",
    ): "one example has no values only in an empty batch, where the original fails too (_even divides by "
    "zero), or under a zero-size data shape, which the nets refuse (shape_tuple wants positive sizes)",
    (
        "hierarchy.py",
        "_kl_on_draws:constant:False -> True#0",
    ): "torch's Independent has no arg_constraints and never checks a value (its log_prob hands it to "
    "KLOnDraws, which checks nothing), so the flag checks nothing",
}

#: Survivors that a test now kills, by the test's name (filled in after a run that found them).
KILLED_BY: dict[tuple[str, str], str] = {
    (
        "metrics/likelihood.py",
        "evaluate_elbo:binop:/ -> *#0",
    ): "tests/test_core_mutants.py::test_evaluate_elbo_reports_means_over_examples_whatever_the_batch_size",
    (
        "metrics/likelihood.py",
        "evaluate_iw_nll:constant:0 -> 1#3",
    ): "tests/test_core_mutants.py::test_the_iw_progress_bar_counts_the_examples_and_shows_the_running_mean",
    (
        "hierarchy.py",
        "KLOnDraws.sample:call:sample -> rsample#0",
    ): "tests/test_core_mutants.py::test_kl_on_draws_is_its_base_under_another_type",
    (
        "objectives.py",
        "FreeBits.__post_init__:compare:< -> <=#0",
    ): "tests/test_core_mutants.py::test_free_bits_refuses_a_floor_that_is_negative_or_not_finite",
    (
        "schedules.py",
        "as_schedule:boolop:and -> or#0",
    ): "tests/test_core_mutants.py::test_as_schedule_refuses_non_numbers_and_bad_numbers_naming_the_argument",
    (
        "schedules.py",
        "as_schedule:compare:< -> <=#0",
    ): "tests/test_core_mutants.py::test_as_schedule_refuses_non_numbers_and_bad_numbers_naming_the_argument",
    (
        "metrics/likelihood.py",
        "evaluate_elbo:constant:0.0 -> 1.0#0",
    ): "tests/test_core_mutants.py::test_evaluate_elbo_reports_means_over_examples_whatever_the_batch_size",
    (
        "metrics/likelihood.py",
        "_iw_log_px:compare:is not -> is#1",
    ): "tests/test_core_mutants.py::test_iw_nll_of_a_conditional_model_weighs_the_draws_given_the_labels",
    (
        "metrics/likelihood.py",
        "_iw_log_px:constant:1 -> 0#2",
    ): "tests/test_core_mutants.py::test_iw_passes_fit_the_limit_draws_first_and_count_each_draw_once",
    (
        "metrics/likelihood.py",
        "_iw_log_px:binop:// -> *#0",
    ): "tests/test_core_mutants.py::test_iw_passes_fit_the_limit_draws_first_and_count_each_draw_once",
    (
        "metrics/likelihood.py",
        "_iw_log_px:binop:- -> +#0",
    ): "tests/test_core_mutants.py::test_compiled_iw_passes_follow_one_checked_draw_and_split_the_rest_evenly",
    (
        "metrics/likelihood.py",
        "evaluate_iw_nll:constant:2 -> 3#0",
    ): "tests/test_core_mutants.py::test_the_warning_that_compilation_failed_points_at_the_callers_line",
    (
        "flows.py",
        "IAF.__init__:sign:drop USub#1",
    ): "tests/test_core_mutants.py::test_an_iaf_step_is_a_masked_mlp_with_linear_outputs_and_its_gate_bias",
    (
        "flows.py",
        "IAF.__init__:constant:False -> True#0",
    ): "tests/test_core_mutants.py::test_an_iaf_step_is_a_masked_mlp_with_linear_outputs_and_its_gate_bias",
    (
        "flows.py",
        "IAF.made:constant:1 -> 0#0",
    ): "tests/test_core_mutants.py::test_an_iaf_step_is_a_masked_mlp_with_linear_outputs_and_its_gate_bias",
    (
        "flows.py",
        "IAF.made:compare:< -> <=#0",
    ): "tests/test_core_mutants.py::test_an_iaf_step_is_a_masked_mlp_with_linear_outputs_and_its_gate_bias",
    (
        "hierarchy.py",
        "MLPBlock.forward:sign:drop USub#0",
    ): "tests/test_core_mutants.py::test_a_conditional_mlp_block_maps_each_draw_of_a_sample_dim_as_it_maps_one",
    (
        "hierarchy.py",
        "HierarchicalVAE._layers.draw:call:rsample -> sample#1",
    ): "tests/test_core_mutants.py::test_every_layer_of_a_hierarchy_is_a_reparameterised_draw",
    (
        "hierarchy.py",
        "HierarchicalVAE.sample:constant:True -> False#0",
    ): "tests/test_core_mutants.py::test_a_conditional_hierarchy_refuses_labels_out_of_range_when_sampling",
    (
        "kl.py",
        "StandardNormalDistribution.__init__:constant:False -> True#0",
    ): "tests/test_core_mutants.py::test_a_nan_draw_has_a_nan_standard_normal_density_not_a_validation_error",
    (
        "kl.py",
        "_monte_carlo_kl:call:sample -> rsample#0",
    ): "tests/test_core_mutants.py::test_a_posterior_without_rsample_gets_a_monte_carlo_kl_from_plain_draws",
    (
        "kl.py",
        "kl_on_draws:binop:- -> +#1",
    ): "tests/test_core_mutants.py::test_kl_per_dim_is_the_kl_or_log_ratio_of_each_factor_and_sums_to_kl_on_draws",
    (
        "kl.py",
        "_factors:boolop:and -> or#0",
    ): "tests/test_core_mutants.py::test_kl_per_dim_refuses_a_posterior_or_a_prior_that_does_not_factorise",
    (
        "kl.py",
        "kl_per_dim:boolop:or -> and#0",
    ): "tests/test_core_mutants.py::test_kl_per_dim_refuses_a_posterior_or_a_prior_that_does_not_factorise",
    (
        "kl.py",
        "kl_per_dim:binop:- -> +#0",
    ): "tests/test_core_mutants.py::test_kl_per_dim_is_the_kl_or_log_ratio_of_each_factor_and_sums_to_kl_on_draws",
    (
        "objectives.py",
        "IWAE.__call__:constant:1.0 -> 2.0#0",
    ): "tests/test_core_mutants.py::test_iwae_with_beta_raises_the_prior_to_posterior_ratio_to_beta",
    (
        "metrics/likelihood.py",
        "evaluate_iw_nll:constant:1 -> 0#1",
    ): "tests/test_core_mutants.py::test_evaluate_elbo_reports_means_over_examples_whatever_the_batch_size",
    (
        "metrics/likelihood.py",
        "evaluate_iw_nll:constant:0.0 -> 1.0#0",
    ): "tests/test_core_mutants.py::test_the_iw_progress_bar_counts_the_examples_and_shows_the_running_mean",
    (
        "metrics/likelihood.py",
        "evaluate_iw_nll:not:drop Not#0",
    ): "tests/test_core_mutants.py::test_the_iw_progress_bar_counts_the_examples_and_shows_the_running_mean",
    (
        "metrics/likelihood.py",
        "evaluate_iw_nll:constant:False -> True#0",
    ): "tests/test_core_mutants.py::test_the_iw_progress_bar_counts_the_examples_and_shows_the_running_mean",
    (
        "metrics/likelihood.py",
        "evaluate_iw_nll:binop:+= -> -=#0",
    ): "tests/test_core_mutants.py::test_the_iw_progress_bar_counts_the_examples_and_shows_the_running_mean",
    (
        "metrics/likelihood.py",
        "evaluate_iw_nll:constant:1 -> 0#0",
    ): "tests/test_core_mutants.py::test_the_iw_progress_bar_counts_the_examples_and_shows_the_running_mean",
}


# --------------------------------------------------------------------------- mutation operators


BINOP_SWAPS = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Mult,
    ast.Mod: ast.FloorDiv,
    ast.Pow: ast.Mult,
}
COMPARE_SWAPS = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
#: Calls swapped for a sibling with the same signature.
CALL_SWAPS = {
    "rsample": "sample",
    "sample": "rsample",
    "logsumexp": "amax",
    "logaddexp": "maximum",
    "min": "max",
    "max": "min",
    "clamp_min": "clamp_max",
    "exp": "expm1",
    "log": "log1p",
    "log1p": "log",
    "logsigmoid": "sigmoid",
    "sigmoid": "logsigmoid",
    "softplus": "relu",
    "tanh": "sigmoid",
}
#: Methods whose dim argument is dropped (a reduction over everything instead of one dim).
REDUCTIONS = {"sum", "mean", "logsumexp", "std"}
MODULES = {"torch", "F", "math"}
#: Calls replaced by their receiver: ``x.detach()`` → ``x``, ``t.clamp(0, 1)`` → ``t``.
IDENTITY_METHODS = {"detach", "clamp", "clamp_min"}


@dataclass
class Mutant:
    """One change: where, which operator, what it does; ``apply`` edits a fresh copy of the tree."""

    module: str
    id: str
    line: int
    operator: str
    change: str
    index: int = field(repr=False, default=0)
    variant: int = field(repr=False, default=0)
    old: str | None = field(repr=False, default=None)
    new: str | None = field(repr=False, default=None)


def _name(node: ast.AST) -> str:
    return type(node).__name__


def _symbol(op: ast.AST) -> str:
    symbols = {
        ast.Add: "+",
        ast.Sub: "-",
        ast.Mult: "*",
        ast.Div: "/",
        ast.FloorDiv: "//",
        ast.Mod: "%",
        ast.Pow: "**",
        ast.Lt: "<",
        ast.LtE: "<=",
        ast.Gt: ">",
        ast.GtE: ">=",
        ast.Eq: "==",
        ast.NotEq: "!=",
        ast.Is: "is",
        ast.IsNot: "is not",
        ast.And: "and",
        ast.Or: "or",
    }
    return symbols.get(type(op), _name(op))


def _number_mutant(value: object) -> object | None:
    """0 ↔ 1, any other int n → n + 1; a float x → 2x (0.0 → 1.0); bools and others: none."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return 1 if value == 0 else 0 if value == 1 else value + 1
    if isinstance(value, float):
        return 1.0 if value == 0.0 else 2 * value
    return None


def _call_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return None


def _module_call(call: ast.Call) -> int:
    """1 for ``torch.f(x, …)`` (a function of a module, its first argument the tensor), else 0."""
    func = call.func
    return int(isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in MODULES)


def _sites(node: ast.AST) -> Iterator[tuple[str, str, int]]:
    """The mutations of one node: (operator, change, variant)."""
    if isinstance(node, ast.BinOp) and type(node.op) in BINOP_SWAPS:
        yield "binop", f"{_symbol(node.op)} -> {_symbol(BINOP_SWAPS[type(node.op)]())}", 0
    elif isinstance(node, ast.AugAssign) and type(node.op) in BINOP_SWAPS:
        yield "binop", f"{_symbol(node.op)}= -> {_symbol(BINOP_SWAPS[type(node.op)]())}=", 0
    elif isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in COMPARE_SWAPS:
                yield "compare", f"{_symbol(op)} -> {_symbol(COMPARE_SWAPS[type(op)]())}", i
    elif isinstance(node, ast.BoolOp):
        other = "or" if isinstance(node.op, ast.And) else "and"
        yield "boolop", f"{_symbol(node.op)} -> {other}", 0
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Not)):
        yield "sign" if isinstance(node.op, ast.USub) else "not", f"drop {_name(node.op)}", 0
    elif isinstance(node, ast.Constant) and _number_mutant(node.value) is not None:
        yield "constant", f"{node.value!r} -> {_number_mutant(node.value)!r}", 0
    elif isinstance(node, ast.Call):
        name = _call_name(node)
        if name in CALL_SWAPS:
            yield "call", f"{name} -> {CALL_SWAPS[name]}", 0
        if name in REDUCTIONS and isinstance(node.func, ast.Attribute) and len(node.args) > _module_call(node):
            yield "reduction", f"{name}(dim) -> {name}()", 1
        if name in IDENTITY_METHODS and isinstance(node.func, ast.Attribute) and not _module_call(node):
            yield "identity", f"x.{name}(...) -> x", 2


def _mutate(node: ast.AST, variant: int) -> ast.AST:
    """A changed copy of ``node`` for the mutation ``variant`` that `_sites` gave."""
    node = copy.deepcopy(node)
    if isinstance(node, (ast.BinOp, ast.AugAssign)):
        node.op = BINOP_SWAPS[type(node.op)]()
        return node
    if isinstance(node, ast.Compare):
        node.ops[variant] = COMPARE_SWAPS[type(node.ops[variant])]()
        return node
    if isinstance(node, ast.BoolOp):
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        return node
    if isinstance(node, ast.UnaryOp):
        return node.operand
    if isinstance(node, ast.Constant):
        node.value = _number_mutant(node.value)
        return node
    assert isinstance(node, ast.Call)
    if variant == 0:  # torch.amax(x, dim) and x.amax(dim) take logsumexp's arguments, and so on
        if isinstance(node.func, ast.Attribute):
            node.func.attr = CALL_SWAPS[node.func.attr]
        else:
            node.func.id = CALL_SWAPS[node.func.id]  # type: ignore[union-attr]
        return node
    if variant == 1:
        node.args = node.args[: _module_call(node)]
        node.keywords = [k for k in node.keywords if k.arg not in ("dim", "keepdim")]
        return node
    assert isinstance(node.func, ast.Attribute)
    return node.func.value


def _skipped(node: ast.AST) -> bool:
    """Subtrees not mutated: messages (f-strings), docstrings, raise and assert statements, imports."""
    docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    return docstring or isinstance(node, (ast.JoinedStr, ast.Raise, ast.Assert, ast.Import, ast.ImportFrom))


def _walk(node: ast.AST, where: str, scope: tuple[str, ...], inside: bool) -> Iterator[tuple[ast.AST, str]]:
    """The nodes to mutate under ``node``, in source order, each with the qualified name of the
    function or class it is in. Annotations, decorators, argument defaults and class-level field
    defaults are left alone: they are the interface, not the maths."""
    if _skipped(node):
        return
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        name = f"{where}.{node.name}" if where else node.name
        now = inside or not scope or name in scope
        for stmt in node.body:
            if isinstance(node, ast.ClassDef) and isinstance(stmt, ast.AnnAssign):
                continue
            yield from _walk(stmt, name, scope, now)
        return
    if isinstance(node, ast.AnnAssign):
        if node.value is not None:
            yield from _walk(node.value, where, scope, inside)
        return
    if inside and not isinstance(node, ast.Module):
        yield node, where
    for child in ast.iter_child_nodes(node):
        yield from _walk(child, where, scope, inside)


def mutants(module: str, target: Target) -> list[Mutant]:
    """Every mutant of ``module`` in the target's scope, in source order, each with a stable id."""
    tree = ast.parse((ROOT / target.path).read_text())
    out: list[Mutant] = []
    seen: dict[str, int] = {}
    for index, (node, where) in enumerate(_walk(tree, "", target.scope, not target.scope)):
        for operator, change, variant in _sites(node):
            key = f"{where}:{operator}:{change}"
            n = seen.get(key, 0)
            seen[key] = n + 1
            out.append(Mutant(module, f"{key}#{n}", node.lineno, operator, change, index, variant))
    source = (ROOT / target.path).read_text()
    for named_module, name, old, new in NAMED:
        if named_module == module:
            if source.count(old) != 1:
                raise SystemExit(f"{module}: the named mutant {name!r} no longer matches the source once")
            line = source[: source.index(old)].count("\n") + 1
            out.append(Mutant(module, name, line, "named", f"{old} -> {new}", -1, 0, old, new))
    return out


def apply(mutant: Mutant, target: Target, tree_root: Path) -> None:
    """Write the mutated module into the copy of the tree at ``tree_root``."""
    source = (ROOT / target.path).read_text()
    if mutant.old is not None and mutant.new is not None:
        (tree_root / target.path).write_text(source.replace(mutant.old, mutant.new))
        return
    tree = ast.parse(source)
    nodes = [node for node, _ in _walk(tree, "", target.scope, not target.scope)]
    victim = nodes[mutant.index]
    replacement = _mutate(victim, mutant.variant)

    class Swap(ast.NodeTransformer):
        def generic_visit(self, node: ast.AST) -> ast.AST:
            if node is victim:
                return replacement
            return super().generic_visit(node)

    new = ast.fix_missing_locations(Swap().visit(tree))
    (tree_root / target.path).write_text(ast.unparse(new))


# --------------------------------------------------------------------------- running


def _copy_tree(dest: Path, source: Path = ROOT) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(source / "src", dest / "src", ignore=ignore)
    shutil.copytree(source / "tests", dest / "tests", ignore=ignore)
    shutil.copy(source / "pyproject.toml", dest / "pyproject.toml")


def _pytest_args(target: Target, tree_root: Path, first_failure: bool = True) -> list[str]:
    tests = [t for t in target.tests if (tree_root / t.partition("::")[0]).exists()]
    args = [*tests, "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "--hypothesis-seed=0"]
    args += ["--hypothesis-profile=mutants"]
    args += ["-m", "not slow and not mnist and not cuda", "-k", target.deselect]
    return [*args, "-x"] if first_failure else args


def _run_forked(tree_root: Path, args: list[str], timeout: float, log: Path) -> str:
    """Run pytest on ``args`` in a forked child inside ``tree_root``: 'passed', 'failed', 'error' or 'timeout'."""
    pid = os.fork()
    if pid == 0:  # the child: genvae is imported here for the first time, from the copy
        code = 3
        try:
            os.setpgid(0, 0)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.chdir(tree_root)
            sys.path.insert(0, str(tree_root / "src"))
            import pytest

            code = pytest.main(args)
        finally:
            os._exit(int(code))
    deadline, done = time.monotonic() + timeout, 0
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                return "timeout"
            time.sleep(0.05)
    finally:
        if not done:  # timed out, or this process was stopped: end the child's process group
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return {0: "passed", 1: "failed"}.get(code, "error")


def _baseline(tree_root: Path, target: Target, log: Path) -> float:
    """Seconds the target's tests take on the unmutated copy; they must pass."""
    start = time.monotonic()
    outcome = _run_forked(tree_root, _pytest_args(target, tree_root), 900, log)
    if outcome != "passed":
        raise SystemExit(f"the tests of {target.path} fail without a mutant ({outcome}); see {log}")
    return time.monotonic() - start


def run_module(
    module: str,
    target: Target,
    work: Path,
    *,
    sample: int | None,
    seed: int,
    snapshot: Path = ROOT,
    progress: Callable[[dict], None] | None = None,
) -> dict:
    """Run every mutant of one module (or a seeded sample of ``sample``); returns its record.

    ``snapshot`` is the tree the module's copy is made from (the tree as it was when the run began,
    so that tests written during a long run do not count in it); ``progress`` is given the record so
    far after every mutant."""
    import random

    found = mutants(module, target)
    chosen = found
    if sample is not None and len(found) > sample:
        generated = [m for m in found if m.operator != "named"]
        drawn = random.Random(f"{seed}:{module}").sample(generated, sample)
        chosen = [m for m in found if m in drawn or m.operator == "named"]
    tree_root = work / module.replace("/", "_")
    _copy_tree(tree_root, snapshot)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    original = (tree_root / target.path).read_text()
    slug = module.replace("/", "_")
    start = time.monotonic()
    baseline = _baseline(tree_root, target, logs / f"{slug}.baseline.log")
    timeout = max(30.0, 3 * baseline)
    counts = {"killed": 0, "timeout": 0, "error": 0, "survived": 0}
    survivors: list[dict] = []
    equivalent: list[dict] = []
    killed_by_new: list[dict] = []
    print(f"{module}: {len(chosen)} of {len(found)} mutants; baseline {baseline:.1f} s", flush=True)

    def result(done: int) -> dict:
        killed = counts["killed"] + counts["timeout"] + counts["error"]
        non_equivalent = done - len(equivalent)
        return {
            "mutants": done,
            "mutants_chosen": len(chosen),
            "mutants_in_scope": len(found),
            "complete": done == len(chosen),
            "killed": killed,
            "killed_by_timeout": counts["timeout"],
            "killed_by_error": counts["error"],
            "equivalent": len(equivalent),
            "survived": len(survivors),
            "kill_rate_non_equivalent": round(killed / non_equivalent, 4) if non_equivalent else None,
            "tests": list(target.tests),
            "scope": list(target.scope) or "whole module",
            "baseline_s": round(baseline, 1),
            "wall_s": round(time.monotonic() - start, 1),
            "survivors": survivors,
            "equivalent_mutants": equivalent,
            "killed_by_new_tests": killed_by_new,
        }

    for n, mutant in enumerate(chosen, 1):
        key = (module, mutant.id)
        apply(mutant, target, tree_root)
        try:
            outcome = _run_forked(tree_root, _pytest_args(target, tree_root), timeout, logs / f"{slug}.mutant.log")
        finally:
            (tree_root / target.path).write_text(original)
        outcome = {"failed": "killed", "passed": "survived"}[outcome] if outcome in ("failed", "passed") else outcome
        counts[outcome] += 1
        where = f"{target.path}:{mutant.line}"
        entry = {"id": mutant.id, "where": where, "operator": mutant.operator, "change": mutant.change}
        if outcome == "survived":
            if key in EQUIVALENT:
                equivalent.append({**entry, "reason": EQUIVALENT[key]})
            else:
                survivors.append(entry)
        elif key in KILLED_BY:
            killed_by_new.append({**entry, "killed_by": KILLED_BY[key]})
        print(f"  [{n}/{len(chosen)}] {outcome:11} {where} {mutant.id}", flush=True)
        if progress is not None:
            progress(result(n))
    return result(len(chosen))


def _total(results: dict) -> dict:
    total = {k: sum(r[k] for r in results.values()) for k in ("mutants", "killed", "equivalent", "survived")}
    non_equivalent = total["mutants"] - total["equivalent"]
    return {**total, "kill_rate_non_equivalent": round(total["killed"] / non_equivalent, 4) if non_equivalent else None}


def verify(modules: list[str]) -> list[str]:
    """Run each ``KILLED_BY`` test of ``modules`` on an unmutated copy of the tree (it must pass) and
    against its mutant alone (it must fail); returns what did not hold, one line each."""
    problems = []
    with tempfile.TemporaryDirectory(prefix="genvae-verify-") as tmp:
        for module in modules:
            target = TARGETS[module]
            checks = {mutant_id: test for (m, mutant_id), test in KILLED_BY.items() if m == module}
            if not checks:
                continue
            tree_root = Path(tmp) / module.replace("/", "_")
            _copy_tree(tree_root)
            base = ["-q", "-p", "no:cacheprovider", "-p", "no:xdist", "--hypothesis-seed=0"]
            base += ["--hypothesis-profile=mutants"]
            log = Path(tmp) / "verify.log"
            tests = sorted(set(checks.values()))
            if _run_forked(tree_root, [*tests, *base], 600, log) != "passed":
                problems.append(f"{module}: the killing tests fail on the unmutated tree: {log.read_text()[-2000:]}")
                continue
            found = {m.id: m for m in mutants(module, target)}
            original = (tree_root / target.path).read_text()
            for mutant_id, test in checks.items():
                if mutant_id not in found:
                    problems.append(f"{module}: {mutant_id} is no longer a mutant of the module")
                    continue
                apply(found[mutant_id], target, tree_root)
                try:
                    outcome = _run_forked(tree_root, [test, *base, "-x"], 300, log)
                finally:
                    (tree_root / target.path).write_text(original)
                print(f"{module} {mutant_id}: {test.rpartition('::')[2]} {outcome}", flush=True)
                if outcome == "passed":
                    problems.append(f"{module}: {test} passes against {mutant_id}")
    return problems


def recount(record: dict) -> dict:
    """The record with its survivors sorted again by ``EQUIVALENT`` (after a reason was written down
    for one) and ``KILLED_BY`` (after a test was written for one), and its totals recomputed, without
    running the mutants again. A mutant once listed as equivalent that no longer is (a test was found
    that tells it apart) is sorted again with the survivors.

    ``total_as_run`` keeps what the run itself killed; ``total_before_new_tests`` is that over the
    mutants now known not to be equivalent (the kill rate before the tests written for the survivors)."""
    record.setdefault("total_as_run", dict(record["total"]))
    for module, result in record["modules"].items():
        result.setdefault("killed_as_run", result["killed"])
        equivalent = [e for e in result["equivalent_mutants"] if (module, e["id"]) in EQUIVALENT]
        withdrawn = [e for e in result["equivalent_mutants"] if (module, e["id"]) not in EQUIVALENT]
        result["equivalent_mutants"] = equivalent
        for entry in result["killed_by_new_tests"]:  # the test's name as it is now
            entry["killed_by"] = KILLED_BY.get((module, entry["id"]), entry["killed_by"])
        still = []
        for entry in result["survivors"] + [{k: v for k, v in e.items() if k != "reason"} for e in withdrawn]:
            key = (module, entry["id"])
            if key in EQUIVALENT:
                result["equivalent_mutants"].append({**entry, "reason": EQUIVALENT[key]})
            elif key in KILLED_BY:  # checked by running the test against the mutant on its own
                result["killed_by_new_tests"].append({**entry, "killed_by": KILLED_BY[key]})
                result["killed"] += 1
            else:
                still.append(entry)
        result["survivors"] = still
        result["equivalent"], result["survived"] = len(result["equivalent_mutants"]), len(still)
        non_equivalent = result["mutants"] - result["equivalent"]
        result["kill_rate_non_equivalent"] = round(result["killed"] / non_equivalent, 4) if non_equivalent else None
    record["total"] = _total(record["modules"])
    before = record["total_as_run"]["killed"]
    non_equivalent = record["total"]["mutants"] - record["total"]["equivalent"]
    record["total_before_new_tests"] = {
        "killed": before,
        "non_equivalent": non_equivalent,
        "kill_rate_non_equivalent": round(before / non_equivalent, 4) if non_equivalent else None,
    }
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", action="append", choices=sorted(TARGETS), help="only these modules")
    parser.add_argument("--sample", type=int, default=None, help="at most this many mutants per module (seeded)")
    parser.add_argument(
        "--all",
        action="append",
        default=[],
        choices=sorted(TARGETS),
        help="every mutant of this module, whatever --sample",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--verify", action="store_true", help="check that each KILLED_BY test kills its mutant")
    parser.add_argument("--recount", type=Path, default=None, help="re-sort the survivors of this record and exit")
    parser.add_argument("--out", type=Path, default=None, help=f"the record (default {RECORD.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    modules = args.module or list(TARGETS)
    if args.recount is not None:
        record = recount(json.loads(args.recount.read_text()))
        args.recount.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
        print(json.dumps(record["total"]))
        return
    if args.list:
        for module in modules:
            for m in mutants(module, TARGETS[module]):
                print(f"{TARGETS[module].path}:{m.line}\t{m.operator}\t{m.change}\t{m.id}")
        return
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # clean up the copy
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    sys.dont_write_bytecode = True
    import pytest  # noqa: F401  (imported once here; each forked child reuses it)
    import torch
    from hypothesis import Phase, settings

    # A failing example is enough to kill a mutant: no shrinking, no deadline on a loaded machine.
    settings.register_profile("mutants", phases=(Phase.explicit, Phase.reuse, Phase.generate), deadline=None)

    torch.set_num_threads(1)
    if "genvae" in sys.modules:
        raise SystemExit("genvae must not be imported before the mutants run")
    if args.verify:
        problems = verify(modules)
        print("\n".join(problems) or f"every KILLED_BY test of {', '.join(modules)} kills its mutant")
        raise SystemExit(1 if problems else 0)
    start = time.monotonic()
    results: dict[str, dict] = {}
    out = args.out or (RECORD if args.module is None else None)
    if args.sample is None:
        sampled = "no: every mutant in scope"
    else:
        every = f"every mutant of {', '.join(args.all)}; " if args.all else ""
        sampled = f"{every}{args.sample} per other module, seed {args.seed} (named mutants always run)"
    record = {
        "command": shlex.join(["python", "benchmarks/mutate.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.date.today().isoformat(),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
        "torch": torch.__version__,
        "sampled": sampled,
        "complete": False,
        "wall_s": 0.0,
        "total": {},
        "modules": results,
    }

    def write(module: str | None = None, result: dict | None = None) -> None:
        if module is not None and result is not None:
            results[module] = result
        record["wall_s"] = round(time.monotonic() - start, 1)
        record["total"] = _total(results) if results else {}
        if out is not None:  # written whole, then renamed: a reader never sees half a record
            partial = out.with_suffix(".partial")
            partial.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
            partial.replace(out)

    with tempfile.TemporaryDirectory(prefix="genvae-mutants-") as tmp:
        work = Path(tmp)
        snapshot = work / "snapshot"  # the tree as it is now: later edits to it do not reach the run
        _copy_tree(snapshot)
        for module in modules:
            sample = None if module in args.all else args.sample
            results[module] = run_module(
                module,
                TARGETS[module],
                work,
                sample=sample,
                seed=args.seed,
                snapshot=snapshot,
                progress=lambda result, module=module: write(module, result),
            )
    record["complete"] = True
    write()
    print(f"total: {json.dumps(record['total'])}; {record['wall_s']} s")
    if out is not None:
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
