"""Where a method sits in the Sparseland taxonomy, declared by every method class.

From Shiwei Liu and Zhangyang Wang, "Ten Lessons We Have Learned in the New 'Sparseland': A
Short Handbook for Sparse Neural Network Researchers" (arXiv 2302.02596). The handbook sorts
sparse methods along a few axes and asks every paper to say where its method sits (rule R2 of
the digest in `shared/papers/digests-part2.md` §11), because results are only comparable within
the same granularity, timing and training path:

* **granularity**: unstructured, semi-structured N:M, block, structured (channel / filter /
  head / layer), low-rank;
* **timing**: when sparsity is decided: before training (pruning at init: SNIP, random),
  during training (GMP, RigL, GraNet), after training (one-shot post-training pruning,
  Wanda, SparseGPT), or iteratively across training runs (IMP, lottery tickets);
* **path**: dense-to-sparse (the model starts dense and is pruned) or sparse-to-sparse (the
  model is sparse from the first step: static or dynamic sparse training);
* **mask dynamics**: static (a weight once pruned stays pruned) or dynamic (prune-and-grow);
* **what is made sparse**: weights (almost every method here), activations, inputs (sensors),
  tokens, rollouts, the action space, reasoning steps, the bits of coded weights (entropy-coded
  weight residuals that are mostly zero: NIRVANA).

A method declares this as the class attribute `PruningMethod.taxonomy`; `sparse list` prints
the table and the conformance suite checks that every registered method declares one. Methods
whose choice depends on their configuration (e.g. GraNet can start dense or sparse) declare the
default configuration's place and say so in `note`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = [
    "GRANULARITIES",
    "MASK_DYNAMICS",
    "PATHS",
    "SPARSE_OBJECTS",
    "TIMINGS",
    "Taxonomy",
    "taxonomy_rows",
]

Granularity = Literal[
    "unstructured", "n:m", "block", "channel", "filter", "head", "layer", "low-rank"
]
Timing = Literal["before", "during", "after", "iterative"]
SparsePath = Literal["dense-to-sparse", "sparse-to-sparse"]
MaskDynamics = Literal["static", "dynamic"]
SparseObject = Literal[
    "weights", "activations", "inputs", "tokens", "rollouts", "actions", "reasoning", "bits"
]

GRANULARITIES: tuple[str, ...] = get_args(Granularity)
TIMINGS: tuple[str, ...] = get_args(Timing)
PATHS: tuple[str, ...] = get_args(SparsePath)
MASK_DYNAMICS: tuple[str, ...] = get_args(MaskDynamics)
SPARSE_OBJECTS: tuple[str, ...] = get_args(SparseObject)


def _tuple_of(field: str, value: object, allowed: tuple[str, ...]) -> tuple[str, ...]:
    items = (value,) if isinstance(value, str) else value
    if not isinstance(items, tuple) or not items:
        raise TypeError(f"Taxonomy.{field} must be a non-empty tuple of strings, got {value!r}")
    unknown = [v for v in items if v not in allowed]
    if unknown:
        raise ValueError(f"Taxonomy.{field}: unknown {unknown}; choose from {allowed}")
    return items


@dataclass(frozen=True)
class Taxonomy:
    """A method's place in the Sparseland taxonomy (arXiv 2302.02596).

    Attributes:
        granularity: The sparsity structures the method produces (one or more of
            `GRANULARITIES`), e.g. `("unstructured", "n:m")`.
        timing: When sparsity is decided: `"before"`, `"during"`, `"after"` training, or
            `"iterative"` (across repeated training runs).
        path: `"dense-to-sparse"` or `"sparse-to-sparse"`.
        dynamics: `"static"` (pruned stays pruned) or `"dynamic"` (prune and regrow).
        sparsifies: What is made sparse (`SPARSE_OBJECTS`): `("weights",)` for most methods.
        note: Free text, e.g. how another configuration changes the place.
    """

    granularity: tuple[str, ...]
    timing: str
    path: str
    dynamics: str
    sparsifies: tuple[str, ...] = ("weights",)
    note: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "granularity", _tuple_of("granularity", self.granularity, GRANULARITIES)
        )
        object.__setattr__(
            self, "sparsifies", _tuple_of("sparsifies", self.sparsifies, SPARSE_OBJECTS)
        )
        for name, allowed in (("timing", TIMINGS), ("path", PATHS), ("dynamics", MASK_DYNAMICS)):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"Taxonomy.{name} must be one of {allowed}, got {value!r}")
        if not isinstance(self.note, str):
            raise TypeError(f"Taxonomy.note must be a string, got {self.note!r}")

    def as_row(self) -> dict[str, str]:
        """The taxonomy as printable columns."""
        return {
            "granularity": ",".join(self.granularity),
            "timing": self.timing,
            "path": self.path,
            "dynamics": self.dynamics,
            "sparsifies": ",".join(self.sparsifies),
        }


def taxonomy_rows(methods: Mapping[str, type]) -> list[dict[str, str]]:
    """One row per method (`name` plus `Taxonomy.as_row` columns; `"?"` when undeclared)."""
    rows = []
    for name, cls in methods.items():
        taxonomy = getattr(cls, "taxonomy", None)
        if isinstance(taxonomy, Taxonomy):
            rows.append({"method": name, **taxonomy.as_row()})
        else:
            rows.append({"method": name, **dict.fromkeys(Taxonomy.__annotations__, "?")})
            rows[-1].pop("note", None)
    return rows
