"""Stage ``check``: validate the whole ``params.yaml`` on every ``dvc repro`` (``always_changed``).

The other stages list only the params keys they read, so with the pipeline up to date DVC runs none of
them and a typo no stage reads (``definitely_not_a_key: 1``) would pass unseen. This stage always runs,
validates every section (also those of domains not in ``domains``), and exits 2 naming the key. It then
fills in the defaults of own-data sections written with ``data`` alone and writes a list of regimes out as
the mapping (DVC refuses a stage whose params keys are missing; :func:`domains.own.add.fill_sections`),
points ``data/sources/<domain>`` at each domain's source (:func:`shared.data.domain.link_source`: the
plugin's code, or the user's files), which the later stages depend on, and reconciles the MLflow store
(stale RUNNING runs of dead processes), which a ``dvc repro`` served from the run cache would otherwise
never do.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from domains.own.add import fill_sections
from pipelines.common import reconcile_tracking, run_main
from shared import paths
from shared.config import ParamsError, load_params
from shared.data.domain import link_source


def main(argv: list[str] | None = None) -> int:
    """Validate the params file; 0 when valid, 2 (message on stderr) when not."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=None, help="params file (default: params.yaml at the root)")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params or paths.params_file())
    except ParamsError as err:
        print(f"check: {err}", file=sys.stderr)
        return 2
    file = Path(args.params) if args.params else paths.params_file()
    for filled in fill_sections(file, params):  # DVC refuses a stage whose params keys are missing
        print(f"check: filled in the defaults of {filled} in {file}")
    for name in params.domains:  # the links dvc.yaml's stages depend on (plugin code, or the user's files)
        link_source(params.domain_class(name)(params.domain(name)))
    reconcile_tracking()
    print(f"check: params valid (domains {params.domains}, sections {sorted(params.sections)})")
    return 0


if __name__ == "__main__":
    run_main(main)
