"""Small deliberately broken or duplicated operator plugins for the plugin and kit tests."""

from __future__ import annotations

import types
from typing import ClassVar

import torch
from torch import Tensor

from invdiff.core.operator import LinearOperator
from invdiff.hookspecs import hookimpl
from invdiff.plugins import Registry, build_registry, make_plugin_manager


class Scale(LinearOperator):
    """y = 2 x: a correct operator the broken ones below start from."""

    name: ClassVar[str] = "scale"

    @classmethod
    def example(cls, generator: torch.Generator) -> Scale:
        return cls((1, 37, 31))

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return 2 * x

    def adjoint(self, y: Tensor) -> Tensor:
        return 2 * y


class WrongAdjoint(Scale):
    """Adjoint off by 1e-4 relative: the float64 dot-product test must catch it."""

    name: ClassVar[str] = "wrong_adjoint"

    def adjoint(self, y: Tensor) -> Tensor:
        return 2.0002 * y


class BatchMixing(Scale):
    """Forward leaks the batch mean into every sample."""

    name: ClassVar[str] = "batch_mixing"

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) + x.mean(0, keepdim=True)


class DowncastsToFloat32(Scale):
    """Forward returns float32 whatever the input."""

    name: ClassVar[str] = "downcasts"

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x).float()


class NoisyEverywhere(Scale):
    """Declares half the pixels unmeasured but puts noise on them anyway."""

    name: ClassVar[str] = "noisy_everywhere"

    def restrict_to_measured(self, y: Tensor) -> Tensor:
        return y * (torch.arange(y.shape[-1], device=y.device) % 2)

    def measure(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        n = torch.randn(self(x).shape, generator=generator, dtype=x.dtype)
        return self(x) + self.noise_std * n


class SquareExample(Scale):
    """Example on a square 32 x 32 image: hides transposed H / W bugs."""

    name: ClassVar[str] = "square_example"

    @classmethod
    def example(cls, generator: torch.Generator) -> SquareExample:
        return cls((1, 32, 32))


def plugin(*classes: type) -> types.SimpleNamespace:
    """Return a plugin object whose register_operators hook registers ``classes``."""

    @hookimpl
    def register_operators(register) -> None:
        for cls in classes:
            register(cls)

    return types.SimpleNamespace(register_operators=register_operators)


def registry_of(**plugins: types.SimpleNamespace) -> Registry:
    """Return a registry built from a fresh manager holding only ``plugins`` (name=plugin)."""
    return build_registry(make_plugin_manager(entry_points=False, plugins=plugins.items()))


@hookimpl
def register_operators(register) -> None:
    """Let this module act as an entry-point plugin that registers a broken operator."""
    register(WrongAdjoint)
