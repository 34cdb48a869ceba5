"""``python -m pipelines.arch NAME [NAME...]``: parameter and MAC report (``transferlab arch`` runs this)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from pipelines.common import run_main
from shared.models.arch import MODEL_NAMES, compare, to_markdown, write_report

DEFAULT_OUT = Path("reports/arch")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line (``all`` expands to every known model)."""
    parser = argparse.ArgumentParser(prog="transferlab arch", description=__doc__)
    parser.add_argument("names", nargs="+", metavar="NAME", choices=[*MODEL_NAMES, "all"],
                        help=f"models to report ({', '.join(MODEL_NAMES)}) or 'all' for the comparison")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for arch.md and arch.json")
    parser.add_argument("--image-size", type=int, default=224, help="square input size in pixels")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build the report, print its markdown, write ``<out>/arch.md`` and ``<out>/arch.json``."""
    args = parse_args(argv)
    names = list(MODEL_NAMES) if "all" in args.names else list(dict.fromkeys(args.names))
    torch.manual_seed(0)
    report = compare(names, args.image_size)
    print(to_markdown(report), end="")
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    run_main(main)
