#!/usr/bin/env python
"""mnist-nas: search, train and export tiny CNNs for MNIST. The one door: every command is here.

Errors caused by input (a bad file, an unknown study, an over-budget spec) print one line and exit
with code 2; nothing already stored is touched.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


class UserError(Exception):
    """Bad input: reported as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse's own errors (an unknown flag, a bad number) as the same one `error:` line, exit 2."""

    def error(self, message):
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def read_text_file(path: str, what: str) -> str:
    """The text of a JSON file the user names (--arch, --space, --enqueue, --recipe): one error line
    if it is missing, unreadable (a name too long, no permission, an I/O error) or not text."""
    p = Path(path)
    try:
        if not p.is_file():
            raise UserError(f"no such {what} file: {p}")
        return p.read_text()
    except UnicodeDecodeError:
        raise UserError(f"{p} is not a text (JSON) file") from None
    except OSError as e:
        raise UserError(f"cannot read the {what} file {p}: {e.strerror or type(e).__name__}") from None


# Numbers a user types ----------------------------------------------------------------------------
# Every integer flag goes through one of these argparse types (tests/test_protocol.py checks that no
# flag takes a bare int): a count that must be positive is refused in one line, never used (a
# --train-limit of -5 once trained on all but 5 images). Recipe flags (--batch-size, --step-size)
# are checked by TrainConfig's rules instead.

def _integer(text: str, least: int, most: int | None, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < least or (most is not None and value > most):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def count(text: str) -> int:
    """A count: epochs, trials, workers, seeds, images, steps, ... (1 or more)."""
    return _integer(text, 1, None, "a positive integer")


def whole(text: str) -> int:
    """A seed or a thread count: 0 or more."""
    return _integer(text, 0, None, "an integer >= 0")


def port(text: str) -> int:
    return _integer(text, 1, 65535, "a port number between 1 and 65535")


# Spec resolution ----------------------------------------------------------------------------------

def resolve_spec(args):
    """(spec, recipe) from a baseline name or --arch FILE.json."""
    from space.baselines import BASELINES as SEED, REFERENCES
    from space.spec import ArchSpec
    BASELINES = {**SEED, **REFERENCES}
    if getattr(args, "arch", None):
        return ArchSpec.from_json(read_text_file(args.arch, "architecture")), {}
    name = args.model or "model6"
    if name not in BASELINES:
        raise UserError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)} or give --arch FILE.json")
    b = BASELINES[name]
    return b.spec, b.recipe


# Commands: the space ------------------------------------------------------------------------------

def cmd_baselines(args):
    from space.baselines import BASELINES, REFERENCES
    from space.spec import count_params
    print(f"{'name':<9} {'params':>10} {'seed says':>10} {'seed best test':>14}  description")
    for name, b in {**BASELINES, **REFERENCES}.items():
        print(f"{name:<9} {count_params(b.spec):>10,} {b.seed_params:>10} {b.seed_best_test:>14.2f}  {b.spec.description}")


def cmd_rf(args):
    from space.rf import format_rf_table
    spec, _ = resolve_spec(args)
    print(format_rf_table(spec))


def cmd_summary(args):
    import torchinfo
    from space.model import build_model
    spec, recipe = resolve_spec(args)
    model = build_model(spec, dropout=recipe.get("dropout", 0.05))
    print(torchinfo.summary(model, input_size=(1, spec.in_channels, 28, 28), verbose=0,
                            col_names=("input_size", "output_size", "num_params", "kernel_size")))


# Commands: training -------------------------------------------------------------------------------

# train's flags that override one TrainConfig field each (flag --x-y sets field x_y)
RECIPE_FLAGS = {"lr": float, "momentum": float, "batch_size": int, "dropout": float, "rotation": float,
                "shift": float, "scale": float, "scheduler": str, "step_size": int, "gamma": float,
                "max_lr": float, "pct_start": float, "label_smoothing": float, "weight_decay": float,
                "ema": float, "fill": float, "precision": str}


def read_json_file(path: str, what: str) -> dict:
    """The JSON object in a file the user names (read_text_file's checks, then the parser's)."""
    from space.spec import parse_json
    p, text = Path(path), read_text_file(path, what)
    try:
        d = parse_json(text, UserError)
    except UserError as e:
        raise UserError(f"{p}: {e}") from None
    if not isinstance(d, dict):
        raise UserError(f"{p} must hold a JSON object")
    return d


def train_config(recipe: dict, args, **extra):
    """The baseline's recipe, then --recipe FILE.json, then single-setting flags."""
    from search.train import TrainConfig
    if getattr(args, "recipe", None):
        d = read_json_file(args.recipe, "recipe")
        d = d.get("config", d)  # a trial's or a model file's {"config": ...} works too
        if not isinstance(d, dict):
            raise UserError(f"{args.recipe}: \"config\" must be a JSON object of recipe settings")
        recipe = {**recipe, **d}
    overrides = {k: v for k, v in dict(
        epochs=args.epochs, seed=args.seed, threads=args.threads, allow_long=args.allow_long or None,
        **{name: getattr(args, name, None) for name in RECIPE_FLAGS},
    ).items() if v is not None}
    run = {"epochs", "seed", "threads", "allow_long"}
    return TrainConfig.from_dict({**{k: v for k, v in recipe.items() if k not in run}, **overrides, **extra})


def cmd_train(args):
    from space.target import last_k_for
    from search.data import load_mnist, make_split
    from search.train import train
    from space.spec import check_budget
    from storage.plots import plot_curves
    from storage.outputs import check_output

    spec, recipe = resolve_spec(args)
    if not args.no_budget:
        check_budget(spec, args.max_params)
    cfg = train_config(recipe, args)
    split = make_split(load_mnist(args.data_dir), final=args.final, train_limit=args.train_limit)
    name = spec.name or Path(args.arch).stem
    out = check_output(args.out or f"runs/{name}-{'final' if args.final else 'val'}-seed{cfg.seed}",
                       what="--out", folder=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out: cannot make {out}: {e.strerror or type(e).__name__}") from None
    print(f"{name}: {len(split.train_labels):,} training images, scored on {split.eval_name} "
          f"({len(split.eval_labels):,}); {cfg}")
    result = train(spec, cfg, split, log=lambda line: print(line, flush=True))
    accs = result.accs()
    k = last_k_for(len(accs))
    summary = {"best_train_acc": max(h["train_acc"] for h in result.history),
               f"best_{split.eval_name}_acc": max(accs),
               f"last{k}_{split.eval_name}_acc": accs[-k:],
               "seconds_per_epoch": sum(h["seconds"] for h in result.history) / len(result.history)}
    from storage.provenance import training_record
    run = training_record(final=args.final, train_limit=args.train_limit, epochs=cfg.epochs, seeds=[cfg.seed],
                          devices=result.device, images=len(split.train_labels), available=split.available)
    (out / "metrics.json").write_text(json.dumps({**result.to_json_dict(), "summary": summary, "provenance": run.to_stored()},
                                                 indent=2))
    plot_curves(result.history, split.eval_name, out / "curves.png",
                title=f"{name} ({result.params:,} params), seed {cfg.seed}")
    print(f"best {split.eval_name} {max(accs):.2f}, last {k}: "
          f"{', '.join(f'{a:.2f}' for a in accs[-k:])}; wrote {out}/metrics.json and {out}/curves.png")


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(x) for x in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or any(n < 1 or n > 100_000 for n in sizes):
        raise UserError(f"--study-scale takes trial counts like 200,2000 (1..100000), got {text!r}")
    return sizes


def cmd_bench(args):
    from search.device import DEVICE_ENV
    os.environ[DEVICE_ENV] = "cpu"  # bench measures this machine's CPU, both pipelines alike
    from search.bench import run_bench, run_families
    if args.study_scale:
        from storage.scale import run_scale
        run_scale(_sizes(args.study_scale), as_json=args.json)
    elif args.compare:
        from search.bench import run_compare
        run_compare(args.data_dir, steps=args.steps, repeats=args.repeats, as_json=args.json)
    elif args.families:
        run_families(args.data_dir, steps=args.steps, as_json=args.json)
    else:
        run_bench(args.data_dir, steps=args.steps, as_json=args.json, profile=args.profile)


# Commands: the study service ---------------------------------------------------------------------

def read_space(path: str | None):
    """The default space, or the one in a JSON file (`mnist-nas space > FILE.json`, then edit)."""
    from space.searchspace import SearchSpace, SpaceError
    if path is None:
        return SearchSpace.default()
    text = read_text_file(path, "space")
    try:
        return SearchSpace.from_json(text)
    except SpaceError as e:
        raise UserError(f"{Path(path)}: {e}") from None


def read_points(path: str | None) -> tuple[dict, ...]:
    """--enqueue FILE.json: a list of points, each an object of parameter: value (as `report` and the
    dashboard show a trial's parameters). Checked against the space and budget by SearchConfig."""
    from space.spec import parse_json
    if path is None:
        return ()
    p, text = Path(path), read_text_file(path, "points")
    try:
        points = parse_json(text, UserError)
    except UserError as e:
        raise UserError(f"{p}: {e}") from None
    if not isinstance(points, list) or not points:
        raise UserError(f"{p}: must be a non-empty JSON list of points (objects of parameter: value)")
    return tuple(points)


def search_config(args, budget_may_differ: bool = False):
    """The one place flags become a SearchConfig. The flags that define a study's protocol or how
    it is searched default to None, so a flag left out is told from one given: on an existing study
    a left-out flag takes the study's stored value (as `worker` does) and a protocol flag given
    another value is refused (SearchConfig.resolve); on a new study the defaults apply."""
    from search.config import FREE, PROTOCOL, SearchConfig
    from storage.db import stored_settings
    given = {name: getattr(args, name) for name in PROTOCOL + FREE}
    given["space"] = read_space(args.space) if args.space else None
    stored = stored_settings(study_name=args.study_name, storage=args.storage)
    return SearchConfig.resolve(
        given, stored, defaults=search_defaults(args.n_trials_default), budget_may_differ=budget_may_differ,
        study_name=args.study_name, storage=args.storage, timeout=args.timeout,
        workers=args.workers or os.cpu_count() or 1, enqueue=not args.no_enqueue,
        start_points=read_points(args.enqueue), data_dir=args.data_dir,
        warm_start=not args.no_warm_start, warm_from=tuple(u for u in (args.warm_start or "").split(",") if u))


def search_defaults(n_trials: int) -> dict:
    """The defaults of a new study's settings (the --help of search and find shows them)."""
    from space.target import EPOCH_LIMIT, MAX_PARAMS
    return {"n_trials": n_trials, "max_params": MAX_PARAMS, "epochs": EPOCH_LIMIT, "last_k": None,
            "train_limit": None, "objective": "consistency", "pruner": "median", "sampler": "tpe", "seed": 0}


def cmd_find(args):
    from search.find import FindConfig, find
    return find(FindConfig(search=search_config(args, budget_may_differ=True), output=Path(args.output), target=args.target,
                           seeds=args.seeds, top=args.top, min_robust=args.min_robust, search_all=args.search_all,
                           hold_level=args.hold_level, max_seeds=args.max_seeds, rejudge=args.rejudge))


def cmd_worker(args):
    from search.config import SearchConfig
    from search.runner import run_worker
    from storage.db import load_study
    from storage.records import StudySettings
    study = load_study(study_name=args.study_name, storage=args.storage)
    config = SearchConfig.from_study(StudySettings.of(study), study_name=args.study_name, storage=args.storage,
                                     timeout=args.timeout, data_dir=args.data_dir)
    run_worker(config)


def cmd_space(args):
    print(read_space(args.space).to_json())


def cmd_search(args):
    from search.runner import run_search
    run_search(search_config(args))


def cmd_report(args):
    from storage.report import report
    report(study_name=args.study_name, storage=args.storage, top=args.top, plots=args.plots, as_json=args.json)


def cmd_front(args):
    from storage.report import front
    pairs = []
    for item in args.study:
        name, sep, url = item.partition("=")
        if not sep or not name or not url:
            raise UserError(f"--study takes NAME=STORAGE_URL, got {item!r}")
        pairs.append((name, url))
    front(pairs, output=args.output, as_json=args.json)


def cmd_export(args):
    from storage.modelfile import export_trial, export_verified
    export = export_verified if args.verified else export_trial
    meta = export(study_name=args.study_name, storage=args.storage, trial=args.trial,
                  output=args.output, onnx=args.onnx, quiet=args.json)
    if args.json:
        print(json.dumps({"output": args.output, "onnx": args.onnx, **meta}, indent=1))


def cmd_evaluate(args):
    from search.data import load_mnist
    from storage.modelfile import describe_file, load_model_file, score_loaded
    module, meta = load_model_file(args.file)  # refuse a bad file before loading the data
    data = load_mnist(args.data_dir)
    acc = score_loaded(module, args.file, data.test_images, data.test_labels)
    if args.json:
        print(json.dumps({"file": args.file, "test_acc": acc, "test_images": len(data.test_labels),
                          "params": meta.get("params"), "study": meta.get("study"), "trial": meta.get("trial")}))
        return
    print(f"{describe_file(args.file, meta)}, test accuracy {acc:.2f}% "
          f"on {len(data.test_labels):,} official test images")


def cmd_notes(args):
    from storage.notes import rewrite_trial_notes
    from storage.artifacts import ArtifactSink
    from storage.db import load_study, storage_url
    study = load_study(study_name=args.study_name, storage=args.storage)
    sink = ArtifactSink(storage_url(study_name=args.study_name, storage=args.storage), args.study_name)
    n = rewrite_trial_notes(study, sink.store)
    print(f"wrote the dashboard notes of {n} finished trials and of study {args.study_name!r}")


def cmd_dashboard(args):
    from storage.dashboard import dashboard
    return dashboard(study_name=args.study_name, storage=args.storage, host=args.host, port=args.port,
                     writable=args.allow_writes)


def cmd_verify(args):
    from search.verify import verify
    return verify(study_name=args.study_name, storage=args.storage, trial=args.trial, seeds=args.seeds,
                  last_k=args.last_k, target=args.target, epochs=args.epochs,
                  train_limit=args.train_limit, data_dir=args.data_dir, as_json=args.json,
                  hold_level=args.hold_level, max_seeds=args.max_seeds)


# The commands: one table ---------------------------------------------------------------------------
# Every command is one Command in commands(): its name, its line in `mnist-nas --help`, its
# description, its example (the last line of its --help), its flags in --help order and the function
# that runs it. parser() only reads the table.

@dataclass(frozen=True)
class Flag:
    """One argparse argument: its names and add_argument's keyword arguments."""
    names: tuple[str, ...]
    options: dict

    def add(self, p: argparse.ArgumentParser) -> None:
        p.add_argument(*self.names, **self.options)


def flag(*names: str, **options) -> Flag:
    return Flag(names, options)


@dataclass(frozen=True)
class Defaults:
    """Namespace values a command sets without a flag (argparse's set_defaults)."""
    values: dict

    def add(self, p: argparse.ArgumentParser) -> None:
        p.set_defaults(**self.values)


@dataclass(frozen=True)
class Command:
    name: str
    help: str  # its line in `mnist-nas --help`
    description: str
    example: str
    flags: tuple  # Flag, Defaults, or a group of them (a tuple), in --help order
    run: Callable  # run(args) -> exit code (None: 0)


def _items(flags):
    for item in flags:
        if isinstance(item, tuple):
            yield from _items(item)
        else:
            yield item


# Flag groups that several commands take -------------------------------------------------------------

def study_flags() -> tuple:
    return (flag("--study-name", default="mnist-nas", help="study name (default mnist-nas)"),
            flag("--storage", help="SQLAlchemy URL (default sqlite:///studies/<study-name>.db)"))


def model_flags() -> tuple:
    return (flag("model", nargs="?", help="a baseline name, model1..model6 (default model6)"),
            flag("--arch", metavar="FILE.json", help="an architecture spec file instead of a baseline"))


def data_flag() -> Flag:
    return flag("--data-dir", help="MNIST root holding MNIST/raw/ (default: $MNIST_DATA_DIR or ./data)")


def device_flag() -> Flag:
    return flag("--device", help="train on cpu, cuda or cuda:N; every worker process shares it "
                                 "(default: $MNIST_NAS_DEVICE or cpu)")


def trial_flag() -> Flag:
    return flag("--trial", default="best", help="trial number, or 'best' (default)")


def json_flag(what: str) -> Flag:
    return flag("--json", action="store_true", help=what)


def hold_flags() -> tuple:
    """The hold rule's settings (space.hold), shared by find and verify."""
    from space.hold import HOLD_LEVEL, MAX_SEEDS
    return (flag("--hold-level", type=float, default=HOLD_LEVEL, metavar="P",
                 help=f"PASS needs the estimated probability that a new seed holds the target to reach P "
                      f"(default {HOLD_LEVEL})"),
            flag("--max-seeds", type=count, default=MAX_SEEDS,
                 help=f"verify seeds at most per candidate while undecided, each a test-set use (default {MAX_SEEDS})"))


def search_flags(n_trials: int = 20, timeout: str = "stop starting trials after SEC seconds") -> tuple:
    """search's and find's: the study, how it is searched, the data and device."""
    from search.config import OBJECTIVES, PRUNERS, SAMPLERS
    from space.target import EPOCH_LIMIT, LAST_K, MAX_PARAMS
    # Defaults are None (a flag left out is not its default): on an existing study a left-out flag
    # takes the study's stored value; the defaults named here apply to a new study (search_config).
    fixed = " (fixed when the study is made; a resume that leaves it out uses the study's)"
    kept = " (a resume that leaves it out uses the study's)"
    return (
        study_flags(),
        Defaults({"n_trials_default": n_trials}),
        flag("--space", metavar="FILE.json", help="search this space instead of the default" + fixed),
        flag("--n-trials", type=count,
             help=f"the study's trial budget: finished trials across all workers and runs "
                  f"(default {n_trials})" + kept),
        flag("--timeout", type=float, help=timeout),
        flag("--workers", type=count, help="worker processes, one thread each (default: one per core)"),
        flag("--max-params", type=count, help=f"budget: fewer than this (default {MAX_PARAMS})" + fixed),
        flag("--epochs", type=count, help=f"epochs per trial (default {EPOCH_LIMIT})" + fixed),
        flag("--pruner", choices=tuple(PRUNERS),
             help="default median; median-draws: start points neither judged nor in the median" + kept),
        flag("--sampler", choices=tuple(SAMPLERS), help="default tpe" + kept),
        flag("--objective", choices=OBJECTIVES,
             help="consistency (default): min val acc over the last K epochs; pareto: that and params "
                  "down" + fixed),
        flag("--last-k", type=count,
             help=f"K for the consistency score (default {LAST_K}, or --epochs if fewer)" + fixed),
        flag("--seed", type=whole, help="sampler seed (default 0)" + kept),
        flag("--train-limit", type=count,
             help="train each trial on the first N training images (default: all)" + fixed),
        flag("--no-enqueue", action="store_true", help="do not enqueue model6 as the first trial"),
        flag("--enqueue", metavar="FILE.json",
             help="run these points first: a JSON list of {parameter: value} objects, each in the space "
                  "and under the budget (points already in the study are not run again)"),
        flag("--warm-start", metavar="URL[,URL]",
             help="a new study also starts from the best trials of these earlier studies (storage URLs; "
                  "'URL#name' for one study of several), scaled to the budget"),
        flag("--no-warm-start", action="store_true",
             help="run cold: a new study does not start from the shipped models' designs scaled to the "
                  "budget (the default) nor from --warm-start"),
        data_flag(),
        device_flag(),
    )


def recipe_flags() -> tuple:
    """train's flags that override one recipe setting each (RECIPE_FLAGS)."""
    from space.recipe import PRECISIONS, SCHEDULERS
    return tuple(flag(f"--{name.replace('_', '-')}", type=kind, metavar=kind.__name__.upper(),
                      choices={"scheduler": SCHEDULERS, "precision": PRECISIONS}.get(name),
                      help=f"override the recipe's {name} (space/recipe.py: TrainConfig)")
                 for name, kind in RECIPE_FLAGS.items())


def commands() -> list[Command]:
    """Every command, in `mnist-nas --help` order."""
    from space.target import BAR_BELOW_TARGET, EPOCH_LIMIT, LAST_K, MAX_PARAMS, TARGET_ACC
    return [
        Command("baselines", help="list the seed's six models with parameter counts",
                description="List the seed write-up's six models, their parameter counts and recipes.",
                example="mnist-nas baselines",
                flags=(), run=cmd_baselines),
        Command("rf", help="receptive-field table of a model",
                description="Print the receptive-field table (seed's columns) of a baseline or spec file.",
                example="mnist-nas rf model6   (or: mnist-nas rf --arch spec.json)",
                flags=model_flags(), run=cmd_rf),
        Command("summary", help="torchinfo summary of a model",
                description="Print the torchinfo summary of a baseline or spec file.",
                example="mnist-nas summary public3k7",
                flags=model_flags(), run=cmd_summary),
        Command("train", help="train one model and write metrics.json and curves.png",
                description="Train a baseline (with its seed recipe) or a spec file. Without "
                            "--final: 50,000 images, scored on the 10,000 validation images. "
                            "With --final: all 60,000, scored on the official test set each epoch.",
                example="mnist-nas train model6 --final --seed 2 --threads 1",
                flags=(
                    model_flags(),
                    flag("--epochs", type=count, help="epochs (default 15, the limit)"),
                    flag("--seed", type=whole, help="seed for weights, shuffling, augmentation (default 1)"),
                    flag("--final", action="store_true", help="train on all 60,000, score the test set"),
                    flag("--train-limit", type=count, help="use only the first N training images"),
                    flag("--out", help="output folder (default runs/<model>-<val|final>-seed<S>)"),
                    flag("--threads", type=whole, help="torch threads (default: torch's choice)"),
                    flag("--allow-long", action="store_true", help="permit more than 15 epochs"),
                    flag("--recipe", metavar="FILE.json",
                         help="a recipe: TrainConfig fields as JSON (a trial's 'config' works as it is)"),
                    recipe_flags(),
                    flag("--max-params", type=count, default=MAX_PARAMS,
                         help="refuse specs with this many parameters or more"),
                    flag("--no-budget", action="store_true", help="skip the budget check (model1 needs it)"),
                    data_flag(),
                    device_flag(),
                ), run=cmd_train),
        Command("bench", help="images/s of this engine vs the conventional pipeline",
                description="Train model6 for the same number of steps with this engine and with "
                            "the conventional torchvision pipeline (per-sample transforms, "
                            "DataLoader with 2 workers, nn.Dropout) and print images per second.",
                example="mnist-nas bench --steps 150   (or: mnist-nas bench --families)",
                flags=(
                    flag("--steps", type=count, default=100, help="training steps per measurement (default 100)"),
                    json_flag("print the figures as JSON"),
                    flag("--profile", action="store_true", help="also print the torch profiler table of the engine"),
                    flag("--families", action="store_true",
                         help="instead: one core's images/s and 15-epoch trial cost for a model of each family "
                              "(model6: 2 blocks, valid convs; public3k7: 3 padded blocks)"),
                    flag("--compare", action="store_true",
                         help="instead: the engine as studies run it (one 1-thread process per core) against the "
                              "conventional pipeline at its best threads x DataLoader workers setting, --repeats "
                              "times, and one 15-epoch trial's cost on one core"),
                    flag("--repeats", type=count, default=3, help="repeats of --compare (default 3)"),
                    flag("--study-scale", metavar="N,N",
                         help="instead: build synthetic studies of these many finished trials (no training) "
                              "and time report and the dashboard's study page on each"),
                    data_flag(),
                ), run=cmd_bench),
        Command("space", help="print the search space as JSON (edit a copy, pass it to search --space)",
                description="Print the default search space (or FILE's, normalised) as JSON. "
                            "Example: mnist-nas space > my-space.json; edit; "
                            "mnist-nas search --space my-space.json",
                example="mnist-nas space > my-space.json",
                flags=(flag("--space", metavar="FILE.json",
                            help="print this space file instead, with defaults filled in"),),
                run=cmd_space),
        Command("search", help="run (or resume) an Optuna study",
                description="Search the space (mnist-nas space shows it) under the parameter "
                            "budget. Re-running with the same name and storage resumes the "
                            "study; a different space is refused; Ctrl-C stops cleanly.",
                example="mnist-nas search --space my-space.json --max-params 5000 --n-trials 40",
                flags=search_flags(), run=cmd_search),
        Command("find", help="search, confirm on validation, verify on test, export the winner",
                description="From a budget to a verified model file: search under --max-params "
                            "until a trial reaches the bar (--min-robust), retrain it with --seeds "
                            "seeds on validation, then verify it on the test set (all 60,000 "
                            "training images) until the hold rule decides (no seed below --target in "
                            "the last K epochs, P(a new seed holds) >= --hold-level); if it does not "
                            "hold, search on, up to --n-trials (--search-all: the whole search first, "
                            "then the top --top). Export the winner (.pt2 and .onnx). Resumable: rerun "
                            "the same command. Example: mnist-nas find --max-params 5000 -o under5k.pt2",
                example="mnist-nas find --max-params 5000 -o under5k.pt2",
                flags=(
                    search_flags(n_trials=40, timeout="stop starting search trials SEC seconds after find "
                                 "starts (in any leg); the search is then over, and confirm and verify of what it "
                                 "found run to their end (a rerun searches on only with a larger --n-trials)"),
                    flag("--target", type=float, default=TARGET_ACC,
                         help=f"test accuracy to hold (default {TARGET_ACC})"),
                    flag("--seeds", type=count, default=3,
                         help="seeds per candidate, in confirm and verify (default 3)"),
                    flag("--top", type=count, default=3,
                         help="with --search-all, the top N trials are confirmed; in legs (the default), at most "
                              "N candidates in all may meet the test set (default 3)"),
                    flag("--min-robust", type=float, default=None, metavar="SCORE",
                         help="the bar: a trial is a candidate when its search score reaches it, and is verified "
                              "only when its seed-robust validation score does; the others never meet the test "
                              f"set (default: --target minus {BAR_BELOW_TARGET}; 0 verifies every candidate)"),
                    flag("--search-all", action="store_true",
                         help="search the whole --n-trials before confirming (default: pause the search as "
                              "soon as a trial reaches the bar, confirm and verify it, and search on only if "
                              "it does not hold)"),
                    hold_flags(),
                    flag("--rejudge", action="store_true",
                         help="judge a candidate's stored test runs again at another --target / --last-k / "
                              "--hold-level (refused without it: the target is fixed before the test set is "
                              "met); recorded as a test-set use and marked in the file's metadata and card"),
                    flag("-o", "--output", required=True, metavar="FILE.pt2"),
                ), run=cmd_find),
        Command("worker", help="join an existing study from any machine and run its trials",
                description="Join a study created by search (its stored space and settings) and run "
                            "trials, one at a time, until the study holds its trial budget, counted "
                            "across all workers. Start as many as you like, on any machine that "
                            "reaches the storage. Example: mnist-nas worker --study-name big "
                            "--storage postgresql+psycopg://user@db-host/studies",
                example="mnist-nas worker --study-name big --storage postgresql+psycopg://user:pw@db/studies",
                flags=(
                    study_flags(),
                    flag("--timeout", type=float, help="stop starting trials after SEC seconds"),
                    data_flag(),
                    device_flag(),
                ), run=cmd_worker),
        Command("report", help="best trials, counts by state, plots",
                description="Table of the best trials, counts by state and PNG plots of a study.",
                example="mnist-nas report --plots plots   (or --json)",
                flags=(
                    study_flags(),
                    flag("--top", type=count, default=10),
                    flag("--plots", metavar="DIR", help="write PNG plots to DIR"),
                    json_flag("print one JSON object instead of tables"),
                ), run=cmd_report),
        Command("front", help="accuracy vs parameters across studies: one front, a PNG",
                description="Every complete trial of the given studies, the Pareto front over all of "
                            "them (validation consistency score up, parameters down), find's verdicts.",
                example="mnist-nas front --study find-5k=sqlite:///results/find-5k.db "
                        "--study families=sqlite:///results/families.db -o front.png",
                flags=(
                    flag("--study", action="append", required=True, metavar="NAME=URL",
                         help="a study and its storage URL (repeat for more studies)"),
                    flag("-o", "--output", metavar="FILE.png", help="write the plot here"),
                    json_flag("print the front as JSON"),
                ), run=cmd_front),
        Command("export", help="write a trial's trained model as a .pt2 (and .onnx) file",
                description="Export a trial's stored weights as a torch.export program that "
                            "takes float images in [0, 1], shape (N, 1, 28, 28), with the spec, "
                            "metrics and receptive field as metadata. No retraining. With "
                            "--verified: the model `find` verified (trained on all 60,000, verify "
                            "seed 1) with its verify table, and FILE.onnx, FILE.spec.json and the card "
                            "FILE.md beside it, as `find -o` writes them. Example: mnist-nas export "
                            "--study-name find-8k-lin --storage sqlite:///results/find-8k-lin.db "
                            "--verified -o under8k.pt2",
                example="mnist-nas export --trial best -o best.pt2 --onnx best.onnx",
                flags=(
                    study_flags(),
                    trial_flag(),
                    flag("-o", "--output", required=True, metavar="FILE.pt2"),
                    flag("--onnx", metavar="FILE.onnx",
                         help="also write an ONNX file (with --verified: instead of FILE.onnx)"),
                    flag("--verified", action="store_true",
                         help="export the model `find` verified for --trial ('best': the study's find winner)"),
                    json_flag("print the file's metadata as JSON"),
                ), run=cmd_export),
        Command("evaluate", help="accuracy of a .pt2 model file on the official test set",
                description="Load a model file with plain torch.export.load and score the test set.",
                example="mnist-nas evaluate best.pt2",
                flags=(
                    flag("file", metavar="FILE.pt2"),
                    json_flag("print the result as JSON"),
                    data_flag(),
                ), run=cmd_evaluate),
        Command("notes", help="(re)write the dashboard notes of a study's finished trials",
                description="Write each finished trial's dashboard note (architecture, RF table, "
                            "torchinfo, recipe, epochs, curves) from what it stored, and the study's "
                            "note; for studies run before notes existed. Sections added by verify "
                            "and find are kept. Example: mnist-nas notes --study-name mnist-nas",
                example="mnist-nas notes --study-name mnist-nas",
                flags=study_flags(), run=cmd_notes),
        Command("dashboard", help="start optuna-dashboard on a study's storage",
                description="Serve optuna-dashboard for the storage (127.0.0.1 unless --host), "
                            "read-only: the page shows the studies, notes, plots and artifacts, and "
                            "any change it asks for (delete or rename a study, edit a note, upload or "
                            "delete an artifact, tell or skip a trial) is refused unless --allow-writes. "
                            "A port in use is one error line; Ctrl-C or SIGTERM stop it (exit 130).",
                example="mnist-nas dashboard --port 8080",
                flags=(
                    study_flags(),
                    flag("--port", type=port, default=8080, help="port to listen on (default 8080)"),
                    flag("--host", default="127.0.0.1",
                         help="address to listen on (default 127.0.0.1: this machine only)"),
                    flag("--allow-writes", action="store_true",
                         help="let the page change the storage (delete or rename studies, edit notes, upload "
                              "or delete artifacts); off by default"),
                ), run=cmd_dashboard),
        Command("verify", help="retrain a trial's architecture on 60,000 and check the target",
                description="Retrain from scratch on all 60,000 images (the study's epochs, K and "
                            "image limit unless the flags say otherwise) with each seed, score "
                            "the test set every epoch; exit 0 only if the model holds the target in "
                            "each of the last K epochs: no seed below it and an estimated probability "
                            "of at least --hold-level that a new seed holds (one more seed at a time "
                            "while undecided, up to --max-seeds), else 1.",
                example="mnist-nas verify --trial best --seeds 3",
                flags=(
                    study_flags(),
                    trial_flag(),
                    flag("--seeds", type=count, default=3),
                    flag("--last-k", type=count, help=f"default: the study's K, else {LAST_K} (never more than "
                                                      "the epochs)"),
                    flag("--target", type=float, default=TARGET_ACC),
                    flag("--epochs", type=count, help=f"default: the study's epochs (else {EPOCH_LIMIT})"),
                    flag("--train-limit", type=count, help="train on the first N images (default: the study's "
                                                           "limit, else all)"),
                    json_flag("print the per-seed results as JSON (progress goes to stderr)"),
                    hold_flags(),
                    data_flag(),
                    device_flag(),
                ), run=cmd_verify),
    ]


def parser() -> argparse.ArgumentParser:
    """The CLI's parser, built from commands(): each command's help, description, flags and example."""
    ap = Parser(prog="mnist-nas", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for c in commands():
        p = sub.add_parser(c.name, help=c.help, description=c.description, epilog=f"example: {c.example}")
        for item in _items(c.flags):
            item.add(p)
        p.set_defaults(func=c.run)
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from search.data import DataError
    from space.recipe import ConfigError
    from space.searchspace import SpaceError
    from space.spec import BudgetError, SpecError
    from storage.db import StudyError
    from search import stopping
    try:
        from search.device import DEVICE_ENV, select
        if hasattr(args, "device") and (args.device or os.environ.get(DEVICE_ENV)):
            select(args.device or os.environ[DEVICE_ENV])  # checked before any worker starts; they inherit it
        code = args.func(args) or 0
        stopping.check()  # a stop asked for at the very end (say, during an export) still says so
        return code
    except (UserError, DataError, ConfigError, BudgetError, SpecError, SpaceError, StudyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `mnist-nas report | head`: the reader left; the rest of the output goes nowhere
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
