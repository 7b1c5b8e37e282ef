"""Post-training one-shot pruning with calibration data: Wanda and SparseGPT.

* `Wanda`: Sun, Liu, Bair, Kolter, "A Simple and Effective Pruning Approach for Large
  Language Models", arXiv 2306.11695 (code: locuslab/wanda, ``lib/prune.py``). Score
  ``|W_ij| · ‖X_j‖₂``, compared within each output row; no weight update.
* `SparseGPT`: Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be Accurately
  Pruned in One-Shot", arXiv 2301.00774 (code: IST-DASLab/sparsegpt, ``sparsegpt.py``). Row-wise
  OBS reconstruction with the Hessian ``H = X Xᵀ``: 1% mean-diagonal damping, the upper Cholesky
  factor of ``H⁻¹``, column blocks of 128 with lazy batched updates of the later columns, and the
  mask chosen adaptively per block by ``w² / [H⁻¹]_jj²``.

Both are ``PruningMethod`` subclasses with ``needs_calibration``: ``setup`` adds
dense masks, ``calibrate(batches)`` prunes. On a Hugging Face decoder the calibration is
sequential over decoder layers (`sparsecore.calibration.calibrate_decoder`: layer ``i`` is
calibrated on the outputs of the already pruned layer ``i-1``, every Linear of a layer is
pruned from the statistics of the dense layer's inputs, as in both official drivers); on any
other model (an MLP) the targets are visited in forward order
(`sparsecore.calibration.calibrate_modules`). With ``targets=None`` on a model with output
embeddings, the LM head is left dense, as both official codes do.

Choices, labelled:

* **Wanda, unstructured**: per row, the ``int(in · sparsity)`` lowest scores are pruned, ties to
  the lower column index (a stable ascending sort, as the official ``torch.sort(stable=True)``).
* **N:M** (``"2:4"`` keeps 2 of every 4 consecutive inputs, the core's convention; the official
  flags name the number pruned): the ``m - n`` lowest scores of each group are pruned, ties to
  the lower index. SparseGPT picks each group's mask when its first column is reached, from the
  weights updated so far (official).
* **SparseGPT, unstructured**: per block, exactly ``int(rows · block_cols · sparsity)`` entries
  are pruned (the official threshold ``tmp <= sorted[k]`` prunes ``k + 1`` or more at ties); ties
  to the lower flat index. Dead inputs (``H_jj = 0``) get ``H_jj = 1`` and zero weights (official).
* **Applicability**: ``tasks = ("stdlib-lm",)``: ``sparse bench`` lists them only for the LM task,
  because pruning a randomly initialised MLP before training is not what they are for; the
  methods themselves work on any model with Linear layers and a calibration batch (the
  conformance suite runs them on an MLP).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from sparsecore.calibration import (
    LinearStatistics,
    calibrate_decoder,
    calibrate_modules,
    decoder_layers,
)
from sparsecore.layouts import is_hf_conv1d
from sparsecore.method import Batch, LossFn, MethodConfig, PruningMethod
from sparsecore.patterns import NM, Pattern, Unstructured
from sparsecore.targets import Target
from sparsecore.taxonomy import Taxonomy
from sparsecore.validation import check_int, check_number

__all__ = [
    "SparseGPT",
    "SparseGPTConfig",
    "Wanda",
    "WandaConfig",
    "sparsegpt_prune",
    "wanda_keep",
    "wanda_scores",
]


def wanda_scores(weight: torch.Tensor, sq_sum: torch.Tensor) -> torch.Tensor:
    """``|W_ij| · ‖X_j‖₂`` for a weight in ``(out, in)`` layout and ``sq_sum[j] = Σ x_j²``."""
    return weight.detach().abs().double() * sq_sum.to(weight.device).double().sqrt()[None, :]


def _prune_lowest_per_group(scores: torch.Tensor, group: int, count: int) -> torch.Tensor:
    """Keep-mask pruning the ``count`` lowest of every ``group`` consecutive entries of a row."""
    rows, cols = scores.shape
    grouped = scores.reshape(rows, cols // group, group)
    order = torch.sort(grouped, dim=-1, stable=True).indices
    keep = torch.ones_like(grouped, dtype=torch.bool)
    keep.scatter_(-1, order[..., :count], False)
    return keep.reshape(rows, cols)


def wanda_keep(
    scores: torch.Tensor, sparsity: float, pattern: Pattern | None = None
) -> torch.Tensor:
    """Wanda's keep-mask from scores in ``(out, in)`` layout, compared per output row.

    Args:
        scores: `wanda_scores`.
        sparsity: Fraction pruned per row (ignored for N:M).
        pattern: ``Unstructured`` (default) or ``NM`` along the inputs.

    Returns:
        A bool keep-mask of the scores' shape.
    """
    if isinstance(pattern, NM):
        return _prune_lowest_per_group(scores, pattern.m, pattern.m - pattern.n)
    cols = scores.shape[1]
    return _prune_lowest_per_group(scores, cols, int(cols * sparsity + 1e-9))


def _block_keep(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    count = int(scores.numel() * sparsity + 1e-9)
    order = torch.sort(scores.flatten(), stable=True).indices
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    keep[order[:count]] = False
    return keep.reshape(scores.shape)


@torch.no_grad()
def sparsegpt_prune(
    weight: torch.Tensor,
    gram: torch.Tensor,
    sparsity: float,
    pattern: Pattern | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
    keep: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT on one weight in ``(out, in)`` layout.

    Args:
        weight: The dense weight ``(rows, cols)``.
        gram: ``Σ x xᵀ`` ``(cols, cols)`` of the layer's inputs (any positive scale).
        sparsity: Fraction pruned (unstructured; ignored for N:M or a fixed ``keep``).
        pattern: ``Unstructured`` or ``NM`` along the inputs.
        blocksize: Columns per lazy-update block.
        percdamp: Damping, as a fraction of the mean diagonal of ``gram``.
        keep: A fixed keep-mask (only the OBS weight update runs).

    Returns:
        ``(new_weight, keep)``: the updated weight (zeros where pruned, ``weight``'s dtype) and
        the bool keep-mask.
    """
    dtype = torch.promote_types(gram.dtype, torch.float32)
    W = weight.detach().to(dtype).clone()
    H = gram.to(W.device, dtype).clone()
    cols = W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H.diagonal().add_(percdamp * torch.mean(torch.diag(H)))
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    pruned = torch.zeros_like(W, dtype=torch.bool)
    nm = pattern if isinstance(pattern, NM) else None
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        diag = torch.diag(Hinv1)
        if keep is not None:
            mask1 = ~keep[:, i1:i2].to(W.device)
        elif nm is None:
            mask1 = ~_block_keep(W1**2 / diag[None, :] ** 2, sparsity)
        else:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
        for i in range(i2 - i1):
            if keep is None and nm is not None and i % nm.m == 0:
                group = W1[:, i : i + nm.m] ** 2 / diag[None, i : i + nm.m] ** 2
                mask1[:, i : i + nm.m] = ~_prune_lowest_per_group(group, nm.m, nm.m - nm.n)
            w = W1[:, i]
            q = torch.where(mask1[:, i], torch.zeros_like(w), w)
            Q1[:, i] = q
            err = (w - q) / Hinv1[i, i]
            W1[:, i:] -= err[:, None] * Hinv1[i, i:][None, :]
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        pruned[:, i1:i2] = mask1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return W.to(weight.dtype), ~pruned


@dataclass(frozen=True)
class WandaConfig(MethodConfig):
    """Wanda options (the official default sparsity 0.5)."""

    sparsity: float = 0.5


@dataclass(frozen=True)
class SparseGPTConfig(MethodConfig):
    """SparseGPT options.

    Attributes:
        blocksize: Columns per lazy-update block (official 128); a multiple of ``m`` for N:M.
        percdamp: Damping as a fraction of the mean Hessian diagonal (official 0.01).
    """

    sparsity: float = 0.5
    blocksize: int = 128
    percdamp: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self.blocksize, "blocksize", 1)
        check_number(self.percdamp, "percdamp", 0.0, finite=True)
        if isinstance(self.pattern, NM) and self.blocksize % self.pattern.m:
            raise ValueError(
                f"blocksize ({self.blocksize}) must be a multiple of the N:M group size "
                f"m={self.pattern.m}"
            )


class _CalibratedOneShot(PruningMethod):
    """Shared lifecycle: dense masks at setup, sequential calibration prunes."""

    supported_patterns: ClassVar[tuple[type[Pattern], ...]] = (Unstructured, NM)
    needs_calibration = True
    tasks: ClassVar[tuple[str, ...]] = ("stdlib-lm",)
    #: Shown by `sparse bench` in the one-shot language-model scenario.
    bench_scenario: ClassVar[str] = "lm"
    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("unstructured", "n:m"),
        "after",
        "dense-to-sparse",
        "static",
        note="one-shot post-training pruning from calibration activations, layer by layer",
    )
    uses_hessian: ClassVar[bool] = False

    def __init__(self, config: MethodConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        #: Show a per-layer progress bar during `calibrate`.
        self.progress = False
        #: Run each decoder layer on this device during `calibrate` (default: its own).
        self.calibration_device: torch.device | str | None = None

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None):
        head = getattr(model, "get_output_embeddings", None)
        if self.config.targets is None and callable(head) and isinstance(head(), nn.Module):
            names = [f"{n}.weight" for n, m in model.named_modules() if m is head()]
            if names:
                self.config = dataclasses.replace(
                    self.config, exclude=(*self.config.exclude, *names)
                )
        return super().setup(model, optimizer)

    def validate(self, model: nn.Module, targets: list[Target]) -> None:
        modules = dict(model.named_modules())
        for target in targets:
            module = modules[target.name.rsplit(".", 1)[0]] if "." in target.name else model
            if not (isinstance(module, nn.Linear) or is_hf_conv1d(module)):
                raise ValueError(
                    f"targets: {type(self).__name__} prunes Linear / HF Conv1D weights only, "
                    f"got {target.name} of a {type(module).__name__}"
                )
        if _is_decoder(model):
            prefix = {id(m): n for n, m in model.named_modules()}[id(decoder_layers(model))]
            outside = [t.name for t in targets if not t.name.startswith(prefix + ".")]
            if outside:
                raise ValueError(
                    f"targets: layer-wise calibration prunes weights inside the decoder layers "
                    f"({prefix}.*) only; got {', '.join(outside)}"
                )

    def calibrate(self, batches: Iterable[Batch], loss_fn: LossFn | None = None) -> None:
        """Prune every target from calibration statistics (sequential over layers/targets).

        Args:
            batches: Token-id tensors, ``(ids, labels)`` pairs or dicts for a decoder; inputs,
                ``(x, y)`` pairs or keyword dicts for any other model.
            loss_fn: Unused (no gradients are needed).
        """
        model = self.model
        if model is None:
            raise RuntimeError(f"{type(self).__name__}: call setup(model) before calibrate")
        modules = {name.rsplit(".", 1)[0]: None for name in self.masks.names}
        found = {n: m for n, m in model.named_modules() if n in modules}
        if _is_decoder(model):

            def on_layer(_index: int, stats: dict[str, LinearStatistics]) -> None:
                for name, stat in stats.items():
                    self._prune(found[name], f"{name}.weight", stat)

            calibrate_decoder(
                model,
                batches,
                on_layer,
                found,
                self.uses_hessian,
                self.calibration_device,
                self.progress,
            )
        else:
            calibrate_modules(
                model,
                batches,
                found,
                lambda name, stat: self._prune(found[name], f"{name}.weight", stat),
                self.uses_hessian,
            )

    @torch.no_grad()
    def _prune(self, module: nn.Module, name: str, stats: LinearStatistics) -> None:
        param = self.masks.param(name)
        transposed = is_hf_conv1d(module)
        weight = param.detach().T if transposed else param.detach()
        pattern = self.masks.targets[name].pattern
        if transposed and isinstance(pattern, NM):
            pattern = NM(pattern.n, pattern.m, dim=1)
        new, keep = self.prune_weight(weight, stats, pattern)
        param.copy_(new.T if transposed else new)
        self.masks.update(name, (keep.T if transposed else keep).contiguous())

    def prune_weight(
        self, weight: torch.Tensor, stats: LinearStatistics, pattern: Pattern
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(new_weight, keep)`` for one weight in ``(out, in)`` layout."""
        raise NotImplementedError


def _is_decoder(model: nn.Module) -> bool:
    try:
        decoder_layers(model)
    except ValueError:
        return False
    return True


class Wanda(_CalibratedOneShot):
    """Prune by ``|W| · ‖X_j‖₂`` per output row, from calibration activations (arXiv 2306.11695)."""

    name = "wanda"
    config_class: ClassVar[type[MethodConfig]] = WandaConfig

    def prune_weight(self, weight, stats, pattern):  # noqa: D102
        keep = wanda_keep(wanda_scores(weight, stats.sq_sum), self.config.sparsity, pattern)
        return weight * keep, keep


class SparseGPT(_CalibratedOneShot):
    """OBS reconstruction with lazy block updates and adaptive masks (arXiv 2301.00774)."""

    name = "sparsegpt"
    config_class: ClassVar[type[MethodConfig]] = SparseGPTConfig
    config: SparseGPTConfig
    uses_hessian = True

    def prune_weight(self, weight, stats, pattern):  # noqa: D102
        assert stats.gram is not None
        return sparsegpt_prune(
            weight,
            stats.gram,
            self.config.sparsity,
            pattern,
            self.config.blocksize,
            self.config.percdamp,
        )
