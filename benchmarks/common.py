"""Shared benchmark plumbing: the machine description, timing, and writing results (into
``RESULTS``, ``benchmarks/results/``, unless a script names another folder)."""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def machine(threads: int) -> dict:
    """Return what the figures were measured on."""
    import torch

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": threads,
        "python": platform.python_version(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def operator_knobs_line(intro: str, options: dict[str, dict]) -> str:
    """Return "INTRO (sigma_start / kappa / ...): key a / b / ..., ..." for the operator-dependent
    knobs (``strategies.OPERATOR_KNOBS``) that every row of ``options`` ({row key: the options a
    solve ran with}) records (older reports lack the later knobs), or "" when there are none."""
    from invdiff.guidance.strategies import OPERATOR_KNOBS

    knobs = [k for k in OPERATOR_KNOBS if all(o.get(k) is not None for o in options.values())]
    if not options or not knobs:
        return ""
    rows = (f"{key} " + " / ".join(f"{o[k]:.3g}" for k in knobs) for key, o in options.items())
    return f"{intro} ({' / '.join(knobs)}): " + ", ".join(rows) + "."


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Return the median wall time of fn() in milliseconds over ``repeats`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


_ABSOLUTE = re.compile(r"(?<![\w.:/])/(?:[\w.+-]+/)+([\w.+-]+)")


def portable(text: str) -> str:
    """Replace absolute paths by <path>/NAME: committed results name no machine's folders."""
    return _ABSOLUTE.sub(r"<path>/\1", text)


def write_results(name: str, report: dict, markdown: str, results: Path = RESULTS) -> None:
    """Write NAME.json and NAME.md into the folder ``results`` (atomically), absolute paths made
    portable."""
    from invdiff.atomic import atomic_path

    results.mkdir(exist_ok=True)
    texts = ((".json", json.dumps(report, indent=1) + "\n"), (".md", markdown))
    for suffix, text in ((sfx, portable(t)) for sfx, t in texts):
        with atomic_path(results / f"{name}{suffix}") as tmp:
            tmp.write_text(text)
    print(f"wrote {results / name}.json and .md")
