"""bench_default measures the default against every 200-NFE variant of its knobs."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_default
from benchmarks.common import operator_knobs_line


def test_200_nfe_rows_try_each_operator_knob_with_and_without_what_it_brings():
    default = {"steps": 49, "sigma_start": None, "kappa": None, "relax": None}
    rows = bench_default.settings(default)
    assert rows["default"] == default
    reference = {label: k for label, k in rows.items() if label != "default"}
    assert all(k["steps"] == bench_default.REFERENCE_STEPS for k in reference.values())
    # from noise / from the start level, each with kappa and relax as given or neutral: 2 x 2 x 2
    combos = {(k["sigma_start"], k["kappa"], k["relax"]) for k in reference.values()}
    assert len(reference) == len(combos) == 8
    assert (0.0, 1.0, 1.0) in combos and (None, None, None) in combos
    # a default that already is DiffPIR as published has nothing to take away
    plain = bench_default.settings({"steps": 49, "sigma_start": 0.0, "kappa": 1.0, "relax": 1.0})
    assert len(plain) == 2


def test_operator_knob_line_names_only_the_knobs_every_row_records():
    new = {"ct23": {"sigma_start": 0.05, "kappa": 1.3, "relax": 1.5}}
    assert (
        operator_knobs_line("knobs", new)
        == "knobs (sigma_start / kappa / relax): ct23 0.05 / 1.3 / 1.5."
    )
    old = {**new, "mri4": {"sigma_start": 0.5, "kappa": 1.3}}  # an older report: no relax
    assert operator_knobs_line("knobs", old).startswith("knobs (sigma_start / kappa): ")
    assert operator_knobs_line("knobs", {"ct23": {}}) == ""


def test_reuse_reads_rows_with_the_same_knobs_and_refuses_another_run(tmp_path):
    old_row = {"psnr": 30.0, "nfe": 200, "seconds_per_image": 1.0, "options": {"kappa": 1.3}}
    earlier = {"model": "general", "model_steps": 5, "strategy": "diffpir", "n_images": 4}
    earlier.update(samples=2, command="python benchmarks/bench_default.py")
    earlier["tasks"] = {"ct23": {"200 NFE": old_row, "gap": -1.0, "within": False}}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(earlier))
    report = {k: earlier[k] for k in ("model", "model_steps", "strategy", "n_images", "samples")}
    rows = bench_default.earlier_rows(str(path), {**report, "seed": 0})
    # the old row did not record relax: it ran at relax 1, and is found under that key
    key = bench_default.knobs_key({"kappa": 1.3, "relax": 1.0})
    assert rows["ct23"][key]["psnr"] == 30.0 and rows["ct23"][key]["reused"]
    assert bench_default.knobs_key({"kappa": 1.3, "relax": 1.5}) not in rows["ct23"]
    with pytest.raises(SystemExit, match="--reuse"):
        bench_default.earlier_rows(str(path), {**report, "seed": 1})
