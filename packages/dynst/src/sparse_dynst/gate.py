"""The sensor gate: a model-agnostic input wrapper holding one spatial mask for all timestamps.

DynST (Wu et al., KDD 2024, arXiv 2403.02914) prunes *input sensors*, not weights. A raw
spatio-temporal batch has a time axis, so a naive per-frame mask could differ between timestamps
(the paper's "conflicts at different timestamps"). The paper's remedy is "dynamic merge
technology, along with ingenious dimensional mapping to mitigate potential impacts caused by the
temporal aspect" (abstract; a review describes the "stream morph operator" as eliminating the
temporal dimension's interference). The method section's equations could not be read here, so
the form below is [recon, unconfirmed]:

1. *Dynamic merge* (`stream_morph`): time and channels are merged into one axis,
   ``(B, T, C, H, W) -> (B, T·C, H, W)`` for grids, ``(B, T, N, C) -> (B, T·C, N)`` for graphs,
   and one gate ``s ⊙ m`` (``R^{H×W}`` or ``R^N``) multiplies every one of the ``T·C`` maps: the
   same sensors are on at every timestamp and channel by construction.
2. *Dimensional mapping*: a learned linear map ``Φ ∈ R^{(T·C)×(T·C)}`` over the merged axis,
   applied at every sensor (pointwise in space, no bias), initialised to the identity:
   ``z' = Φ z``. It lets the forecaster re-mix the gated history across timestamps and channels
   before the backbone sees it, e.g. to compensate for what the mask removed. Because it never
   mixes sensors and has no bias, a deactivated sensor stays exactly zero at every timestamp.
   With ``Φ = I`` (``history=None``, or before training) the wrapper equals broadcasting the
   gate over time, which is what an earlier version did (issue 25); a test tells them apart.
3. `dimension_map` unfolds the merged axis back into the backbone's ``(T, C)`` layout, and the
   wrapped forecaster runs unchanged: it still predicts every location.

Deployment (`SensorGate.forward_active`): a forecast can be made from the active sensors'
readings alone, ``(B, T, C, k)`` (grid) or ``(B, T, k, C)`` (graph): they are scattered into a
zero field and the same forward runs; deactivated sensors are never read.

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
        history: ``(T, C)`` of the input: adds the learned dimensional mapping ``Φ``
            (``dimension_mapping``, ``(T·C)²`` parameters, identity at init). ``None``: no
            mapping (the gate is broadcast over time).

    Example:
        >>> gated = SensorGate(nn.Identity(), "graph", 5)
        >>> gated(torch.ones(2, 3, 5, 1)).shape
        torch.Size([2, 3, 5, 1])
    """

    def __init__(
        self,
        model: nn.Module,
        layout: Layout,
        spatial_shape: int | Sequence[int],
        history: tuple[int, int] | None = None,
    ):
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
        self.history: tuple[int, int] | None = None
        if history is not None:
            if (
                not isinstance(history, tuple | list)
                or len(history) != 2
                or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in history)
            ):
                raise ValueError(f"history must be (T, C), two positive integers, got {history!r}")
            self.history = (int(history[0]), int(history[1]))
            size = self.history[0] * self.history[1]
            self.dimension_mapping = nn.Parameter(torch.eye(size))

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
        if self.history is not None and (steps, channels) != self.history:
            raise ValueError(
                f"SensorGate: input has (T, C) = ({steps}, {channels}), the dimensional mapping "
                f"was built for history={self.history}"
            )
        z = stream_morph(x, self.layout)
        gate = self.sensor_gate.to(z.dtype)
        mask = self.sensor_mask
        if torch.is_grad_enabled() and gate.requires_grad:
            # value exactly s*m; gradient dense (regrowth reads it for inactive sensors).
            effective = gate * mask + (gate - gate.detach()) * ~mask
            z = z * effective
        else:
            z = torch.where(mask, z * gate, torch.zeros((), dtype=z.dtype, device=z.device))
        if self.history is not None:  # dimensional mapping: mix T·C at each sensor
            z = torch.einsum("ij,bj...->bi...", self.dimension_mapping.to(z.dtype), z)
        return dimension_map(z, self.layout, steps, channels)

    def active_index(self) -> torch.Tensor:
        """Flat indices (row-major over the spatial shape) of the sensors the mask keeps."""
        return self.sensor_mask.reshape(-1).nonzero().reshape(-1)

    def forward_active(self, readings: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """Forecast from the active sensors' readings only (deactivated sensors are not read).

        Args:
            readings: ``(B, T, C, k)`` for a grid or ``(B, T, k, C)`` for a graph, the ``k``
                active sensors in `active_index` order.
            *args: Passed to the forecaster.
            **kwargs: Passed to the forecaster.

        Returns:
            The forecaster's output: equal to ``forward`` on a full input whose active sensors
            hold ``readings`` (whatever the others hold).

        Raises:
            ValueError: ``readings`` does not have ``k`` sensors in the right place.
        """
        index = self.active_index()
        axis = 3 if self.layout == "grid" else 2
        if readings.dim() != 4 or readings.shape[axis] != index.numel():
            want = "(B, T, C, k)" if self.layout == "grid" else "(B, T, k, C)"
            raise ValueError(
                f"readings must be {want} with k={index.numel()} active sensors, got shape "
                f"{tuple(readings.shape)}"
            )
        n = self.num_sensors
        if self.layout == "grid":
            b, t, c, _ = readings.shape
            full = readings.new_zeros(b, t, c, n).index_copy_(3, index, readings)
            x = full.reshape(b, t, c, *self.spatial_shape)
        else:
            b, t, _, c = readings.shape
            x = readings.new_zeros(b, t, n, c).index_copy_(2, index, readings)
        return self.forward(x, *args, **kwargs)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """Gate ``x`` and run the wrapped forecaster on it (extra arguments passed through)."""
        return self.model(self.gate_input(x), *args, **kwargs)

    def extra_repr(self) -> str:  # noqa: D102
        return f"layout={self.layout!r}, spatial_shape={self.spatial_shape}"
