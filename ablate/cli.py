"""The `ablate` command: run, report, plugins. User errors print one line and exit 2."""

from __future__ import annotations

import argparse
import inspect
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from ablate import __version__
from ablate.errors import AblateError, StudyNote

RUNS_HELP = "the runs dir: checkpoints, samples and the results store ablate.db"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's defaults formatter, without "(default: None)" on options that have no default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _describe_params(cls: type) -> list[str]:
    lines = []
    for name, field in cls.Params.model_fields.items():
        default = "required" if field.is_required() else f"= {field.get_default(call_default_factory=True)!r}"
        desc = f"  {field.description}" if field.description else ""
        lines.append(f"      {name} {default}{desc}")
    return lines


def plugin_kind(name: str) -> str:
    """`--kind`, checked against the kinds table when given (importing it at --help would load torch)."""
    from ablate.interfaces import KINDS

    if name not in KINDS:
        raise argparse.ArgumentTypeError(f"unknown kind {name!r}; known kinds: {', '.join(KINDS)}")
    return name


@contextmanager
def warning_lines() -> Iterator[None]:
    """Each warning once, as one `warning:` (or `note:`) line on stderr when it is raised: not a source
    dump, and not held back until a long run ends or lost when it fails."""
    def show(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
        print(f"{'note' if issubclass(category, StudyNote) else 'warning'}: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of threads >= 1, got {text!r}")
    return int(text)


def cmd_plugins(args: argparse.Namespace) -> int:
    from ablate.plugins import load_registry

    with warning_lines():
        registry = load_registry(args.plugins or ())
    kinds = [args.kind] if args.kind else list(registry.plugins)
    for kind in kinds:
        names = registry.names(kind)
        print(f"{kind}s:")
        for name in names:
            cls = registry.get(kind, name)
            doc = " ".join((inspect.getdoc(cls) or "").split("\n\n")[0].split())  # the first paragraph, one line
            print(f"  {name}  [{registry.origin(kind, name)}]  {doc}")
            print("\n".join(_describe_params(cls)) or "      (no parameters)")
        print()
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if args.dry_run:
        return cmd_dry_run(args)
    from ablate.runner import run_study

    with warning_lines():
        frame = run_study(args.study, profile=args.profile, overrides=args.set or (), executor=args.executor,
                          runs_dir=args.runs_dir, extra_plugins=args.plugins or (),
                          recompute_stale=args.recompute_stale, threads=args.threads,
                          trackers=args.track or ())
    return 1 if frame.attrs.get("failures") else 0  # a plugin failed: its units are listed above, the rest stored


def cmd_dry_run(args: argparse.Namespace) -> int:
    from ablate.plan import dry_run

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lines = dry_run(args.study, profile=args.profile, overrides=args.set or (), executor=args.executor,
                        runs_dir=args.runs_dir, extra_plugins=args.plugins or (), recompute_stale=args.recompute_stale)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print("\n".join(lines))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ablate.report import write_reports

    for path in write_reports(args.studies, runs_dir=args.runs_dir, out_dir=args.out):
        print(f"wrote {path}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    from ablate.store import Store

    source, target = Path(args.source), Path(args.runs_dir)
    if not (source / "ablate.db").is_file():
        raise AblateError(f"no results store at {source / 'ablate.db'}")
    store = Store(target / "ablate.db")
    try:
        added = store.merge_from(source / "ablate.db")
    finally:
        store.close()
    copied = 0
    for cell_dir in (p for p in source.iterdir() if p.is_dir() and p.name != "cache"):
        for file in cell_dir.iterdir():
            dest = target / cell_dir.name / file.name
            if file.is_file() and not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, dest)
                copied += 1
    print(f"merged {added} run(s) and {copied} file(s) from {source} into {target}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ablate.export import export_results

    path, rows = export_results(args.study, args.format, out=args.out, profile=args.profile, runs_dir=args.runs_dir)
    print(f"wrote {rows} rows to {path}")
    return 0


def cmd_export_model(args: argparse.Namespace) -> int:
    from ablate.export_model import export_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = export_model(args.cell, args.to, runs_dir=args.runs_dir, clip_x0=args.clip_x0)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(f"wrote a diffusers DDPMPipeline to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ablate", description="Ablation studies for denoising diffusion models.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"ablate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train and evaluate every cell of a study", formatter_class=HelpFormatter)
    run.add_argument("study", help="study TOML file")
    run.add_argument("--profile", help="a [profiles.NAME] section of the study (e.g. quick)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a dotted key with a TOML value, after the profile; repeat for several keys, "
                     "e.g. --set train.steps=300 --set 'study.seeds=[0]'")
    run.add_argument("--executor", help="executor plugin (default: local)")
    run.add_argument("--plugins", action="append", metavar="PATH", help="extra local plugin file")
    run.add_argument("--runs-dir", default="runs", help=RUNS_HELP)
    run.add_argument("--threads", type=positive_int, metavar="N",
                     help="torch threads per process (default: OMP_NUM_THREADS if set, else this run's share of the "
                     "cores among the live `ablate run`s of this user, taken again before each cell)")
    run.add_argument("--track", action="append", metavar="NAME",
                     help="also mirror the results to this experiment tracker (tensorboard, mlflow), as a [[tracker]] "
                     "table with its defaults would; repeat for several")
    run.add_argument("--recompute-stale", action="store_true",
                     help="delete and recompute results whose plugin code or evaluation method (eval.reference, eval.clip_x0) changed since they were stored")
    run.add_argument("--dry-run", action="store_true",
                     help="validate, then print the cells to train, the evaluations pending and an estimated time; "
                     "trains nothing and writes nothing to the runs dir")
    run.set_defaults(func=cmd_run)

    report = sub.add_parser("report", help="write reports/<study>/README.md and plots from the results store",
                            formatter_class=HelpFormatter)
    report.add_argument("studies", nargs="*", help="study TOML files (default: every study in the store)")
    report.add_argument("--runs-dir", default="runs", help=RUNS_HELP + " to read")
    report.add_argument("--out", default="reports", help="output folder; reports already there that this store "
                        "cannot regenerate (e.g. another machine's profile) are kept and listed")
    report.set_defaults(func=cmd_report)

    merge = sub.add_parser("merge", help="copy the runs and results of another runs dir (e.g. from a GPU machine) "
                           "into this one", formatter_class=HelpFormatter)
    merge.add_argument("source", help="the other runs dir (holding ablate.db)")
    merge.add_argument("--runs-dir", default="runs", help=RUNS_HELP + " to merge into")
    merge.set_defaults(func=cmd_merge)

    export = sub.add_parser("export", help="write a study's results as one tidy table (a row per stored value)",
                            formatter_class=HelpFormatter)
    export.add_argument("study", help="study TOML file or study name")
    export.add_argument("--profile", help="only this profile (default: every profile the study was run with)")
    export.add_argument("--format", required=True, choices=["csv", "parquet"], help="parquet needs ablate[parquet]")
    export.add_argument("--out", help="output file (default: <study>[-<profile>].<format> here)")
    export.add_argument("--runs-dir", default="runs", help=RUNS_HELP + " to read")
    export.set_defaults(func=cmd_export)

    model = sub.add_parser("export-model", help="save a trained cell as a diffusers DDPMPipeline "
                           "(needs ablate[diffusers])", formatter_class=HelpFormatter)
    model.add_argument("cell", metavar="RUN_DIR_OR_CELL_KEY", help="a cell's run dir, or its key under --runs-dir")
    model.add_argument("--to", required=True, help="a new (or empty) folder for DDPMPipeline.from_pretrained")
    model.add_argument("--runs-dir", default="runs", help=RUNS_HELP)
    model.add_argument("--clip-x0", action=argparse.BooleanOptionalAction,
                       help="the scheduler's clip_sample (default: on for image data, as eval.clip_x0)")
    model.set_defaults(func=cmd_export_model)

    plugins = sub.add_parser("plugins", help="list installed plugins with their origin and parameters",
                             formatter_class=HelpFormatter)
    plugins.add_argument("--kind", type=plugin_kind, help="only this kind: schedule, target, sampler, ... "
                         "(as `ablate plugins` lists them, singular)")
    plugins.add_argument("--plugins", action="append", metavar="PATH", help="also load this local plugin file")
    plugins.set_defaults(func=cmd_plugins)
    return parser


def split_set(argv: Sequence[str]) -> str | None:
    """`--set KEY VALUE` or `--set KEY= VALUE` (a space for '='): argparse would take VALUE for another
    argument and fail under the top-level usage, so name the fix instead. (`--set KEY` with nothing after
    it is the study loader's to report, with the file.)"""
    for i, token in enumerate(argv[:-2]):
        text, value = argv[i + 1], argv[i + 2]
        if token == "--set" and not value.startswith("-") and ("=" not in text or text.endswith("=")):
            return f"--set {text} {value}: expected --set KEY=VALUE as one argument, e.g. --set {text.rstrip('=')}={value}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if (problem := split_set(argv)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AblateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished work is saved; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
