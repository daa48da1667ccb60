"""Load model files in a fresh process and report, as JSON on stdout, what each load did.

    python tests/crafted_load.py FILE...

Used by tests/test_io.py: whether a crafted file imports a module, and how much memory and time
its refusal takes, are only measured faithfully in a process that has loaded nothing else. For
each file the report gives the outcome (``"loaded"`` or the exception's type: even ``SystemExit``
is caught, so that one file cannot hide the others), the load's wall time, the modules it added
to ``sys.modules``, and the process's peak resident memory before it (``peak_before_kib``) and
after it (``peak_kib``); ``rss_before_kib`` is the resident memory before the first load (memory
figures are None where /proc is missing). Before each load the peak is reset to the resident
memory, where Linux allows it, so that ``peak_kib - peak_before_kib`` is what that load added at
its peak; where it does not, ``peak_before_kib`` is the resident memory before the load, and the
difference an upper bound.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import torch

import genvae


def memory_kib(field: str) -> int | None:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of this process, in KiB; None off Linux.

    Not ``ru_maxrss``: Linux carries it over from the parent across ``exec``, so a child of a large
    test process would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Reset ``VmHWM`` to the resident memory now (``/proc/self/clear_refs``, Linux 4.0 and later)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def try_load(path: str) -> dict[str, Any]:
    modules = set(sys.modules)
    peak_before = memory_kib("VmHWM") if reset_peak() else memory_kib("VmRSS")
    start = time.perf_counter()
    try:
        genvae.load(path)
        outcome, message = "loaded", ""
    except BaseException as err:  # noqa: B036 - SystemExit too: a file must not end the process
        outcome, message = type(err).__name__, str(err)
    return {
        "file": path,
        "outcome": outcome,
        "message": message,
        "seconds": time.perf_counter() - start,
        "new_modules": sorted(set(sys.modules) - modules),
        "peak_before_kib": peak_before,
        "peak_kib": memory_kib("VmHWM"),
    }


def main(paths: list[str]) -> None:
    torch.set_num_threads(1)
    report = {"rss_before_kib": memory_kib("VmRSS"), "results": [try_load(path) for path in paths]}
    report["main_imported"] = "genvae.__main__" in sys.modules
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
