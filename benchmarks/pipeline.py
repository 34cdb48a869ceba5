"""(e) The default pipeline per domain, end to end: read from the lead's timed full run.

The run's log (``/tmp/fullrun.log`` unless ``--fullrun-log`` says otherwise) has one line
``END <domain> <seconds> s`` per finished domain. Without that log nothing is measured here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from benchmarks.common import write_result

END = re.compile(r"^END\s+(\S+)\s+([0-9.]+)\s*s\b", re.MULTILINE)
DEFAULT_LOG = Path("/tmp/fullrun.log")


def run(log: Path = DEFAULT_LOG) -> dict[str, Any]:
    text = log.read_text(errors="replace") if log.is_file() else ""
    domains = {name: float(seconds) for name, seconds in END.findall(text)}
    result: dict[str, Any] = {"settings": {"source": str(log), "params": "the repository's params.yaml"},
                              "domain_seconds": domains}
    if not domains:
        result["pending"] = (f"no 'END <domain> <seconds> s' lines in {log}" if log.is_file()
                             else f"{log} not found") + ": left to the lead's full run"
    else:
        result["total_seconds"] = sum(domains.values())
    write_result("pipeline", result)
    return result
