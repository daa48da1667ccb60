"""The ``genvae`` command: ``train``, ``eval``, ``sample`` and ``info``.

Bad input gets one line on stderr (``genvae: error: …``) and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn

import torch

from . import __version__, registry, runfolder
from ._files import write_json
from .config import CHOICES, LEGACY, SETTING_CHOICES, RunConfig, build_model, build_objective, read_config
from .data.sources import datasets
from .engines import COMPILE_MIN_STEPS
from .io import load
from .plugins import PluginError, import_plugins, installed_plugins, not_imported

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """No abbreviated flags: a plugin's options would change what ``--num`` means, and ``--plugin``
    is read before parsing, by its full name."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})

    def error(self, message: str) -> NoReturn:  # one line, no usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


class _UserError(Exception):
    """A problem with the user's input, printed as one line."""


def _number(kind: type, *, zero: bool = False) -> Any:
    """An argparse type: a finite ``kind`` > 0 (≥ 0 with ``zero``)."""
    expected = f"a finite {kind.__name__} >= 0" if zero else f"a positive {kind.__name__}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ((value >= 0 if zero else value > 0) and value < float("inf")):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _positive(kind: type) -> Any:
    return _number(kind)


#: The settings that choose a part, with their flags' help.
_CHOICE_HELP = {
    "model": "the model",
    "arch": "the encoder and decoder",
    "likelihood": "p(x | z)",
    "prior": "p(z) (default standard; cvae: conditional)",
    "objective": "the training objective",
    "posterior_flow": "flow steps after the Gaussian posterior",
}


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="genvae", description="Train, evaluate and sample variational autoencoders.")
    p.add_argument("--version", action="version", version=f"genvae {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = _train_parser(sub)
    e, s, i = _run_parsers(sub)
    for sub_parser in (t, e, s, i):
        sub_parser.add_argument(
            "--plugin",
            action="append",
            default=[],
            metavar="MODULE",
            help="import this module of your own parts first (repeatable)",
        )
    _show_defaults(t, {f.name: f.default for f in fields(RunConfig)})
    for sub_parser in (e, s):
        _show_defaults(sub_parser, {a.dest: a.default for a in sub_parser._actions})
    return p


def _train_parser(sub: Any) -> argparse.ArgumentParser:
    """``genvae train``: the run's settings, its parts' options and the speed flags."""
    t = sub.add_parser("train", help="train a model and write a run folder")
    t.add_argument("--config", type=Path, help="TOML file, or a run's config.json, of settings (flags override it)")
    t.add_argument(
        "--data",
        "--dataset",
        dest="dataset",
        metavar="NAME|PATH",
        help=f"a data set ({', '.join(datasets())}) or a .npz/.npy/.pt file or image folder (default mnist)",
    )
    for setting, kind in CHOICES.items():
        extra = ("none",) if setting == "posterior_flow" else ()
        t.add_argument(
            f"--{setting.replace('_', '-')}", choices=(*extra, *registry.names(kind)), help=_CHOICE_HELP[setting]
        )
    t.add_argument("--binarize", choices=SETTING_CHOICES["binarize"], help="binarize the pixels")
    t.add_argument("--latent-dim", type=_positive(int), help="latent size (of every layer of an hvae)")
    t.add_argument("--flow-length", type=_positive(int), help="steps of --posterior-flow")
    _part_options(t)
    t.add_argument("--epochs", type=_positive(int))
    t.add_argument("--batch-size", type=_positive(int))
    t.add_argument("--lr", type=_positive(float))
    t.add_argument("--beta-schedule", choices=SETTING_CHOICES["beta_schedule"], help="how β rises from 0")
    t.add_argument(
        "--warmup-epochs", type=_number(int, zero=True), help="epochs for β to rise from 0 (linear, cyclical)"
    )
    t.add_argument(
        "--kl-warmup-epochs", type=_number(int, zero=True), help="same as --beta-schedule linear --warmup-epochs N"
    )
    t.add_argument("--grad-clip", type=_positive(float), help="clip the gradients' global norm to this value")
    t.add_argument("--seed", type=int)
    t.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    t.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        help="torch.compile the training step (on a CPU the whole step, Adam update included); default: "
        f"when the model allows it and the run plans at least {COMPILE_MIN_STEPS:,} steps",
    )
    t.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        help="bfloat16 autocast; default: with compile, where the device has bfloat16 matrix units",
    )
    t.add_argument(
        "--cuda-graph",
        action=argparse.BooleanOptionalAction,
        help="replay the whole training step as one CUDA graph; default: on a CUDA device",
    )
    t.add_argument("--train-subset", type=_positive(int), help="train on the first N images")
    t.add_argument("--test-subset", type=_positive(int), help="evaluate on the first N test images")
    t.add_argument("--out", help="run folder (default runs/<model>-<arch>-z<latent>-<time>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    return t


def _run_parsers(sub: Any) -> tuple[argparse.ArgumentParser, ...]:
    """``genvae eval``, ``sample`` and ``info``, which read a run folder."""
    e = sub.add_parser("eval", help="evaluate a run on the test set")
    e.add_argument("run", type=Path)
    e.add_argument("--data", help="test data: a data set name or a path (default: the run's)")
    e.add_argument(
        "--fid", action="store_true", help="also FID and conditional accuracy (a classifier is trained on first use)"
    )
    e.add_argument(
        "--iw-samples", type=_positive(int), default=1000, help="importance samples K for the NLL (default 1000)"
    )
    e.add_argument("--binarize", choices=SETTING_CHOICES["binarize"], help="default: as trained")
    e.add_argument("--batch-size", type=_positive(int), default=100)
    e.add_argument("--test-subset", type=_positive(int))
    e.add_argument("--device", default="auto")
    e.add_argument("--seed", type=int, default=0)

    s = sub.add_parser("sample", help="draw images from a trained model")
    s.add_argument("run", type=Path)
    s.add_argument("--n", type=_positive(int), default=64)
    s.add_argument("--label", type=int, help="digit to draw (conditional models)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("-o", "--output", type=Path, required=True, help="PNG file to write")
    s.add_argument("--device", default="auto")

    i = sub.add_parser("info", help="describe a run folder")
    i.add_argument("run", type=Path)
    return e, s, i


#: The kinds whose parts' options are flags, with the setting that chooses the part.
_OPTION_KINDS = {"model": "model", "encoder": "arch", "decoder": "arch", "likelihood": "likelihood",
                 "prior": "prior", "objective": "objective", "flow": "posterior-flow"}  # fmt: skip


def _part_options(t: argparse.ArgumentParser) -> None:
    """A flag ``--KIND-OPTION`` for each option of the registered parts of each kind, grouped by
    kind in ``--help``, and ``--OPTION`` for the chosen part that has it (see ``config.place``);
    values stay text until the chosen part's option reads them."""
    taken = {o for a in t._actions for o in a.option_strings}
    short: dict[str, tuple[list[str], registry.Option]] = {}
    for kind, setting in _OPTION_KINDS.items():
        by_name: dict[str, list[tuple[registry.Entry, registry.Option]]] = {}
        for part in registry.entries(kind):
            for option in part.options:
                if option.textual:
                    by_name.setdefault(option.name, []).append((part, option))
        group = t.add_argument_group(f"{kind} options", f"options of the part that --{setting} chooses")
        for name, users in by_name.items():
            flag = f"--{kind}-{_flag(name)}"
            helps: dict[str, list[str]] = {}  # the same help for several parts is given once
            for part, option in users:
                helps.setdefault(_option_help(option), []).append(part.name)
            help_text = "; ".join(f"{', '.join(names)}: {text}" for text, names in helps.items())
            _add_option(group, flag, f"{kind}.{name}", users[0][1], help_text)
            owners, _ = short.setdefault(name, ([], users[0][1]))
            owners.append(f"{kind} {', '.join(part.name for part, _ in users)}")
    group = t.add_argument_group("part options by name", "set the option of whichever chosen part has it")
    for name, (owners, option) in short.items():
        if f"--{_flag(name)}" not in taken:
            _add_option(group, f"--{_flag(name)}", name, option, "; ".join(owners))
    for key, (kind, name) in LEGACY.items():
        group.add_argument(f"--{_flag(key)}", dest=key, metavar="VALUE", help=f"same as --{kind}-{_flag(name)}")


def parts_table() -> str:
    """The registered parts of the kinds the command line chooses, with their options and needs, as
    a Markdown table (the one in docs/cli.md, which a test keeps equal to this)."""
    rows = ["| kind | name | options (default) | needs |", "| --- | --- | --- | --- |"]
    for kind in _OPTION_KINDS:
        for part in registry.entries(kind):
            options = ", ".join(
                f"`{_flag(o.name)}`" + ("" if o.required else f" ({_shown(o.default)})")
                for o in part.options
                if o.textual
            )
            needs = ", ".join(f"{key} {' or '.join(map(str, values))}" for key, values in part.requires.items())
            rows.append(f"| {kind} | `{part.name}` | {options or '—'} | {needs or '—'} |")
    return "\n".join(rows) + "\n"


def _flag(name: str) -> str:
    return name.rstrip("_").replace("_", "-")


_CROSS_REFERENCE = re.compile(r"\[`([^`]*)`\]\[[^\]]*\]")


def _option_help(option: registry.Option) -> str:
    """An option's docstring line as plain text (no cross-references), its values and its default."""
    text = _CROSS_REFERENCE.sub(r"\1", option.help).replace("``", "").rstrip(".") or option.describe()
    choices = f" {{{', '.join(map(str, option.choices))}}}" if option.choices else ""
    default = "" if option.required else f" (default {_shown(option.default)})"
    return f"{text}{choices}{default}"


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _add_option(group: Any, flag: str, dest: str, option: registry.Option | None, help_text: str) -> None:
    if option is not None and option.annotation is bool:
        group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, help=help_text.replace("%", "%%"))
    else:
        group.add_argument(flag, dest=dest, metavar="VALUE", help=help_text.replace("%", "%%"))


def _show_defaults(parser: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    """Append "(default X)" to the help of each option with a value default that its help does not give."""
    for action in parser._actions:
        default = defaults.get(action.dest)
        if not action.option_strings or default is None or isinstance(default, bool) or action.help == "==SUPPRESS==":
            continue
        if "default" not in (action.help or ""):
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            action.help = f"{action.help} (default {shown})" if action.help else f"default {shown}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _read_run_config(run: Path) -> RunConfig:
    """The settings a run folder was trained with (its ``config.json``)."""
    from .records import read_json

    cfg_path = run / "config.json"
    if not os.path.lexists(cfg_path):
        raise _UserError(f"expected {str(cfg_path)!r} in the run folder; is {str(run)!r} a genvae run?")
    try:
        settings = read_json(run, "config.json")
        if not isinstance(settings, dict):
            raise TypeError(f"expected a JSON object, got {type(settings).__name__}")
        _need_plugins(settings.get("plugins") or [], run)
        return RunConfig.from_settings(settings, strict=False)  # an earlier version recorded every option
    except PluginError:
        raise
    except (ValueError, TypeError) as err:
        raise _UserError(f"expected a valid config.json in {str(run)!r}: {err}") from None


#: What a model file must hold for eval, sample and info: a latent-variable model's parts.
_MODEL_ATTRIBUTES = ("encoder", "decoder", "likelihood", "prior", "num_classes", "data_shape", "latent_dim")


def _load_run(run: Path, device: str = "cpu") -> tuple[Any, RunConfig | None]:
    """The model of a run folder and its ``config.json`` (None for a folder ``fit(out=…)`` wrote)."""
    from .protocols import LatentVariableModel
    from .train import resolve_device

    if not run.is_dir():
        raise _UserError(f"expected a run folder, got {str(run)!r}, which is not a folder")
    dev = resolve_device(device)
    cfg = _read_run_config(run) if os.path.lexists(run / "config.json") else None
    if cfg is None and not any(os.path.lexists(run / name) for name in ("model.safetensors", runfolder.MANIFEST)):
        raise _UserError(f"expected a genvae run folder (config.json or model.safetensors) at {str(run)!r}")
    model = load(run, map_location=dev)
    missing = [name for name in _MODEL_ATTRIBUTES if not hasattr(model, name)]
    if missing or not isinstance(model, LatentVariableModel):
        raise _UserError(
            f"expected {str(run / 'model.safetensors')!r} to hold a latent-variable model (a VAE, CVAE or "
            f"HierarchicalVAE), got a {type(model).__module__}.{type(model).__qualname__}"
            + (f" without {', '.join(missing)}" if missing else "")
        )
    return model, cfg


def _load(name: str, split: str, binarize: str, seed: int, subset: int | None = None):
    """``split`` of the data set or file ``name``, cut to ``subset`` examples; errors as one line."""
    from .data.sources import load_data

    try:
        data = load_data(name, split, binarize=binarize, seed=seed)  # type: ignore[arg-type]
    except (RuntimeError, OSError) as err:  # a corrupt or unreachable file: the message says which and what to do
        raise _UserError(str(err)) from None
    return data.subset(subset) if subset is not None and subset < len(data) else data


def _run_test_data(run: Path, cfg: RunConfig | None, args: argparse.Namespace):
    """The test data of a run: ``--data`` if given, else what ``config.json`` or ``fit.json`` records."""
    from .records import read_fit_record

    record = read_fit_record(run)
    recorded = record.get("test") or record.get("train") or {}
    name = args.data or (cfg.dataset if cfg is not None else recorded.get("source"))
    if name is None:
        raise _UserError(
            f"{str(run)!r} does not record which data it was trained on (fit was given tensors or a Dataset); "
            "pass --data NAME or --data PATH"
        )
    binarize = args.binarize or (cfg.binarize if cfg is not None else recorded.get("binarize", "none"))
    seed = cfg.seed if cfg is not None else int(record.get("seed", 0))
    return _load(name, "test", binarize, seed, args.test_subset)


def _need_plugins(plugins: list[str], run: Path) -> None:
    """Refuse a run trained with plugins this process has not imported: a run folder never imports."""
    missing = not_imported([str(p) for p in plugins]) if isinstance(plugins, list) else []
    if missing:
        flags = " ".join(f"--plugin {name}" for name in missing)
        raise PluginError(
            f"{str(run)!r} was trained with parts of {', '.join(missing)}; pass {flags} to import them "
            "(a run folder never imports code itself)"
        )


#: Settings a resumed run may change; every other flag must agree with the run's config.json.
RESUME_MAY_CHANGE = ("epochs", "device", "out")


def _resumed(saved: RunConfig, given: dict[str, Any]) -> RunConfig:
    """The saved configuration with the changes ``--resume`` allows; any other difference is an error."""
    merged = RunConfig.from_settings({**saved.to_dict(), **given})
    for f in fields(RunConfig):
        ours, theirs = getattr(merged, f.name), getattr(saved, f.name)
        if f.name not in RESUME_MAY_CHANGE and ours != theirs:
            raise _UserError(
                f"--{f.name.replace('_', '-')} {_shown(ours)} contradicts the run's config.json "
                f"({f.name} = {theirs!r}); --resume continues with the saved settings, and only "
                f"{', '.join('--' + n for n in RESUME_MAY_CHANGE)} may change"
            )
    return merged


def _train(args: argparse.Namespace) -> None:
    from .train import resolve_device

    settings = read_config(args.config) if args.config else {}
    given = {k: v for k, v in vars(args).items() if k not in _NOT_SETTINGS and v is not None}
    for key, value in given.items():
        kind, dot, name = key.partition(".")
        if dot:  # --KIND-OPTION: the option of the chosen part of that kind
            settings.setdefault("options", {}).setdefault(kind, {})[name] = value
        else:
            settings[key] = value
    settings["plugins"] = list(args.plugin)
    data = settings.get("dataset")
    if isinstance(data, str) and data not in datasets() and Path(data).exists():
        settings["dataset"] = str(Path(data).resolve())  # so that eval finds it from any folder
    cfg = RunConfig.from_settings(settings)  # every setting is checked before the data or the disk are touched
    if cfg.out is None:
        if args.resume:
            raise _UserError("expected --out RUN with --resume (the run folder to continue)")
        cfg.out = f"runs/{cfg.model}-{cfg.arch}-z{cfg.latent_dim}-{time.strftime('%Y%m%d-%H%M%S')}"
    device = resolve_device(cfg.device)  # fail before any data is loaded
    if cfg.cuda_graph is True and device.type != "cuda":
        raise _UserError(f"--cuda-graph needs a CUDA device, got --device {cfg.device} ({device.type})")
    run = Path(cfg.out)
    if run.exists() and not run.is_dir():
        raise _UserError(f"expected --out to be a folder, got {str(run)!r}, which is a file")
    created = not run.exists()
    with runfolder.lock(run):  # one writer per folder: a second process stops here, having written nothing
        try:
            _train_locked(args, cfg, settings, run)
        except BaseException:
            if created and [p.name for p in run.iterdir()] == [runfolder.LOCK_FILE]:
                (run / runfolder.LOCK_FILE).unlink()  # leave no empty folder behind a failed start
                run.rmdir()
            raise


def _objective_note(cfg: RunConfig) -> str:
    """The objective's name and the values of its options: ``iwae, k 5, beta 1.0``."""
    options = [o for o in cfg.parts()["objective"].options if o.textual]
    return ", ".join([cfg.objective, *(f"{_flag(o.name)} {_shown(cfg.option('objective', o.name))}" for o in options)])


#: Parsed arguments that are not settings of the run.
_NOT_SETTINGS = ("command", "config", "resume", "no_progress", "plugin")


def _shape_note(cfg: RunConfig) -> str:
    """What the model's and the flow's options add to a model's one-line summary."""
    note = "".join(f", {name} {_shown(value)}" for name, value in cfg.options.get("model", {}).items())
    if cfg.posterior_flow == "none":
        return note
    return note + f", {cfg.flow_length} {cfg.posterior_flow} flow steps"


def _train_locked(args: argparse.Namespace, cfg: RunConfig, settings: dict[str, Any], run: Path) -> None:
    from .train import fit

    # Reads only: fit removes a killed write's leftovers and writes config.json once its checks pass.
    committed = runfolder.verify(run) if args.resume else runfolder.complete_epoch(run)
    if (committed is not None or os.path.lexists(run / "checkpoint.pt")) and not args.resume:
        raise _UserError(
            f"run folder {str(run)!r} already has a checkpoint; pass --resume to continue it or choose another --out"
        )
    if args.resume and os.path.lexists(run / "config.json"):
        cfg = _resumed(_read_run_config(run), settings)
        cfg.out = str(run)

    train = _load(cfg.dataset, "train", cfg.binarize, cfg.seed, cfg.train_subset)
    test = _load(cfg.dataset, "test", cfg.binarize, cfg.seed, cfg.test_subset)
    torch.manual_seed(cfg.seed)  # the initial weights, so that a seed repeats a run
    model = build_model(cfg, train.data_shape, train.num_classes if train.labels is not None else None)
    objective = build_objective(cfg)
    print(
        f"training {cfg.model} ({cfg.arch}, z={cfg.latent_dim}{_shape_note(cfg)}, {cfg.likelihood}, {cfg.prior} prior) "
        f"with {_objective_note(cfg)} on {len(train)} {cfg.dataset} examples for {_plural(cfg.epochs, 'epoch')} "
        f"→ {run}",
        file=sys.stderr,
    )
    result = fit(
        model,
        train,
        test=test,
        epochs=cfg.epochs,
        objective=objective,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        grad_clip=cfg.grad_clip,
        device=cfg.device,
        seed=cfg.seed,
        compile=cfg.compile,
        amp=cfg.amp,
        cuda_graph=cfg.cuda_graph,
        out=run,
        resume=args.resume,
        config=cfg.to_dict(),
        progress=False if args.no_progress else None,
        callbacks=[
            lambda s, m: print(
                f"epoch {s.epoch:3d}  train {s.train_loss:8.2f}  test {s.test_loss:8.2f}  "
                f"({s.seconds:.1f} s, {s.images_per_second:,.0f} img/s)",
                file=sys.stderr,
            )
        ],
    )
    print(f"engine: {result.engine.describe()} ({result.engine.reason})", file=sys.stderr)
    _records(model, train, test, cfg, run, result.history)


def _records(model: Any, train: Any, test: Any, cfg: RunConfig, run: Path, history: list[Any]) -> None:
    """What a run folder holds besides fit's records: metrics.json, the figures, the loss curves."""
    from .metrics.likelihood import evaluate_elbo
    from .viz import save_grid, save_loss_curves, save_reconstructions

    summary = evaluate_elbo(model, test, seed=cfg.seed)  # the estimate of the last epoch in history.json
    write_json(
        run / "metrics.json",
        {
            "estimator": "single-sample ELBO (nats per image, summed over pixels)",
            "test_loss": summary.loss,
            "test_kl": summary.kl,
            "test_log_likelihood": summary.log_likelihood,
            "num_test_images": summary.num_examples,
            "epochs": len(history),
        },
    )
    if _is_image(train.data_shape):
        _figures(model, test, run, save_grid, save_reconstructions)
    save_loss_curves(history, run / "loss.png", title=f"{cfg.model.upper()} on {cfg.dataset}")
    print(f"test −ELBO {summary.loss:.2f} nats per image; run folder: {run}")


@torch.no_grad()
def _figures(model, test, run: Path, save_grid, save_reconstructions) -> None:
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(0)
    if model.num_classes is not None:
        labels = torch.arange(model.num_classes, device=device).repeat_interleave(8)
        save_grid(
            model.sample(len(labels), labels, generator=gen),
            run / "samples.png",
            nrow=8,
            row_labels=[str(c) for c in range(model.num_classes)],
        )
    else:
        save_grid(model.sample(64, generator=gen), run / "samples.png", nrow=8)
    x = test.float_images()[:32].to(device)
    y = test.labels[:32].to(device) if model.num_classes is not None else None
    save_reconstructions(x, model.reconstruct(x, y), run / "reconstructions.png", nrow=8)


def _is_image(shape: tuple[int, ...] | None) -> bool:
    """Whether examples of ``shape`` are images ``(C, H, W)`` a figure can show (1 or 3 channels)."""
    return shape is not None and len(shape) == 3 and shape[0] in (1, 3)


def _eval(args: argparse.Namespace) -> None:
    from .metrics.likelihood import evaluate_elbo, evaluate_iw_nll

    model, cfg = _load_run(args.run, args.device)
    test = _run_test_data(args.run, cfg, args)
    print(
        f"evaluating {len(test)} test examples: single-sample ELBO, then the importance-weighted bound with "
        f"K = {args.iw_samples}",
        file=sys.stderr,
    )
    t0 = time.perf_counter()
    elbo = evaluate_elbo(model, test, batch_size=max(args.batch_size, 500), seed=args.seed)
    iw = evaluate_iw_nll(
        model, test, args.iw_samples, batch_size=args.batch_size, seed=args.seed, progress=sys.stderr.isatty()
    )
    nll = iw.nll
    seconds = time.perf_counter() - t0
    dims = math.prod(test.data_shape)
    result = {
        "data": args.data or (cfg.dataset if cfg is not None else test.source),
        "num_test_images": elbo.num_examples,
        "binarize": test.binarize,
        "test_neg_elbo": elbo.loss,
        "test_kl": elbo.kl,
        "test_log_likelihood": elbo.log_likelihood,
        "iw_samples": args.iw_samples,
        "test_iw_nll": nll,
        "test_iw_nll_stderr": iw.stderr,
        "seconds": seconds,
        "units": "nats per image",
    }
    image = len(test.data_shape) == 3
    if image:  # bits per dimension: nats / (number of sub-pixels · ln 2)
        result["test_iw_bits_per_dim"] = nll / (dims * math.log(2))
        result["test_neg_elbo_bits_per_dim"] = elbo.loss / (dims * math.log(2))
    not_applicable = []
    if args.fid:
        result.update(_sample_metrics(model, test, args, not_applicable))
    write_json(args.run / "eval.json", result)
    print(f"{'metric':<34}{'nats/image':>12}" + (f"{'bits/dim':>10}" if image else ""))
    for label, value in (
        ("−ELBO (single sample)", elbo.loss),
        ("  KL(q‖p)", elbo.kl),
        ("  −E_q log p(x|z)", -elbo.log_likelihood),
        (f"NLL (IW bound, K={args.iw_samples})", nll),
    ):
        bits = f"{value / (dims * math.log(2)):>10.3f}" if image and not label.startswith("  ") else ""
        print(f"{label:<34}{value:>12.2f}{bits}")
    print(iw)  # IW-NLL (K=…) mean ± standard error over the examples
    for name in ("fid", "conditional_accuracy"):
        if name in result:
            print(f"{name.replace('_', ' '):<34}{result[name]:>12.4g}")
    for line in not_applicable:
        print(line)
    print(f"({elbo.num_examples} test examples, {seconds:.1f} s; written to {args.run / 'eval.json'})")


def _sample_metrics(model, test, args: argparse.Namespace, not_applicable: list[str]) -> dict[str, float]:
    """FID and (for a conditional model) conditional accuracy, in the features of a classifier
    trained for the test data; a metric that does not apply is named in ``not_applicable``."""
    from .metrics.classifier import classifier_for, conditional_accuracy
    from .metrics.fid import sample_fid

    if not _is_image(test.data_shape) or test.labels is None:
        why = "labelled images (C, H, W)" if test.labels is None else f"images, not data of shape {test.data_shape}"
        not_applicable.append(f"FID and conditional accuracy do not apply: they need {why}")
        return {}
    device = next(model.parameters()).device
    name = args.data or test.source
    classifier = classifier_for(name, test.binarize, device=device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    out = {"fid": sample_fid(model, test, classifier, n=min(len(test), 10_000), generator=generator)}
    if model.num_classes is not None:
        out["conditional_accuracy"] = conditional_accuracy(model, classifier, generator=generator)
    else:
        not_applicable.append("conditional accuracy does not apply: the model is unconditional")
    return out


def _sample(args: argparse.Namespace) -> None:
    from .train import resolve_device
    from .viz import save_grid

    model, cfg = _load_run(args.run, args.device)
    device = resolve_device(args.device)
    y = None
    if args.label is not None:
        if model.num_classes is None:
            raise _UserError(
                f"--label needs a conditional model, but {str(args.run)!r} holds an unconditional "
                f"{type(model).__name__}"
            )
        if not 0 <= args.label < model.num_classes:
            raise _UserError(f"expected --label in 0..{model.num_classes - 1}, got {args.label}")
        y = torch.full((args.n,), args.label, dtype=torch.long, device=device)
    elif model.num_classes is not None:
        y = torch.arange(args.n, device=device) % model.num_classes
    if not _is_image(model.data_shape):
        raise _UserError(f"expected a model of images (C, H, W) to draw a PNG, got data of shape {model.data_shape}")
    most = _most_samples(model.data_shape)
    if args.n > most:
        raise _UserError(
            f"expected --n at most {most:,} for this model: {SAMPLE_BYTES_PER_VALUE} bytes per value of its "
            f"{math.prod(model.data_shape):,} per image must fit in half of this machine's memory, got {args.n:,}"
        )
    images = model.sample(args.n, y, generator=torch.Generator(device=device).manual_seed(args.seed))
    folder = args.output.parent
    if not folder.is_dir():
        folder.mkdir(parents=True)
        print(f"created folder {folder}", file=sys.stderr)
    path = save_grid(images, args.output, nrow=min(args.n, 8) if y is not None and args.label is None else None)
    print(f"wrote {args.n} samples to {path}")


#: Bytes a drawn image takes per value while it is decoded and laid out in a grid, counted
#: generously (float32 activations of the decoder's last layers, the grid, the PNG's bytes).
SAMPLE_BYTES_PER_VALUE = 64


def _memory_bytes() -> int:
    """This machine's physical memory (16 GiB where the OS does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 16 * 2**30


def _most_samples(data_shape: tuple[int, ...]) -> int:
    """The most images ``genvae sample`` draws at once: their bytes fit in half the memory."""
    return max(1, _memory_bytes() // 2 // (SAMPLE_BYTES_PER_VALUE * math.prod(data_shape)))


def _info(args: argparse.Namespace) -> None:
    from .records import read_fit_record, read_history, read_json

    model, cfg = _load_run(args.run)
    record = read_fit_record(args.run)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"run        {args.run}")
    print(
        f"model      {type(model).__name__}: {type(model.encoder).__name__} → {type(model.decoder).__name__}, "
        f"{type(model.likelihood).__name__} likelihood, {type(model.prior).__name__} prior"
    )
    print(f"latent     {model.latent_dim}   data {model.data_shape}   parameters {n_params:,}")
    if cfg is not None:
        print(
            f"data       {cfg.dataset}, binarize {cfg.binarize}, subsets {cfg.train_subset or 'all'} train / "
            f"{cfg.test_subset or 'all'} test"
        )
        print(f"training   {_plural(cfg.epochs, 'epoch')}, batch {cfg.batch_size}, lr {cfg.lr}, seed {cfg.seed}")
        schedule = "" if cfg.beta_schedule == "constant" else f", {cfg.beta_schedule} over {cfg.warmup_epochs} epochs"
        print(f"objective  {_objective_note(cfg)}{schedule}")
        if cfg.plugins:
            print(f"plugins    {', '.join(cfg.plugins)}")
    elif record:
        train = record.get("train") or {}
        source = train.get("source") or f"a {train.get('type', 'tensor')} (not recorded)"
        print(f"data       {source}, binarize {train.get('binarize')}, {train.get('size')} train examples")
        print(
            f"training   {_plural(int(record.get('epochs', 0)), 'epoch')}, batch {record.get('batch_size')}, "
            f"lr {record.get('lr')}, seed {record.get('seed')}"
        )
        print(f"objective  {record.get('objective')}")
    engine = record.get("engine")
    if isinstance(engine, dict):
        print(f"engine     {engine.get('name')} ({engine.get('reason')})")
    try:
        history = read_history(args.run)
    except FileNotFoundError:
        history = []
    if history:
        last = history[-1]
        test = "" if last.test_loss is None else f", test {last.test_loss:.2f}"
        print(f"last epoch {last.epoch}: train {last.train_loss:.2f}{test} nats/image")
    for name in ("metrics", "eval"):
        try:
            record = read_json(args.run, f"{name}.json")
        except FileNotFoundError:
            continue
        print(f"{name:<11}{json.dumps(record)}")


def _plugins(argv: list[str]) -> list[str]:
    """The modules of ``--plugin MODULE`` (or ``--plugin=MODULE``) in ``argv``, before it is parsed."""
    found = []
    for i, word in enumerate(argv):
        if word == "--plugin" and i + 1 < len(argv):
            found.append(argv[i + 1])
        elif word.startswith("--plugin="):
            found.append(word.split("=", 1)[1])
    return found


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``genvae`` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:  # the plugins first: their parts are choices and flags of the parser
        installed_plugins()
        import_plugins(_plugins(argv))
    except PluginError as err:
        print(f"genvae: error: {err}", file=sys.stderr)
        return 2
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    try:
        {"train": _train, "eval": _eval, "sample": _sample, "info": _info}[args.command](args)
    except (_UserError, ValueError, TypeError, OSError, runfolder.RunFolderLocked, runfolder.RunFolderChanging) as err:
        print(f"genvae {args.command}: error: {err}", file=sys.stderr)
        return 2
    except FloatingPointError as err:
        print(f"genvae {args.command}: error: {err}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"genvae {args.command}: interrupted; the last checkpoint is kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
