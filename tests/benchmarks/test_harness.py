"""The benchmark harness end to end on a tiny configuration, its data sets and the report writer."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from benchmarks import datasets, harness, report
from benchmarks.harness_config import tiny_config, tiny_model
from benchmarks.harness_report import markdown
from benchmarks.harness_tasks import main_options, sample


@pytest.fixture
def tiny(tmp_path):
    """A tiny harness run (3 tasks, 2 images at 32 x 32, untrained network) into tmp_path."""
    cfg = tiny_config()
    cfg.tasks = ["ct23", "mri8", "inpaint70"]
    cfg.data_dir = str(tmp_path / "data")
    model, _ = tiny_model(cfg.size)
    out = harness.run(cfg, model, command="pytest tiny run", results=tmp_path / "results")
    return cfg, out, tmp_path / "results"


def test_harness_end_to_end(tiny):
    cfg, out, results = tiny
    data = json.loads((results / f"{cfg.name}.json").read_text())
    assert set(data["tasks"]) == set(cfg.tasks)
    ct = data["tasks"]["ct23"]["methods"]
    assert {"FBP", "FISTA-TV", "invdiff main", "invdiff fast"} <= set(ct)
    main = ct["invdiff main"]
    assert len(main["per_image"]["psnr"]) == cfg.n_test
    assert main["samples"] == cfg.samples and main["nfe_per_sample"] > 0
    assert 0 <= main["coverage90"]["mean"] <= 1
    # FISTA-TV's weight comes from the validation table, never from the test set.
    tun = data["tasks"]["ct23"]["tuning"]["FISTA-TV"]
    best = max(tun["validation_table"], key=lambda r: r["mean_psnr"])
    assert tun["weight"] == best["weight"]
    # Targets are computed from the numbers in the same report.
    t = next(r for r in data["targets"] if r["task"] == "ct23" and r["method"] == "invdiff main")
    assert t["psnr_gain_db"] == pytest.approx(main["psnr"]["mean"] - ct["FISTA-TV"]["psnr"]["mean"])
    assert next(r for r in data["targets"] if r["task"] == "ct8")["status"] == "not run"
    assert {r["strategy"] for r in data["sweep"]} == set(cfg.sweep_strategies)
    # replacement needs an exact pseudo-inverse: recorded as not applicable on CT, run on MRI.
    rep = {r["task"]: r for r in data["sweep"] if r["strategy"] == "replacement"}
    assert "not_applicable" in rep["ct23"] and rep["mri8"]["nfe"] > 0
    md = (results / f"{cfg.name}.md").read_text()
    assert "Issue-5 targets" in md and "pytest tiny run" in md
    assert markdown(data) == md  # --render rebuilds the same Markdown from the JSON
    for fig in data["run"]["figures"]:
        assert (results / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_seeds_same_samples(tiny):
    cfg, out, _ = tiny
    model, _ = tiny_model(cfg.size)
    split = datasets.load_split(Path(cfg.data_dir) / "mri8_test.h5")
    opts = main_options("mri", cfg.main_steps)
    a = sample(cfg, model, split["op"], split["y"], "projection", opts)["samples"]
    b = sample(
        dataclasses.replace(cfg, batch=1), model, split["op"], split["y"], "projection", opts
    )["samples"]
    assert (a == b).all()  # sample k of image i depends on its seed only, not on the batch


def test_dataset_checksums_deterministic(tmp_path):
    kw = {"tasks": ["ct23_noise", "mri_vd8", "inpaint_box"], "size": 32, "n_val": 2, "n_test": 3}
    first = datasets.write_all(tmp_path / "a", **kw)
    second = datasets.write_all(tmp_path / "b", **kw)
    assert first == second and len(first) == 6
    (tmp_path / "a" / datasets.SUMS).write_text(datasets.format_sums(first))
    assert all(datasets.check(tmp_path / "b", tmp_path / "a" / datasets.SUMS).values())
    split = datasets.load_split(tmp_path / "a" / "ct23_noise_test.h5")
    assert split["truth"].shape == (3, 1, 32, 32)
    assert split["op"].noise_std > 0 and split["attrs"]["noise_level"] == 0.01


def test_committed_checksums_list_every_task():
    names = set(datasets.read_sums(datasets.DATA / datasets.SUMS))
    assert names == {f"{t}_{s}.h5" for t in datasets.TASKS for s in datasets.SPLITS}


def test_report_assembles_results(tmp_path):
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "harness.md").write_text("# Harness\n\n![fig](harness_ct23.png)\n")
    (results / "operators.md").write_text("# Operators\n\n| a |\n")
    (results / "harness_200nfe.md").write_text("# Old harness run\n")
    (results / "harness_tiny.md").write_text("# Tiny\n")
    text = report.assemble(results, tmp_path)
    assert text.index("## Operators") < text.index("## Harness")
    assert "](benchmarks/results/harness_ct23.png)" in text and "Tiny" not in text
    assert (
        "Old harness run" not in text
        and "[harness_200nfe](benchmarks/results/harness_200nfe.md)" in text
    )


def test_summary_compares_deepinv_at_the_same_nfe(tmp_path):
    def row(package, sampler, nfe, psnr):
        return {
            "package": package,
            "sampler": sampler,
            "target_nfe": nfe,
            "psnr": psnr,
            "variant": "v",
            "physics": "p",
        }

    rows = [row("invdiff", "diffpir", 25, 30.0), row("invdiff", "diffpir", 50, 31.0)]
    rows += [row("deepinv", "DiffPIR", 25, 29.0), row("deepinv", "DiffPIR", 50, 33.0)]
    (tmp_path / "deepinv.json").write_text(json.dumps({"tasks": {"mri8": {"rows": rows}}}))
    lines = [x for x in report.summary(tmp_path).splitlines() if "phantom mri8" in x]
    assert len(lines) == 2
    assert "25 NFE" in lines[0] and "| 30.00 (diffpir) |" in lines[0] and ": 29.00 (" in lines[0]
    assert "50 NFE" in lines[1] and "| 31.00 (diffpir) |" in lines[1] and ": 33.00 (" in lines[1]


def test_render_reproduces_the_committed_markdown():
    results = datasets.DATA.parent / "results"
    for name in ("harness", "harness_200nfe"):
        data = json.loads((results / f"{name}.json").read_text())
        assert markdown(data) == (results / f"{name}.md").read_text(), name


def test_parse_returns_the_results_folder_without_rebinding_a_global(tmp_path):
    from benchmarks import common

    before = common.RESULTS
    cfg, command, render, results = harness.parse(["--tiny", "--out", str(tmp_path)])
    assert results == tmp_path and common.RESULTS == before and render is None
    assert cfg.name == "harness_tiny" and command.endswith(f"--tiny --out {tmp_path}")
    assert harness.parse([])[3] == common.RESULTS


def test_harness_and_cli_give_bit_identical_samples(tiny_model, tmp_path):
    """The harness's sampling and `invdiff solve` are one computation (issue 16): the same
    measurement, model, strategy, options and seed give the same samples, bit for bit."""
    import h5py
    import numpy as np

    from invdiff.core.checkpoint import load_model
    from invdiff.core.score import data_range_prior
    from invdiff.plugins import build_registry, make_plugin_manager
    from tests._cli_helpers import invoke

    truth = np.random.default_rng(1).uniform(size=(3, 1, 16, 16)).astype(np.float32)
    with h5py.File(tmp_path / "in.h5", "w") as f:
        f["image"] = truth
    out = tmp_path / "out.h5"
    args = ["--operator", "mri", "--acceleration", "4", "--simulate", str(tmp_path / "in.h5")]
    opts = ["--steps", "4", "--samples", "2", "--seed", "0", "--no-progress"]
    r = invoke("solve", *args, "--model", tiny_model, "--out", out, *opts)
    assert r.exit_code == 0, r.output
    with h5py.File(out) as f:
        cli, y = f["samples"][:], torch.as_tensor(f["measurement"][:])
    model, config = load_model(tiny_model)
    op = build_registry(make_plugin_manager())["mri"].create((1, 16, 16), acceleration=4)
    cfg = dataclasses.replace(tiny_config(), samples=2, batch=3)
    prior = data_range_prior(model, config, clip=True)  # the solve default
    run = sample(cfg, prior, op, y, "diffpir", {"steps": 4})
    np.testing.assert_array_equal(run["samples"].transpose(0, 1).numpy(), cli)
