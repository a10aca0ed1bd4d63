"""`ddpbench report RUN... [--baseline RUN|TRAINER] [--candidate TRAINER] [--out DIR] [--no-tensorboard]`."""
from __future__ import annotations

import argparse
import os
import sys

from . import compare, load, tensorboard

PROG = "ddpbench report"


class Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line and exit 2, as every ddpbench subcommand does on a bad argument.
        print(f"{PROG}: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description=(
        "Scaling and comparison report from result documents (never re-runs anything): report.md, report.html "
        "(self-contained), PNG plots, and TensorBoard scalars of every cell."))
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="run folder (runs/<id>), folder of result documents, or one document; several: their "
                        "cells are repeats of each other")
    p.add_argument("--baseline", action="append", default=[], metavar="RUN|TRAINER",
                   help="a trainer of the same run (builtin, builtin-fused, hf, liger, unsloth, hf-loop; default: hf "
                        "where present) or a stored run to compare the same cells against (repeatable: repeats)")
    p.add_argument("--candidate", metavar="TRAINER",
                   help="the trainer compared first, within one run (default: builtin-fused where present, else builtin)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: <first RUN>/report)")
    p.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard event files")
    return p


def split_baseline(values: list):
    """(baseline run paths or None, baseline trainer or None)."""
    if not values:
        return None, None
    paths = [v for v in values if os.path.exists(v)]
    names = [v for v in values if not os.path.exists(v)]
    for v in names:
        if v not in compare.TRAINERS:
            raise load.InputError(f"--baseline {v}: neither an existing run folder or document nor a trainer "
                                  f"({', '.join(compare.TRAINERS)})")
    if names and paths:
        raise load.InputError("--baseline: give either run folders or one trainer, not both")
    if len(names) > 1:
        raise load.InputError(f"--baseline: one trainer at most (got {', '.join(names)})")
    return (paths, None) if paths else (None, names[0])


def default_out(first: str) -> str:
    folder = first if os.path.isdir(first) else os.path.dirname(os.path.abspath(first))
    return os.path.join(folder, "report")


def describe(paths, docs) -> str:
    def under(run, p):  # a run folder found inside the path given counts for that path
        return run == p or run.startswith(p.rstrip(os.sep) + os.sep)
    return "; ".join(f"{p} ({sum(under(d.run, p) for d in docs)} cell documents)" for p in paths)


def run(argv) -> int:
    args = parser().parse_args(argv)
    base_paths, base_trainer = split_baseline(args.baseline)
    if args.candidate and args.candidate not in compare.TRAINERS:
        raise load.InputError(f"--candidate {args.candidate}: not a trainer ({', '.join(compare.TRAINERS)})")
    docs, kernels = load.load_runs(args.runs)
    base_docs = None
    if base_paths:
        base_docs, base_kernels = load.load_runs(base_paths)
        kernels += base_kernels
    model = compare.build(docs, base_docs, base_trainer, args.candidate, kernels)
    out = args.out or default_out(args.runs[0])
    os.makedirs(out, exist_ok=True)

    try:
        from . import plots, render  # matplotlib is imported only once the input is known to be usable
    except ImportError as e:
        print(f"{PROG}: error: {e} (scripts/setup installs what the report needs)", file=sys.stderr)
        return 1
    all_docs = docs + (base_docs or [])
    figures = plots.draw_all(model, [d for d in all_docs if d.ok], out)
    sources = "Runs: " + describe(args.runs, docs)
    if base_paths:
        sources += ". Baseline runs: " + describe(base_paths, base_docs)
    md_path, html_path = render.write(model, all_docs, figures, out, sources + ".")
    print(f"report: {md_path}")
    print(f"report: {html_path} ({len(figures)} figure(s) inlined)")

    if not args.no_tensorboard:
        if not tensorboard.available():
            print("report: TensorBoard scalars not written: the tensorboard package is not installed "
                  "(scripts/setup installs it)")
        else:
            def root_for(d):
                return d.run if os.path.isfile(os.path.join(d.run, "run.json")) else out
            folders = tensorboard.write(docs, root_for)
            roots = sorted({root_for(d) for d in docs if d.ok and d.steps})
            if folders:
                print(f"report: TensorBoard scalars of {len(folders)} cell run(s): tensorboard --logdir "
                      + " ".join(roots))
    return 0


def main(argv=None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except load.InputError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
