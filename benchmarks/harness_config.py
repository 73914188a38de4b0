"""The benchmark harness's configuration: the settings that decide its numbers (stored in its
JSON), the CI smoke configuration and the untrained tiny network that goes with it."""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks import datasets
from invdiff.eval.baselines import FISTA_ITERATIONS


@dataclass
class Config:
    """Everything that decides the numbers; stored in the JSON."""

    tasks: list[str] = field(default_factory=lambda: list(datasets.TASKS))
    size: int = datasets.SIZE
    n_val: int = datasets.N_VAL
    n_test: int = datasets.N_TEST
    n_tune: int = 4  # validation images for DiffPIR's lambda
    n_fista_val: int = 8  # validation images for the FISTA-TV weight
    samples: int = 4
    main_steps: int = 50
    fast_steps: int = 49
    fast_lams: list[float] = field(default_factory=lambda: [1.0, 7.0, 50.0])
    sweep_tasks: list[str] = field(default_factory=lambda: ["ct23", "mri8"])
    sweep_strategies: list[str] = field(
        default_factory=lambda: [
            "projection",
            "diffpir",
            "dps",
            "noisy_likelihood",
            "replacement",
            "moment",
        ]
    )
    sweep_nfe: list[int] = field(default_factory=lambda: [20, 50, 100, 200, 400])
    sweep_images: int = 4
    fista_iterations: int = FISTA_ITERATIONS
    fista_grid_points: int = 0  # 0: FISTA_GRIDS as given
    fista_refine: int = 2
    batch: int = 32
    threads: int = 2
    clip: bool = True  # clip the prior's denoised estimate to [0, 1], as `invdiff solve` does
    device: str = "cpu"
    model: str | None = None
    name: str = "harness"
    data_dir: str = str(datasets.DATA)


def tiny_config() -> Config:
    """Return the CI configuration: 32 x 32, 2 images, an untrained tiny network, few steps."""
    return Config(
        size=32,
        n_val=2,
        n_test=2,
        n_tune=1,
        n_fista_val=2,
        samples=2,
        main_steps=2,
        fast_steps=2,
        fast_lams=[7.0],
        sweep_strategies=["projection", "diffpir", "replacement"],
        sweep_nfe=[4],
        sweep_images=1,
        fista_iterations=3,
        fista_grid_points=2,
        fista_refine=0,
        threads=1,
        name="harness_tiny",
        data_dir=str(datasets.DATA / "tiny"),
    )


def tiny_model(size: int = 32):
    """Return an untrained small ScoreModel (VE SDE) and its config, for smoke tests."""
    from invdiff.core.checkpoint import build_model

    config = {
        "net": {
            "channels": 1,
            "base": 8,
            "mult": [1, 2],
            "num_res_blocks": 1,
            "attn_resolutions": [],
        },
        "sde": {"name": "ve", "sigma_min": 0.01, "sigma_max": 10.0},
        "image": {"channels": 1, "size": size},
        "sigma_data": 0.25,
    }
    return build_model(config).eval(), config
