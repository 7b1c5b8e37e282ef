"""Targets: which parameters a method masks, resolved and validated before the model is touched.

* `default_targets`: the ``weight`` of every ``nn.Linear``, ``nn.Conv1d/2d/3d`` and
  Hugging Face ``Conv1D``, minus weights tied to another parameter name, and, inside a Hugging
  Face ``PreTrainedModel``, minus its embeddings, pooler and task heads (see
  `hf_excluded_modules`).
* `resolve_targets`: names or ``fnmatch`` globs, exclusions and patterns into a list of
  `Target`, raising on anything that would go wrong later (unknown names, tied or
  non-floating parameters, patterns that do not fit a shape).
"""

from __future__ import annotations

import fnmatch
import functools
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from torch import nn

from sparsecore.layouts import is_hf_conv1d
from sparsecore.patterns import Pattern, Unstructured

__all__ = [
    "HF_SKIPPED_PARTS",
    "PRUNABLE_TYPES",
    "Target",
    "default_targets",
    "hf_excluded_modules",
    "resolve_targets",
    "tied_parameters",
]

#: Module types whose ``weight`` is a default pruning target.
PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class Target:
    """One masked tensor: ``module.<param_name>`` known in the model as ``name``."""

    name: str
    module_name: str
    param_name: str
    pattern: Pattern

    @property
    def state_key(self) -> str:
        """Key of the mask buffer in the model's ``state_dict`` (``"layer.weight_mask"``)."""
        return f"{self.name}_mask"

    @functools.cached_property
    def buffer_name(self) -> str:
        """Name of the mask buffer on the owning module."""
        return f"{self.param_name}_mask"


def tied_parameters(model: nn.Module) -> dict[str, list[str]]:
    """Every parameter name that shares its tensor with a *different* module, mapped to the others.

    Tied weights (a language model's ``lm_head.weight`` and its input embedding) are one
    ``nn.Parameter`` owned by two modules; ``named_parameters()`` reports only the first name. A
    single module registered under two names (a layer reused twice) is not tied in this sense: a
    mask on it is one mask, whichever name reaches it.
    """
    names_by_id: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names_by_id.setdefault(id(param), []).append(name)
    tied: dict[str, list[str]] = {}
    for names in names_by_id.values():
        if len(names) < 2:
            continue
        owners = {id(model.get_submodule(n.rpartition(".")[0])) for n in names}
        if len(owners) > 1:
            for name in names:
                tied[name] = [other for other in names if other != name]
    return tied


#: Module-name parts that mark an embedding or a pooler inside a Hugging Face base model.
HF_SKIPPED_PARTS: tuple[str, ...] = ("embeddings", "embed_tokens", "embed_positions", "pooler")


def _is_hf_model(module: nn.Module) -> bool:
    transformers = sys.modules.get("transformers")  # not imported: cannot be an HF model
    pretrained = getattr(transformers, "PreTrainedModel", None)
    return pretrained is not None and isinstance(module, pretrained)


def hf_excluded_modules(model: nn.Module) -> set[str]:
    """Qualified names of the modules `default_targets` leaves out of an HF model.

    For every Hugging Face ``PreTrainedModel`` in ``model`` (the model itself or a submodule):

    * everything outside its ``base_model``: the task heads (``classifier``, ``score``,
      ``qa_outputs``, ``cls``, ``lm_head``, DistilBERT's ``pre_classifier``, ...);
    * its output embeddings (``get_output_embeddings()``, the LM head, as llm-compressor's
      ``ignore=["lm_head"]``);
    * inside the base model, every module under a part named in `HF_SKIPPED_PARTS`
      (input / position embeddings, ViT's patch embedding, BERT's pooler).

    Pruning these hurts most and saves least: BERT's pooler under a 90% global budget keeps a few
    of its 147k weights, and a classifier head trained from scratch has no magnitude signal yet.
    """
    excluded: set[str] = set()
    for prefix, module in model.named_modules():
        if not _is_hf_model(module):
            continue
        dot = f"{prefix}." if prefix else ""
        base = getattr(module, "base_model", module)
        base_name = next((n for n, m in module.named_modules() if m is base), "")
        output = (
            module.get_output_embeddings() if hasattr(module, "get_output_embeddings") else None
        )
        for name, sub in module.named_modules():
            if not name:
                continue
            inside_base = base is module or name == base_name or name.startswith(f"{base_name}.")
            parts = name.split(".")
            if (
                not inside_base
                or (output is not None and sub is output)
                or any(part in HF_SKIPPED_PARTS for part in parts)
            ):
                excluded.add(dot + name)
    return excluded


def default_targets(model: nn.Module, hf_heads: bool = False) -> list[str]:
    """Qualified names of the ``weight`` of every Linear / Conv1d / Conv2d / Conv3d module and
    every Hugging Face ``Conv1D`` (GPT-2; stored ``(in, out)``, see `sparsecore.layouts`).

    Weights tied to another parameter (``lm_head`` sharing the input embedding) are left out: a
    mask on them would also prune the embedding, which is not what a default should do.

    In a Hugging Face model the embeddings, the pooler, the task heads and the LM head are left
    out too (`hf_excluded_modules`). To prune them anyway pass ``hf_heads=True`` here, or
    name them in a method's ``targets`` (names or globs, e.g. ``targets=["*.weight"]``), which
    replaces the default selection.

    Args:
        model: The model.
        hf_heads: Keep the Hugging Face embeddings, pooler and heads in the selection.
    """
    tied = tied_parameters(model)
    skipped = set() if hf_heads else hf_excluded_modules(model)
    return [
        f"{name}.weight" if name else "weight"
        for name, module in model.named_modules()
        if (isinstance(module, PRUNABLE_TYPES) or is_hf_conv1d(module))
        and isinstance(getattr(module, "weight", None), nn.Parameter)
        and (f"{name}.weight" if name else "weight") not in tied
        and name not in skipped
    ]


def resolve_targets(
    model: nn.Module,
    targets: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    pattern: Pattern | Mapping[str, Pattern] | None = None,
) -> list[Target]:
    """Validate and resolve target parameter names, without touching the model.

    Args:
        model: The model.
        targets: Qualified parameter names or ``fnmatch`` globs (``"encoder.*.weight"``).
            ``None`` means `default_targets`.
        exclude: Names or globs removed from the selection.
        pattern: One pattern for all targets, or a mapping from name to pattern (missing names get
            `Unstructured`).

    Raises:
        ValueError: A name or glob matches no parameter, nothing is left to prune, a pattern
            does not fit a tensor's shape, a chosen parameter is tied to another name, or it is
            on the ``meta`` device (masks of a meta model would be uninitialised memory after
            ``to_empty()``).
        TypeError: A target is not a floating-point parameter.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    params = dict(model.named_parameters(remove_duplicate=False))
    tied = tied_parameters(model)
    if targets is None:
        chosen = default_targets(model)
    else:
        if isinstance(targets, str):
            targets = [targets]
        chosen = []
        for spec in targets:
            hits = [n for n in params if fnmatch.fnmatchcase(n, spec)]
            if not hits:
                raise ValueError(f"targets: {spec!r} matches no parameter of the model")
            chosen.extend(h for h in hits if h not in chosen)
    for spec in exclude:
        if not any(fnmatch.fnmatchcase(n, spec) for n in params):
            raise ValueError(f"exclude: {spec!r} matches no parameter of the model")
        chosen = [n for n in chosen if not fnmatch.fnmatchcase(n, spec)]
    if not chosen:
        raise ValueError(
            "targets: nothing to prune (no Linear/Conv/Conv1D weight, or all excluded)"
        )
    resolved = []
    seen: set[int] = set()
    for name in chosen:
        tensor = params[name]
        if id(tensor) in seen and name not in tied:
            continue  # one module reached under two names: one target, under its first name
        seen.add(id(tensor))
        if name in tied:
            raise ValueError(
                f"targets: {name!r} is tied to {', '.join(map(repr, tied[name]))} (one shared "
                "parameter); masking it would prune both. Exclude it, or untie the weights first"
            )
        if not tensor.is_floating_point():
            raise TypeError(f"target {name!r} is not a floating-point parameter")
        if tensor.is_meta:
            raise ValueError(
                f"model: target {name!r} is on the meta device (no values to prune); "
                "materialise the model first (to_empty(device=...), then initialise or load it)"
            )
        if isinstance(pattern, Mapping):
            pat = pattern.get(name, Unstructured())
        else:
            pat = pattern or Unstructured()
        pat.check_shape(tensor.shape, name)
        module_name, _, param_name = name.rpartition(".")
        resolved.append(Target(name, module_name, param_name, pat))
    return resolved
