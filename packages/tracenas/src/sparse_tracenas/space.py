"""The TraceNAS search space: active layers × per-layer attention / MLP widths, on a grid.

A `Candidate` holds, for every decoder layer, whether it is active, how many key/value groups
its attention keeps and how many MLP channel blocks it keeps. `SearchSpace` knows the grid,
the floors and the parameter window, counts a candidate's parameters and says whether it is
valid. The operators (official ``tracenas_utils``) live in `sparse_tracenas.evolution`.

Choices, labelled:

* **Attention unit = one key/value group** (a key/value head with its query heads) [choice,
  GQA-aligned]: that is what the core's `sparsecore.structures.shrink` removes. The official
  code keeps every key/value head and removes query heads in steps of
  ``num_kv_heads / gcd(num_kv_heads, group_size)`` (``attn_alignment_step``), which would leave
  key/value groups with unequal query counts, a layout transformers' Llama cannot hold.
* **Floors** (official ``layer_min_keep``): an active layer keeps at least
  ``ceil(max(1 - max_layer_pruning, min_heads / num_heads) · kv_groups)`` groups and at least
  ``ceil((1 - max_layer_pruning) · blocks)`` MLP blocks; at least ``min_layers`` layers stay.
* **Parameter count**: the weights of the decoder-layer projections (q, k, v, o, gate, up,
  down) that a candidate keeps; embeddings, norms and the LM head are never pruned, so they are
  left out of the window and of the reported sparsity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from sparsecore.structures import describe

__all__ = ["Candidate", "SearchSpace"]


@dataclass(frozen=True)
class Candidate:
    """One sub-network.

    Attributes:
        layers: Per layer, whether it is active.
        attn: Per layer, key/value groups kept (ignored for an inactive layer).
        mlp: Per layer, MLP channel blocks kept (ignored for an inactive layer).
    """

    layers: tuple[bool, ...]
    attn: tuple[int, ...]
    mlp: tuple[int, ...]

    @property
    def depth(self) -> int:
        """Number of active layers."""
        return sum(self.layers)

    def key(self) -> tuple:
        """Identity for duplicate checks (widths of inactive layers do not count)."""
        return tuple(
            (a, m) if on else None
            for on, a, m in zip(self.layers, self.attn, self.mlp, strict=True)
        )


@dataclass(frozen=True)
class SearchSpace:
    """Grid, floors and parameter window of a uniform Llama-style decoder.

    Attributes:
        num_layers: Decoder layers. kv_groups: Key/value groups per layer. group_size: Query
            heads per group. head_dim: Width of one head. hidden: Hidden size.
        intermediate: FFN channels per layer. mlp_block: Channels per MLP block.
        min_groups: Floor of kept groups in an active layer. min_blocks: Floor of kept blocks.
        min_layers: Floor of active layers. target: Target sparsity. window: Half-width.
    """

    num_layers: int
    kv_groups: int
    group_size: int
    head_dim: int
    hidden: int
    intermediate: int
    mlp_block: int
    min_groups: int
    min_blocks: int
    min_layers: int
    target: float
    window: float

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        target: float,
        window: float,
        max_layer_pruning: float = 0.72,
        min_heads: int = 1,
        min_layers: int | None = None,
        mlp_block: int = 32,
    ) -> SearchSpace:
        """The space of a Hugging Face Llama/Qwen2/Mistral model with equal layers.

        Raises:
            ValueError: Not a Llama-style model, layers of different sizes, ``mlp_block`` not
                dividing the FFN width, ``min_heads`` above the head count, ``min_layers`` above
                the depth, or a window that no candidate can reach.
        """
        layout = describe(model)
        if layout.family != "llama":
            raise ValueError(
                f"model: TraceNAS searches Llama-style decoders, got a {layout.family} model "
                f"({type(layout.model).__name__})"
            )
        shapes = {
            (lay.heads, lay.kv_heads, lay.head_dim, lay.intermediate) for lay in layout.layers
        }
        if len(shapes) != 1:
            raise ValueError(f"model: layers differ in size {sorted(shapes)}; prune a dense model")
        ((heads, kv, head_dim, inter),) = shapes
        if inter % mlp_block:
            raise ValueError(f"mlp_block ({mlp_block}) must divide the FFN width {inter}")
        if min_heads > heads:
            raise ValueError(f"min_heads ({min_heads}) exceeds the {heads} heads of a layer")
        depth = len(layout.layers)
        floor_layers = min_layers if min_layers is not None else max(1, depth * 27 // 32)
        if floor_layers > depth:
            raise ValueError(f"min_layers ({floor_layers}) exceeds the {depth} layers")
        keep = 1.0 - max_layer_pruning
        group = heads // kv
        space = cls(
            num_layers=depth,
            kv_groups=kv,
            group_size=group,
            head_dim=head_dim,
            hidden=layout.hidden,
            intermediate=inter,
            mlp_block=mlp_block,
            min_groups=min(kv, max(math.ceil(keep * kv - 1e-9), math.ceil(min_heads / group))),
            min_blocks=min(inter // mlp_block, math.ceil(keep * (inter // mlp_block) - 1e-9)),
            min_layers=floor_layers,
            target=target,
            window=window,
        )
        if space.sparsity(space.smallest()) < target - window:
            raise ValueError(
                f"sparsity: {target} - window {window} is out of reach; the smallest candidate "
                f"(floors: {floor_layers} layers, max_layer_pruning {max_layer_pruning}) removes "
                f"{space.sparsity(space.smallest()):.3f}"
            )
        return space

    # ------------------------------------------------------------------ counts
    @property
    def blocks(self) -> int:
        """MLP blocks per layer."""
        return self.intermediate // self.mlp_block

    @property
    def group_params(self) -> int:
        """Weights of one key/value group: its q/k/v rows and its o_proj columns."""
        return (2 * self.group_size + 2) * self.head_dim * self.hidden

    @property
    def block_params(self) -> int:
        """Weights of one MLP block: its gate/up rows and its down_proj columns."""
        return 3 * self.mlp_block * self.hidden

    @property
    def total_params(self) -> int:
        """Decoder-layer projection weights of the full model."""
        per = self.kv_groups * self.group_params + self.blocks * self.block_params
        return self.num_layers * per

    def params(self, c: Candidate) -> int:
        """Projection weights the candidate keeps."""
        return sum(
            a * self.group_params + m * self.block_params
            for on, a, m in zip(c.layers, c.attn, c.mlp, strict=True)
            if on
        )

    def sparsity(self, c: Candidate) -> float:
        """Fraction of the projection weights removed."""
        return 1.0 - self.params(c) / self.total_params

    # ------------------------------------------------------------------ candidates
    def full(self) -> Candidate:
        """The unpruned model."""
        n = self.num_layers
        return Candidate((True,) * n, (self.kv_groups,) * n, (self.blocks,) * n)

    def smallest(self) -> Candidate:
        """Fewest parameters the floors allow (the first ``min_layers`` layers active)."""
        n = self.num_layers
        layers = tuple(i < self.min_layers for i in range(n))
        return Candidate(layers, (self.min_groups,) * n, (self.min_blocks,) * n)

    def problems(self, c: Candidate) -> list[str]:
        """Why ``c`` is not a valid member of the space (empty: valid)."""
        n = self.num_layers
        out = []
        if not (len(c.layers) == len(c.attn) == len(c.mlp) == n):
            return [f"candidate must describe {n} layers"]
        if c.depth < self.min_layers:
            out.append(f"{c.depth} active layers < min_layers {self.min_layers}")
        for i, (on, a, m) in enumerate(zip(c.layers, c.attn, c.mlp, strict=True)):
            if not on:
                continue
            if not self.min_groups <= a <= self.kv_groups:
                out.append(f"layer {i}: {a} key/value groups outside [{self.min_groups}, "
                           f"{self.kv_groups}]")  # fmt: skip
            if not self.min_blocks <= m <= self.blocks:
                out.append(f"layer {i}: {m} MLP blocks outside [{self.min_blocks}, {self.blocks}]")
        if abs(self.sparsity(c) - self.target) > self.window + 1e-12:
            out.append(f"sparsity {self.sparsity(c):.4f} outside {self.target} ± {self.window}")
        return out

    def is_valid(self, c: Candidate) -> bool:
        """Whether ``c`` is in the space and inside the parameter window."""
        return not self.problems(c)

    def kept_heads(self, c: Candidate, layer: int) -> int:
        """Query heads an active layer of ``c`` keeps (a multiple of the group size)."""
        return c.attn[layer] * self.group_size
