"""`ctc`: the common test conditions.

    ctc list                                   shipped configurations, their tools and rate points
    ctc run CONFIG [--data DIR] [--weights PATH] [--workers N] [--limit N] [--out DIR] [--cache DIR]
                   [--backend local|ray] [--address ADDR] [--gpus-per-worker G]
                                               code, decode and evaluate (resumable), then report
    ctc report DIR [--data DIR] [--import NAME=FOLDER ...] [--import-metric M] [--import-unit U]
                                               (re)write the report of a run folder, with other
                                               toolchains' results (CompressAI-Vision / FCTM) as tools
    ctc export --format compressai-vision DIR OUT [--datacatalog NAME] [--sequence NAME] [--metric M]
                                               a run's points in CompressAI-Vision's per-qp layout
    ctc complexity DIR                         count the kMAC per pixel of a run's learned parts
                                               (DIR/complexity.csv)

CONFIG is a file or the name of one in ctc/cfg/ (e.g. imagenet_effnet_lite0).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

from common.errors import exit_code_of
from ctc.metrics import METRIC_NAMES


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="ctc", description="FCRS common test conditions",
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the shipped CTC configurations")
    run = commands.add_parser("run", help="run (or resume) a CTC configuration, then write its report")
    run.add_argument("config", help="ctc/cfg/<name>.yaml, or its name")
    run.add_argument("--data", help="dataset folder (the config names no machine path)")
    run.add_argument("--weights", help="task network weights when the config needs them (YOLOv5n safetensors, "
                     "R-CNN state_dict; 'random': R-CNN with seeded random weights, plumbing only)")
    run.add_argument("--workers", type=int, help="worker processes, or Ray actors (default: this machine's CPUs; "
                     "with --address, the cluster's)")
    run.add_argument("--limit", type=int, help="only the first N images")
    run.add_argument("--out", help="run folder (default out/ctc/<config name>); an interrupted run resumes there")
    run.add_argument("--cache", help="feature cache folder (default ~/.cache/fcrs/features; with --backend ray a "
                     "path every node reaches, or each node's own default)")
    run.add_argument("--backend", choices=("local", "ray"), default="local",
                     help="local: worker processes on this machine (default); ray: actors on a Ray cluster "
                     "(pip install -e '.[distributed]')")
    run.add_argument("--address", help="--backend ray: the cluster to join ('auto': the one `ray start` began "
                     "on this machine; default: start a local one)")
    run.add_argument("--gpus-per-worker", type=float, default=0.0,
                     help="--backend ray: GPUs each actor reserves (default 0)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--no-report", action="store_true", help="only write records")
    report = commands.add_parser("report", help="write the report of a run folder")
    report.add_argument("out", help="run folder")
    report.add_argument("--data", help="dataset folder (COCO: the annotations; default: the run's)")
    report.add_argument("--import", dest="imports", action="append", default=[], metavar="NAME=FOLDER",
                        type=_import_argument,
                        help="CompressAI-Vision / FCTM results (summary.csv per qp, one sequence) below FOLDER, "
                        "reported as tool NAME (repeatable)")
    report.add_argument("--import-metric", choices=sorted(METRIC_NAMES),
                        help="the metric an import's end_accuracy holds when its files do not say "
                        "(default: the report's primary metric)")
    report.add_argument("--import-unit", choices=("fraction", "percent", "value"),
                        help="what an import's end_accuracy is when its files do not say (default: a fidelity "
                        "metric's own value; else fraction if every value is at most 1)")
    export = commands.add_parser("export", help="write a run's results in another toolchain's layout")
    export.add_argument("--format", required=True, choices=("compressai-vision",),
                        help="compressai-vision: <tool>/<datacatalog>/<sequence>/qp<QP>/evaluation/summary.csv")
    export.add_argument("run", help="run folder (with points.csv: `ctc report` has run)")
    export.add_argument("out", help="output folder (new, or empty)")
    export.add_argument("--datacatalog", help="data catalogue folder name (default: the data folder's name, "
                        "upper-case)")
    export.add_argument("--sequence", help="sequence folder name and Dataset column (default: the data folder's name)")
    export.add_argument("--metric", choices=sorted(METRIC_NAMES), help="the metric end_accuracy holds (default: the "
                        "run's primary metric)")
    complexity = commands.add_parser("complexity", help="count the kMAC per pixel of a run's learned parts")
    complexity.add_argument("run", help="run folder (with ctc.yaml and points.csv)")
    args = parser.parse_args(argv)
    if args.command == "run":
        if (args.workers is not None and args.workers < 1) or (args.limit is not None and args.limit < 1):
            parser.error("--workers and --limit must be at least 1")
        if args.backend != "ray" and (args.address or args.gpus_per_worker):
            parser.error("--address and --gpus-per-worker need --backend ray")
        if args.gpus_per_worker < 0:
            parser.error("--gpus-per-worker must not be negative")
    return args


def _import_argument(text):
    name, separator, folder = text.partition("=")
    if not separator or not name or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=FOLDER, got {text!r}")
    return name, folder


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    command = "ctc " + " ".join(shlex.quote(a) for a in argv)
    try:
        return exit_code_of("ctc", lambda: COMMANDS[args.command](args, command))
    except BrokenPipeError:         # `ctc list | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())     # no second error at exit
        return 0


def list_configs(args, command):
    from ctc.config import load_config, shipped_names

    for name in shipped_names():
        config = load_config(name)
        print(f"{name}: {config.description}")
        print(f"    dataset {config.dataset['kind']}, task {config.task['network']} split at {config.task['split']}, "
              f"anchor {config.anchor}, metrics {', '.join(config.metrics)}")
        for tool in config.tools:
            what = {"features": tool.cfg, "image": "image anchor", "hyperprior": f"hyperprior model {tool.model}"}[tool.kind]
            extra = f" {tool.options}" if tool.options else ""
            points = ", ".join(point.label for point in tool.rate_points)
            print(f"    {tool.name:<14} {what}{extra}: {points}")
    return 0


def run_config(args, command):
    from ctc.config import load_config, resolve_config_path
    from ctc.runner import default_out, run

    path = resolve_config_path(args.config)
    config = load_config(path)
    out = args.out or default_out(config)
    workers, backend = args.workers, None
    if args.backend == "ray":
        from ctc.ray_backend import RayBackend      # imports Ray only when it is used

        backend = RayBackend(args.address, workers, args.gpus_per_worker)
    elif workers is None:
        workers = os.cpu_count() or 1
    start = time.perf_counter()
    try:
        written, wall, mismatches = run(config, path, out, data=args.data, weights=args.weights,
                                        workers=workers, limit=args.limit, cache_root=args.cache,
                                        progress=not args.no_progress, command=command, backend=backend)
    except KeyboardInterrupt:
        print(f"ctc: interrupted; the records written so far are kept in {out}: run the same command to resume",
              file=sys.stderr)
        return 130
    print(f"ctc run {config.name}: {written} records written to {out} in {wall:.1f} s")
    if not args.no_report:
        _print_report(out, args.data)
    print(f"total wall time {time.perf_counter() - start:.1f} s")
    if mismatches:
        print(f"ctc: error: {mismatches} decodes did not match the encoder's MD5 (see the records)", file=sys.stderr)
        return 1
    return 0


def report(args, command):
    _print_report(args.out, args.data, args.imports, args.import_metric, args.import_unit)
    return 0


def export(args, command):
    from ctc.interchange import export_compressai_vision

    written = export_compressai_vision(args.run, args.out, args.datacatalog, args.sequence, args.metric)
    print(f"ctc export: {written} summary.csv files (one per tool and rate point) in {args.out}")
    return 0


def complexity(args, command):
    from ctc.report import complexity_table, write_complexity

    config, rows = write_complexity(args.run)
    print(f"kMAC per pixel of {config.name}'s learned parts (fvcore; ctc/complexity.py):")
    print(complexity_table(rows, {tool.name: tool.name for tool in config.tools}), end="")
    print(f"written: {os.path.join(args.run, 'complexity.csv')}")
    return 0


def _print_report(out, data, imports=(), import_metric=None, import_unit=None):
    import math

    from ctc.report import compression_ratio_text, write_report

    _, bd_rows, nl_rows, labels = write_report(out, data, imports, import_metric, import_unit)
    for tool, metric, value, ci, _ in bd_rows:
        bounds = f" [{ci[0]:+.1f}, {ci[1]:+.1f}]" if all(map(math.isfinite, ci)) else ""
        shown = f"{value:+.1f} %" if math.isfinite(value) else "n/a"
        print(f"BD-rate {labels[tool]} vs anchor ({METRIC_NAMES[metric]}): {shown}{bounds}")
    for tool, metric, nl, ci, _ in nl_rows:
        print(f"R_NL {labels[tool]} ({METRIC_NAMES[metric]}): {nl.text()} bpfp, CR_NL {compression_ratio_text(nl, ci)}")
    print(f"report: {os.path.join(str(out), 'report.md')}")


COMMANDS = {"list": list_configs, "run": run_config, "report": report, "export": export, "complexity": complexity}


if __name__ == "__main__":
    sys.exit(main())
