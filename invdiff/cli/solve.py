"""`invdiff solve`: posterior sampling for measurements in HDF5 files.

    invdiff solve --operator ct_sparse --views 23 input.h5 [--out recon.h5 --png preview.png]

Operators and their parameters are read from the command line in order: ``--operator NAME``
starts an operator, the options after it (``--views 23``, ``--noise-std 0.01``, ``--mask box``)
set its parameters (``invdiff operators list`` shows them), until the next ``--operator``.
Everything else that is not an option is an input file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from invdiff.cli._common import (
    check_output,
    check_sampling,
    clip_option,
    deprecated,
    resolve_device,
    set_threads,
    user_errors,
)
from invdiff.errors import InvdiffError
from invdiff.guidance import DEFAULT_STRATEGY


@dataclass
class OperatorSpec:
    """One ``--operator NAME --param value ...`` group of the command line."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


def parse_extra(args: list[str], registry) -> tuple[list[OperatorSpec], list[Path]]:
    """Split the free command-line words into operator groups and input files."""
    specs: list[OperatorSpec] = []
    inputs: list[Path] = []
    i = 0
    while i < len(args):
        word = args[i]
        if not word.startswith("--"):
            inputs.append(Path(word))
            i += 1
            continue
        key, _, inline = word[2:].partition("=")
        if key == "operator":
            value, i = _value(args, i, inline, "--operator")
            registry.lookup(value)  # unknown name -> one-line error with suggestions
            specs.append(OperatorSpec(value))
            continue
        if not specs:
            raise InvdiffError(
                f"unknown option --{key}; operator parameters go after --operator NAME"
            )
        spec = specs[-1]
        params = {p.name: p for p in registry[spec.name].params}
        name = key.replace("-", "_")
        if name.startswith("no_") and name[3:] in params and params[name[3:]].type is bool:
            spec.params[name[3:]] = False
            i += 1
            continue
        if name not in params:
            known = ", ".join(p.option for p in params.values())
            raise InvdiffError(f"operator {spec.name!r} has no option --{key}; it takes {known}")
        param = params[name]
        if param.type is bool and not inline:
            spec.params[name] = True
            i += 1
            continue
        value, i = _value(args, i, inline, param.option)
        try:
            spec.params[name] = param.type(value)
        except ValueError:
            raise InvdiffError(
                f"{param.option} of {spec.name} takes a {param.type.__name__}, got {value!r}"
            ) from None
        if param.choices and spec.params[name] not in param.choices:
            raise InvdiffError(
                f"{param.option} of {spec.name} must be one of {', '.join(param.choices)}, "
                f"got {value!r}"
            )
    return specs, inputs


def _value(args: list[str], i: int, inline: str, option: str) -> tuple[str, int]:
    if inline:
        return inline, i + 1
    if i + 1 >= len(args):
        raise InvdiffError(f"{option} needs a value")
    return args[i + 1], i + 2


@user_errors
def solve(
    ctx: typer.Context,
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Output HDF5 (one input) or folder (several); default INPUT_invdiff.h5.",
    ),
    png: Path | None = typer.Option(
        None,
        "--png",
        help="Preview PNG, one row per slice: truth (when known), baseline, mean, std.",
    ),
    model: str | None = typer.Option(
        None, "--model", help="Shipped model name (e.g. phantom64) or checkpoint path."
    ),
    strategy: str = typer.Option(
        DEFAULT_STRATEGY,
        "--strategy",
        help="projection, replacement, noisy_likelihood, moment, dps or diffpir.",
    ),
    sampler_old: str | None = typer.Option(
        None, "--sampler", hidden=True, help="Deprecated spelling of --strategy."
    ),
    steps: int | None = typer.Option(None, help="Time steps (default: the strategy's)."),
    snr: float | None = typer.Option(None, help="Langevin corrector snr (0: no corrector)."),
    lam: float | None = typer.Option(None, "--lambda", help="Projection / DiffPIR weight."),
    zeta: float | None = typer.Option(None, help="DPS / DiffPIR step weight."),
    predictor: str | None = typer.Option(None, help="PC predictor (PC-based strategies)."),
    samples: int = typer.Option(4, "--samples", help="Posterior samples per slice (std needs 2)."),
    simulate: bool = typer.Option(False, "--simulate", help="Measure /image with the operators."),
    noise: float | None = typer.Option(
        None, help="--simulate: noise std (default: each operator's --noise-std)."
    ),
    seed: int = typer.Option(0, help="Sample j of slice i uses seed + i * samples + j."),
    batch_size: int = typer.Option(16, help="Samples per network call."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1 ..."),
    threads: int = typer.Option(0, help="CPU threads for torch (0: torch's default)."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing outputs."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    clip: bool = clip_option(),
    image_size: int | None = typer.Option(
        None, "--image-size", help="Image side when the input does not show it (any-size models)."
    ),
) -> None:
    """Reconstruct images from measurements with the diffusion prior (Bayes' rule for scores).

    Give operators as --operator NAME followed by its options (see `invdiff operators list`),
    e.g. --operator ct_sparse --views 23, and one or more input HDF5 files.
    """
    from invdiff.plugins import build_registry, make_plugin_manager

    if sampler_old is not None:
        deprecated("--sampler", "--strategy")
        strategy = sampler_old
    registry = build_registry(make_plugin_manager())
    specs, inputs = parse_extra(list(ctx.args), registry)
    if not inputs:
        raise InvdiffError("no input file; usage: invdiff solve --operator NAME [options] IN.h5")
    if samples < 1 or batch_size < 1 or (steps is not None and steps < 1):
        raise InvdiffError("--samples, --batch-size and --steps must be positive")
    check_sampling(steps=steps, seed=seed, snr=snr, lam=lam, zeta=zeta)
    if image_size is not None and not 8 <= image_size <= 8192:
        raise InvdiffError(f"--image-size must lie in [8, 8192], got {image_size}")
    if noise is not None and (noise < 0 or not noise == noise):
        raise InvdiffError(f"--noise must be >= 0, got {noise}")
    from invdiff.guidance import STRATEGIES, strategy_options

    if strategy not in STRATEGIES:
        raise InvdiffError(f"unknown --strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    given = {"steps": steps, "snr": snr, "lam": lam, "zeta": zeta, "predictor": predictor}
    accepted = strategy_options(strategy)
    options = {k: v for k, v in given.items() if v is not None}
    flags = {k: "--lambda" if k == "lam" else f"--{k}" for k in (*given, *accepted)}
    for k in options:
        if k not in accepted:
            takes = ", ".join(flags[a] for a in sorted(accepted) if a in given)
            raise InvdiffError(f"--strategy {strategy} takes no {flags[k]}; it takes {takes}")
    outputs = _outputs(inputs, out, force)
    if png is not None and len(inputs) > 1:
        raise InvdiffError("--png needs a single input file")
    if png is not None and png.exists() and not force:
        raise InvdiffError(f"{png} exists; pass --force to overwrite it or choose another --png")
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    set_threads(threads)
    dev = resolve_device(device)
    if world > 1 and dev.startswith("cuda"):
        dev = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    from invdiff.checkpoint import load_model, resolve_model

    model_path = resolve_model(model)
    score_model, config = load_model(model_path, dev)
    for k, (src, dst) in enumerate(zip(inputs, outputs, strict=True)):
        if k % world != rank:
            continue  # torchrun: inputs are split round-robin over processes
        job = SolveJob(registry, specs, score_model, config, model_path, dev, clip)
        job.image_size = image_size
        job.run(
            src, dst, png, strategy, options, samples, simulate, noise, seed, batch_size, progress
        )


def _outputs(inputs: list[Path], out: Path | None, force: bool) -> list[Path]:
    """Return one output path per input; refuse to overwrite without --force."""
    for src in inputs:
        if not src.is_file():
            raise InvdiffError(f"input {src} not found; check the path")
    if out is None:
        paths = [src.with_name(src.stem + "_invdiff.h5") for src in inputs]
    elif len(inputs) > 1 or out.is_dir():
        if not out.is_dir():
            raise InvdiffError(f"--out {out} must be an existing folder for several inputs")
        paths = [out / (src.stem + "_invdiff.h5") for src in inputs]
    else:
        paths = [out]
    for dst in paths:
        check_output(dst, inputs, force)
    return paths


class SolveJob:
    """Read one input, build its operators and measurements, sample, write the output."""

    def __init__(self, registry, specs, model, config, model_path, device, clip=True):
        from invdiff.score import data_range_prior

        self.registry, self.specs = registry, specs
        self.model, self.config, self.model_path, self.device = model, config, model_path, device
        self.clip, self.prior = clip, data_range_prior(model, config, clip)
        image = config["image"]
        self.shape = (image["channels"], image["size"], image["size"])
        self.image_size: int | None = None  # --image-size, for any-size models

    def image_shape(self, data, simulate: bool) -> tuple[int, int, int]:
        """Return (C, H, W) of the images to reconstruct from ``data``.

        A fixed-size model reconstructs its own size. A model trained on crops (image.any_size)
        takes the size from /image (--simulate), /ground_truth or /mask, or from --image-size,
        which must then agree with them.
        """
        image = self.config["image"]
        if not image.get("any_size"):
            return self.shape
        if simulate and data.image is None:
            raise InvdiffError(f"--simulate needs /image in {data.path}; store N x C x H x W")
        c, found = image["channels"], None
        for arr in (data.image if simulate else None, data.ground_truth):
            if found is None and arr is not None and arr.ndim == 4:
                found = tuple(arr.shape[-2:])
        if found is None and data.mask is not None and data.format != "fastmri":
            found = tuple(data.mask.shape[-2:])
        if self.image_size:
            side = (self.image_size, self.image_size)
            if found is not None and found != side:
                raise InvdiffError(
                    f"--image-size {self.image_size} disagrees with {data.path}, whose images are "
                    f"{found[0]} x {found[1]}; drop --image-size"
                )
            return (c, *side)
        if found is None:
            raise InvdiffError(
                f"{data.path} does not show the image size (no /ground_truth or /mask); "
                "pass --image-size N"
            )
        return (c, *found)

    # Operators and measurements ------------------------------------------------------------

    def operators(self, data, noise: float | None):
        """Return [(spec, operator)] for the command line's operators or the file's own."""
        specs = self.specs
        if not specs:
            if data.operator is None:
                raise InvdiffError(
                    f"{data.path} does not say how it was measured; pass --operator NAME"
                )
            self.registry.lookup(data.operator)
            specs = [OperatorSpec(data.operator, dict(data.operator_params))]
        out = []
        for spec in specs:
            params = dict(spec.params)
            entry = self.registry.lookup(spec.name)
            if data.operator == spec.name:  # the file's parameters, unless overridden
                params = {**_typed(entry, data.operator_params, data.path), **params}
            if noise is not None and "noise_std" not in spec.params:
                params["noise_std"] = noise
            op = entry.create(self.shape, **params)
            self._geometry(op, data)
            declared = {p.name: p.default for p in entry.params}  # defaults recorded too
            out.append((OperatorSpec(spec.name, {**declared, **params}), op.to(self.device)))
        return out

    def _geometry(self, op, data) -> None:
        """Hand the file's geometry (/mask, /angles) to the operator, which adopts or checks it."""
        mask = data.mask
        if mask is not None and data.format == "fastmri":
            mask = self._fastmri_mask(mask)
        op.set_geometry({"mask": mask, "angles": data.angles}, str(data.path))

    def _fastmri_mask(self, mask):
        import numpy as np

        _, h, w = self.shape
        cols = np.asarray(mask).ravel().astype(bool)
        start = (cols.size - w) // 2
        return np.broadcast_to(cols[start : start + w], (h, w)).astype(np.float32)

    def measurements(self, data, ops, simulate: bool, seed: int):
        """Return one measurement tensor (N, ...) per operator, checked against its shape."""
        import numpy as np
        import torch

        n = data.n
        probe = torch.zeros(1, *self.shape, device=self.device)
        ys = []
        if simulate:
            if data.image is None:
                raise InvdiffError(f"--simulate needs /image in {data.path}; store N x C x H x W")
            image = self._check_images(data.image, "/image", data.path)
            for k, (_, op) in enumerate(ops):
                ys.append(
                    op.hypothesis_labels(n)
                    if op.time_conditional
                    else self._measure(op, image, seed, k)
                )
            return ys
        if data.format == "fastmri":
            data.measurements = {"mri": self._fastmri_kspace(data.measurements["mri"])}
        measured = [spec for spec, op in ops if not op.time_conditional]
        for spec, op in ops:
            if op.time_conditional:  # a class hypothesis: its "measurement" is the label
                ys.append(op.hypothesis_labels(n).to(self.device))
                continue
            y = data.measurements.get(spec.name)
            if y is None and len(measured) == 1:
                y = data.measurements.get("")
            if y is None:
                where = f"/measurements/{spec.name}" if len(measured) > 1 else "/measurement"
                raise InvdiffError(f"{data.path} has no {where} for operator {spec.name}")
            expected = tuple(op(probe).shape[1:])
            if y.ndim == len(expected) and expected[0] == 1:
                y = y[:, None]
            if tuple(y.shape[1:]) != expected:
                raise InvdiffError(
                    f"measurement for {spec.name} in {data.path} has shape {tuple(y.shape)} but "
                    f"the operator gives (N, {', '.join(map(str, expected))}) for "
                    f"{self.shape[1]}x{self.shape[2]} images; check the operator options "
                    "(e.g. --views, --detectors) and the model"
                )
            complex_needed = op(probe).is_complex()
            if complex_needed and not np.iscomplexobj(y):
                raise InvdiffError(
                    f"{spec.name} measurements are complex but {data.path} stores real data; "
                    "store complex k-space"
                )
            if not complex_needed and np.iscomplexobj(y):
                raise InvdiffError(f"{spec.name} measurements are real but the file's are complex")
            if len(y) != n:
                raise InvdiffError(f"{data.path}: measurements disagree on the number of slices")
            dtype = torch.complex64 if complex_needed else torch.float32
            ys.append(torch.as_tensor(np.ascontiguousarray(y)).to(self.device, dtype))
        return ys

    def _measure(self, op, image, seed: int, k: int):
        import torch

        from invdiff.train import step_generator

        g = step_generator(seed, 1_000_003 + k)  # measurement noise has its own seed stream
        return op.measure(torch.as_tensor(image), g).to(self.device)

    def _check_images(self, images, name: str, path):
        if tuple(images.shape[1:]) != self.shape:
            c, h, w = self.shape
            raise InvdiffError(
                f"{name} in {path} is {tuple(images.shape[1:])} per slice but the model expects "
                f"({c}, {h}, {w}); resample the data or pass a matching --model"
            )
        if images.min() < -1e-6 or images.max() > 1 + 1e-6:
            raise InvdiffError(f"{name} in {path} lies outside [0, 1]; rescale it")
        return images

    def _fastmri_kspace(self, k):
        """Centre-crop k-space to the model's grid (a low-pass resampling) and normalise."""
        import numpy as np

        _, h, w = self.shape
        if k.shape[-2] < h or k.shape[-1] < w:
            raise InvdiffError(f"fastMRI k-space {k.shape[-2:]} is smaller than the model {h}x{w}")
        r0, c0 = (k.shape[-2] - h) // 2, (k.shape[-1] - w) // 2
        k = k[..., r0 : r0 + h, c0 : c0 + w]
        axes = (-2, -1)
        img = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=axes), norm="ortho"), axes=axes)
        img = np.abs(img)
        scale = img.reshape(len(k), -1).max(1).clip(1e-12)
        return (k / scale[:, None, None, None]).astype(np.complex64)

    # Sampling and output -------------------------------------------------------------------

    def run(
        self, src, dst, png, strategy, options, samples, simulate, noise, seed, batch_size, progress
    ) -> None:
        import numpy as np
        import torch
        from rich.progress import Progress

        from invdiff import __version__
        from invdiff.checkpoint import file_sha256
        from invdiff.guidance import strategy_options
        from invdiff.io import read_solve_input, write_datasets
        from invdiff.reconstruct import SEED_SCHEME, reconstruct

        data = read_solve_input(src)
        if not self.specs and data.operator is None:
            raise InvdiffError(
                f"{data.path} does not say how it was measured; pass --operator NAME"
            )
        self.shape = self.image_shape(data, simulate)
        if data.ground_truth is not None:
            self._check_images(data.ground_truth, "/ground_truth", src)
        ops = self.operators(data, noise)
        ys = self.measurements(data, ops, simulate, seed)
        truth = data.image if simulate else data.ground_truth
        n, k_samples = len(ys[0]), samples
        steps = options.get("steps", strategy_options(strategy)["steps"])
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(self.device)
        batches = -(-n * k_samples // batch_size)
        with Progress(disable=not progress) as bar:
            task = bar.add_task(f"{strategy} {src.name}", total=steps * batches)
            try:
                rec = reconstruct(
                    self.prior,
                    self.model.sde,
                    [op for _, op in ops],
                    ys,
                    strategy=strategy,
                    options=options,
                    samples=k_samples,
                    seed=seed,
                    batch_size=batch_size,
                    device=self.device,
                    callback=lambda _: bar.advance(task),
                )
            except ValueError as err:
                raise InvdiffError(f"{strategy}: {err}") from None
        wall, nfe, vjp = rec.seconds, rec.nfe_per_sample, rec.vjp_per_sample
        x = rec.samples.reshape(n, k_samples, *self.shape).numpy()
        if not np.isfinite(x).all():
            raise InvdiffError(
                f"{strategy} produced NaN/Inf for {src}; lower --lambda/--zeta or raise --steps"
            )
        mean = x.mean(1)
        first = [k for k, (_, op) in enumerate(ops) if not op.time_conditional]
        found = ops[first[0]][1].baseline(ys[first[0]]) if first else None
        if found is not None:
            baseline_name, baseline = found[0], found[1].float().cpu().numpy()
        else:  # hypotheses only, or an operator without a classical method
            baseline_name, baseline = "none", None
        if baseline is not None and baseline.shape != mean.shape:
            baseline_name, baseline = "none", None
        out = {"reconstruction": mean, "samples": x}
        if baseline is not None:
            out["baseline"] = baseline
        if k_samples > 1:
            out["std"] = x.std(1, ddof=1)
        for (spec, _), y in zip(ops, ys, strict=True):
            key = "measurement" if len(ops) == 1 else f"measurements/{spec.name}"
            out[key] = y.cpu().numpy()
        attrs = {
            "invdiff_version": __version__,
            "input": str(src),
            "input_format": data.format,
            "operators": json.dumps([{"name": s.name, **s.params} for s, _ in ops]),
            "strategy": strategy,
            "clip_denoised": self.clip,
            "strategy_options": json.dumps({**strategy_options(strategy), **options}),
            "model": str(self.model_path),
            "model_sha256": file_sha256(self.model_path),
            "model_steps": int(self.config.get("training", {}).get("steps_done", -1)),
            "seed": seed,
            "seeds": SEED_SCHEME.replace("K", str(k_samples)),
            "samples_per_slice": k_samples,
            "simulated": simulate,
            "nfe_per_sample": nfe,
            "vjp_per_sample": vjp,
            "wall_time_s": wall,
            "wall_time_per_slice_s": wall / n,
            "device": self.device,
            "torch_threads": torch.get_num_threads(),
            "baseline": baseline_name,
        }
        if self.device.startswith("cuda"):
            attrs["peak_gpu_memory_bytes"] = int(torch.cuda.max_memory_allocated(self.device))
        message = f"wrote {dst}: {n} slice(s) x {k_samples} sample(s), {strategy}"
        if truth is not None:
            from invdiff.metrics import psnr, ssim

            out["ground_truth"] = truth
            for name, est in (("invdiff", mean), ("baseline", baseline)):
                if est is None:
                    continue
                out[f"metrics/{name}_psnr"] = psnr(est, truth)
                out[f"metrics/{name}_ssim"] = ssim(est, truth)
                attrs[f"{name}_psnr_mean"] = float(out[f"metrics/{name}_psnr"].mean())
                attrs[f"{name}_ssim_mean"] = float(out[f"metrics/{name}_ssim"].mean())
            message += f"; PSNR {attrs['invdiff_psnr_mean']:.2f} dB"
            if baseline is not None:
                message += f" (baseline {baseline_name} {attrs['baseline_psnr_mean']:.2f} dB)"
        write_datasets(dst, out, attrs, force=True)
        if png is not None:
            self._preview(png, truth, baseline, mean, out.get("std"))
        typer.echo(f"{message}; {wall:.1f} s on {self.device}")

    def _preview(self, png, truth, baseline, mean, std) -> None:
        import numpy as np

        from invdiff.images import grid, save_png

        rows = [] if truth is None else [truth]
        rows += [mean] if baseline is None else [baseline, mean]
        if std is not None:
            rows.append(std / max(float(std.max()), 1e-12))
        n = min(len(mean), 4)
        tiles = np.stack([r[i] for i in range(n) for r in rows]).clip(0, 1)
        save_png(png, grid(tiles, ncols=len(rows)), scale=2)


def _typed(entry, params: dict, source) -> dict:
    """Return a file's operator_params converted to the operator's declared types; one-line
    errors for unknown names or values of the wrong type."""
    declared = {p.name: p for p in entry.params}
    out = {}
    for name, value in params.items():
        if name not in declared:
            known = ", ".join(declared)
            raise InvdiffError(
                f"operator_params of {source} name {name!r}, which {entry.name} does not take "
                f"({known})"
            )
        want = declared[name].type
        ok = isinstance(value, want) or (want is float and isinstance(value, int))
        if not ok or isinstance(value, bool) and want is not bool:
            raise InvdiffError(
                f"operator_params of {source}: {name} must be a {want.__name__}, got {value!r}"
            )
        out[name] = want(value)
    return out
