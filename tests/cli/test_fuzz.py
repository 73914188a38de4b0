"""Issue 18's fuzz matrix: bad options, files, paths, faults, plugins and signals across every
command. Each case is one row of a table below; every row must end in exit code 2 (130 / 143 for
SIGINT / SIGTERM), exactly one line on stderr naming the problem, nothing on stdout, no traceback,
and every file that existed before (the case's folder and the model's) byte-identical afterwards,
with no file added (no output, no temporary).

Disk full is simulated twice: in-process, by making the HDF5, PNG and torch.save writes fail as
they do on a full disk (ENOSPC; torch raises a RuntimeError there), and, where the tests run as
root and may mount, on a real 64 KiB tmpfs. Broken plugins are entry points added to the real
ones (as in tests/test_plugins.py). Signals need a process of their own; everything else runs
in-process through typer's CliRunner, on the tiny model of conftest.py.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import pickle
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from invdiff.hookspecs import hookimpl
from tests._cli_helpers import assert_user_error, invoke

HUGE = str(10**12)
I64 = str(2**63)
GROUP = "GROUP"  # an HDF5 group where a dataset is expected
HUGE_DATASET = "HUGE_DATASET"  # a declared 4 TiB dataset (the file itself stays tiny)
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def _phantoms(n: int, size: int = 16) -> np.ndarray:
    from invdiff.data.phantoms import make_phantoms

    return make_phantoms(n, size, seed=3)[0]


IMAGES = _phantoms(8)
LABELS = np.array([0, 1] * 4, np.int64)
IMAGE = {"image": IMAGES[:1]}
TRAIN = {"images": IMAGES, "labels": LABELS}
BIG = {"images": _phantoms(2, 32)}
MASKING = {"operator": "masking"}
Y = np.zeros((1, 1, 16, 16), np.float32)  # a masking measurement of one 16 x 16 slice


@dataclass
class Case:
    """One row of the matrix: files to create (name -> content), the command line (``@model``:
    the tiny model; ``@t/NAME``: a path in the case's folder) and the words the error names."""

    id: str
    args: list[Any]
    words: tuple[str, ...]
    files: dict[str, Any] = field(default_factory=dict)


# Numeric and choice options of every command -------------------------------------------------

SAMPLE = ["sample", "--model", "@model", "-o", "@t/s.h5", "--no-progress"]
SOLVE = ["solve", "--model", "@model", "-o", "@t/o.h5", "--no-progress"]
SIMULATE = [*SOLVE, "--operator", "masking", "--simulate", "@t/in.h5"]
TRAIN_ARGS = ["train", "@t/train.h5", "-o", "@t/m.pt", "--no-progress", "--steps", "1"]
CLASSIFIER = ["train-classifier", "@t/train.h5", "-o", "@t/c.pt", "--model", "@model"]

OPTIONS: list[tuple[list[str], dict, dict[str, list[str]]]] = [
    (
        SAMPLE,
        {},
        {
            "--samples": ["0", "-1", HUGE, "x"],
            "--steps": ["0", "-3", HUGE, "2.5"],
            "--snr": ["-1", "nan", "inf", "1e300"],
            "--corrector-steps": ["-1", "1000000000", "x"],
            "--rtol": ["0", "-1", "nan", "inf", "1e300"],
            "--label": ["-1", "x"],
            "--scale": ["nan", "inf", "-1", "1e300"],
            "--seed": ["-1", I64, "x"],
            "--batch-size": ["0", "-1", "1000000000"],
            "--threads": ["-1", "1000000000", "x"],
            "--image-size": ["0", "-1", "1000000000"],
            "--sampler": ["magic"],
            "--predictor": ["magic"],
            "--corrector": ["magic"],
            "--device": ["nonsense", "cuda:7", "meta", "cpu:1"],
        },
    ),
    (
        SIMULATE,
        {"in.h5": IMAGE},
        {
            "--steps": ["0", "-1", HUGE, "x"],
            "--snr": ["-1", "nan", "inf", "1e300"],
            "--lambda": ["0", "-1", "nan", "inf", "1e300"],
            "--zeta": ["-1", "nan", "inf", "1e300"],
            "--cg-iters": ["0", "-1", "1000000000", "x"],
            "--sigma-start": ["-1", "nan", "inf", "1e300", "x"],
            "--tv": ["-1", "nan", "inf", "1e300", "x"],
            "--samples": ["0", "-1", HUGE, "x"],
            "--noise": ["-1", "nan", "inf", "1e300"],
            "--seed": ["-1", I64, "x"],
            "--batch-size": ["0", "-1", "1000000000", "x"],
            "--threads": ["-1", "1000000000"],
            "--image-size": ["0", "5", "1000000000"],
            "--strategy": ["magic"],
            "--predictor": ["magic"],
            "--device": ["nonsense"],
        },
    ),
    (
        TRAIN_ARGS,
        {"train.h5": TRAIN},
        {
            "--steps": ["0", "-5", HUGE, "x"],
            "--batch-size": ["0", "-1", "1000000000"],
            "--lr": ["0", "-1", "nan", "inf", "5"],
            "--warmup": ["-1", "x"],
            "--lr-decay-start": ["-1"],
            "--lr-decay-steps": ["-2"],
            "--lr-final": ["0", "1.5", "nan"],
            "--ema-decay": ["-0.1", "1", "nan", "2"],
            "--ckpt-every": ["0", "-1"],
            "--sigma-min": ["0", "-1", "nan", "inf"],
            "--sigma-max": ["-1", "nan", "inf", "1e300"],
            "--p-mean": ["nan", "inf", "100"],
            "--p-std": ["0", "-1", "nan", "inf"],
            "--crop": ["-4", "1000", "x"],
            "--zoom-max": ["0", "nan", "inf", "1000"],
            "--base": ["0", "-1", "1000000"],
            "--res-blocks": ["0", "-1", "100"],
            "--seed": ["-1", I64],
            "--threads": ["-1", "1000000000"],
            "--mult": ["a,b", "0", "-1,2", "", "100000", I64],
            "--attn": ["x", "-4"],
            "--sde": ["magic"],
            "--precond": ["magic"],
            "--noise-dist": ["magic"],
            "--weights": ["magic"],
            "--device": ["nonsense"],
        },
    ),
    (
        [*CLASSIFIER, "--steps", "1"],
        {"train.h5": TRAIN},
        {
            "--steps": ["0", "x"],
            "--batch-size": ["0"],
            "--lr": ["nan", "-1"],
            "--ema-decay": ["1"],
            "--ckpt-every": ["0"],
            "--base": ["0", "1000000"],
            "--res-blocks": ["0"],
            "--seed": ["-1"],
            "--threads": ["-1"],
            "--mult": ["x", "0"],
        },
    ),
    (
        ["data", "phantoms", "@t/d.h5", "--n", "2", "--size", "16"],
        {},
        {
            "--n": ["0", "-1", HUGE, "x"],
            "--size": ["0", "7", "1000000", "x"],
            "--seed": ["-1", I64],
            "--lesion-fraction": ["-0.1", "1.5", "nan"],
            "--scale": ["0", "-1", "1000000000", "x"],
        },
    ),
    (
        ["data", "ellipses", "@t/d.h5", "--n", "2"],
        {},
        {"--n": ["0"], "--size": ["8", "5000"], "--scale": ["0", "300", "x"]},
    ),
    (["data", "deadleaves", "@t/d.h5", "--n", "2"], {}, {"--seed": ["-1"]}),
    (["data", "foam", "@t/d.h5", "--n", "2"], {}, {"--size": ["x"]}),
    (["data", "textures", "@t/d.h5"], {}, {"--n": ["-3"]}),
    (
        ["data", "photos", "@t/d.h5", "--n", "2"],
        {},
        {"--n": ["0"], "--size": ["4", "600"], "--seed": ["-1"], "--split": ["magic"]},
    ),
    (["data", "photos", "@t/d.h5", "--n", "2"], {}, {"--holdout": ["nobody"]}),
    (
        ["data", "mni152", "@t/d.h5"],
        {},
        {"--size": ["0"], "--split": ["magic"], "--contrast": ["t2"]},
    ),
    (["operators", "check", "masking"], {}, {"--seed": ["-1", "x"]}),
]

# An operator's own options on solve's command line (after --operator NAME).
OPERATOR_OPTIONS = {
    "ct_sparse": {
        "--views": ["0", "-3", "x"],
        "--detectors": ["-1", "100000000"],
        "--noise-std": ["-1"],
    },
    "masking": {
        "--fraction": ["-0.5", "2", "nan"],
        "--mask": ["star"],
        "--noise-std": ["nan"],
        "--mask-seed": [I64],
    },
    "mri": {
        "--acceleration": ["0", "-2"],
        "--center-fraction": ["2", "nan"],
        "--mask-seed": [str(2**64)],
    },
    "superres": {"--factor": ["0", "3"]},
    "ct_poisson": {"--i0": ["0", "nan"], "--mu": ["-1"], "--noise-std": ["inf"]},
}


def _option_cases() -> list[Case]:
    cases = []
    for base, files, table in OPTIONS:
        name = " ".join(w for w in base[:2] if not w.startswith(("@", "-")))
        for flag, values in table.items():
            for value in values:
                cases.append(Case(f"{name} {flag} {value}", [*base, flag, value], (flag,), files))
    for op, table in OPERATOR_OPTIONS.items():
        base = [*SOLVE, "--simulate", "@t/in.h5", "--operator", op]
        for flag, values in table.items():
            for value in values:
                words = (flag, op)
                cases.append(
                    Case(f"solve {op} {flag} {value}", [*base, flag, value], words, IMAGE_FILE)
                )
    return cases


IMAGE_FILE = {"in.h5": IMAGE}

# Paths ---------------------------------------------------------------------------------------

EXISTING = b"someone's file"
OBJECTS = np.array([{"a": 1}], dtype=object)
MASK_FILE = ["--mask", "file", "--path", "@t/m.npy"]
ONE_STEP = ["--samples", "1", "--steps", "1"]
HUGE_NET = ["--base", "1024", "--res-blocks", "16", "--mult"]
TWINS_10M = ["--n", "10000000", "--size", "16", "--twins"]  # 9.5 GiB, and twice that with twins
PICKLE = pickle.dumps({"format": "invdiff-score-model/1", "path": Path("/")})


def _npy(arr: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, arr, allow_pickle=True)
    return buffer.getvalue()


def _nan_weights(payload: dict) -> None:
    first = next(iter(payload["state_dict"]))
    payload["state_dict"][first] = payload["state_dict"][first] * float("nan")


def _config(**change):
    """Return a change of a checkpoint's config: ``section={key: value}``."""

    def apply(payload: dict) -> None:
        config = json.loads(payload["config"])
        for section, values in change.items():
            config[section].update(values)
        payload["config"] = json.dumps(config)

    return apply


NAN_MODEL = ("MODEL", _nan_weights)  # the tiny model changed, its checksum dropped
NO_CHANNELS = ("MODEL", _config(image={"channels": 0}))
BAD_SDE = ("MODEL", _config(sde={"name": "magic"}))
ZERO_CHANNELS = ("MODEL", _config(image={"channels": 0}, net={"channels": 0}))  # torch warned
ZERO_SIZE = ("MODEL", _config(image={"size": 0}))  # sample: a traceback from inside the network
TWO_DIRS = {"a/in.h5": IMAGE, "b/in.h5": IMAGE, "outs": "DIR"}
OTHER_SOLVE = ["--operator", "masking", "--simulate", "@t/a/in.h5", "@t/b/in.h5", "-o", "@t/outs"]
# Per command: its command line and files, then (case, more arguments, word, more files).
PATH_GROUPS: dict[str, tuple[list[str], dict, list[tuple[str, list[str], str, dict]]]] = {
    "solve": (
        SIMULATE,
        IMAGE_FILE,
        [
            ("out folder missing", ["-o", "@t/no/o.h5"], "does not exist", {}),
            ("out in a file, not a folder", ["-o", "@t/in.h5/o.h5"], "not a folder", {}),
            ("out folder not writable", ["-o", "/proc/o.h5"], "cannot write", {}),
            ("out is the input", ["-o", "@t/in.h5", "--force"], "input", {}),
            ("out exists", ["-o", "@t/x.h5"], "--force", {"x.h5": EXISTING}),
            ("out is a fifo", ["-o", "@t/f", "--force"], "regular file", {"f": "FIFO"}),
            ("png exists", ["--png", "@t/p.png"], "--force", {"p.png": EXISTING}),
            ("png folder missing", ["--png", "@t/no/p.png"], "does not exist", {}),
            ("png in a file, not a folder", ["--png", "@t/in.h5/p.png"], "not a folder", {}),
            ("png is the input", ["--png", "@t/in.h5", "--force"], "input", {}),
            ("png is out", ["--png", "@t/o.h5"], "--png", {}),
            ("png is a folder", ["--png", "@t/d", "--force"], "regular file", {"d": "DIR"}),
            ("two inputs, out a file", ["@t/b.h5", "-o", "@t/x.h5"], "folder", {"b.h5": IMAGE}),
            ("the same input twice", ["@t/in.h5", "-o", "@t/outs"], "in_invdiff", {"outs": "DIR"}),
            ("model missing", ["--model", "@t/none.pt"], "--model", {}),
            ("model is a folder", ["--model", "@t/d"], "--model", {"d": "DIR"}),
            ("model empty", ["--model", "@t/m.pt"], "corrupt", {"m.pt": b""}),
            ("model is text", ["--model", "@t/m.pt"], "corrupt", {"m.pt": b"x" * 99}),
            ("knob of another strategy", ["--strategy", "dps", "--lambda", "1"], "--lambda", {}),
            (
                "projection --lambda 5",
                ["--strategy", "projection", "--lambda", "5"],
                "--lambda",
                {},
            ),
            ("dps --cg-iters", ["--strategy", "dps", "--cg-iters", "3"], "--cg-iters", {}),
            ("old --sampler, bad value", ["--sampler", "magic"], "--strategy", {}),
            ("an operator twice", ["--operator", "masking"], "twice", {}),
            ("mask file not .npy", [*MASK_FILE], "cannot read", {"m.npy": b"garbage"}),
            ("mask file of objects", [*MASK_FILE], "cannot read", {"m.npy": _npy(OBJECTS)}),
            ("mask file NaN", [*MASK_FILE], "finite", {"m.npy": _npy(np.full((16, 16), np.nan))}),
        ],
    ),
    "solve, shipped any-size model": (
        ["solve", "-o", "@t/o.h5", "--no-progress", "--operator", "masking", "--simulate"],
        {},
        [
            (
                "a 4 x 4 image",
                ["@t/in.h5"],
                "at least 8",
                {"in.h5": {"image": np.zeros((1, 1, 4, 4))}},
            ),
            (
                "a 1 x 1 image",
                ["@t/in.h5"],
                "at least 8",
                {"in.h5": {"image": np.zeros((1, 1, 1, 1))}},
            ),
        ],
    ),
    "solve inputs": (
        SOLVE,
        IMAGE_FILE,
        [
            ("input missing", ["--operator", "masking", "@t/none.h5"], "not found", {}),
            ("input is a folder", ["--operator", "masking", "@t/d"], "folder", {"d": "DIR"}),
            ("no input", ["--operator", "masking"], "no input", {}),
            ("two inputs, one output name", OTHER_SOLVE, "in_invdiff.h5", TWO_DIRS),
            ("unknown operator", ["--operator", "ct_sprase", "@t/in.h5"], "ct_sparse", {}),
            ("operator option first", ["--views", "3", "@t/in.h5"], "--operator", {}),
            ("no value", ["@t/in.h5", "--operator", "mri", "--acceleration"], "--acceleration", {}),
            (
                "second input not HDF5",
                [*OTHER_SOLVE[:3], "@t/in.h5", "@t/b.h5", "-o", "@t/outs"],
                "b.h5",
                {"b.h5": b"junk", "outs": "DIR"},
            ),
        ],
    ),
    "sample": (
        SAMPLE,
        {},
        [
            ("out folder missing", ["-o", "@t/no/s.h5"], "does not exist", {}),
            ("out in a file, not a folder", ["-o", "@t/f/s.h5"], "not a folder", {"f": EXISTING}),
            ("out folder not writable", ["-o", "/proc/s.h5"], "cannot write", {}),
            ("out is the model", ["-o", "@model", "--force"], "input", {}),
            ("out is a folder", ["-o", "@t/d", "--force"], "regular file", {"d": "DIR"}),
            ("out is a fifo", ["-o", "@t/f", "--force"], "regular file", {"f": "FIFO"}),
            ("out is /dev/full", ["-o", "/dev/full"], "regular file", {}),
            ("out exists", ["-o", "@t/x.h5"], "--force", {"x.h5": EXISTING}),
            ("png folder missing", ["--png", "@t/no/p.png"], "does not exist", {}),
            (
                "png in a file, not a folder",
                ["--png", "@t/f/p.png"],
                "not a folder",
                {"f": EXISTING},
            ),
            ("png is out", ["--png", "@t/s.h5"], "--png", {}),
            ("png is the model", ["--png", "@model", "--force"], "input", {}),
            ("model truncated", ["--model", "@t/m.pt"], "corrupt", {"m.pt": "TRUNCATED_MODEL"}),
            ("model is a train state", ["--model", "@t/m.pt"], "checkpoint", {"m.pt": "STATE"}),
            ("model is HDF5", ["--model", "@t/m.h5"], "corrupt", {"m.h5": IMAGE}),
            ("classifier missing", ["--label", "1", "--classifier", "@t/no.pt"], "not found", {}),
            ("unknown option", ["--stepz", "3"], "--stepz", {}),
            ("extra argument", ["extra"], "extra", {}),
            ("flag given a value", ["--force=true"], "--force", {}),
            ("old --n, bad value", ["--n", "0"], "--samples", {}),
            (
                "model has NaN weights",
                ["--model", "@t/m.pt", *ONE_STEP],
                "NaN",
                {"m.pt": NAN_MODEL},
            ),
            (
                "model channels disagree",
                ["--model", "@t/m.pt"],
                "architecture",
                {"m.pt": NO_CHANNELS},
            ),
            ("model of no channels", ["--model", "@t/m.pt"], "channels", {"m.pt": ZERO_CHANNELS}),
            ("model of 0 x 0 images", ["--model", "@t/m.pt"], "size", {"m.pt": ZERO_SIZE}),
        ],
    ),
    "train": (
        TRAIN_ARGS,
        {"train.h5": TRAIN},
        [
            ("data missing", ["@t/none.h5"], "not found", {}),
            ("data is a folder", ["@t/d"], "folder", {"d": "DIR"}),
            ("out is the data", ["-o", "@t/train.h5", "--force"], "input", {}),
            ("out folder missing", ["-o", "@t/no/m.pt"], "does not exist", {}),
            ("out in a file, not a folder", ["-o", "@t/train.h5/m.pt"], "not a folder", {}),
            ("out is a folder", ["-o", "@t/d", "--force"], "regular file", {"d": "DIR"}),
            ("out exists", ["-o", "@t/x.pt"], "--force", {"x.pt": EXISTING}),
            ("files of two sizes", ["@t/big.h5"], "different image shapes", {"big.h5": BIG}),
            ("data is a fifo", ["@t/f"], "regular file", {"f": "FIFO"}),
            ("state exists", [], "--force", {"m.pt.train": EXISTING}),
            ("state is the data", ["@t/m.pt.train"], "input", {"m.pt.train": TRAIN}),
            ("state is a folder", ["--force"], "regular file", {"m.pt.train": "DIR"}),
            ("--resume, out but no state", ["--resume"], "--force", {"m.pt": EXISTING}),
            ("network too large", [*HUGE_NET, "1,2,4,8"], "--base", {}),
        ],
    ),
    "train-classifier": (
        CLASSIFIER,
        {"train.h5": TRAIN},
        [
            ("out is the model", ["-o", "@model", "--force"], "input", {}),
            ("out in a file, not a folder", ["-o", "@t/train.h5/c.pt"], "not a folder", {}),
            ("model of 0 x 0 images", ["--model", "@t/m.pt"], "size", {"m.pt": ZERO_SIZE}),
            ("model missing", ["--model", "@t/none.pt"], "not found", {}),
            ("model of an unknown SDE", ["--model", "@t/m.pt"], "SDE", {"m.pt": BAD_SDE}),
            ("state exists", [], "--force", {"c.pt.train": EXISTING}),
            ("network too large", [*HUGE_NET, "1,8,8,8"], "--base", {}),
        ],
    ),
    "data": (
        ["data", "phantoms", "--n", "2"],
        {},
        [
            ("out folder missing", ["@t/no/d.h5"], "does not exist", {}),
            ("out in a file, not a folder", ["@t/f/d.h5"], "not a folder", {"f": EXISTING}),
            ("out folder not writable", ["/proc/d.h5"], "cannot write", {}),
            ("out is a folder", ["@t/d", "--force"], "regular file", {"d": "DIR"}),
            ("out is a fifo", ["@t/f", "--force"], "regular file", {"f": "FIFO"}),
            ("out exists", ["@t/x.h5"], "--force", {"x.h5": EXISTING}),
            ("out is /dev/full", ["/dev/full"], "regular file", {}),
            ("no out", [], "'out'", {}),
            ("--twins doubles the images", ["@t/d.h5", *TWINS_10M], "--n", {}),
        ],
    ),
    "": (
        [],
        {},
        [
            ("unknown command", ["sampel"], "sampel", {}),
            ("train without --out", ["train", "@t/t.h5"], "--out", {"t.h5": TRAIN}),
            (
                "classifier data missing",
                [*CLASSIFIER[:1], "@t/none.h5", *CLASSIFIER[2:]],
                "not found",
                {},
            ),
        ],
    ),
}
PATHS = [
    Case(f"{group} {name}".strip(), [*base, *more], (word,), {**files, **more_files})
    for group, (base, files, cases) in PATH_GROUPS.items()
    for name, more, word, more_files in cases
]


# HDF5 inputs: dtypes, structures, sizes, values, attributes -----------------------------------


def _strings(n: int = 1) -> np.ndarray:
    return np.array([b"abc"] * n)


def _objects() -> np.ndarray:
    return np.array(["a", "bc"], dtype=h5py.string_dtype())


def _compound() -> np.ndarray:
    return np.zeros(3, dtype=[("a", "f4"), ("b", "i4")])


def _with(arr: np.ndarray, where: tuple, value) -> np.ndarray:
    arr = arr.copy()
    arr[where] = value
    return arr


IMG = IMAGES[:1]
BAD_IMAGES = {  # /image for --simulate
    "int 255": ((IMG * 255).astype(np.int32), "[0, 1]"),
    "int8 -1": (np.full((1, 1, 16, 16), -1, np.int8), "[0, 1]"),
    "bool": (IMG > 0.5, "not numbers"),
    "float16 NaN": (_with(IMG.astype(np.float16), (0, 0, 3, 3), np.nan), "NaN"),
    "float16 Inf": (_with(IMG.astype(np.float16), (0, 0, 3, 3), np.inf), "NaN"),
    "float64 -Inf": (_with(IMG.astype(np.float64), (0, 0, 0, 0), -np.inf), "NaN"),
    "complex": (IMG.astype(np.complex64), "complex"),
    "strings": (_strings(), "not numbers"),
    "objects": (_objects(), "not numbers"),
    "compound": (_compound(), "not numbers"),
    "group": (GROUP, "group"),
    "empty": (np.zeros((0, 1, 16, 16), np.float32), "empty"),
    "1-D": (np.zeros(16, np.float32), "shape"),
    "5-D": (IMG[None], "shape"),
    "scalar": (np.float32(0.5), "shape"),
    "non-square": (np.zeros((1, 1, 16, 20), np.float32), "model expects"),
    "one pixel": (np.zeros((1, 1, 1, 1), np.float32), "model expects"),
    "three channels": (np.zeros((1, 3, 16, 16), np.float32), "model expects"),
    "above 1": (IMG * 2 + 0.5, "[0, 1]"),
    "huge": (HUGE_DATASET, "GiB"),
}
BAD_MEASUREMENTS = {  # /measurement of a file that says it was measured by masking
    "bool": (Y > 0, "not numbers"),
    "strings": (_strings(), "not numbers"),
    "objects": (_objects(), "not numbers"),
    "NaN": (_with(Y, (0, 0, 1, 1), np.nan), "NaN"),
    "Inf": (_with(Y, (0, 0, 1, 1), np.inf), "NaN"),
    "complex": (Y.astype(np.complex64), "complex"),
    "wrong shape": (np.zeros((1, 1, 8, 8), np.float32), "shape"),
    "1-D": (np.zeros(5, np.float32), "shape"),
    "scalar": (np.float32(1), "single number"),
    "empty": (np.zeros((0, 1, 16, 16), np.float32), "empty"),
    "no dataspace": (h5py.Empty("f4"), "empty"),
    "group": (GROUP, "group"),
    "huge": (HUGE_DATASET, "GiB"),
}
BAD_PARAMS = {  # the operator_params attribute of a masking measurement
    "list": ("[1, 2]", "JSON object"),
    "not JSON": ("{no", "JSON"),
    "nested too deeply": ("[" * 100_000 + "]" * 100_000, "JSON"),
    "a string": ('"text"', "JSON object"),
    "a number": ("123", "JSON object"),
    "fraction text": ('{"fraction": "x"}', "fraction must be a float"),
    "fraction bool": ('{"fraction": true}', "fraction must be a float"),
    "fraction null": ('{"fraction": null}', "fraction must be a float"),
    "fraction list": ('{"fraction": [1]}', "fraction must be a float"),
    "fraction object": ('{"fraction": {"a": 1}}', "fraction must be a float"),
    "fraction 2": ('{"fraction": 2}', "--fraction"),
    "fraction NaN": ('{"fraction": NaN}', "fraction must be a finite number"),
    "noise_std -1": ('{"noise_std": -1}', "noise_std"),
    "mask choice": ('{"mask": "star"}', "one of"),
    "unknown name": ('{"frac": 1}', "does not take"),
    "int attribute": (5, "JSON"),
    "array attribute": (np.array([1.0, 2.0]), "JSON"),
}
BAD_ATTRS = {  # the operator attribute
    "unknown": ({"operator": "nope"}, "unknown operator"),
    "empty": ({"operator": ""}, "operator"),
    "int": ({"operator": 5}, "operator name"),
    "array": ({"operator": np.array([b"a", b"b"])}, "operator name"),
}
GEOMETRY = {  # a masking or ct_sparse measurement with a bad /mask, /angles or /ground_truth
    "mask shape": ({"measurement": Y, "mask": np.ones((4, 4), np.float32)}, "mask"),
    "mask 0.5": ({"measurement": Y, "mask": np.full((16, 16), 0.5, np.float32)}, "mask"),
    "mask NaN": ({"measurement": Y, "mask": np.full((16, 16), np.nan, np.float32)}, "NaN"),
    "mask strings": ({"measurement": Y, "mask": _strings()}, "not numbers"),
    "truth NaN": ({"measurement": Y, "ground_truth": _with(IMG, (0, 0, 0, 0), np.nan)}, "NaN"),
    "truth shape": ({"measurement": Y, "ground_truth": np.zeros((1, 1, 8, 8))}, "model expects"),
    "truth group": ({"measurement": Y, "ground_truth": GROUP}, "group"),
    "truth slices": ({"measurement": Y, "ground_truth": IMAGES[:3]}, "slices"),
    "measurements dataset": ({"measurements": np.zeros(3)}, "group of datasets"),
    "measurements empty group": ({"measurements": GROUP}, "neither"),
    "measurements/masking group": ({"measurements/masking/x": Y}, "group"),
    "measurement for another operator": ({"measurements/mri": Y}, "masking"),
}
CT = {"operator": "ct_sparse"}
CT_Y = np.zeros((1, 1, 23, 23), np.float32)
OTHER_FILES = {  # whole files: layouts other than invdiff's, and no HDF5 at all
    "angles length": ({"measurement": CT_Y, "angles": np.zeros(5), "attrs": CT}, "angles"),
    "angles NaN": ({"measurement": CT_Y, "angles": np.full(23, np.nan), "attrs": CT}, "NaN"),
    "angles strings": ({"measurement": CT_Y, "angles": _strings(23), "attrs": CT}, "not numbers"),
    "mri real": ({"measurement": Y, "attrs": {"operator": "mri"}}, "complex"),
    "fastmri real": ({"kspace": np.zeros((1, 32, 32), np.float32)}, "complex"),
    "fastmri 2-D": ({"kspace": np.zeros((32, 32), np.complex64)}, "S x H x W"),
    "fastmri NaN": ({"kspace": np.full((1, 32, 32), np.nan, np.complex64)}, "NaN"),
    "fastmri small": ({"kspace": np.ones((1, 8, 8), np.complex64)}, "smaller"),
    "fastmri group": ({"kspace": GROUP}, "group"),
    "fastmri mask length": (
        {"kspace": np.ones((1, 32, 32), np.complex64), "mask": np.ones(3, np.float32)},
        "mask",
    ),
    "lodopab 2-D": ({"data": np.zeros((23, 23), np.float32)}, "N x V x D"),
    "lodopab NaN": ({"data": np.full((1, 23, 23), np.nan, np.float32)}, "NaN"),
    "lodopab strings": ({"data": _strings(3)}, "not numbers"),
    "no datasets": ({"attrs": {"operator": "masking"}}, "neither"),
    "zero bytes": (b"", "not a readable HDF5"),
    "text": (b"hello, world\n" * 20, "not a readable HDF5"),
    "truncated": ("TRUNCATED_H5", "HDF5"),
    "damaged attributes": (("DAMAGED_H5", 3088), "damaged"),
    "damaged links": (("DAMAGED_H5", 672), "damaged"),
}


def _file_cases() -> list[Case]:
    cases = []
    sim = [*SOLVE, "--operator", "masking", "--simulate", "@t/in.h5"]
    for name, (value, word) in BAD_IMAGES.items():
        cases.append(Case(f"solve /image {name}", sim, (word,), {"in.h5": {"image": value}}))
    cases.append(
        Case("solve /images NaN", sim, ("NaN",), {"in.h5": {"images": _with(IMG, 0, np.nan)}})
    )
    for name, (value, word) in BAD_MEASUREMENTS.items():
        content = {"measurement": value, "attrs": MASKING}
        cases.append(
            Case(f"solve /measurement {name}", [*SOLVE, "@t/in.h5"], (word,), {"in.h5": content})
        )
    for name, (value, word) in BAD_PARAMS.items():
        content = {"measurement": Y, "attrs": {**MASKING, "operator_params": value}}
        cases.append(
            Case(f"solve operator_params {name}", [*SOLVE, "@t/in.h5"], (word,), {"in.h5": content})
        )
    for name, (attrs, word) in BAD_ATTRS.items():
        content = {"measurement": Y, "attrs": attrs}
        cases.append(
            Case(f"solve operator attr {name}", [*SOLVE, "@t/in.h5"], (word,), {"in.h5": content})
        )
    for name, (content, word) in GEOMETRY.items():
        content = {"attrs": MASKING, **content}
        cases.append(Case(f"solve {name}", [*SOLVE, "@t/in.h5"], (word,), {"in.h5": content}))
    cases.append(
        Case(
            "solve two operators disagree on slices",
            [*SOLVE, "--operator", "masking", "--operator", "superres", "@t/in.h5"],
            ("slices",),
            {"in.h5": {"measurements/masking": Y, "measurements/superres": np.zeros((2, 1, 4, 4))}},
        )
    )
    for name, (content, word) in OTHER_FILES.items():
        extra = ["--operator", "ct_sparse"] if name.startswith("lodopab") else []
        cases.append(
            Case(f"solve file {name}", [*SOLVE, *extra, "@t/in.h5"], (word,), {"in.h5": content})
        )
    return cases


BAD_TRAINING = {
    "int 255": ({"images": (IMAGES * 255).astype(np.int16)}, "[0, 1]"),
    "bool": ({"images": IMAGES > 0.5}, "not numbers"),
    "complex": ({"images": IMAGES.astype(np.complex64)}, "complex"),
    "float16 NaN": ({"images": _with(IMAGES.astype(np.float16), (0, 0, 1, 1), np.nan)}, "NaN"),
    "Inf": ({"images": _with(IMAGES, (0, 0, 1, 1), np.inf)}, "NaN"),
    "strings": ({"images": _strings(4)}, "not numbers"),
    "objects": ({"images": _objects()}, "not numbers"),
    "group": ({"images": GROUP}, "group"),
    "empty": ({"images": np.zeros((0, 1, 16, 16), np.float32)}, "empty"),
    "2-D": ({"images": IMAGES[0, 0]}, "shape"),
    "5-D": ({"images": IMAGES[None]}, "shape"),
    "non-square": ({"images": np.zeros((4, 1, 16, 20), np.float32)}, "square"),
    "one pixel": ({"images": np.zeros((4, 1, 1, 1), np.float32)}, "divisible"),
    "7 x 7": ({"images": np.zeros((4, 1, 7, 7), np.float32)}, "divisible"),
    "huge": ({"images": HUGE_DATASET}, "GiB"),
    "identical images": ({"images": np.zeros((4, 1, 16, 16), np.float32)}, "--sigma-max"),
    "one image": ({"images": IMAGES[:1]}, "--sigma-max"),
    "no /images": ({"pictures": IMAGES}, "/images"),
    "labels length": ({"images": IMAGES, "labels": np.zeros(3, np.int64)}, "/labels"),
    "labels strings": ({"images": IMAGES, "labels": _strings(8)}, "not numbers"),
    "labels group": ({"images": IMAGES, "labels": GROUP}, "group"),
}
BAD_CLASSIFIER_DATA = {
    "no labels": ({"images": IMAGES}, "/labels"),
    "one class": ({"images": IMAGES, "labels": np.zeros(8, np.int64)}, "two classes"),
    "negative labels": ({"images": IMAGES, "labels": LABELS - 1}, ">= 0"),
    "fractional labels": ({"images": IMAGES, "labels": LABELS + 0.5}, "integers"),
    "NaN labels": (
        {"images": IMAGES, "labels": _with(LABELS.astype(float), 0, np.nan)},
        "integers",
    ),
    "labels 2-D": ({"images": IMAGES, "labels": LABELS[:, None]}, "/labels"),
    "label 10^9": ({"images": IMAGES, "labels": LABELS * 10**9}, "renumber"),
    "size other than the model's": (
        {"images": _phantoms(4, 32), "labels": LABELS[:4]},
        "model expects",
    ),
    "paired, odd count": (
        {"images": IMAGES[:3], "labels": LABELS[:3], "attrs": {"paired": "yes"}},
        "--paired",
    ),
}


def _training_cases() -> list[Case]:
    cases = []
    for name, (content, word) in BAD_TRAINING.items():
        cases.append(Case(f"train file {name}", TRAIN_ARGS, (word,), {"train.h5": content}))
    for name, (content, word) in BAD_CLASSIFIER_DATA.items():
        args = [*CLASSIFIER, "--steps", "1"]
        cases.append(Case(f"train-classifier file {name}", args, (word,), {"train.h5": content}))
    return cases


CASES = [*_option_cases(), *PATHS, *_file_cases(), *_training_cases()]


# Running a case --------------------------------------------------------------------------------


def _write(path: Path, content: Any, model: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "DIR":
        path.mkdir()
    elif content == "FIFO":
        os.mkfifo(path)
    elif content == "TRUNCATED_MODEL":
        data = Path(model).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif content == "STATE":
        path.write_bytes(Path(model + ".train").read_bytes())
    elif isinstance(content, tuple) and content[0] == "MODEL":
        import torch

        payload = torch.load(model, weights_only=True)
        payload.pop("tensor_sha256")
        content[1](payload)
        torch.save(payload, path)
    elif isinstance(content, tuple) and content[0] == "DAMAGED_H5":  # 16 bytes inverted there
        _h5(path, {"measurement": Y, "attrs": MASKING})
        data = bytearray(path.read_bytes())
        data[content[1] : content[1] + 16] = bytes(
            b ^ 0xFF for b in data[content[1] : content[1] + 16]
        )
        path.write_bytes(bytes(data))
    elif content == "TRUNCATED_H5":
        _h5(path.with_suffix(".full"), {"image": np.random.default_rng(0).random((4, 1, 64, 64))})
        data = path.with_suffix(".full").read_bytes()
        path.with_suffix(".full").unlink()
        path.write_bytes(data[: len(data) // 2])
    else:
        _h5(path, content)


def _h5(path: Path, content: dict) -> None:
    content = dict(content)
    attrs = content.pop("attrs", {})
    with h5py.File(path, "w") as f:
        for name, value in content.items():
            if isinstance(value, str) and value == GROUP:
                f.create_group(name)
            elif isinstance(value, str) and value == HUGE_DATASET:
                f.create_dataset(
                    name, shape=(10**6, 1, 1024, 1024), dtype="f4", chunks=(1, 1, 64, 64)
                )
            else:
                f[name] = value
        for key, value in attrs.items():
            f.attrs[key] = value


def _snapshot(*roots: Path) -> dict[str, str]:
    """Map every path under ``roots`` to its kind or content hash (FIFOs are never opened)."""
    out = {}
    for root in roots:
        for p in [root, *sorted(root.rglob("*"))]:
            info = p.lstat()
            mode = info.st_mode
            if stat.S_ISREG(mode) and not os.access(p, os.R_OK):
                out[str(p)] = f"unreadable {info.st_size} {info.st_mtime_ns}"
            elif stat.S_ISREG(mode):
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[str(p)] = "dir" if stat.S_ISDIR(mode) else f"special {stat.S_IFMT(mode)}"
    return out


def _resolve(arg: Any, tmp: Path, model: str) -> str:
    text = str(arg)
    if text == "@model":
        return model
    if text.startswith("@t/"):
        return str(tmp / text[3:])
    return text


def _check(result, words, roots, before) -> None:
    assert_user_error(result, *words)
    assert result.stdout == "", result.stdout
    assert _snapshot(*roots) == before, "files changed, appeared or vanished"


def run_case(case: Case, tmp: Path, model: str, fault=None) -> None:
    """Create the case's files, then (``fault``: break something) run it and check it."""
    for name, content in case.files.items():
        _write(tmp / name, content, model)
    if fault is not None:
        fault()
    roots = (tmp, Path(model).parent)
    before = _snapshot(*roots)
    result = invoke(*[_resolve(a, tmp, model) for a in case.args])
    _check(result, case.words, roots, before)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fuzz(case, tmp_path, tiny_model):
    run_case(case, tmp_path, tiny_model)


def test_the_matrix_is_large_enough():
    assert len(CASES) + len(FAULTS) + len(PLUGINS) + len(SIGNALS) >= 150


def test_unreadable_input(tmp_path, tiny_model, monkeypatch):
    src = tmp_path / "in.h5"
    _h5(src, IMAGE)
    src.chmod(0)
    if ROOT:  # root reads files whatever their permissions: let the check see what a user would
        real = os.access
        unreadable = lambda p, mode, **kw: Path(p) != src and real(p, mode, **kw)  # noqa: E731
        monkeypatch.setattr(os, "access", unreadable)
    try:
        run_case(Case("unreadable", [*SIMULATE], ("in.h5",)), tmp_path, tiny_model)
    finally:
        src.chmod(0o644)


TORCHRUN = {  # torchrun's variables set by hand: a traceback, or exit 0 having done nothing
    "RANK not a number": {"RANK": "x", "WORLD_SIZE": "2"},
    "WORLD_SIZE 0": {"WORLD_SIZE": "0"},
    "WORLD_SIZE -1": {"WORLD_SIZE": "-1"},
    "RANK past WORLD_SIZE": {"RANK": "5", "WORLD_SIZE": "2"},
}


@pytest.mark.parametrize("name", list(TORCHRUN))
@pytest.mark.parametrize("command", ["solve", "train"])
def test_torchrun_environment(command, name, tmp_path, tiny_model, monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in TORCHRUN[name].items():
        monkeypatch.setenv(key, value)
    args = SIMULATE if command == "solve" else TRAIN_ARGS
    files = {"in.h5": IMAGE, "train.h5": TRAIN}
    run_case(Case(name, args, ("WORLD_SIZE", "torchrun"), files), tmp_path, tiny_model)


def test_dataset_beyond_the_available_memory(tmp_path, tiny_model, monkeypatch):
    """A dataset under the 16 GiB cap that the machine cannot hold twice is refused before it is
    read (a 15 GiB /image was killed by the kernel's OOM killer, with no message)."""
    from invdiff import io as invdiff_io

    case = Case("memory", SIMULATE, ("memory available",), IMAGE_FILE)
    fault = lambda: monkeypatch.setattr(invdiff_io, "_available_gib", lambda: 1e-6)  # noqa: E731
    run_case(case, tmp_path, tiny_model, fault)


def test_uint8_data_is_counted_as_float32(tmp_path, tiny_model, monkeypatch):
    """uint8 images take 4 bytes a value once converted to float32: a 6 GiB uint8 /images passed
    the memory check (twice its bytes) on a 20 GiB machine, then the conversion was a MemoryError
    traceback."""
    from invdiff import io as invdiff_io

    images = (IMAGES * 255).astype(np.uint8)
    available = 3 * images.size / 2**30  # twice the file's bytes fit, a float32 copy does not
    case = Case("uint8", TRAIN_ARGS, ("memory available",), {"train.h5": {"images": images}})
    fault = lambda: monkeypatch.setattr(invdiff_io, "_available_gib", lambda: available)  # noqa: E731
    run_case(case, tmp_path, tiny_model, fault)


def test_a_checkpoint_warns_nothing(tmp_path, tiny_model):
    """torch.load's warnings (a pickle protocol it did not write) were a second stderr line."""
    import warnings

    case = Case("pickle", [*SAMPLE, "--model", "@t/m.pt"], ("corrupt",), {"m.pt": PICKLE})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_case(case, tmp_path, tiny_model)
    assert not [str(w.message) for w in caught]


SHIPPED = ["--model", "general"]  # the shipped any-size model (the tiny one is 16 x 16 only)
WORKS = {  # edge values that once failed after sampling and now give a result
    "mri, centre only": (["--operator", "mri", "--acceleration", "16"], 16, "zero-filled"),
    "masking, every pixel missing": (["--operator", "masking", "--fraction", "1"], 16, "none"),
    "9 x 9, no SSIM": (["--operator", "masking", *SHIPPED], 9, "biharmonic"),
}


@pytest.mark.parametrize("name", list(WORKS))
def test_edge_values_that_work(name, tmp_path, tiny_model):
    more, side, baseline = WORKS[name]
    _h5(tmp_path / "in.h5", {"image": np.full((1, 1, side, side), 0.5, np.float32)})
    args = ["solve", "--model", tiny_model, "-o", tmp_path / "o.h5", "--no-progress", *ONE_STEP]
    result = invoke(*args, "--simulate", tmp_path / "in.h5", *more)
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "o.h5") as f:
        assert f.attrs["baseline"] == baseline
        assert ("invdiff_ssim" in f["metrics"]) == (side >= 11)


# Faults: disk full ---------------------------------------------------------------------------


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _torch_full(*args, **kwargs):
    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 59584 vs 59472")


PNG = [*SAMPLE, "--samples", "1", "--steps", "1", "--png", "@t/p.png"]
FAULTS = {  # command -> what fails as on a full disk
    "data": (["data", "phantoms", "@t/d.h5", "--n", "2", "--size", "16"], "h5py"),
    "sample": ([*SAMPLE, "--samples", "1", "--steps", "1"], "h5py"),
    "sample, its png": (PNG, "png"),
    "sample, its h5 beside a png": (PNG, "h5py"),
    "solve": ([*SIMULATE, "--steps", "1", "--samples", "1"], "h5py"),
    "solve, its png": ([*SIMULATE, "--steps", "1", "--samples", "1", "--png", "@t/p.png"], "png"),
    "train": ([*TRAIN_ARGS, "--base", "8", "--mult", "1,2", "--batch-size", "2"], "torch"),
    "train, torch's own error": ([*TRAIN_ARGS, "--base", "8", "--mult", "1,2"], "torch full"),
}


@pytest.mark.parametrize("name", list(FAULTS))
def test_disk_full_in_process(name, tmp_path, tiny_model, monkeypatch):
    """Every writer fails as on a full disk (ENOSPC; torch.save raises a RuntimeError there):
    one line, no temporary left behind, and with --png neither file."""
    import imageio.v3 as iio
    import torch

    from invdiff import atomic, io

    args, what = FAULTS[name]

    def fault():
        if what == "h5py":
            monkeypatch.setattr(io, "_write_h5", _enospc)
        elif what == "png":
            monkeypatch.setattr(iio, "imwrite", _enospc)
        else:
            monkeypatch.setattr(torch, "save", _enospc if what == "torch" else _torch_full)
            monkeypatch.setattr(atomic, "_disk_full", lambda folder: what != "torch")

    files = {"in.h5": IMAGE, "train.h5": TRAIN}
    run_case(Case(name, args, ("space",), files), tmp_path, tiny_model, fault)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs (root only); skipped where mounting is not allowed."""
    if not ROOT:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield disk
    finally:  # lazily, should a file there still be open
        subprocess.run(["umount", "--lazy", str(disk)], check=False)


@pytest.mark.parametrize(
    "args",
    [
        ["data", "textures", "@t/disk/d.h5", "--n", "64", "--size", "64"],
        [*TRAIN_ARGS, "-o", "@t/disk/m.pt", "--base", "16", "--batch-size", "2"],
    ],
    ids=["data", "train"],
)
def test_disk_full_on_a_real_tiny_disk(args, tmp_path, tiny_model, tiny_disk):
    _h5(tmp_path / "train.h5", TRAIN)
    (tiny_disk / "keep").write_bytes(b"x" * 1000)
    run_case(Case("tmpfs", args, ("space",)), tmp_path, tiny_model)


def test_png_on_a_real_full_disk(tmp_path, tiny_model, tiny_disk):
    """imageio's PNG writer, failing on a full disk, failed again when garbage-collected: an
    'Exception ignored' traceback after the error line (a process of its own: collection at
    exit; PYTHONPATH: this checkout's code)."""
    with open(tiny_disk / "fill", "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"x" * 1024)
    paths = [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, paths))}
    args = [
        _resolve(a, tmp_path, tiny_model) for a in [*SAMPLE, *ONE_STEP, "--png", "@t/disk/p.png"]
    ]
    before = _snapshot(tmp_path)
    cmd = [sys.executable, "-m", "invdiff", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert len(done.stderr.splitlines()) == 1 and "space" in done.stderr, done.stderr
    assert _snapshot(tmp_path) == before


# Faults: plugins ---------------------------------------------------------------------------


class _Raising:
    """A plugin whose hook raises after registering a good operator."""

    @hookimpl
    def register_operators(self, register):
        raise RuntimeError("boom")


class _Garbage:
    """A plugin whose hook registers something that is not an operator."""

    @hookimpl
    def register_operators(self, register):
        register(42)


def _operator_plugin(name: str, **methods):
    """A plugin registering a masking-like operator ``name`` whose methods are replaced."""
    from invdiff_operators.masking import Masking

    cls = type(name.title(), (Masking,), {"name": name, **methods})

    class Plugin:
        @hookimpl
        def register_operators(self, register):
            register(cls)

    return Plugin()


def _raise(*args, **kwargs):
    raise RuntimeError("plugin bug")


def _nan_forward(self, x):
    return x * float("nan")


RAISING, GARBAGE = _Raising(), _Garbage()
BROKEN_INIT = _operator_plugin("broken_init", __init__=_raise)
BROKEN_FORWARD = _operator_plugin("broken_forward", forward=_raise)
NAN_FORWARD = _operator_plugin("nan_forward", forward=_nan_forward)

PLUGINS = {  # plugin object -> (operator asked for, word)
    "RAISING": ("raiser", "boom"),
    "GARBAGE": ("garbage", "not a subclass"),
    "MISSING_MODULE": ("missing", "failed to load"),
    "BROKEN_INIT": ("broken_init", "plugin bug"),
    "BROKEN_FORWARD": ("broken_forward", "plugin bug"),
    "NAN_FORWARD": ("nan_forward", "NaN"),
    "EXITING": ("exiting", "failed to load"),  # a module calling sys.exit on import
}


@pytest.mark.parametrize("plugin", list(PLUGINS))
def test_broken_plugins(plugin, tmp_path, tiny_model, monkeypatch):
    """A plugin that raises, registers garbage, does not import, or whose operator fails: the
    command names it in one line."""
    from invdiff import plugins

    real = metadata.entry_points
    value = "invdiff_no_such_module" if plugin == "MISSING_MODULE" else f"{__name__}:{plugin}"
    if plugin == "EXITING":
        (tmp_path / "mods").mkdir()
        (tmp_path / "mods" / "invdiff_fuzz_exiting.py").write_text("raise SystemExit(3)\n")
        monkeypatch.syspath_prepend(tmp_path / "mods")
        monkeypatch.setattr(sys, "dont_write_bytecode", True)
        value = "invdiff_fuzz_exiting"
    ep = metadata.EntryPoint(plugin.lower(), value, "invdiff")
    monkeypatch.setattr(plugins.metadata, "entry_points", lambda **kw: [*real(**kw), ep])
    operator, word = PLUGINS[plugin]
    args = [*SOLVE, "--operator", operator, "--simulate", "@t/in.h5", "--steps", "1"]
    run_case(Case(plugin, args, (word,), IMAGE_FILE), tmp_path, tiny_model)


# Signals -------------------------------------------------------------------------------------

# Runs invdiff with a marker on stdout once sampling starts (then the signal is sent).
WRAPPER = """
import sys
import invdiff.core.reconstruct as r
for name in ("reconstruct", "sample_prior"):
    def wrapped(*a, _real=getattr(r, name), **k):
        print("SAMPLING", flush=True)
        return _real(*a, **k)
    setattr(r, name, wrapped)
sys.argv = ["invdiff", *sys.argv[1:]]
from invdiff.cli import main
main()
"""
LONG = ["--steps", "100000", "--samples", "1", "--threads", "1"]
SIGNALS = {
    "SIGINT sample": (signal.SIGINT, [*SAMPLE, *LONG], 130, "Interrupted."),
    "SIGINT solve": (signal.SIGINT, [*SIMULATE, *LONG], 130, "Interrupted."),
    "SIGTERM sample": (signal.SIGTERM, [*SAMPLE, *LONG], 143, "Terminated."),
    "SIGTERM solve": (signal.SIGTERM, [*SIMULATE, *LONG], 143, "Terminated."),
}


def _ctrl_c() -> None:
    """In the child: SIGINT delivered as at a terminal, even when this test runs in a background
    job (where the shell starts every process with SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("name", list(SIGNALS))
def test_signal_during_sampling(name, tmp_path, tiny_model):
    sig, args, code, line = SIGNALS[name]
    _h5(tmp_path / "in.h5", IMAGE)
    roots = (tmp_path, Path(tiny_model).parent)
    before = _snapshot(*roots)
    cmd = [sys.executable, "-c", WRAPPER, *[_resolve(a, tmp_path, tiny_model) for a in args]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_ctrl_c
    )
    try:
        assert proc.stdout.readline() == "SAMPLING\n", proc.stderr.read()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert out == "" and err == line + "\n", (out, err)
    assert _snapshot(*roots) == before


@pytest.mark.parametrize("delay", [0.1, 0.5, 1.0, 2.0])
def test_sigint_while_the_command_line_starts(delay, tmp_path, tiny_model):
    """Ctrl-C during start-up (importing torch takes seconds) is one line and exit 130 too, at
    whatever point it lands (the fresh fuzz found a KeyboardInterrupt or RecursionError
    traceback when it landed inside an import)."""
    _h5(tmp_path / "in.h5", IMAGE)
    before = _snapshot(tmp_path)
    args = [_resolve(a, tmp_path, tiny_model) for a in [*SAMPLE, *LONG]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "invdiff", *args]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_ctrl_c
    )
    try:
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert out == "" and err == "Interrupted.\n", (out, err)
    assert _snapshot(tmp_path) == before


def test_the_start_up_sigint_handler_lasts_until_the_command_starts():
    """Typer turns a KeyboardInterrupt raised while it parses the options into a silent exit 130
    (CI once saw exit 130 and no message, SIGINT 2 s after start): the console script's start-up
    handler stays through parsing, and a command puts Python's back when its body starts."""
    from invdiff._entry import interrupted_while_starting
    from invdiff.cli._common import user_errors

    seen = []
    previous = signal.signal(signal.SIGINT, interrupted_while_starting)
    try:
        user_errors(lambda: seen.append(signal.getsignal(signal.SIGINT)))()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert seen == [signal.default_int_handler]
