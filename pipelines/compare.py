"""Stage ``compare``: every domain x regime in one table (``reports/comparison.{json,md,png}``)."""

from __future__ import annotations

import argparse

from shared import paths
from shared.atomic import atomic_path, write_json
from shared.config import load_params
from shared.reporting import bar_chart, collect, markdown_table


def main(argv: list[str] | None = None) -> int:
    """Run the stage."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default=None)
    args = parser.parse_args(argv)
    params = load_params(args.params or paths.params_file())
    files = [paths.metrics_file(d, r) for d in params.domains for r in params.regimes]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise SystemExit(f"compare: metrics missing for {missing}; run the evaluate stages first")
    rows = collect(files)
    out = paths.reports_dir()
    write_json(out / "comparison.json", rows)
    with atomic_path(out / "comparison.md") as tmp:
        tmp.write_text("# transferlab comparison (test split)\n\n" + markdown_table(rows) + "\n")
    with atomic_path(out / "comparison.png") as tmp:
        bar_chart(rows, tmp.with_suffix(".png"))
        tmp.with_suffix(".png").replace(tmp)
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
