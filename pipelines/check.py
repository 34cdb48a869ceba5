"""Stage ``check``: validate the whole ``params.yaml`` on every ``dvc repro`` (``always_changed``).

The other stages list only the params keys they read, so with the pipeline up to date DVC runs none of
them and a typo no stage reads (``definitely_not_a_key: 1``) would pass unseen. This stage always runs,
validates every section (also those of domains not in ``domains``), and exits 2 naming the key. It then
fills in the defaults of own-data sections written with ``data`` alone and writes a list of regimes out as
the mapping (DVC refuses a stage whose params keys are missing; :func:`domains.own.add.fill_sections`),
points ``data/sources/<domain>`` at each domain's source (:func:`shared.data.domain.link_source`: the
plugin's code, or the user's files), which the later stages depend on, writes each candidate's effective
params and source link (:func:`write_candidates`), and reconciles the MLflow store
(stale RUNNING runs of dead processes), which a ``dvc repro`` served from the run cache would otherwise
never do.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from domains.own.add import fill_sections
from pipelines.common import reconcile_tracking, run_main
from shared import paths
from shared.config import ParamsError, ProjectParams, load_params
from shared.data.domain import link_source, point_link
from shared.files.atomic import atomic_path


def write_candidates(params: ProjectParams) -> list[Path]:
    """For every entry of ``candidates``: ``data/candidates/<domain>/<backbone>.yaml``, the effective params
    of that (domain, candidate) (seed, and the domain's sections with the candidate's model), whose keys its
    extract / train / evaluate stages track (a ``dvc.yaml`` matrix over ``candidates`` cannot name the domain's
    section of params.yaml), and ``<backbone>.source``, a link to the domain's source. A file whose content is
    unchanged is left alone; files of candidates no longer listed are removed. Returns the files written."""
    written, keep = [], set()
    for key, domain in params.candidates.items():
        candidate = key.partition("/")[2]
        dp = params.candidate_params(domain, candidate)
        text = ("# written by the check stage from params.yaml: do not edit (see pipelines/check.py)\n"
                + yaml.safe_dump({"seed": params.seed, **dp.model_dump(mode="json", exclude={"screen"})},
                                 sort_keys=True))
        file = paths.candidate_params_file(domain, candidate)
        link = paths.candidate_source_link(domain, candidate)
        keep |= {file, link}
        if not file.is_file() or file.read_text() != text:
            with atomic_path(file) as tmp:
                tmp.write_text(text)
            written.append(file)
        point_link(link, paths.source_link(domain).resolve())
    for top, dirs, files in os.walk(paths.root() / "data" / "candidates", topdown=False):  # links not followed
        for entry in [*files, *dirs]:
            path = Path(top) / entry
            if path.is_symlink() or path.is_file():
                if path not in keep:
                    path.unlink()
            elif not any(path.iterdir()):
                path.rmdir()
    return written


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
    write_candidates(params)
    reconcile_tracking()
    print(f"check: params valid (domains {params.domains}, sections {sorted(params.sections)})")
    return 0


if __name__ == "__main__":
    run_main(main)
