"""The side-by-side benchmark's stage walls: timed from DVC's output as it comes, compared stage by stage."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.side_by_side import compare_stages, run_logged, stage_walls

FAKE_REPRO = """
import sys, time
sys.stdout.write("Running stage 'check':\\n"); sys.stdout.flush(); time.sleep(0.3)
sys.stdout.write("epoch 1/2:  50%\\repoch 1/2: 100%\\n"); sys.stdout.flush()
sys.stdout.write("Running stage 'train@nlp-full':\\n"); sys.stdout.flush(); time.sleep(0.1)
"""


def test_stage_walls_run_until_the_next_stage_or_the_end() -> None:
    assert stage_walls([("check", 1.0), ("fetch@nlp", 3.5), ("compare", 10.0)], 12.0) == \
        {"check": 2.5, "fetch@nlp": 6.5, "compare": 2.0}
    assert stage_walls([], 5.0) == {}


def test_run_logged_times_each_stage_and_keeps_the_output_byte_for_byte(tmp_path: Path) -> None:
    log = tmp_path / "repro.log"
    returncode, walls = run_logged([sys.executable, "-c", FAKE_REPRO], tmp_path, {}, log)
    assert returncode == 0
    assert list(walls) == ["check", "train@nlp-full"]
    assert 0.3 <= walls["check"] < 2.0 and 0.1 <= walls["train@nlp-full"] < 2.0
    assert log.read_bytes() == (b"Running stage 'check':\nepoch 1/2:  50%\repoch 1/2: 100%\n"
                                b"Running stage 'train@nlp-full':\n")


def test_compare_stages_lists_the_slower_ones(tmp_path: Path) -> None:
    before, after = tmp_path / "before", tmp_path / "after"
    for folder, walls in ((before, {"check": None, "extract@nlp": 50.0, "train@nlp-full": 100.0}),
                          (after, {"check": 4.0, "extract@nlp": 25.0, "train@nlp-full": 110.0, "compare": 3.0})):
        folder.mkdir()
        (folder / "stages.json").write_text(json.dumps(walls))
    out = compare_stages(before, after)
    assert out["slower_stages"] == ["train@nlp-full"]
    rows = {r["stage"]: r for r in out["stage_seconds"]}
    assert list(rows) == ["check", "extract@nlp", "train@nlp-full", "compare"]
    assert rows["extract@nlp"]["speedup"] == 2.0
    assert rows["check"]["speedup"] is None and rows["compare"]["before"] is None
    (after / "stages.json").unlink()
    assert compare_stages(before, after) == {}
