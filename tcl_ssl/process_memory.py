"""This process's resident memory: current, peak, and a reset of the peak (Linux); used by runs and benchmarks."""

from __future__ import annotations

import os


def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak resident set size to its current one (Linux >= 4.0); whether it could."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def current_rss() -> int:
    """This process's resident set size in bytes (0 where /proc is not there)."""
    return _status_bytes("VmRSS") or 0


def peak_rss() -> int:
    """This process's peak resident set size in bytes (since the last reset, where there was one)."""
    peak = _status_bytes("VmHWM")
    if peak is not None:
        return peak
    import resource  # POSIX only; the lifetime peak

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if os.uname().sysname == "Darwin" else peak * 1024
