"""Helpers the memory benchmarks share (they run as scripts, so this sits beside them)."""

from __future__ import annotations


def rss(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes (``/proc/PID/status`` VmRSS); 0 if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
