"""The `initbench` command: parses arguments and calls the library; user mistakes exit 2 in one line."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from initbench import options  # the options several commands share, each declared once
from initbench.datasets import check_files
from initbench.errors import InitbenchError, Terminated
from initbench.outcomes import print_answers, tell_run
from initbench.spec import check_threads
from initbench.train.diagnostics import STATS  # light: the probe's stats, named in its --help

DEEP_MLP = "mlp(depth=16, width=128)"  # the bench's deep thin model, where lockstep should help most on a CPU


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        command = self.prog.removeprefix("initbench").strip()
        raise InitbenchError(f"{command}: {message}" if command else message)


def _list(args: argparse.Namespace) -> None:
    from initbench.listing import show

    show(args.what, args.pattern)


def _run(args: argparse.Namespace) -> int:
    spec = options.spec_from_args(args)  # names, values and sizes checked before torch and Lightning load
    check_threads(args.threads)
    if args.no_download:
        check_files(spec.dataset, args.data_dir)
    from initbench.record import RunRecord, record_dir

    existing = RunRecord(record_dir(spec, args.out))
    if existing.complete and not args.force:  # nothing to train: answered without loading torch
        return tell_run(args.out, spec, existing.path, existing.summary(), "done")
    spec.validate()  # the checks that need torch or the user's code, before Lightning loads
    from initbench.execute.units import claim_and_run, refuse_busy
    from initbench.train.trainer import use_threads

    use_threads(args.threads)
    progress = not args.no_progress and sys.stdout.isatty()  # the bars draw on stdout: none in a file or a pipe

    if args.engine == "lockstep":  # a group of one: the lockstep engine's numbers for this run
        if args.force:
            raise InitbenchError("--force retrains with the sequential engine; drop --engine lockstep or --force")
        from initbench.execute.units import claim_and_run_group

        def refuse(note: str) -> None:
            raise InitbenchError(f"--engine lockstep: {note.removeprefix('lockstep: ')}; use --engine sequential")

        _, run_dir, summary, outcome = claim_and_run_group(
            [spec], args.out, progress=progress, data_dir=args.data_dir, download=not args.no_download,
            note=refuse)[0]
    else:
        run_dir, summary, outcome = claim_and_run(spec, args.out, progress=progress,
                                                  data_dir=args.data_dir, download=not args.no_download,
                                                  force=args.force)
    refuse_busy(spec, run_dir, outcome)
    return tell_run(args.out, spec, run_dir, summary, outcome)


def _bench(args: argparse.Namespace) -> None:
    for flag, value in (("--steps", args.steps), ("--repeats", args.repeats), ("--batch-size", args.batch_size),
                        ("--lockstep", args.lockstep)):  # refused before torch loads
        if value is not None and value < 1:
            raise InitbenchError(f"{flag} must be at least 1, got {value}")
    if args.fixed_cost and args.lockstep is not None:
        raise InitbenchError("--fixed-cost and --lockstep measure different things; give one")
    if args.fixed_cost and args.steps is not None:
        raise InitbenchError("--fixed-cost times whole runs of 2 and 6 epochs; --steps is for the other measurements")
    dataset = args.dataset or ("digits" if args.fixed_cost else "fashion-mnist")
    models = args.models or (["mlp", "simplecnn"] if args.fixed_cost else ["mlp", "simplecnn", DEEP_MLP])
    from initbench.bench import bench, format_rows

    if args.fixed_cost:
        from initbench.bench import fixed_cost, format_fixed

        rows = [fixed_cost(model, dataset, args.repeats, args.batch_size, args.accelerator, args.data_dir)
                for model in models]
        print(format_fixed(rows, dataset, args.repeats, args.batch_size))
        return
    if args.lockstep is not None:
        from initbench.bench import DEFAULT_STEPS, bench_lockstep, format_lockstep

        for model in models:
            row = bench_lockstep(model, dataset, args.lockstep, args.steps or DEFAULT_STEPS.get(model, 300) // 5,
                                 args.repeats, args.batch_size, args.accelerator, args.data_dir)
            print(format_lockstep(row, dataset, args.repeats, args.batch_size))
        return
    rows = bench(models, dataset, args.steps, args.repeats, args.batch_size, args.accelerator,
                 args.data_dir)
    print(format_rows(rows, dataset, args.repeats, args.batch_size))


def _sweep(args: argparse.Namespace) -> int:
    from initbench.execute.resources import check_executor

    check_executor(args.executor, args.address, args.cpus_per_task, args.gpus_per_task)  # before torch loads
    from initbench.execute.local import completed, dry_run, execute, progress_text
    from initbench.plan.sweep import load_sweep, parse_shard

    sweep = load_sweep(args.file, args.name)
    shard = parse_shard(args.shard)
    out = args.out or Path("results") / sweep.name
    if args.emit_wandb_sweep:
        if sweep.tune:
            raise InitbenchError(f"{args.file}: a W&B grid cannot run the two stages of a tune block (stage 2 "
                                 "needs stage 1's results); run `initbench sweep`, with --shard i/N to spread it")
        from initbench.dashboards import emit_sweep_config

        config = emit_sweep_config(sweep, args.emit_wandb_sweep, out, sweep.runs[0].log.wandb_project)
        sizes = ", ".join(f"{k} x{len(v['values'])}" for k, v in config["parameters"].items() if "values" in v)
        print(f"wrote {args.emit_wandb_sweep}: a W&B grid of {len(sweep.runs)} runs ({sizes}); "
              f"run `wandb sweep {args.emit_wandb_sweep}` (needs a W&B server), then `wandb agent` on each machine")
        return 0
    if args.no_download:
        for dataset in sorted({run.dataset for run in sweep.runs}):
            check_files(dataset, args.data_dir)
    if args.dry_run:
        dry_run(sweep, out, shard)
        return 0
    try:
        counts = execute(sweep, out, shard, args.data_dir, not args.no_download, progress=not args.no_progress,
                         engine=args.engine, lockstep_max=args.lockstep_max, executor=args.executor,
                         address=args.address, cpus_per_task=args.cpus_per_task, gpus_per_task=args.gpus_per_task,
                         lockstep_mode=args.lockstep_mode, threads=args.threads)
    except (KeyboardInterrupt, Terminated) as stop:
        how = "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"
        print(f"initbench: {how} with {progress_text(sweep, out)} runs complete; rerun the same command "
              "to finish the rest", file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else 130
    waiting = f", {counts['waiting']} waiting for tuning runs" if counts["waiting"] else ""
    waiting += f", {counts['lost']} lost (their tasks failed after retries: rerun)" if counts["lost"] else ""
    print(f"{sweep.name}: {counts['ok']} ok, {counts['diverged']} diverged, {counts['collapsed']} collapsed, "
          f"{counts['failed']} failed, {counts['skipped']} already done, {counts['busy']} running elsewhere{waiting}; "
          f"{progress_text(sweep, out)} complete in {out}")
    rows, pending = completed(sweep, out)
    if all(done for _, done in rows) and not pending and not args.no_report:
        from initbench.report import write_report

        files = write_report(out)
        print_answers(files["answers"])
        print(f"report: {files['html']} (also report.md, ranking.csv, runs.csv)")
    return 1 if counts["failed"] or counts["lost"] else 0  # failed runs are recorded; the exit code says so


def _verify(args: argparse.Namespace) -> int:
    from initbench.verify import verify

    return 1 if verify(args.results_dir, args.sample, args.seed, args.data_dir, not args.no_download) else 0


def _report(args: argparse.Namespace) -> None:
    from initbench.report import write_report

    wandb = None
    if args.wandb:
        from initbench.dashboards import study_project

        project, entity = study_project(args.results_dir)
        wandb = (args.wandb_project or project, args.wandb_entity or (None if args.wandb_project else entity))
    target = args.target
    if target is not None and 0 < target <= 1:
        print(f"initbench: note: --target {target:g} read as a fraction, {target * 100:g} accuracy points (give "
              f"points: --target {target * 100:g})", file=sys.stderr)
        target *= 100
    files = write_report(args.results_dir, args.metric, args.test, target, args.out, wandb=wandb,
                         baseline=args.baseline, margin_points=args.margin, claims=args.claims)
    print_answers(files["answers"])
    print(f"report: {files['html']}\nalso: {files['markdown']}, {files['ranking']}, {files['runs']}")
    if wandb:
        print(f"W&B: report runs (job_type=report) in project {wandb[0]}")


def _probe(args: argparse.Namespace) -> None:
    from initbench.probe import command

    command(args)


EXAMPLES = """examples:
  initbench run --init kaiming_normal --model simplecnn --dataset digits
  initbench run --init 'normal(std=0.02)' --init-rule 'classifier.fc3.*=zeros' --model simplecnn
  initbench sweep experiments/quickstart.yaml        # every (dataset, model, init, seed), then the report
  initbench report results/quickstart --baseline pytorch_default
  initbench verify results/quickstart --sample 10   # retrain 10 records: are they reproduced bit for bit?
  initbench list inits 'kaiming*'"""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="initbench", description="Which weight-initialization scheme trains best?",
                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="list init strategies, models or datasets")
    p.add_argument("what", choices=["inits", "models", "datasets"], help="what to list: inits, models or datasets")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern for inits, e.g. 'kaiming*' (default: all)")
    p.set_defaults(func=_list)

    p = sub.add_parser("run", help="train one (init, model, dataset, seed) and write its run record")
    options.add_run_options(p)
    options.add_out_option(p, Path("results"), "results folder (default: results/)")
    options.add_progress_option(p)
    p.add_argument("--force", action="store_true",
                   help="train the run again even if its record is complete (the old record is replaced once the "
                        "new one is whole)")
    p.add_argument("--engine", choices=["sequential", "lockstep"], default="sequential",
                   help="sequential (default) or lockstep: the run as a lockstep group of one, with the numbers a "
                        "sweep's lockstep group gives it")
    options.add_logger_option(p, "csv (always written) or wandb (CSV plus a W&B run; offline without credentials); "
                                 "default: csv")
    options.add_threads_option(p, "torch threads to train with (default: one per core); a CPU run's numbers depend "
                                  "on it in their last digits, and its record says it")
    p.set_defaults(func=_run)

    p = sub.add_parser("sweep", help="run every (dataset, model, init, seed) of an experiment file; resumable")
    p.add_argument("file", type=Path, help="experiment YAML, e.g. experiments/quickstart.yaml")
    options.add_out_option(p, None, "results folder (default: results/<experiment name>)")
    p.add_argument("--name", default=None, help="experiment name (default: the file's `name`)")
    p.add_argument("--shard", default=None, help="run only shard i of N (1-based), e.g. --shard 2/4")
    p.add_argument("--dry-run", action="store_true", help="list the runs and whether each is done; train nothing")
    p.add_argument("--no-report", action="store_true", help="do not write the report when the grid is complete")
    p.add_argument("--emit-wandb-sweep", type=Path, default=None, metavar="SWEEP.yaml",
                   help="write a W&B sweep config whose agents run this grid with `initbench run`, and exit")
    options.add_progress_option(p, "no progress bar on a terminal, and no per-run lines without one")
    p.add_argument("--engine", default="auto", choices=["auto", "lockstep", "sequential"],
                   help="lockstep trains the runs that differ only in their init as one stacked model; auto (the "
                        "default) does so where the model allows and says why not elsewhere; sequential one by one")
    p.add_argument("--lockstep-max", type=int, default=64, metavar="K",
                   help="at most K runs per lockstep group: inits x learning rates of one (problem, seed) (default: "
                        "64)")
    p.add_argument("--lockstep-mode", default="auto", choices=["auto", "vmap", "loop"],
                   help="how a lockstep group computes its members: auto (the default) by a fixed rule of model and "
                        "device, never by timing; vmap or loop for every group")
    options.add_threads_option(p, "torch threads every run of the study trains with, Ray tasks included (default: "
                                  "what the study recorded, else the sweep file's resources: threads, else one per "
                                  "core); a CPU run's numbers depend on it, so a study keeps one")
    options.add_data_options(p)
    p.add_argument("--executor", default="sequential", choices=["sequential", "ray"],
                   help="sequential (the default) trains here, one unit after another; ray runs each run or lockstep "
                        "group as a Ray task (pip install 'initbench[ray]')")
    p.add_argument("--address", default=None, metavar="HOST:PORT",
                   help="with --executor ray: the cluster's head (`ray start --head` prints it) or auto (the one "
                        "started on this machine); default: a local Ray on this machine's cores")
    p.add_argument("--cpus-per-task", type=float, default=None, metavar="N",
                   help="with --executor ray: CPUs each task asks for (default: the sweep file's resources: "
                        "cpus_per_task, else the study's --threads)")
    p.add_argument("--gpus-per-task", type=float, default=None, metavar="F",
                   help="with --executor ray: GPUs per task; a fraction such as 0.25 lets tasks share a GPU "
                        "(default: the sweep file's resources: gpus_per_task, else 0)")
    p.set_defaults(func=_sweep)

    p = sub.add_parser("report", help="rank the schemes of a results folder: tables, statistics, plots")
    p.add_argument("results_dir", type=Path, help="a results folder, e.g. results/quickstart")
    p.add_argument("--metric", default="val_acc_final",
                   help="ranking metric: val_acc_final (default), best_val_acc, auc_val_acc, or test_acc (selects "
                   "on the test set; the report says so)")
    p.add_argument("--baseline", default=None, metavar="INIT",
                   help="the reference every scheme is compared with, e.g. pytorch_default, or 'best' for the "
                   "best scheme of each problem (default: the sweep file's `baseline:`, else 'best')")
    p.add_argument("--margin", type=float, default=0.5, metavar="POINTS",
                   help="equivalence margin in accuracy points (default: 0.5)")
    p.add_argument("--test", default="wilcoxon",
                   help="paired test against the reference: wilcoxon or ttest (default: wilcoxon)")
    p.add_argument("--target", type=float, default=None, metavar="POINTS",
                   help="validation accuracy in points (0-100] for steps-to-target (default: 90%% of the best val "
                        "accuracy per problem); a value up to 1 is read as a fraction, the older form")
    p.add_argument("--claims", type=Path, default=None, metavar="FILE",
                   help="judge the claims of FILE (a claims: list, alone or in a sweep file) on these records instead "
                        "of the ones the sweep file declared; those it did not declare read as declared after the data")
    options.add_out_option(p, None, "where to write the report (default: RESULTS_DIR)")
    p.add_argument("--wandb", action="store_true",
                   help="also log the ranking table, a bar chart and the plots as a W&B run (job_type report)")
    options.add_wandb_options(p, None, "W&B project (default: the sweep file's wandb project, else the one the runs "
                              "were logged to, else initbench)", "W&B entity (default: as the project)")
    p.set_defaults(func=_report)

    p = sub.add_parser("verify", help="retrain a sample of a results folder's records and check every number")
    p.add_argument("results_dir", type=Path, help="a results folder, e.g. results/quickstart")
    p.add_argument("--sample", type=int, default=10, metavar="N",
                   help="how many records to retrain, drawn evenly over its problems and stages (default: 10)")
    p.add_argument("--seed", type=int, default=0, help="which records the draw picks (default: 0)")
    options.add_data_options(p)
    p.set_defaults(func=_verify)

    p = sub.add_parser("probe", help="step-0 signal propagation per layer and init, over the first steps, widths "
                                     "and depths")
    p.add_argument("--model", default="mlp",
                   help="model spec, e.g. simplecnn or 'mlp(hidden=[256, 256, 256])' (default: mlp)")
    p.add_argument("--dataset", default="digits", help="dataset whose batches go through the model (default: digits)")
    p.add_argument("--inits", nargs="+", required=True, metavar="INIT", help="init specs to compare, e.g. "
                   "kaiming_normal xavier_normal 'normal(std=1)'")
    p.add_argument("--seeds", type=int, default=3, help="seeds per init, 0..N-1; plots show their mean (default: 3)")
    p.add_argument("--steps", type=int, default=0, metavar="K",
                   help="also measure after each of the first K training steps (default: 0, step 0 only)")
    p.add_argument("--depths", nargs="+", type=int, default=[], metavar="D",
                   help="the same across these model depths (the model's depth parameter: mlp, convnet, resnet, vit); "
                        "depth_check_<stat>.png plots each model's last layer against depth (default: the model as "
                        "given)")
    p.add_argument("--widths", nargs="+", type=int, default=[], metavar="W",
                   help="a coordinate check over these widths (mlp: every hidden layer; simplecnn: the first block's "
                        "channels; your model: its width parameter) (default: the model as given)")
    p.add_argument("--stats", nargs="+", default=list(STATS), metavar="STAT",
                   help=f"stats to record: {', '.join(STATS)} (default: all)")
    p.add_argument("--jacobian", type=int, default=0, metavar="N",
                   help="also the singular values of the input-output Jacobian on N examples at step 0, into "
                        "jacobian.csv and jacobian_spectrum.png (all near 1: dynamical isometry) (default: 0, none)")
    options.add_batch_size_option(p)
    p.add_argument("--lr", type=float, default=0.05, help="learning rate of the K steps, constant (default: 0.05)")
    options.add_out_option(p, Path("results/probe"), "output folder (default: results/probe)")
    options.add_logger_option(p, "wandb also logs the table and plots as a W&B run, job_type probe (default: csv)")
    options.add_wandb_options(p, "initbench", "W&B project (default: initbench)", "W&B entity (default: yours)")
    options.add_data_options(p)
    p.set_defaults(func=_probe)

    p = sub.add_parser("bench", help="training throughput: initbench vs a plain PyTorch loop, same process")
    p.add_argument("--models", nargs="+", default=None,
                   help=f"models to measure (default: mlp simplecnn '{DEEP_MLP}'; mlp simplecnn with --fixed-cost)")
    p.add_argument("--dataset", default=None, help="dataset (default: fashion-mnist; digits with --fixed-cost)")
    p.add_argument("--steps", type=int, default=None, help="steps per measurement (default: 1000 mlp, 150 simplecnn, "
                   "300 the deep mlp and other models)")
    p.add_argument("--repeats", type=int, default=5,
                   help="interleaved repeats, each measuring both sides twice (ABBA); medians are printed (default: 5)")
    p.add_argument("--lockstep", type=int, default=None, metavar="K",
                   help="instead: K runs of each model trained in lockstep against the same K one by one, and the "
                        "speedup")
    p.add_argument("--fixed-cost", action="store_true",
                   help="instead: what a whole run costs beyond its epochs (set-up, step-0 validation and "
                        "diagnostics, test pass, record), from runs of two lengths timed interleaved")
    options.add_batch_size_option(p)
    p.add_argument("--accelerator", default="auto", help="auto, cpu, gpu, ... (default: auto)")
    options.add_data_options(p, download=False)
    p.set_defaults(func=_bench)
    return parser


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    previous = signal.signal(signal.SIGTERM, _terminate)  # SIGTERM stops like Ctrl-C: one line, whole records
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        if not argv:  # bare `initbench`: what it does, its commands and examples
            build_parser().print_help()
            return 2
        args = build_parser().parse_args(argv)
        code = args.func(args)
    except InitbenchError as exc:
        print(f"initbench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("initbench: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("initbench: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except BrokenPipeError:  # `initbench ... | head`: the reader has gone; end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        signal.signal(signal.SIGTERM, previous)
    return code or 0


def entry() -> None:
    """The `initbench` console script: main(), after which SIGTERM and SIGINT are ignored: the work is done, every
    record whole, and a signal during the interpreter's own shutdown would otherwise kill it without a word."""
    code = main()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)


if __name__ == "__main__":
    entry()
