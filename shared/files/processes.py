"""Whether a process still runs, for locks and staging folders left by a process that died (Linux ``/proc``;
elsewhere ``os.kill(pid, 0)`` is all that is known)."""

from __future__ import annotations

import os
from pathlib import Path


def process_start(pid: int) -> str | None:
    """A boot-unique start stamp of ``pid`` (Linux ``/proc``); None if unknown or not running."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    if fields[0] == "Z":  # a zombie has exited
        return None
    return f"{boot_id}:{fields[19]}"  # field 22 of stat: start time in clock ticks since boot


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not Path("/proc").is_dir() or process_start(pid) is not None
