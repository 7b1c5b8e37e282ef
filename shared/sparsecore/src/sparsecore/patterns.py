"""Sparsity patterns as data.

A pattern says *which groups of entries* of a tensor are kept or removed together. Patterns are
frozen dataclasses, so they can be stored in configs, compared, hashed and serialised. They do not
select anything themselves: `sparsecore.select` turns scores into keep-masks for a pattern,
and `Pattern.is_valid` checks a mask against the pattern.

Conventions (chosen to match PyTorch weight layouts):

* ``Linear.weight`` is ``(out_features, in_features)``; ``Conv*.weight`` is ``(out, in, *kernel)``.
* `NM` groups run along ``dim`` (default ``1``, the input dimension, which is what
  semi-structured 2:4 kernels need for ``Linear``).
* `Channel` removes whole slices along ``dim`` (default ``0``: output channels / filters /
  neurons).
* `Block` tiles the first two dimensions with ``(rows, cols)`` blocks.
* `Head` groups the output dimension into ``num_heads`` contiguous heads.

Patterns are always written in ``nn.Linear``'s ``(out, in)`` convention. For weights stored
transposed (Hugging Face ``Conv1D``: ``(in, out)``), `transpose_pattern` gives the pattern of
the stored tensor; methods apply it automatically (see `sparsecore.layouts`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "NM",
    "Block",
    "Channel",
    "Head",
    "Pattern",
    "Unstructured",
    "parse_pattern",
    "transpose_pattern",
]


class Pattern:
    """Base class of every sparsity pattern."""

    #: Short name used in configs, reports and the CLI.
    kind: str = "pattern"

    def check_shape(self, shape: torch.Size | tuple[int, ...], name: str = "tensor") -> None:
        """Raise ``ValueError`` if a tensor of ``shape`` cannot carry this pattern.

        Args:
            shape: Shape of the target tensor.
            name: Name used in the error message (e.g. the parameter's qualified name).
        """

    def num_groups(self, shape: torch.Size | tuple[int, ...]) -> int:
        """Number of independently kept/removed units in a tensor of ``shape``."""
        raise NotImplementedError

    def is_valid(self, mask: torch.Tensor) -> bool:
        """Whether a boolean keep-mask respects the pattern's structure."""
        raise NotImplementedError

    def __str__(self) -> str:
        return self.kind


@dataclass(frozen=True)
class Unstructured(Pattern):
    """Any subset of individual entries."""

    kind = "unstructured"

    def num_groups(self, shape: torch.Size | tuple[int, ...]) -> int:  # noqa: D102
        return int(torch.Size(shape).numel())

    def is_valid(self, mask: torch.Tensor) -> bool:  # noqa: D102
        return mask.dtype == torch.bool


@dataclass(frozen=True)
class NM(Pattern):
    """N:M semi-structured sparsity: every group of ``m`` consecutive entries along ``dim`` keeps
    exactly ``n``.

    Args:
        n: Entries kept per group, ``0 < n < m``.
        m: Group size.
        dim: Dimension along which groups run (default 1, the input dimension).
    """

    n: int = 2
    m: int = 4
    dim: int = 1

    kind = "nm"

    def __post_init__(self) -> None:
        if not (isinstance(self.n, int) and isinstance(self.m, int)):
            raise TypeError(f"NM: n and m must be integers, got n={self.n!r}, m={self.m!r}")
        if not 0 < self.n < self.m:
            raise ValueError(f"NM: need 0 < n < m, got n={self.n}, m={self.m}")

    def check_shape(self, shape: torch.Size | tuple[int, ...], name: str = "tensor") -> None:  # noqa: D102
        shape = tuple(shape)
        if len(shape) < 2:
            raise ValueError(f"NM pattern needs a tensor with >= 2 dims; {name} has shape {shape}")
        dim = self.dim % len(shape)
        if shape[dim] % self.m:
            raise ValueError(
                f"NM({self.n}:{self.m}): dimension {dim} of {name} (size {shape[dim]}) "
                f"is not divisible by m={self.m}"
            )

    def num_groups(self, shape: torch.Size | tuple[int, ...]) -> int:  # noqa: D102
        return int(torch.Size(shape).numel())

    def groups(self, tensor: torch.Tensor) -> torch.Tensor:
        """View ``tensor`` as ``(num_groups, m)`` rows, grouping along ``dim``."""
        moved = tensor.movedim(self.dim, -1)
        return moved.reshape(-1, self.m)

    def ungroup(self, grouped: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """Inverse of `groups` for a tensor of the original ``shape``."""
        moved_shape = list(shape)
        dim = self.dim % len(shape)
        moved_shape.append(moved_shape.pop(dim))
        return grouped.reshape(moved_shape).movedim(-1, dim)

    def is_valid(self, mask: torch.Tensor) -> bool:  # noqa: D102
        try:
            self.check_shape(mask.shape)
        except ValueError:
            return False
        return bool((self.groups(mask).sum(-1) == self.n).all())

    def __str__(self) -> str:
        return f"{self.n}:{self.m}" if self.dim == 1 else f"{self.n}:{self.m}(dim={self.dim})"


@dataclass(frozen=True)
class Channel(Pattern):
    """Whole slices along ``dim`` (filters, output channels, neurons) are kept or removed.

    Args:
        dim: The dimension whose slices are the units (0: output channels).
    """

    dim: int = 0

    kind = "channel"

    def check_shape(self, shape: torch.Size | tuple[int, ...], name: str = "tensor") -> None:  # noqa: D102
        shape = tuple(shape)
        if len(shape) < 1 or not -len(shape) <= self.dim < len(shape):
            raise ValueError(f"Channel(dim={self.dim}) does not fit {name} of shape {shape}")

    def num_groups(self, shape: torch.Size | tuple[int, ...]) -> int:  # noqa: D102
        return int(tuple(shape)[self.dim])

    def reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over every dimension but ``dim`` (one value per channel)."""
        return tensor.movedim(self.dim, 0).reshape(tensor.shape[self.dim], -1).sum(1)

    def expand(self, per_channel: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """Broadcast one value per channel back to ``shape``."""
        view = [1] * len(shape)
        view[self.dim] = shape[self.dim]
        return per_channel.reshape(view).expand(shape)

    def is_valid(self, mask: torch.Tensor) -> bool:  # noqa: D102
        moved = mask.movedim(self.dim, 0).reshape(mask.shape[self.dim], -1)
        return bool((moved.all(1) | ~moved.any(1)).all())

    def __str__(self) -> str:
        return f"channel(dim={self.dim})"


@dataclass(frozen=True)
class Block(Pattern):
    """``rows x cols`` blocks over the first two dimensions are kept or removed together."""

    rows: int = 4
    cols: int = 4

    kind = "block"

    def __post_init__(self) -> None:
        if self.rows < 1 or self.cols < 1:
            raise ValueError(f"Block: rows and cols must be >= 1, got {self.rows}x{self.cols}")

    def check_shape(self, shape: torch.Size | tuple[int, ...], name: str = "tensor") -> None:  # noqa: D102
        shape = tuple(shape)
        if len(shape) < 2 or shape[0] % self.rows or shape[1] % self.cols:
            raise ValueError(
                f"Block({self.rows}x{self.cols}) does not tile {name} of shape {shape}"
            )

    def num_groups(self, shape: torch.Size | tuple[int, ...]) -> int:  # noqa: D102
        shape = tuple(shape)
        return (shape[0] // self.rows) * (shape[1] // self.cols)

    def reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over each block: returns ``(shape[0]//rows, shape[1]//cols)``."""
        r, c = tensor.shape[0] // self.rows, tensor.shape[1] // self.cols
        flat = tensor.reshape(tensor.shape[0], tensor.shape[1], -1).sum(-1)
        return flat.reshape(r, self.rows, c, self.cols).sum((1, 3))

    def expand(self, per_block: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """Broadcast one value per block back to ``shape``."""
        full = per_block.repeat_interleave(self.rows, 0).repeat_interleave(self.cols, 1)
        return full.reshape(*full.shape, *([1] * (len(shape) - 2))).expand(shape)

    def is_valid(self, mask: torch.Tensor) -> bool:  # noqa: D102
        try:
            self.check_shape(mask.shape)
        except ValueError:
            return False
        sums = self.reduce(mask.to(torch.int64))
        size = mask[0 : self.rows, 0 : self.cols].numel()
        return bool(((sums == 0) | (sums == size)).all())

    def __str__(self) -> str:
        return f"block({self.rows}x{self.cols})"


@dataclass(frozen=True)
class Head(Pattern):
    """Attention heads: the output dimension is split into ``num_heads`` contiguous heads, each
    kept or removed whole.
    """

    num_heads: int = 1

    kind = "head"

    def __post_init__(self) -> None:
        if self.num_heads < 1:
            raise ValueError(f"Head: num_heads must be >= 1, got {self.num_heads}")

    def check_shape(self, shape: torch.Size | tuple[int, ...], name: str = "tensor") -> None:  # noqa: D102
        shape = tuple(shape)
        if len(shape) < 1 or shape[0] % self.num_heads:
            raise ValueError(f"Head({self.num_heads}) does not divide dim 0 of {name} {shape}")

    def num_groups(self, shape: torch.Size | tuple[int, ...]) -> int:  # noqa: D102
        return self.num_heads

    def reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over each head: returns ``(num_heads,)``."""
        return tensor.reshape(self.num_heads, -1).sum(1)

    def expand(self, per_head: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """Broadcast one value per head back to ``shape``."""
        rows = per_head.repeat_interleave(shape[0] // self.num_heads)
        return rows.reshape(-1, *([1] * (len(shape) - 1))).expand(shape)

    def is_valid(self, mask: torch.Tensor) -> bool:  # noqa: D102
        heads = mask.reshape(self.num_heads, -1)
        return bool((heads.all(1) | ~heads.any(1)).all())

    def __str__(self) -> str:
        return f"head({self.num_heads})"


def transpose_pattern(pattern: Pattern, name: str = "tensor") -> Pattern:
    """The pattern of the transpose of a 2-D tensor: what ``pattern`` means on ``W.T``.

    ``Unstructured`` is unchanged; ``NM(n, m, dim=d)`` becomes ``dim=1-d`` and ``Channel(dim=d)``
    becomes ``Channel(dim=1-d)`` (``d`` taken mod 2); ``Block(rows, cols)`` becomes
    ``Block(cols, rows)``. Transposing twice gives back an equal pattern (up to ``d`` mod 2).

    Args:
        pattern: The pattern in the untransposed (``nn.Linear``) layout.
        name: The tensor's name, for error messages.

    Raises:
        ValueError: ``Head`` (it splits dim 0 only, which is the input dimension of a transposed
            weight), or a pattern type this function does not know.
    """
    if isinstance(pattern, Unstructured):
        return pattern
    if isinstance(pattern, NM):
        return NM(pattern.n, pattern.m, dim=1 - pattern.dim % 2)
    if isinstance(pattern, Channel):
        return Channel(dim=1 - pattern.dim % 2)
    if isinstance(pattern, Block):
        return Block(pattern.cols, pattern.rows)
    if isinstance(pattern, Head):
        raise ValueError(
            f"{pattern} cannot be used on {name}: it is stored transposed ((in, out), a Hugging "
            "Face Conv1D weight) and Head splits dim 0 only"
        )
    raise ValueError(f"pattern {pattern!r} has no known transpose (needed for {name})")


_NM_RE = re.compile(r"^(\d+):(\d+)(?:\(dim=(-?\d+)\))?$")
_CHANNEL_RE = re.compile(r"^(?:channel|filter)(?:\(dim=(-?\d+)\))?$")
_BLOCK_RE = re.compile(r"^block\(?(\d+)x(\d+)\)?$")
_HEAD_RE = re.compile(r"^head\((\d+)\)$")


def _from_fields(fields: Mapping[str, Any]) -> Pattern:
    """A pattern from its ``dataclasses.asdict`` form (the field names identify the class)."""
    by_fields = {
        frozenset(): Unstructured,
        frozenset({"n", "m", "dim"}): NM,
        frozenset({"n", "m"}): NM,
        frozenset({"dim"}): Channel,
        frozenset({"rows", "cols"}): Block,
        frozenset({"num_heads"}): Head,
    }
    cls = by_fields.get(frozenset(fields))
    if cls is None:
        raise ValueError(f"pattern: no pattern has the fields {sorted(fields)}")
    return cls(**fields)


def parse_pattern(text: str | Pattern | Mapping[str, Any]) -> Pattern:
    """Parse a pattern from its string form; ``parse_pattern(str(p)) == p`` for every pattern.

    Accepted: ``unstructured``, ``2:4`` (``2:4(dim=0)`` along another dimension), ``channel``
    (``channel(dim=1)``), ``block4x4`` (``block(4x4)``), ``head(12)``.

    Args:
        text: The string, an already built pattern (returned unchanged), or a pattern's
            ``dataclasses.asdict`` fields (so that ``Config(**asdict(config))`` round-trips).

    Raises:
        ValueError: If ``text`` names no known pattern.
    """
    if isinstance(text, Pattern):
        return text
    if isinstance(text, Mapping):
        return _from_fields(text)
    if not isinstance(text, str):
        raise TypeError(f"pattern must be a string or a Pattern, got {type(text).__name__}")
    key = text.strip().lower().replace(" ", "")
    if key in ("unstructured", "u"):
        return Unstructured()
    if match := _CHANNEL_RE.match(key):
        return Channel(dim=int(match.group(1) or 0))
    if match := _NM_RE.match(key):
        dim = 1 if match.group(3) is None else int(match.group(3))
        return NM(int(match.group(1)), int(match.group(2)), dim=dim)
    if match := _BLOCK_RE.match(key):
        return Block(int(match.group(1)), int(match.group(2)))
    if match := _HEAD_RE.match(key):
        return Head(int(match.group(1)))
    raise ValueError(
        f"pattern: unknown pattern {text!r} (try 'unstructured', '2:4', 'channel', 'block4x4', "
        "'head(12)')"
    )
