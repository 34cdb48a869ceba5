"""The ``transferlab`` command: ``domains``, ``regimes``, ``add``, ``run``, ``compare``, ``predict``, ``export``,
``ui``, ``arch``."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from pipelines.common import DEBUG_ENV, debug_requested, guarded
from shared import paths


def cmd_domains(args: argparse.Namespace) -> int:
    """List the registered domains, with the task and primary metric of their params.yaml section (or of
    their defaults when the file has none)."""
    from shared.config import load_params
    from shared.registry import get_domain, list_domains

    file = Path(args.params) if args.params else paths.params_file()
    params = load_params(file) if file.is_file() else None
    sections = params.sections if params is not None else {}
    for name in list_domains():
        cls = get_domain(name)
        formats = getattr(cls, "formats", ())
        if formats and name not in sections:  # a reader of your own data: see `transferlab add`
            print(f"{name:14s} {cls.modality:6s} {'-':11s} {'-':9s} your own data, format: {', '.join(formats)}")
            continue
        domain = cls(sections[name] if name in sections else cls.Params.model_validate({}))
        print(f"{name:14s} {cls.modality:6s} {domain.task:11s} {domain.primary_metric:9s} "
              f"datasets: {', '.join(cls.datasets)}")
    for name in sorted(set(sections) - set(list_domains())):  # own-data sections
        assert params is not None
        cls = params.domain_class(name)
        domain = cls(sections[name])
        print(f"{name:14s} {cls.modality:6s} {domain.task:11s} {domain.primary_metric:9s} "
              f"your data: {domain.params.data.format} {domain.params.data.path}")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    """Inspect a folder or table and add it to params.yaml as a domain."""
    from domains.own.add import add_domain

    file = Path(args.params) if args.params else paths.params_file()
    options = {"label_column": args.label_column, "text_column": args.text_column,
               "group_column": args.group_column, "group_pattern": args.group_pattern,
               "split_column": args.split_column, "positive_class": args.positive_class}
    report = add_domain(args.name, Path(args.path), file, fmt=args.format, root=paths.root(), **options)
    print(f"{args.name}: {len(report['classes'])} classes")
    for label, count in sorted(report["classes"].items(), key=lambda kv: -kv[1]):
        print(f"  {label:30s} {count}")
    print(f"splits found: {report['splits']} (missing ones are derived by prepare)")
    if "tokens" in report:
        t = report["tokens"]
        print(f"text length in tokens of the backbone: median {t['median']:.0f}, 95th percentile {t['p95']:.0f} "
              f"(model.max_length {report['max_length']})")
    else:
        w, h = report["width"], report["height"]
        print(f"image size: median {w['median']:.0f}x{h['median']:.0f}, 95th percentile {w['p95']:.0f}x{h['p95']:.0f}")
    if report["dropped"]:
        print(f"dropped: {report['dropped']}")
    print(f"wrote section '{args.name}' to {file} and added it to domains; run `dvc repro`")
    return 0


def cmd_regimes(_: argparse.Namespace) -> int:
    """List the registered regimes."""
    from shared.registry import get_regime, list_regimes

    for name in list_regimes():
        cls = get_regime(name)
        needs = [w for w, on in (("pretrained", cls.pretrained), ("features", cls.needs_features)) if on]
        print(f"{name:10s} {'network' if cls.trains_network else 'fitted':8s} {','.join(needs) or '-':20s} "
              f"{cls.description}")
    return 0


def candidate_of(domain: str, backbone: str | None, params_file: str | None) -> str:
    """``--backbone`` as given, else the domain's first entry in the top-level ``candidates``."""
    from shared.config import load_params

    params = load_params(Path(params_file) if params_file else paths.params_file())
    params.domain_class(domain)  # an unknown name fails here, before anything is fetched or written
    names = params.candidates_of(domain)
    if backbone is None:
        if not names:
            raise ValueError(f"{domain} has no entry in candidates {params.candidates}")
        return names[0]
    if backbone not in names:
        raise ValueError(f"--backbone {backbone!r} is not a candidate of {domain}: {names}")
    return backbone


def cmd_run(args: argparse.Namespace) -> int:
    """One (domain, backbone, regime) outside DVC, through the same stage code (missing inputs are built
    first; the screening too, which must pick the backbone as a finalist for it to train)."""
    from pipelines import evaluate, extract, fetch, prepare, screen, train
    from shared.registry import get_regime

    candidate = candidate_of(args.domain, args.backbone, args.params)
    regime = get_regime(args.regime)
    params = ["--params", args.params] if args.params else []
    common = ["--domain", args.domain, *params]
    own = ["--domain", f"{args.domain}/{candidate}", *params]
    if not paths.raw_dir(args.domain).exists():
        fetch.main(common)
    if not paths.prepared_dir(args.domain).exists():
        prepare.main(common)
    if regime.needs_features and not paths.features_dir(args.domain, candidate).exists():
        extract.main(own)
    if not paths.finalists_dir(args.domain).exists():
        screen.main(common)
    train.main(own + ["--regime", args.regime])
    return evaluate.main(own + ["--regime", args.regime])


def cmd_compare(args: argparse.Namespace) -> int:
    """Rebuild the comparison report (from local files, or from a tracking server with --tracking-uri)."""
    from pipelines import compare

    argv = ["--params", args.params] if args.params else []
    argv += ["--tracking-uri", args.tracking_uri] if args.tracking_uri else []
    return compare.main(argv + (["--out", args.out] if args.out else []))


def model_uri(domain: str, model: str | None, regime: str | None, candidate: str = "") -> str:
    """The model to load: ``--model`` as given, ``--regime``'s logged model on ``candidate`` (its metrics
    JSON's ``model_uri``), or the domain's registered champion."""
    import json

    from shared.serving.registration import CHAMPION, registered_name

    if model:
        return model
    if regime:
        metrics = paths.metrics_file(domain, candidate, regime)
        if not metrics.is_file():
            raise SystemExit(f"transferlab predict: {metrics} missing: run "
                             f"`dvc repro evaluate@{domain}/{candidate}-{regime}`")
        record = json.loads(metrics.read_text())
        if record.get("left_out"):
            raise SystemExit(f"transferlab predict: no model: {record['left_out']}")
        uri = record.get("model_uri")
        if not uri:
            raise SystemExit(f"transferlab predict: {metrics} names no logged model (model_uri); re-run "
                             f"`dvc repro -f evaluate@{domain}/{candidate}-{regime}`")
        return str(uri)
    return f"models:/{registered_name(domain)}@{CHAMPION}"


def cmd_predict(args: argparse.Namespace) -> int:
    """Score inputs with a logged model; CSV to --out or stdout; exit 1 when any input failed."""
    import mlflow

    from shared.serving.predict import predict_items, read_inputs, write_predictions
    from shared.tracking import open_client

    open_client()  # the project's store (MLFLOW_TRACKING_URI or mlflow.db) for models:/ and runs:/ URIs
    candidate = trained_candidate(args.domain, args.regime, args.backbone) if args.regime else ""
    uri = model_uri(args.domain, args.model, args.regime, candidate)
    model = mlflow.pyfunc.load_model(uri)
    schema = model.metadata.get_input_schema()
    if schema is None or len(schema.input_names()) != 1:
        raise SystemExit(f"transferlab predict: {uri} is not a transferlab model (one input column expected)")
    column = str(schema.input_names()[0])
    items = read_inputs(args.inputs, "image" if column == "image" else "text", column=args.column)
    rows = predict_items(model, items, column, batch_size=args.batch_size, progress=not args.no_progress)
    if args.out:
        with open(args.out, "w", newline="", encoding="utf-8") as f:
            write_predictions(rows, f)
    else:
        write_predictions(rows, sys.stdout)
    failed = [r for r in rows if r.get("error")]
    print(f"transferlab predict: {len(rows) - len(failed)} of {len(rows)} item(s) scored with {uri}"
          + (f"; {len(failed)} failed (see the error column)" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


# MLflow 3's UI shows the GenAI workspace (traces, judges, an assistant) until the user switches; this URL
# parameter opens the model-training one, where each experiment's kind tag and the training runs count
MODEL_TRAINING = "?workflowType=machine_learning"


def ui_start_page(host: str, port: int) -> str:
    """The UI page of the first domain's newest comparison (its parent run, whose description is the
    comparison table), or the UI's home page when ``compare`` has not run."""
    from shared.config import load_params
    from shared.tracking import open_client

    base = f"http://{host}:{port}"
    try:
        client = open_client()
        for domain in load_params(paths.params_file()).domains:
            experiment = client.get_experiment_by_name(domain)
            if experiment is None:
                continue
            runs = client.search_runs([experiment.experiment_id], "tags.run_kind = 'pipeline'", max_results=1,
                                      order_by=["attributes.start_time DESC"])
            if runs:
                return f"{base}/#/experiments/{experiment.experiment_id}/runs/{runs[0].info.run_id}{MODEL_TRAINING}"
    except (OSError, ValueError) as err:
        print(f"transferlab ui: no comparison found ({err})", file=sys.stderr)
    return f"{base}/#/experiments{MODEL_TRAINING}"


def cmd_export(args: argparse.Namespace) -> int:
    """Export a (domain, regime) network package to ONNX and check it with ONNX Runtime on the prepared test
    split against the package's PyTorch probabilities; the check goes to ``<out stem>.check.json``."""
    import onnxruntime
    import torch
    from datasets import load_from_disk

    from shared.files.atomic import write_json
    from shared.regimes.base import PACKAGE
    from shared.serving.onnx import TOLERANCE, OnnxMismatchError, check_onnx, export_onnx
    from shared.serving.package import CARD, raw_inputs

    candidate = trained_candidate(args.domain, args.regime, args.backbone)
    folder = paths.model_dir(args.domain, candidate, args.regime)
    package = folder / PACKAGE
    if not (package / CARD).is_file():
        raise SystemExit(f"transferlab export: {package} is not a model package: run "
                         f"`dvc repro train@{args.domain}/{candidate}-{args.regime}`")
    test_dir = paths.prepared_dir(args.domain) / "test"
    if not test_dir.is_dir():
        raise SystemExit(f"transferlab export: {test_dir} missing: run `dvc repro prepare@{args.domain}`")
    out = Path(args.out) if args.out else folder / "model.onnx"
    export_onnx(package, out)
    try:
        check = check_onnx(package, out, raw_inputs(load_from_disk(str(test_dir))),
                           tolerance=TOLERANCE if args.tolerance is None else args.tolerance)
    except OnnxMismatchError as err:
        out.unlink(missing_ok=True)  # no file that disagrees with its package is left to serve
        raise OnnxMismatchError(f"{err}; {out} removed") from None
    report_file = out.with_name(f"{out.stem}.check.json")
    write_json(report_file, {"domain": args.domain, "backbone": candidate, "regime": args.regime,
                             "format": args.format,
                             "onnx_file": out.name, "split": "test", **check, "torch": torch.__version__,
                             "onnxruntime": onnxruntime.__version__})
    print(f"transferlab export: wrote {out}; ONNX Runtime vs PyTorch on {check['n_items']} test items: max "
          f"absolute probability difference {check['max_abs_diff']:.2e} (tolerance {check['tolerance']:g}); "
          f"check in {report_file}")
    return 0


BACKBONE_HELP = "the candidate backbone (default: the one the domain trained this regime on)"


def trained_candidate(domain: str, regime: str, backbone: str | None) -> str:
    """``--backbone`` as given, else the one candidate of ``domain`` with a trained ``regime`` model package
    (``models/<domain>/<candidate>/<regime>/package``); several or none is an error that names them."""
    from shared.regimes.base import PACKAGE
    from shared.serving.package import CARD

    if backbone:
        return backbone
    base = paths.root() / "models" / domain
    cards = base.glob(f"**/{regime}/{PACKAGE}/{CARD}")
    found = sorted(str(card.parent.parent.parent.relative_to(base)) for card in cards)
    if len(found) == 1:
        return found[0]
    if not found:
        raise SystemExit(f"transferlab: no trained {regime} model of {domain} in {base}: run "
                         f"`dvc repro` (train@{domain}/<backbone>-{regime})")
    raise SystemExit(f"transferlab: {domain} trained {regime} on several backbones {found}; give --backbone")


def add_export_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``export`` sub-command's parser."""
    export = sub.add_parser("export", help="export a trained network to ONNX, checked on the test split",
                            description=cmd_export.__doc__)
    export.add_argument("domain")
    export.add_argument("--regime", required=True)
    export.add_argument("--backbone", default=None, help=BACKBONE_HELP)
    export.add_argument("--format", choices=["onnx"], default="onnx")
    export.add_argument("--out", default=None,
                        help="the .onnx file (default: models/DOMAIN/BACKBONE/REGIME/model.onnx)")
    export.add_argument("--tolerance", type=float, default=None,
                        help="largest allowed probability difference, ONNX Runtime vs PyTorch (default 1e-4)")
    export.set_defaults(func=cmd_export)


def cmd_ui(args: argparse.Namespace) -> int:
    """Start the MLflow UI on the project's store (localhost only unless --host says otherwise).

    Runs of dead processes are marked KILLED first, so the UI shows none of them RUNNING.
    """
    from pipelines.common import reconcile_tracking
    from shared.tracking import tracking_uri

    reconcile_tracking()
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri(),
           "--host", args.host, "--port", str(args.port)]
    print(" ".join(cmd))
    print(f"the comparison: {ui_start_page(args.host, args.port)}")
    return subprocess.call(cmd, env=os.environ.copy())


def cmd_arch(args: argparse.Namespace) -> int:
    """Architecture report (parameters, MACs, Inception 1x1-reduction savings)."""
    from pipelines import arch

    return arch.main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (sub-commands)."""
    parser = argparse.ArgumentParser(prog="transferlab", description=__doc__)
    parser.add_argument("--debug", action="store_true", help=f"show tracebacks (or set {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    domains = sub.add_parser("domains", help="list registered domains")
    domains.add_argument("--params", default=None)
    domains.set_defaults(func=cmd_domains)
    sub.add_parser("regimes", help="list registered regimes").set_defaults(func=cmd_regimes)
    add = sub.add_parser("add", help="add your own image folder or table (csv/jsonl/parquet) as a domain")
    add.add_argument("name", help="the domain's name (a params.yaml section; lower-case)")
    add.add_argument("path", help="<path>/<class>/* or <path>/<split>/<class>/* images, or a table file")
    add.add_argument("--format", choices=["imagefolder", "csv", "jsonl", "parquet"], default=None,
                     help="default: imagefolder for a folder, else the file's suffix")
    add.add_argument("--label-column", default=None)
    add.add_argument("--text-column", default=None)
    add.add_argument("--group-column", default=None, help="e.g. a patient id: splits never share a group")
    add.add_argument("--group-pattern", default=None, help="regex over image file names; group 1 is the group")
    add.add_argument("--split-column", default=None, help="values train / validation / test")
    add.add_argument("--positive-class", default=None, help="binary tasks: the positive class")
    add.add_argument("--params", default=None)
    add.set_defaults(func=cmd_add)
    run = sub.add_parser("run", help="one (domain, backbone, regime) outside DVC")
    run.add_argument("domain")
    run.add_argument("--regime", required=True)
    run.add_argument("--backbone", default=None, help=BACKBONE_HELP)
    run.add_argument("--params", default=None)
    run.set_defaults(func=cmd_run)
    compare = sub.add_parser("compare", help="rebuild the comparison report (reports/index.html)")
    compare.add_argument("--params", default=None)
    compare.add_argument("--tracking-uri", default=None,
                         help="rebuild from this MLflow tracking server instead of metrics/ and models/")
    compare.add_argument("--out", default=None, help="output folder (default: reports/)")
    compare.set_defaults(func=cmd_compare)
    predict = sub.add_parser("predict", help="score files, folders, a table column or stdin with a model",
                             description=cmd_predict.__doc__)
    predict.add_argument("domain")
    predict.add_argument("inputs", nargs="+", metavar="INPUT",
                         help="image/text files, folders, .csv/.jsonl tables, or - for stdin lines")
    which = predict.add_mutually_exclusive_group()
    which.add_argument("--model", default=None,
                       help="an MLflow model URI (default: models:/transferlab-DOMAIN@champion)")
    which.add_argument("--regime", default=None, help="the model evaluate@DOMAIN/BACKBONE-REGIME logged")
    predict.add_argument("--backbone", default=None, help=BACKBONE_HELP + " (with --regime)")
    predict.add_argument("--column", default=None, help="a table's input column (default: image or text)")
    predict.add_argument("--out", default=None, help="CSV file (default: stdout)")
    predict.add_argument("--batch-size", type=int, default=32)
    predict.add_argument("--no-progress", action="store_true", help="no progress bar")
    predict.set_defaults(func=cmd_predict)
    add_export_parser(sub)
    ui = sub.add_parser("ui", help="MLflow UI on the project's store")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(func=cmd_ui)
    arch = sub.add_parser("arch", help="architecture report", add_help=False)
    arch.add_argument("rest", nargs=argparse.REMAINDER)
    arch.set_defaults(func=cmd_arch)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``transferlab`` console script."""
    args = build_parser().parse_args(argv)
    return guarded(lambda: args.func(args), prog="transferlab", debug=debug_requested(args.debug))


if __name__ == "__main__":
    raise SystemExit(main())
