"""Sparsity reports: per-tensor and global counts, pattern validity, mask change.

Pattern validity is *checked*, not assumed: every row records whether its mask respects its
pattern (e.g. every N:M group keeps exactly N). The mask change ("changed") is the fraction of
entries whose keep/drop decision flipped since a previous snapshot, the quantity dynamic sparse
training methods (SET, RigL, GraNet) control with their drop fraction.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from sparsecore.layouts import is_hf_conv1d, stored_pattern
from sparsecore.masks import MaskSet
from sparsecore.method import PruningMethod
from sparsecore.patterns import Pattern, Unstructured
from sparsecore.targets import PRUNABLE_TYPES

__all__ = ["SparsityReport", "TensorReport", "effective_tensor", "load_checkpoint", "snapshot"]


def snapshot(masks: MaskSet | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copies of the current masks, to pass later as ``previous`` to a report builder.

    Args:
        masks: A `sparsecore.masks.MaskSet` or a mapping of name to bool mask.
    """
    live = masks.masks() if isinstance(masks, MaskSet) else masks
    return {name: m.detach().to(torch.bool).clone() for name, m in live.items()}


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a saved ``state_dict`` safely: ``.safetensors`` files (compact sparse checkpoints
    from `sparsecore.export.save_compact` are decoded and verified), or ``torch.save`` files
    loaded with ``weights_only=True`` (a ``{"state_dict": ...}`` wrapper is unwrapped).

    Args:
        path: The file.

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file is not a readable state_dict (the message says which kind).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist or is not a file")
    safetensors = path.suffix == ".safetensors"
    if safetensors and _is_compact(path):
        # a compact sparse checkpoint (``::bits`` / ``::values`` entries): decoded and verified
        # by the export module, masks included
        from sparsecore.export.checkpoint import load_compact

        return load_compact(path)
    try:
        if safetensors:
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        kind = "a safetensors" if safetensors else "a torch.save state_dict"
        raise ValueError(
            f"cannot read checkpoint {str(path)!r}: not {kind} file ({type(err).__name__})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {str(path)!r} does not hold a state_dict")
    return state


def _is_compact(path: Path) -> bool:
    """Whether a safetensors file was written by `sparsecore.export.save_compact`."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return "sparsecore" in (handle.metadata() or {})
    except (SafetensorError, OSError):
        return False


@dataclass(frozen=True)
class TensorReport:
    """The sparsity of one tensor.

    Attributes:
        name: Qualified parameter name.
        shape: Tensor shape.
        numel: Number of entries.
        nnz: Kept (nonzero / unmasked) entries.
        pattern: The pattern the mask was checked against.
        valid: Whether the mask respects ``pattern``.
        changed: Fraction of entries whose mask flipped since ``previous`` (``None`` without one).
    """

    name: str
    shape: tuple[int, ...]
    numel: int
    nnz: int
    pattern: str
    valid: bool
    changed: float | None = None

    @property
    def sparsity(self) -> float:
        """Fraction of removed entries."""
        return 1.0 - self.nnz / self.numel if self.numel else 0.0


def _stored_or_given(model: nn.Module, name: str, pattern: Pattern) -> Pattern:
    """The pattern in ``name``'s stored layout, or ``pattern`` itself when it has no transpose
    (``Head`` on a ``Conv1D``): the row then reports the mask as not valid for it.
    """
    try:
        return stored_pattern(model, name, pattern)
    except ValueError:
        return pattern


@dataclass(frozen=True)
class SparsityReport:
    """Per-tensor and global sparsity figures; ``str(report)`` is a table.

    Build one with `from_masks` (a method's `sparsecore.masks.MaskSet`),
    `from_model` (zeros of the weights, or the mask buffers where present) or
    `from_state_dict` (a saved checkpoint).

    Attributes:
        tensors: One `TensorReport` per tensor, in model order.
    """

    tensors: tuple[TensorReport, ...] = field(default_factory=tuple)

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_masks(
        cls,
        masks: MaskSet | PruningMethod | Mapping[str, torch.Tensor],
        previous: Mapping[str, torch.Tensor] | None = None,
    ) -> SparsityReport:
        """Report on a set of masks.

        Args:
            masks: A `sparsecore.masks.MaskSet` (patterns are taken from its targets),
                a set-up `sparsecore.method.PruningMethod`, or a mapping of name to bool
                mask (checked as `sparsecore.patterns.Unstructured`).
            previous: Earlier masks (see `snapshot`) to compute the changed fraction.
        """
        _check_previous(previous)
        if isinstance(masks, PruningMethod):
            masks = masks.masks
        if isinstance(masks, MaskSet):
            live = masks.masks()
            patterns = {n: t.pattern for n, t in masks.targets.items()}
        else:
            live = dict(masks)
            patterns = {}
        rows = []
        for name, mask in live.items():
            mask = mask.detach().to(torch.bool)
            before = previous.get(name) if previous is not None else None
            if before is not None and tuple(before.shape) != tuple(mask.shape):
                raise ValueError(
                    f"previous mask of {name!r} has shape {tuple(before.shape)}, "
                    f"now {tuple(mask.shape)}"
                )
            rows.append(_row(name, mask, patterns.get(name, Unstructured()), before))
        return cls(tuple(rows))

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        pattern: Pattern | Mapping[str, Pattern] | None = None,
        previous: Mapping[str, torch.Tensor] | None = None,
    ) -> SparsityReport:
        """Report on every Linear / Conv / Hugging Face ``Conv1D`` weight of ``model``.

        Where a module carries a mask buffer (``weight_mask``, a method is set up) the mask is
        reported; otherwise the nonzeros of the (effective) weight.

        Args:
            model: The model.
            pattern: Pattern to check the masks against: one for all, in ``nn.Linear``'s
                ``(out, in)`` convention (transposed for ``Conv1D`` weights, as methods do), or
                a mapping of name to stored-layout pattern; default
                `sparsecore.patterns.Unstructured`.
            previous: Earlier masks to compute the changed fraction.
        """
        masks: dict[str, torch.Tensor] = {}
        for module_name, module in model.named_modules():
            if not (isinstance(module, PRUNABLE_TYPES) or is_hf_conv1d(module)):
                continue
            name = f"{module_name}.weight" if module_name else "weight"
            buffer = getattr(module, "weight_mask", None)
            if isinstance(buffer, torch.Tensor):
                masks[name] = buffer.to(torch.bool)
            else:
                masks[name] = effective_tensor(module, "weight") != 0
        if isinstance(pattern, Pattern):
            pattern = {name: _stored_or_given(model, name, pattern) for name in masks}
        return cls._with_patterns(masks, pattern, previous)

    @classmethod
    def from_state_dict(
        cls,
        state: Mapping[str, Any],
        pattern: Pattern | Mapping[str, Pattern] | None = None,
        min_dims: int = 2,
    ) -> SparsityReport:
        """Report on the weight tensors of a saved ``state_dict``.

        Every floating tensor with at least ``min_dims`` dimensions is reported (Linear and Conv
        weights, embeddings). A ``<name>_mask`` entry, if present, is used as ``<name>``'s mask.

        Args:
            state: A mapping of name to tensor (e.g. ``torch.load(path, weights_only=True)``).
            pattern: Pattern(s) to check against; default unstructured.
            min_dims: Smallest number of dimensions of a reported tensor.
        """
        masks: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                continue
            if value.dim() < min_dims:
                continue
            stored = state.get(f"{key}_mask")
            if isinstance(stored, torch.Tensor) and stored.shape == value.shape:
                masks[key] = stored.to(torch.bool)
            else:
                masks[key] = value != 0
        if not masks:
            raise ValueError("state_dict holds no weight tensor to report on")
        return cls._with_patterns(masks, pattern, None)

    @classmethod
    def _with_patterns(
        cls,
        masks: dict[str, torch.Tensor],
        pattern: Pattern | Mapping[str, Pattern] | None,
        previous: Mapping[str, torch.Tensor] | None,
    ) -> SparsityReport:
        _check_previous(previous)
        rows = []
        for name, mask in masks.items():
            if isinstance(pattern, Mapping):
                pat = pattern.get(name, Unstructured())
            else:
                pat = pattern or Unstructured()
            before = previous.get(name) if previous is not None else None
            rows.append(_row(name, mask, pat, before))
        return cls(tuple(rows))

    # ------------------------------------------------------------------ global figures
    @property
    def numel(self) -> int:
        """Total entries over all reported tensors."""
        return sum(t.numel for t in self.tensors)

    @property
    def nnz(self) -> int:
        """Total kept entries."""
        return sum(t.nnz for t in self.tensors)

    @property
    def sparsity(self) -> float:
        """Global fraction of removed entries."""
        return 1.0 - self.nnz / self.numel if self.numel else 0.0

    @property
    def valid(self) -> bool:
        """Whether every mask respects its pattern."""
        return all(t.valid for t in self.tensors)

    @property
    def changed(self) -> float | None:
        """Global fraction of flipped entries (``None`` when no previous masks were given)."""
        known = [t for t in self.tensors if t.changed is not None]
        if not known:
            return None
        total = sum(t.numel for t in known)
        return sum(t.changed * t.numel for t in known) / total if total else 0.0  # type: ignore[operator]

    def __getitem__(self, name: str) -> TensorReport:
        for row in self.tensors:
            if row.name == name:
                return row
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-serialisable)."""
        return {
            "numel": self.numel,
            "nnz": self.nnz,
            "sparsity": self.sparsity,
            "valid": self.valid,
            "changed": self.changed,
            "tensors": [
                {
                    "name": t.name,
                    "shape": list(t.shape),
                    "numel": t.numel,
                    "nnz": t.nnz,
                    "sparsity": t.sparsity,
                    "pattern": t.pattern,
                    "valid": t.valid,
                    "changed": t.changed,
                }
                for t in self.tensors
            ],
        }

    def __str__(self) -> str:
        header = ("tensor", "shape", "numel", "nnz", "sparsity", "pattern", "valid", "changed")
        lines = [header]
        for t in self.tensors:
            lines.append(
                _cells(t.name, t.shape, t.numel, t.nnz, t.sparsity, t.pattern, t.valid, t.changed)
            )
        lines.append(
            _cells("total", "", self.numel, self.nnz, self.sparsity, "", self.valid, self.changed)
        )
        widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
        out = []
        for i, row in enumerate(lines):
            out.append(
                "  ".join(
                    c.ljust(w) if j < 2 or j == 5 else c.rjust(w)
                    for j, (c, w) in enumerate(zip(row, widths, strict=True))
                )
            )
            if i == 0 or i == len(lines) - 2:
                out.append("  ".join("-" * w for w in widths))
        return "\n".join(line.rstrip() for line in out)


def _cells(name, shape, numel, nnz, sparsity, pattern, valid, changed) -> tuple[str, ...]:
    shape_s = "x".join(str(s) for s in shape) if isinstance(shape, tuple) else str(shape)
    changed_s = "-" if changed is None else f"{changed:.4f}"
    return (
        name,
        shape_s,
        str(numel),
        str(nnz),
        f"{sparsity:.4f}",
        str(pattern),
        "yes" if valid else "NO",
        changed_s,
    )


def _check_previous(previous: object) -> None:
    if previous is not None and not isinstance(previous, Mapping):
        raise TypeError(
            "previous must map names to earlier masks (use snapshot(masks)), "
            f"got {type(previous).__name__}"
        )


def _row(
    name: str, mask: torch.Tensor, pattern: Pattern, previous: torch.Tensor | None
) -> TensorReport:
    mask = mask.detach().to(torch.bool).cpu()
    changed = None
    if previous is not None:
        flipped = int((previous.detach().to(torch.bool).cpu() != mask).sum())
        changed = flipped / mask.numel() if mask.numel() else 0.0
    try:
        valid = bool(pattern.is_valid(mask))
    except (ValueError, RuntimeError):
        valid = False
    return TensorReport(
        name=name,
        shape=tuple(mask.shape),
        numel=mask.numel(),
        nnz=int(mask.sum()),
        pattern=str(pattern),
        valid=valid,
        changed=changed,
    )


@torch.no_grad()
def effective_tensor(module: nn.Module, param_name: str) -> torch.Tensor:
    """The tensor the forward uses (parametrizations applied), times its mask buffer if any.

    Args:
        module: The module owning the tensor.
        param_name: The tensor's attribute name (``"weight"``).
    """
    tensor = getattr(module, param_name)
    if not parametrize.is_parametrized(module, param_name):
        mask = getattr(module, f"{param_name}_mask", None)
        if isinstance(mask, torch.Tensor) and mask.shape == tensor.shape:
            tensor = tensor.masked_fill(~mask.to(torch.bool), 0)
    return tensor.detach()
