"""The benchmark harness's verdicts: the issue-5 targets and what limits a missed one, computed
from the measured numbers of a report (never typed by hand)."""

from __future__ import annotations

#: Issue-5 targets: (task, baseline, PSNR margin in dB, SSIM must also be higher).
TARGETS = (
    ("ct23", "FISTA-TV", 3.0, True),
    ("ct8", "FISTA-TV", 3.0, False),
    ("mri8", "FISTA-TV", 2.0, False),
    ("inpaint70", "biharmonic", 2.0, False),
)


def targets(tasks: dict) -> list[dict]:
    """Evaluate the issue-5 targets from the measured means (never typed by hand)."""
    rows = []
    for task, base, margin, need_ssim in TARGETS:
        if task not in tasks:
            rows.append({"task": task, "status": "not run"})
            continue
        m = tasks[task]["methods"]
        b = m[base]
        for method in ("invdiff main", "invdiff fast"):
            d = m[method]
            gap = d["psnr"]["mean"] - (b["psnr"]["mean"] + margin)
            ssim_ok = d["ssim"]["mean"] > b["ssim"]["mean"]
            met = gap >= 0 and (ssim_ok or not need_ssim)
            rows.append(
                {
                    "task": task,
                    "method": method,
                    "baseline": base,
                    "margin_db": margin,
                    "needs_higher_ssim": need_ssim,
                    "psnr_gain_db": d["psnr"]["mean"] - b["psnr"]["mean"],
                    "gap_to_target_db": gap,
                    "ssim_higher": ssim_ok,
                    "met": met,
                }
            )
    return rows


def limits(report: dict) -> list[str]:
    """Return Markdown lines on what limits each missed target, computed from the report.

    Two measured diagnoses per task: (1) sampler budget: the best PSNR of the NFE sweep against
    the baseline on the same first test images (if more network evaluations close the gap, the
    sampler budget limits; if not, the model or the strategy does); (2) Monte Carlo: how much
    the posterior mean of the samples gained over a single sample (more samples gain less than
    that again).
    """
    missed = dict.fromkeys(t["task"] for t in report["targets"] if t.get("met") is False)
    if not missed:
        return []
    steps = report["run"]["model"].get("training_steps")
    lines = [
        "",
        "### What limits the missed targets (computed from the numbers in this report)",
        "",
        f"Model: `{report['run']['model']['path']}`, {steps} training steps; every invdiff "
        "figure here is bounded by it.",
        "",
    ]
    by_task = {t["task"]: t for t in report["targets"] if t.get("met") is False}
    for task in missed:
        t, methods = by_task[task], report["tasks"][task]["methods"]
        base = methods[t["baseline"]]["per_image"]["psnr"]
        parts = []
        rows = [r for r in report["sweep"] if r["task"] == task and "psnr" in r]
        if rows:
            best = max(rows, key=lambda r: r["psnr"]["mean"])
            k = len(best["per_image"]["psnr"])
            gain = best["psnr"]["mean"] - sum(base[:k]) / k
            verdict = (
                "more network evaluations reach the target there: the sampler budget limits"
                if gain >= t["margin_db"]
                else "even the best budget stays short: the model (or the strategy) limits"
            )
            parts.append(
                f"sweep: best {best['strategy']} at {best['nfe']} NFE, {best['psnr']['mean']:.2f}"
                f" dB on the first {k} test images vs {t['baseline']} {sum(base[:k]) / k:.2f} dB"
                f" on the same images ({gain:+.2f} dB, needed {t['margin_db']:+.1f}); {verdict}"
            )
        else:
            parts.append("not in the NFE sweep")
        for method in ("invdiff main", "invdiff fast"):
            m = methods[method]
            mc = m["psnr"]["mean"] - m["sample_psnr"]["mean"]
            parts.append(
                f"{method}: the mean of {m['samples']} samples is {mc:+.2f} dB over one sample"
            )
        lines.append(f"- **{task}**: " + "; ".join(parts) + ".")
    return lines
