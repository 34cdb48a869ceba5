"""Data-efficiency sweep (opt-in, not part of ``dvc repro``): how many labels does each regime need?

    python -m pipelines.sweep --domain xray [--fractions 0.01 0.1 1.0] [--regimes frozen lora full scratch]
                              [--seeds 0 1 2] [--min-steps 50] [--params sweep-params.yaml] [--out reports/sweep]

Every label fraction x regime x seed is one training run on that share of the prepared train split,
scored with the domain's primary metric (:mod:`shared.sweep.run` says how; the frozen probe reads the
*existing feature cache*, so run ``extract`` first).

Writes ``<out>/<domain>.json`` (every point, mean / min / max over seeds per fraction, and the crossover:
the number of labelled examples from which a fine-tuning regime's mean stays above the frozen probe's,
interpolated in log-space between the bracketing fractions) and ``<out>/<domain>.png`` (metric vs number
of labelled examples, one line per regime, min-max band over seeds). The JSON is rewritten after every
point; a re-run with the same settings skips the points it already holds (``--no-resume`` starts over).
Each point is an MLflow run (experiment ``<domain>-sweep``) nested under one parent run per sweep.
Defaults come from the ``sweep`` section of the params file (:class:`shared.config.SweepParams`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.common import parse_stage, run_main
from shared import paths
from shared.config import ParamsError, SweepParams
from shared.sweep.curves import PROBE
from shared.sweep.run import run_sweep


def resolve_settings(base: SweepParams, args: argparse.Namespace) -> SweepParams:
    """The params file's ``sweep`` section with the command-line overrides, validated again."""
    update = {k: v for k, v in (("fractions", args.fractions), ("regimes", args.regimes), ("seeds", args.seeds),
                                ("min_steps", args.min_steps)) if v is not None}
    try:
        return SweepParams.model_validate({**base.model_dump(), **update})
    except ValueError as err:
        raise ParamsError(f"sweep settings: {err}") from None


def main(argv: list[str] | None = None) -> int:
    """Run the sweep."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--fractions", type=float, nargs="+", default=None)
    parser.add_argument("--regimes", nargs="+", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--min-steps", type=int, default=None, help="override sweep.min_steps")
    parser.add_argument("--params", default=None, help="params file (default: params.yaml at the root)")
    parser.add_argument("--out", default=None, help="output folder (default: reports/sweep at the root)")
    parser.add_argument("--no-resume", action="store_true", help="recompute points already in the JSON")
    args = parser.parse_args(argv)
    stage = parse_stage(["--domain", args.domain] + (["--params", args.params] if args.params else []),
                        __doc__ or "")
    backbone = stage.dp.model.name  # the sweep trains the domain's own backbone, on its extracted features
    if backbone not in stage.params.candidates_of(args.domain):
        raise ValueError(f"sweep {args.domain}: its backbone {backbone} ({args.domain}.model) is not in candidates "
                         f"{stage.params.candidates_of(args.domain)}, so no stage extracts its features")
    cfg = resolve_settings(stage.params.sweep, args)
    out_dir = Path(args.out) if args.out else paths.reports_dir() / "sweep"
    report = run_sweep(stage.domain, cfg, out_dir, tags=stage.tags("sweep"), resume=not args.no_resume)
    for regime, cross in report["crossover"].items():
        print(f"sweep {stage.domain.name}: {regime} vs {PROBE}: {cross['status']}"
              + (f" at ~{cross['n_train']} labelled examples" if cross["n_train"] is not None else ""))
    return 0


if __name__ == "__main__":
    run_main(main)
