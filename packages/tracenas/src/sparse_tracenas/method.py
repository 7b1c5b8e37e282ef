"""TraceNAS as a sparsecore method: search at calibration, structured masks, physical removal.

Paper: "TraceNAS: Zero-shot LLM Pruning via Gradient Trace Correlation" (Malettira et al.,
arXiv 2602.02891); official code github.com/pmaletti/TraceNAS. Use::

    method = TraceNAS(sparsity=0.25).setup(model)
    method.calibrate(calibration_blocks)   # the search: base traces, evolution, best by Φ
    small = method.deploy()                # heads, FFN channels, layers physically removed
    # then continued pre-training of `small` (the paper's CPT stage)

Choices, labelled:

* **Masks** [fits sparsecore]: one bool mask per decoder-layer projection weight (q, k, v, o,
  gate, up, down), derived from the best candidate's group masks through the core's
  `sparsecore.structures.group_members`: a removed key/value group zeroes its q/k/v rows and
  o_proj columns, a removed FFN channel its gate/up rows and down_proj column, an inactive
  layer all seven weights. In Llama's pre-norm residual form these zeros compute exactly what
  the shrunk model computes (a layer whose o_proj and down_proj are zero is the identity), so
  the masked model *is* the sub-network; `TraceNAS.deploy` removes the zeros physically with
  `sparsecore.structures.shrink` (which checks the logits against the masked model).
* **Sparsity**: the fraction of those projection weights removed; the search keeps candidates
  within ``window`` of ``sparsity``, so the achieved value differs from it by at most
  ``window`` (reported by ``masks.sparsity()`` and `TraceNAS.result`).
* **Calibration loss** (``calibrate``'s ``loss_fn``): ``loss_fn(logits, input_ids)``; default
  next-token cross-entropy. Batches are concatenated and re-split into ``calib_batch`` blocks.
* **Search seed**: drawn from the method's own generator (seeded by `method_seed`, never the
  raw model seed).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import nn

from sparse_tracenas.config import TraceNASConfig
from sparse_tracenas.search import SearchResult, evolutionary_search
from sparse_tracenas.space import Candidate, SearchSpace
from sparse_tracenas.traces import TraceLoss, causal_lm_loss, group_masks_of
from sparsecore import MethodConfig, PruningMethod
from sparsecore.calibration import input_ids_of
from sparsecore.patterns import Unstructured
from sparsecore.structures import describe, group_members, shrink
from sparsecore.structures.layout import base_layer
from sparsecore.targets import Target
from sparsecore.taxonomy import Taxonomy

__all__ = ["TraceNAS", "element_masks", "projection_targets"]


def projection_targets(model: nn.Module) -> tuple[str, ...]:
    """Names of the q/k/v/o/gate/up/down weights of every decoder layer."""
    layout = describe(model)
    names = []
    for lay in layout.layers:
        for m in (*lay.qkv, lay.attn_out, *lay.ffn_in, lay.ffn_out):
            names.append(f"{layout.name(base_layer(m))}.weight")
    return tuple(names)


def element_masks(model: nn.Module, group_masks: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Bool keep-masks of the projection weights that realise ``group_masks`` (module docstring)."""
    params = dict(model.named_parameters())
    keep = {n: torch.ones_like(params[n], dtype=torch.bool) for n in projection_targets(model)}

    def drop(group) -> None:
        for name, dim, idx in group.slices:
            if name not in keep:
                continue
            if not idx:
                keep[name].fill_(False)
            else:
                keep[name].index_fill_(dim, torch.tensor(idx, device=keep[name].device), False)

    for kind in ("heads", "ffn"):
        for group in group_members(model, kind):
            if not bool(group_masks[kind][group.layer][group.index]):
                drop(group)
    for group in group_members(model, "layers"):
        if not bool(group_masks["layers"][group.layer]):
            drop(group)
    return keep


class TraceNAS(PruningMethod):
    """Zero-shot depth and width search by gradient-trace correlation (module docstring).

    Args:
        config: A `sparse_tracenas.TraceNASConfig`.
        **overrides: Config fields (``sparsity``, ``window``, ``proxy``, ``iterations``, ...).
    """

    name: ClassVar[str] = "tracenas"
    config_class: ClassVar[type[MethodConfig]] = TraceNASConfig
    supported_patterns = (Unstructured,)
    needs_calibration: ClassVar[bool] = True
    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("head", "channel", "layer"),
        "after",
        "dense-to-sparse",
        "static",
        note="zero-shot search of depth and per-layer widths by gradient-trace correlation",
    )
    #: The ``sparse bench`` scenario (the package's reproduction, quick).
    bench_scenario: ClassVar[str] = "lm-nas"
    config: TraceNASConfig

    def __init__(self, config: TraceNASConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.space: SearchSpace | None = None
        self.result: SearchResult | None = None
        self.candidate: Candidate | None = None
        self._group_masks: dict[str, Any] | None = None
        #: Show a progress bar over generations during `calibrate`.
        self.progress = False

    # ------------------------------------------------------------------ setup
    def setup(
        self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
    ) -> PruningMethod:
        """Check the model and the window, then add one mask per projection weight.

        Raises:
            TypeError: ``model`` is not an ``nn.Module``.
            ValueError: Not a Llama-style decoder with equal layers, targets other than its
                projection weights, or a window no candidate reaches (see `SearchSpace`).
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        self._space_of(model)  # raises before anything is touched
        if self.config.targets is None:
            self.config = dataclasses.replace(self.config, targets=projection_targets(model))
        return super().setup(model, optimizer)

    def _space_of(self, model: nn.Module) -> SearchSpace:
        c = self.config
        return SearchSpace.from_model(
            model, c.sparsity, c.window, c.max_layer_pruning, c.min_heads, c.min_layers,
            c.mlp_block,
        )  # fmt: skip

    def validate(self, model: nn.Module, targets: list[Target]) -> None:  # noqa: D102
        wanted = set(projection_targets(model))
        got = {t.name for t in targets}
        if got != wanted:
            extra = sorted(got - wanted)[:3]
            missing = sorted(wanted - got)[:3]
            raise ValueError(
                "targets: TraceNAS masks exactly the decoder-layer projection weights "
                f"(q/k/v/o/gate/up/down); unexpected {extra}, missing {missing}"
            )
        self.space = self._space_of(model)

    # ------------------------------------------------------------------ search
    def calibrate(self, batches: Iterable[Any], loss_fn: TraceLoss | None = None) -> None:
        """Run the search on calibration batches and mask the best candidate.

        Args:
            batches: Token-id tensors, ``(ids, labels)`` pairs or dicts with ``input_ids``.
            loss_fn: ``loss_fn(logits, input_ids) -> loss`` (default: next-token CE).

        Raises:
            RuntimeError: Not set up.
            ValueError: No batches, or no candidate inside the window.
        """
        model = self.model
        if model is None:
            raise RuntimeError("TraceNAS: call setup(model) before calibrate")
        ids = [input_ids_of(b) for b in batches]
        if not ids:
            raise ValueError("batches: need at least one calibration batch")
        if len({t.shape[1] for t in ids}) == 1:
            flat = torch.cat(ids)
            size = self.config.calib_batch
            ids = [flat[i : i + size] for i in range(0, flat.shape[0], size)]
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator))
        result = evolutionary_search(
            model, ids, self.config, seed, loss_fn or causal_lm_loss, self.progress
        )
        self.result = result
        self._apply(result.best.candidate)

    def _apply(self, candidate: Candidate) -> None:
        assert self.space is not None and self.model is not None
        if self.result is None:
            raise RuntimeError("TraceNAS: no search statistics to realise the candidate")
        self.candidate = candidate
        self._group_masks = group_masks_of(candidate, self.space, self.result.base)
        keeps = element_masks(self.model, self._group_masks)
        for name, keep in keeps.items():
            self.masks.update(name, keep.to(self.masks.mask(name).device))

    @property
    def group_masks(self) -> dict[str, Any]:
        """The best candidate's group masks (``heads``, ``ffn``, ``layers``) for the core."""
        if self._group_masks is None:
            raise RuntimeError("TraceNAS: call calibrate(batches) first")
        return self._group_masks

    def deploy(self, model: nn.Module | None = None, atol: float = 1e-4) -> nn.Module:
        """Finalize (if still set up) and return a physically smaller copy (`shrink`).

        Args:
            model: The masked model (default: the one the method was set up on).
            atol: Tolerance of `shrink`'s check of the logits against the masked model (float32
                summation order alone moves logits of magnitude ~20 by ~1e-5).
        """
        masks = self.group_masks
        if self._masks is not None:
            plain = self.finalize()
            model = plain if model is None else model
        if model is None:
            raise RuntimeError("TraceNAS.deploy: pass the model (the method is finalized)")
        return shrink(model, masks, atol=atol)

    # ------------------------------------------------------------------ resume
    def extra_state(self) -> dict[str, Any]:  # noqa: D102
        if self.candidate is None:
            return {}
        c = self.candidate
        return {"candidate": [list(c.layers), list(c.attn), list(c.mlp)]}

    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: D102
        if "candidate" in state:
            layers, attn, mlp = state["candidate"]
            self.candidate = Candidate(tuple(map(bool, layers)), tuple(attn), tuple(mlp))
