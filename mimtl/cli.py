"""The ``mimtl`` command line: friendlier verbs over MONAI's bundle API (it never replaces it).

Everything here is also reachable as ``python -m monai.bundle ...`` with the same configs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from mimtl.utils import format_table

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

EPILOG = """\
exit codes: 0 success; 1 the work ran and failed (a check failed, training crashed);
            2 bad input (unknown bundle, config key, file or option), nothing was run.

examples:
  mimtl demo                                       # the main job, one results table
  mimtl list
  mimtl info BUNDLE
  mimtl run BUNDLE train --set train::trainer::max_epochs=2 --set device=cpu
  mimtl run BUNDLE evaluate
  mimtl run BUNDLE train --override lab_b.yaml     # another lab's override file, audited first
  mimtl run BUNDLE train --resume                  # continue a killed training from its checkpoint
  mimtl run BUNDLE multi_gpu_train --nproc 2      # torchrun under the hood
  mimtl verify --all
  mimtl export BUNDLE --format onnx
  mimtl audit shared_config.yaml
  mimtl domain fit BUNDLE                          # fit + calibrate its out-of-domain guard
  mimtl domain report BUNDLE --write               # test-split / foreign-input table in its README
  mimtl check-data datalist.json --keys image label
  mimtl data demo classification --out demo_data/cls --n 100
  mimtl data adapt chexpert /data/chexpert --out chexpert.json --option uncertain=ones

BUNDLE is a bundle name (see `mimtl list`) or a path to a bundle folder.
Docs: docs/index.md in the repository, or `python -m monai.bundle --help` for MONAI's own CLI.
"""


class CliError(Exception):
    """Bad input from the user: printed without a traceback, exit code 2."""


def _bundle(name: str):
    from mimtl.bundle import BundleError, load_bundle

    try:
        return load_bundle(name)
    except BundleError as e:
        raise CliError(str(e)) from None


def cmd_list(args: argparse.Namespace) -> int:
    from mimtl.bundle import bundle_search_path, list_bundles

    bundles = list_bundles()
    if args.json:
        print(json.dumps([_summary(b) for b in bundles], indent=2))
        return EXIT_OK
    if not bundles:
        print("No bundles found. Searched: " + ", ".join(map(str, bundle_search_path())))
        return EXIT_OK
    rows = [("name", "version", "weights", "task")] + [
        (b.name, b.version, "yes" if b.has_weights else "no", b.metadata.get("task", "")) for b in bundles
    ]
    print(format_table(rows))
    return EXIT_OK


def _summary(b) -> dict:
    return {
        "name": b.name,
        "display_name": b.display_name,
        "version": b.version,
        "path": str(b.path),
        "weights": b.has_weights,
        "task": b.metadata.get("task", ""),
        "configs": b.config_names(),
    }


def cmd_info(args: argparse.Namespace) -> int:
    b = _bundle(args.bundle)
    meta = b.metadata
    if args.json:
        print(json.dumps({**_summary(b), "metadata": meta}, indent=2))
        return EXIT_OK
    print(f"{b.display_name} ({b.name}) {b.version}\n  path: {b.path}")
    for key in ("task", "description", "intended_use", "data_source"):
        if meta.get(key):
            print(f"  {key}: {meta[key]}")
    size = f"{b.weights_path.stat().st_size / 1e6:.1f} MB" if b.has_weights else "missing"
    print(f"  weights: {b.weights_path.relative_to(b.path)} ({size})")
    print(f"  configs: {', '.join(b.config_names())}")
    for kind in ("inputs", "outputs"):
        for name, spec in meta.get("network_data_format", {}).get(kind, {}).items():
            shape = "x".join(map(str, spec.get("spatial_shape", [])))
            print(
                f"  {kind[:-1]} '{name}': {spec.get('type')} {spec.get('format')}, {spec.get('num_channels')} ch, {shape}"
            )
    for ref in meta.get("references", []):
        print(f"  reference: {ref}")
    return EXIT_OK


def _audit(bundle, config: str, override_files: Sequence[str], overrides: dict, trust: bool) -> None:
    """Refuse (exit 2, nothing run) what the audit flags in what ``mimtl run`` is about to execute:
    every override file and ``--set`` value, and, for a bundle folder that did not ship with mimtl,
    its configs, its logging.conf and its weights. ``--trust`` skips the audit."""
    from mimtl.bundle.safety import audit_bundle, audit_config_files, is_shipped

    if trust:
        return
    findings = []
    if not is_shipped(bundle.path):
        findings += audit_bundle(bundle.path, bundle.config_files(config))
    findings += audit_config_files(override_files, overrides)
    if findings:
        listed = "\n  ".join(map(str, findings))
        raise CliError(
            f"{len(findings)} construct(s) are not on the audit's allowlist; nothing was run:\n  {listed}\n"
            "Read them; if you trust their author, run again with --trust (see docs/sharing_configs.md)."
        )


def cmd_run(args: argparse.Namespace) -> int:
    from mimtl.bundle import BundleError, ConfigKeyError, parse_overrides
    from mimtl.bundle.safety import AuditError, enforce

    b = _bundle(args.bundle)
    try:
        overrides = parse_overrides(args.set or [])
        b.config_files(args.config, args.override or [])  # an unknown config or a missing file: exit 2
    except (ValueError, BundleError) as e:
        raise CliError(str(e)) from None
    if args.resume:
        if b.parser(args.config, args.override or []).get("resume") is None:
            raise CliError(
                f"config '{args.config}' of {b.name} has no 'resume' setting (no mimtl.handlers.ResumableCheckpoint)."
            )
        overrides["resume"] = True
    _audit(b, args.config, args.override or [], overrides, args.trust)
    if args.nproc > 1:
        return _launch_distributed(args)
    # The audit's checks again where MONAI evaluates, for text that only exists at run time.
    guard = contextlib.nullcontext() if args.trust else enforce()
    guard.__enter__()
    try:
        wf = b.workflow(args.config, extra=args.override or [], allow_new_keys=args.allow_new_keys, **overrides)
    except (ConfigKeyError, BundleError) as e:
        guard.__exit__(None, None, None)
        raise CliError(str(e)) from None
    except BaseException:
        guard.__exit__(None, None, None)
        raise
    import traceback

    from mimtl.data.validate import DataValidationError
    from mimtl.errors import root_cause
    from mimtl.handlers.resume import ResumeError
    from mimtl.io.meta import ImageReadError

    try:
        wf.initialize()
        wf.run()
    except KeyboardInterrupt as e:  # Ctrl-C: ResumableCheckpoint has saved and says where (TrainingInterrupted)
        print(f"mimtl run: {e}" if str(e) else "interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        cause = root_cause(e)
        if isinstance(cause, AuditError):
            print(
                f"mimtl run: stopped: {cause}\nRun again with --trust if you trust the config's author.",
                file=sys.stderr,
            )
            return EXIT_FAILED
        # Bad data is the user's input, not a crash: say which files, without a traceback.
        if isinstance(cause, (DataValidationError, ImageReadError, ConfigKeyError, ResumeError)):
            raise CliError(str(cause)) from None
        # MONAI wraps errors in "Failed to evaluate ..." layers: end with the one that matters
        traceback.print_exc()
        print(f"mimtl run: failed: {type(cause).__name__}: {cause}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        try:
            wf.finalize()
        finally:
            guard.__exit__(None, None, None)
    return EXIT_OK


def _launch_distributed(args: argparse.Namespace) -> int:
    """Re-run the same command under torchrun, one process per device (gloo on CPU)."""
    argv = [args.bundle, args.config]
    argv += [f"--set={s}" for s in args.set or []] + [f"--override={f}" for f in args.override or []]
    argv += ["--trust"] * args.trust + ["--allow-new-keys"] * args.allow_new_keys + ["--resume"] * args.resume
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={args.nproc}",
        "-m",
        "mimtl",
        "run",
        *argv,
    ]
    print("launching: " + " ".join(cmd), flush=True)
    return EXIT_OK if subprocess.call(cmd) == 0 else EXIT_FAILED


def cmd_verify(args: argparse.Namespace) -> int:
    from mimtl.bundle import list_bundles, verify_bundle

    if args.all == bool(args.bundles):
        raise CliError("give bundle names or --all (not both).")
    bundles = list_bundles() if args.all else [_bundle(n) for n in args.bundles]
    if not bundles:
        print("No bundles to verify (none shipped yet, and none on $MIMTL_BUNDLE_PATH).")
        return EXIT_OK
    report, failed = {}, 0
    for b in bundles:
        print(f"{b.name} {b.version}")
        results = verify_bundle(b, on_result=lambda r: print(f"  {r}", flush=True))
        report[b.name] = [vars(r) for r in results]
        failed += not all(r.ok for r in results)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"{len(bundles) - failed}/{len(bundles)} bundle(s) passed.")
    return EXIT_FAILED if failed else EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from mimtl.bundle import BundleError, export_bundle

    b = _bundle(args.bundle)
    if args.format == "monai-config":  # the single-file config monai.bundle.load reads
        from mimtl.bundle.monai_config import write_monai_configs

        for path in write_monai_configs(b):
            print(f"wrote {path}")
        return EXIT_OK
    try:
        out = export_bundle(b, args.format, out=args.out, use_trace=True if args.trace else None)
    except BundleError as e:
        raise CliError(str(e)) from None
    print(f"wrote {out}")
    return EXIT_OK


def cmd_results(args: argparse.Namespace) -> int:
    from mimtl.bundle.results import compare_results, compute_results, write_results

    b = _bundle(args.bundle)
    results = compute_results(b)
    for key, value in results["eval_metrics"].items():
        print(f"{key}: {value}")
    if results["thresholds"]:
        print(f"thresholds (validation, Youden's J): {results['thresholds']}")
    if args.write:
        for path in write_results(b, results):
            print(f"wrote {path}")
        return EXIT_OK
    problems = compare_results(b, results)
    for p in problems:
        print(f"differs: {p}", file=sys.stderr)
    return EXIT_FAILED if problems else EXIT_OK


def cmd_domain_fit(args: argparse.Namespace) -> int:
    from mimtl.bundle import BundleError
    from mimtl.bundle.domain import fit_domain

    b = _bundle(args.bundle)
    try:
        path, summary = fit_domain(b, coverage=args.coverage, out=args.out, datalist=args.datalist)
    except BundleError as e:
        raise CliError(str(e)) from None
    print(
        f"thresholds: {summary['thresholds']}; validation pass rate {summary['val_pass_rate']:.3f} "
        f"(target {summary['coverage_target']:.2f}, {summary['n_val']} films)"
    )
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return EXIT_OK


def cmd_domain_report(args: argparse.Namespace) -> int:
    from mimtl.bundle import BundleError
    from mimtl.bundle.domain import (
        compare_domain_report,
        compute_domain_report,
        render_domain_report,
        write_domain_report,
    )
    from mimtl.sim.domain_foreign import foreign_inputs

    b = _bundle(args.bundle)
    try:
        report = compute_domain_report(b, foreign_inputs)
    except BundleError as e:
        raise CliError(str(e)) from None
    print(render_domain_report(report))
    if args.write:
        for path in write_domain_report(b, report):
            print(f"wrote {path}")
        return EXIT_OK
    problems = compare_domain_report(b, report)
    for p in problems:
        print(f"differs: {p}", file=sys.stderr)
    return EXIT_FAILED if problems else EXIT_OK


def cmd_audit(args: argparse.Namespace) -> int:
    from mimtl.bundle import audit_config_files

    missing = [f for f in args.files if not Path(f).is_file()]
    if missing:
        raise CliError(f"no such file: {', '.join(missing)}")
    findings = audit_config_files(args.files)
    for f in findings:
        print(f)
    print(f"{len(findings)} construct(s) not on the audit's allowlist in {len(args.files)} file(s).")
    return EXIT_FAILED if findings else EXIT_OK


def cmd_check_data(args: argparse.Namespace) -> int:
    from mimtl.data.datalist import load_datalist
    from mimtl.data.validate import DataValidationError

    try:
        items = load_datalist(
            args.datalist, args.list_key, args.base_dir, keys=args.keys, deep=args.deep, data_root=args.data_root
        )
    except DataValidationError as e:
        print(e, file=sys.stderr)
        return EXIT_FAILED
    print(f"{args.datalist}: {len(items)} '{args.list_key}' entries, all files usable.")
    return EXIT_OK


def cmd_data_demo(args: argparse.Namespace) -> int:
    from mimtl.sim.demo import DEMO_TASKS, build_demo
    from mimtl.sim.sources import SourceUnavailableError

    tasks = list(DEMO_TASKS) if args.task == "all" else [args.task]
    for task in tasks:
        out = Path(args.out) / task if len(tasks) > 1 else Path(args.out)
        try:
            if args.task == "brain" and args.style is not None:
                raise CliError("--style applies to the chest tasks only; the brain demo has no film styles.")
            options = {} if args.style is None or task == "brain" else {"style": args.style}
            datalist = build_demo(task, out, n=args.n, seed=args.seed, **options)
        except SourceUnavailableError as e:
            raise CliError(str(e)) from None
        print(f"{task}: {datalist} (contact sheet: {datalist.parent / 'contact_sheet.png'})")
    return EXIT_OK


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from mimtl.sim.sources import SOURCES, SourceUnavailableError, fetch

    for name in SOURCES:
        try:
            print(f"{name}: {fetch(name)}")
        except SourceUnavailableError as e:
            raise CliError(str(e)) from None
    return EXIT_OK


def cmd_data_adapt(args: argparse.Namespace) -> int:
    from mimtl.bundle import parse_overrides
    from mimtl.data.adapters import adapt
    from mimtl.data.validate import DataValidationError

    try:  # adapt() resolves aliases (isbi2015, nih, ...) and names the valid choices
        options = parse_overrides(args.option or [])
        datalist = adapt(args.name, args.root, out=args.out, **options)
    except (DataValidationError, ValueError, TypeError) as e:
        raise CliError(str(e)) from None
    counts = ", ".join(
        f"{k}: {len(v)}" for k, v in datalist.items() if isinstance(v, list) and v and isinstance(v[0], dict)
    )
    print(f"wrote {args.out} ({counts})")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from mimtl.demo import run_demo

    rows = run_demo(args.out)
    return EXIT_OK if all(r.ok for r in rows) else EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    from mimtl import __version__

    p = argparse.ArgumentParser(
        prog="mimtl",
        description="mimtl: MONAI bundles for learning from scarce medical data. "
        "Verbs wrap MONAI's bundle API (python -m monai.bundle) with the same configs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"mimtl {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("list", help="bundles found, their version and whether weights are present")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("info", help="what a bundle does, its inputs/outputs and files")
    s.add_argument("bundle")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("run", help="run a bundle config (train, evaluate, inference, ...)")
    s.add_argument("bundle")
    s.add_argument("config", nargs="?", default="inference", help="config name (default: inference)")
    s.add_argument(
        "--set",
        action="append",
        metavar="ID=VALUE",
        help="override a config id, e.g. --set train::trainer::max_epochs=2 (repeatable; value is YAML)",
    )
    s.add_argument(
        "--override",
        action="append",
        metavar="FILE",
        help="an override config file merged last (e.g. from another lab; audited first)",
    )
    s.add_argument(
        "--trust",
        action="store_true",
        help="skip the audit of configs, overrides and weights (see docs/sharing_configs.md)",
    )
    s.add_argument("--allow-new-keys", action="store_true", help="let --set add ids the config does not have")
    s.add_argument(
        "--resume",
        action="store_true",
        help="train: continue from the checkpoint a killed run left in ckpt_dir (resume.pt); none: start fresh",
    )
    s.add_argument("--nproc", type=int, default=1, help="processes for multi-GPU configs (torchrun; gloo on CPU)")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("verify", help="the model-zoo checks: files, metadata schema, properties, I/O, TorchScript")
    s.add_argument("bundles", nargs="*", metavar="BUNDLE")
    s.add_argument("--all", action="store_true", help="verify every bundle found")
    s.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser("export", help="export a bundle's network with its weights")
    s.add_argument("bundle")
    s.add_argument(
        "--format",
        choices=("torchscript", "onnx", "monai-config"),
        default="torchscript",
        help="monai-config: regenerate configs/inference.json (for monai.bundle.load) from the YAML",
    )
    s.add_argument("--out", help="output file (default: models/model.ts or models/model.onnx in the bundle)")
    s.add_argument("--trace", action="store_true", help="trace instead of trying to script first")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser(
        "results", help="evaluate a bundle and check (or --write) the figures its metadata and README publish"
    )
    s.add_argument("bundle")
    s.add_argument("--write", action="store_true", help="write eval_metrics, thresholds and the README table")
    s.set_defaults(func=cmd_results)
    s = sub.add_parser("domain", help="the out-of-domain guard: fit it on a bundle's training data, report how it does")
    dom = s.add_subparsers(dest="domain_command", metavar="DOMAIN_COMMAND", required=True)
    d = dom.add_parser("fit", help="fit models/domain.pt on the training split, calibrate it on the validation split")
    d.add_argument("bundle")
    d.add_argument("--coverage", type=float, default=0.95, help="share of in-domain films that pass (default: 0.95)")
    d.add_argument("--datalist", help="datalist JSON (default: the train config's, the demo data)")
    d.add_argument("--out", help="file to write (default: models/domain.pt in the bundle; a .json beside it)")
    d.set_defaults(func=cmd_domain_fit)
    d = dom.add_parser("report", help="score the test split and foreign inputs; check (or --write) the README table")
    d.add_argument("bundle")
    d.add_argument("--write", action="store_true", help="write the README table and docs/domain_scores.png")
    d.set_defaults(func=cmd_domain_report)
    s = sub.add_parser("audit", help="list the constructs of config files that are not on the audit's allowlist")
    s.add_argument("files", nargs="+", metavar="CONFIG")
    s.set_defaults(func=cmd_audit)

    s = sub.add_parser("check-data", help="check every file of a datalist JSON before training")
    s.add_argument("datalist")
    s.add_argument("--list-key", default="training", help="which list of the datalist (default: training)")
    s.add_argument("--keys", nargs="+", default=["image"], help="keys whose values are files (default: image)")
    s.add_argument("--base-dir", help="folder relative paths start from (default: the datalist's folder)")
    s.add_argument("--data-root", help="refuse any file outside this folder (a datalist from elsewhere)")
    s.add_argument(
        "--deep", action="store_true", help="decode every file (finds damaged pixels, NaN/Inf); default: headers"
    )
    s.add_argument(
        "--shallow", action="store_true", help=argparse.SUPPRESS
    )  # deprecated: header checks are the default
    s.set_defaults(func=cmd_check_data)

    s = sub.add_parser("data", help="build the embedded demo data, fetch its sources, adapt public data sets")
    data = s.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    d = data.add_parser(
        "demo", help="build a demo data set from real anatomy (public layout + datalist + contact sheet)"
    )
    d.add_argument(
        "task",
        help="classification, chexpert5 (CheXpert's 5 labels, randomized films: the classifier's data), landmarks, "
        "landmarks_randomized (the landmark model's data), segmentation, segmentation_randomized (the lung "
        "model's data), segmentation_other_acquisition (its unseen set), brain, or all",
    )
    d.add_argument("--out", required=True, help="output folder (with 'all': one subfolder per task)")
    d.add_argument("--n", type=int, help="number of images/cases (default: the builder's)")
    d.add_argument("--seed", type=int, default=0, help="the same seed gives the same bytes (default: 0)")
    d.add_argument(
        "--style",
        choices=("default", "randomized", "other_acquisition"),
        help="film style of the chest tasks (docs/simulator.md; default: the task's, 'randomized' for chexpert5 "
        "and landmarks_randomized, else 'default')",
    )
    d.set_defaults(func=cmd_data_demo)
    d = data.add_parser("fetch", help="download and verify the source volumes into the cache ($MIMTL_CACHE_DIR)")
    d.set_defaults(func=cmd_data_fetch)
    d = data.add_parser("adapt", help="turn a public data set in its published layout into a MONAI datalist JSON")
    d.add_argument("name", help="chexpert, chestxray14, pneumonia, isbi2015, hand_atlas, shenzhen, jsrt, brats")
    d.add_argument("root", help="the folder the data set was unpacked into")
    d.add_argument("--out", required=True, help="datalist JSON to write (paths are stored relative to it)")
    d.add_argument("--option", action="append", metavar="KEY=VALUE", help="adapter option, e.g. uncertain=ones")
    d.set_defaults(func=cmd_data_adapt)

    s = sub.add_parser("demo", help="evaluate + infer with every shipped bundle on the demo data; one table")
    s.add_argument("--out", default="demo_output", help="folder for outputs and pictures (default: demo_output)")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as e:
        print(f"mimtl {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
