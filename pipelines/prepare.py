"""Stage ``prepare@DOMAIN``: a ``DatasetDict`` with one label map, a seeded stratified validation split,
and the data audit (``reports/audit/<domain>.json``)."""

from __future__ import annotations

from pipelines.common import parse_stage, run_main, staged_output
from shared import paths
from shared.data.audit import attach_load_report, audit_splits, drop_cross_split_duplicates
from shared.data.sources import SourceError
from shared.data.splits import check_splits, finalize_splits
from shared.files.atomic import write_json


def main(argv: list[str] | None = None) -> int:
    """Run the stage."""
    stage = parse_stage(argv, __doc__ or "")
    domain, data = stage.domain, stage.dp.data
    try:
        dd = domain.load_splits(paths.raw_dir(domain.name))
    except KeyError as err:  # a bare "Key 'label' not found" from datasets: say whose data and where
        raise SourceError(f"domain '{domain.name}': reading {paths.raw_dir(domain.name)} failed: "
                          f"missing key {err}") from err
    dd = finalize_splits(dd, data, stage.params.seed)
    report = attach_load_report(audit_splits(dd, domain.modality), domain)
    report["dedupe_across_splits"] = data.dedupe_across_splits
    if data.dedupe_across_splits:
        dd, removed = drop_cross_split_duplicates(dd, report)
        report["removed_from_train"] = removed
        check_splits(dd)
    report["sizes"] = {split: len(ds) for split, ds in dd.items()}
    with staged_output(paths.prepared_dir(domain.name)) as tmp:
        dd.save_to_disk(str(tmp))
    write_json(paths.audit_file(domain.name), report)
    print(f"prepared {domain.name}: {report['sizes']}")
    return 0


if __name__ == "__main__":
    run_main(main)
