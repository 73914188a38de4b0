"""Classifier likelihood: a hypothesis "the image belongs to class c" as a measurement.

The operator wraps a time-conditional classifier p_t(y | x_t) (:mod:`invdiff.training.classifier`).
It is TIME-CONDITIONAL: its likelihood score depends on the diffusion time,

    likelihood_score_t(x_t, t, c) = s * grad_x log p_t(y = c | x_t),

the classifier-guidance term of Song et al. (ICLR 2021, Sec. 5, class-conditional sampling),
tempered by the scale s (Dhariwal and Nichol, NeurIPS 2021). :func:`invdiff.guidance.solve` adds
it to the prior score (:class:`invdiff.guidance.ClassifierGuidedScore`) and hands the remaining,
ordinary measurements to the chosen strategy, so ``--operator ct_sparse --operator classifier
--label 1`` samples p(x | y_CT, lesion present) by Bayes' rule for scores.

As a plain (time-free) operator it maps x to the class probabilities p_{t_min}(. | x), shape
(B, K), with the usual Gaussian likelihood; that keeps the Operator contract (and DPS) working.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from invdiff.core.operator import DEFAULT_NOISE_STD, Operator, Param
from invdiff.core.sde import SDE, VESDE
from invdiff.errors import InvdiffError
from invdiff.hookspecs import hookimpl
from invdiff.training.classifier import (
    ClassifierConfig,
    ClassifierNet,
    NoiseClassifier,
    default_classifier_path,
    load_classifier,
)


class Classifier(Operator):
    """Class probabilities of a noise-conditional classifier; time-conditional likelihood."""

    name: ClassVar[str] = "classifier"
    #: The likelihood needs the diffusion time t: guidance folds it into the prior score.
    time_conditional: ClassVar[bool] = True
    params: ClassVar[tuple[Param, ...]] = (
        Param("label", int, 1, "the class c of the hypothesis p(x | y = c)"),
        Param("scale", float, 1.0, "guidance scale s: the likelihood is p_t(c | x_t)^s"),
        Param("classifier", str, "", "classifier checkpoint (default: shipped lesion classifier)"),
    )

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        *,
        noise_std: float = DEFAULT_NOISE_STD,
        label: int = 1,
        scale: float = 1.0,
        classifier: str = "",
        net: NoiseClassifier | None = None,
    ):
        super().__init__(image_shape, noise_std=noise_std)
        if net is None:
            if not classifier and not default_classifier_path().is_file():
                raise InvdiffError(
                    "classifier: no lesion classifier is shipped yet; train one with `invdiff "
                    "train-classifier DATA.h5 --model MODEL --out clf.pt` and pass --classifier"
                )
            net, config = load_classifier(classifier or None)
            c, size = config["image"]["channels"], config["image"]["size"]
            if self.image_shape != (c, size, size):
                raise InvdiffError(
                    f"classifier: it was trained on {c}x{size}x{size} images but the model's are "
                    f"{'x'.join(map(str, self.image_shape))}; pass a matching --classifier"
                )
        if not 0 <= label < net.num_classes:
            raise InvdiffError(
                f"classifier: --label {label} is not a class; use 0..{net.num_classes - 1}"
            )
        if not scale >= 0:
            raise InvdiffError(f"classifier: --scale must be >= 0, got {scale}")
        self.clf = net.eval().requires_grad_(False)
        self.label, self.scale = int(label), float(scale)

    @classmethod
    def example(cls, generator: torch.Generator) -> Classifier:
        """Return a random 32-class classifier on 1 x 37 x 31 images (enough noise entries)."""
        net = ClassifierNet(ClassifierConfig(channels=1, num_classes=32, base=8, mult=(1, 2)))
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(0.3 * torch.randn(p.shape, generator=generator))
        return cls((1, 37, 31), label=3, scale=2.0, net=NoiseClassifier(net, VESDE(0.01, 10.0)))

    def _run(self, x: Tensor, t: Tensor) -> Tensor:
        """Return log p_t(. | x_t) in x's dtype (the network runs in its own dtype)."""
        self.check_input(x)
        dtype = next(self.clf.parameters()).dtype
        return torch.log_softmax(self.clf(x.to(dtype), t.to(dtype)), dim=1).to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """Return the class probabilities p_{t_min}(. | x), shape (B, K)."""
        t = torch.full((len(x),), self.clf.sde.t_min, dtype=x.dtype, device=x.device)
        return self._run(x, t).exp()

    def log_likelihood_t(self, x: Tensor, t: Tensor, label: Tensor | int | None = None) -> Tensor:
        """Return s * log p_t(y = label | x_t) per sample (label: default ``--label``)."""
        label = self.label if label is None else label
        index = torch.as_tensor(label, device=x.device).long().reshape(-1, 1)
        logp = self._run(x, t)
        return self.scale * logp.gather(1, index.expand(len(x), 1)).squeeze(1)

    def likelihood_score_t(self, x: Tensor, t: Tensor, label: Tensor | int | None = None) -> Tensor:
        """Return s * grad_x log p_t(y = label | x_t), by autograd through the classifier."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.log_likelihood_t(xg, t, label).sum(), xg)
        return grad

    def hypothesis_labels(self, n: int) -> Tensor:
        """Return ``--label`` for each of n slices."""
        return torch.full((n,), self.label, dtype=torch.long)

    def check_sde(self, sde: SDE) -> None:
        """Raise ValueError unless the classifier was trained for this forward SDE."""
        if sde.config() != self.clf.sde.config():
            raise ValueError(
                f"classifier was trained for the SDE {self.clf.sde.config()} but the model uses "
                f"{sde.config()}; use the model it was trained with (the shipped lesion "
                "classifier: --model phantom64) or `invdiff train-classifier --model MODEL`"
            )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, label={self.label}, scale={self.scale}"


@hookimpl
def register_operators(register) -> None:
    """Register the classifier operator."""
    register(Classifier)
