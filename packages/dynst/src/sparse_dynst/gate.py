"""The sensor gate: a model-agnostic input wrapper holding one spatial mask for all timestamps.

DynST (Wu et al., KDD 2024, arXiv 2403.02914) prunes *input sensors*, not weights. A raw
spatio-temporal batch has a time axis, so a naive per-frame mask could differ between timestamps
(the paper's "conflicts at different timestamps"). The paper's remedy, "dynamic merge" (stream
morph) followed by "dimension mapping", is implemented literally:

1. `stream_morph` folds time and channels together: ``(B, T, C, H, W) -> (B, T·C, H, W)``
   for grids, ``(B, T, N, C) -> (B, T·C, N)`` for sensor graphs; every one of the ``T·C`` maps
   now shares one spatial layout;
2. one gate ``s ∈ R^{H×W}`` (or ``R^N``) multiplied by the bool mask ``m`` is broadcast over the
   ``T·C`` axis, so the same sensors are on at every timestamp and channel by construction;
3. `dimension_map` restores the backbone's layout, and the wrapped forecaster runs
   unchanged: it still predicts every location.

Choices (all [recon]: the paper gives no code):

* The gate is an ``nn.Parameter`` named ``sensor_gate`` (initialised to 1) so that the core's
  `sparsecore.masks.MaskSet` can own its bool mask buffer ``sensor_gate_mask``, zero it,
  and mask its gradient and optimizer state like any weight. A "parameter-free" input gate is
  thus a one-parameter-per-sensor gate; ``learn_gate=False`` in the config pins it to 0/1.
* Forward in training with autograd: ``x ⊙ (s ⊙ m + (s − sg(s)) ⊙ ¬m)``. The value is exactly
  ``x ⊙ s ⊙ m`` (masked sensors contribute exact zeros), while ``∂L/∂s`` is dense: an inactive
  sensor still gets the gradient it would have if it were switched back on at zero weight. This
  is what gradient-based regrowth needs. It requires the inactive sensors' readings during
  training (the paper trains on the full historical record and deactivates at deployment).
* Without autograd (``torch.no_grad()`` / ``inference_mode``) the masked entries are replaced by
  zeros with ``torch.where``, so an undeployed sensor may be fed NaN/garbage at inference and
  the output is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

__all__ = ["LAYOUTS", "SensorGate", "dimension_map", "stream_morph"]

Layout = Literal["grid", "graph"]
LAYOUTS: tuple[str, ...] = ("grid", "graph")
_SHAPES = {"grid": "(B, T, C, H, W)", "graph": "(B, T, N, C)"}


def stream_morph(x: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Fold time into channels (the paper's dynamic merge / stream morph).

    Grid ``(B, T, C, H, W) -> (B, T·C, H, W)``; graph ``(B, T, N, C) -> (B, T·C, N)``.

    Args:
        x: The batch in the forecaster's layout.
        layout: ``"grid"`` or ``"graph"``.
    """
    if layout == "grid":
        b, t, c, h, w = x.shape
        return x.reshape(b, t * c, h, w)
    b, t, n, c = x.shape
    return x.permute(0, 1, 3, 2).reshape(b, t * c, n)


def dimension_map(z: torch.Tensor, layout: Layout, steps: int, channels: int) -> torch.Tensor:
    """Inverse of `stream_morph`: restore ``(B,T,C,H,W)`` or ``(B,T,N,C)``.

    Args:
        z: The folded tensor.
        layout: ``"grid"`` or ``"graph"``.
        steps: ``T``.
        channels: ``C``.
    """
    if layout == "grid":
        b, _, h, w = z.shape
        return z.reshape(b, steps, channels, h, w)
    b, _, n = z.shape
    return z.reshape(b, steps, channels, n).permute(0, 1, 3, 2)


class SensorGate(nn.Module):
    """Wrap any forecaster so that one sensor mask gates its input at every timestamp.

    Args:
        model: The forecaster; it receives the gated input in its own layout.
        layout: ``"grid"`` (input ``(B, T, C, H, W)``) or ``"graph"`` (input ``(B, T, N, C)``).
        spatial_shape: ``(H, W)`` for a grid, ``N`` or ``(N,)`` for a graph.

    Example:
        >>> gated = SensorGate(nn.Identity(), "graph", 5)
        >>> gated(torch.ones(2, 3, 5, 1)).shape
        torch.Size([2, 3, 5, 1])
    """

    def __init__(self, model: nn.Module, layout: Layout, spatial_shape: int | Sequence[int]):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        shape = (spatial_shape,) if isinstance(spatial_shape, int) else tuple(spatial_shape)
        want = 2 if layout == "grid" else 1
        if len(shape) != want or any(
            isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape
        ):
            raise ValueError(
                f"spatial_shape for layout {layout!r} must be {want} positive integer(s), "
                f"got {spatial_shape!r}"
            )
        self.model = model
        self.layout: Layout = layout
        self.spatial_shape: tuple[int, ...] = shape
        self.sensor_gate = nn.Parameter(torch.ones(shape))

    @property
    def num_sensors(self) -> int:
        """``H·W`` or ``N``."""
        return self.sensor_gate.numel()

    @property
    def sensor_mask(self) -> torch.Tensor:
        """The live bool mask (all True before a method is set up; ``gate != 0`` after finalize)."""
        mask = getattr(self, "sensor_gate_mask", None)
        if mask is None:
            if getattr(self, "_finalized", False):
                return self.sensor_gate.detach() != 0
            return torch.ones(self.spatial_shape, dtype=torch.bool, device=self.sensor_gate.device)
        return mask

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ``ValueError`` naming the dimension when ``x`` does not fit the layout."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"SensorGate input must be a torch.Tensor, got {type(x).__name__}")
        expected = _SHAPES[self.layout]
        ndim = 5 if self.layout == "grid" else 4
        if x.dim() != ndim:
            raise ValueError(
                f"SensorGate({self.layout!r}) expects a {ndim}-D input {expected}, "
                f"got shape {tuple(x.shape)}"
            )
        dims = {"H": 3, "W": 4} if self.layout == "grid" else {"N": 2}
        for (label, dim), size in zip(dims.items(), self.spatial_shape, strict=True):
            if x.shape[dim] != size:
                raise ValueError(
                    f"SensorGate({self.layout!r}): input dimension {label} (dim {dim}) has size "
                    f"{x.shape[dim]}, expected {size}; input must be {expected}"
                )

    def gate_input(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the shared spatial gate to ``x`` (stream morph, gate, dimension mapping)."""
        self.check_input(x)
        steps = x.shape[1]
        channels = x.shape[2] if self.layout == "grid" else x.shape[3]
        z = stream_morph(x, self.layout)
        gate = self.sensor_gate.to(z.dtype)
        mask = self.sensor_mask
        if torch.is_grad_enabled() and gate.requires_grad:
            # value exactly s*m; gradient dense (regrowth reads it for inactive sensors).
            effective = gate * mask + (gate - gate.detach()) * ~mask
            z = z * effective
        else:
            z = torch.where(mask, z * gate, torch.zeros((), dtype=z.dtype, device=z.device))
        return dimension_map(z, self.layout, steps, channels)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """Gate ``x`` and run the wrapped forecaster on it (extra arguments passed through)."""
        return self.model(self.gate_input(x), *args, **kwargs)

    def extra_repr(self) -> str:  # noqa: D102
        return f"layout={self.layout!r}, spatial_shape={self.spatial_shape}"
