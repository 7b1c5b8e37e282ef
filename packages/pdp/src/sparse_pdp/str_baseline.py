"""STR, the differentiable-pruning competitor of PDP's tables, as a reparameterization of weights.

Paper: Kusupati, Ramanujan, Somani, Wortsman, Jain, Kakade & Farhadi, "Soft Threshold Weight
Reparameterization for Learnable Sparsity", ICML 2020 (arXiv 2002.03231). PDP (arXiv 2305.11203)
compares against it for unstructured sparsity. Read in the official code (RAIVNLab/STR,
`utils/conv_type.py` `STRConv`, `main.py` `get_optimizer`) [code]:

* every pruned layer owns one learnable scalar ``s`` (shape ``[1, 1]``), initialised to a
  constant ``sInit`` (`--sInit_value`, e.g. -3200 for ResNet-50 at 90 %);
* the forward uses ``S_g(W, s) = sign(W) · relu(|W| − g(s))`` with ``g = sigmoid``; autograd
  differentiates through it (``W`` below the threshold gets no gradient, ``s`` gets
  ``−g'(s) Σ sign(w) ∂L/∂ŵ`` over the surviving weights);
* ``s`` is trained by the same SGD as the weights, with weight decay ``st_decay`` (default: the
  weights' weight decay). Weight decay on the weights and on ``s`` (negative ``s`` decays toward
  0, i.e. the threshold grows) is what drives the sparsity up: the sparsity is not set, it is
  reached by choosing ``sInit`` and the weight decay (the paper tunes both per budget).

Choices (the paper / code leave them open or they differ here):

* **[choice]** Implemented with `torch.nn.utils.parametrize`: the trainable ``s`` lives in the
  model (``<module>.parametrizations.weight.0.s``) so any optimizer that covers
  ``model.parameters()`` trains it; `remove_str` bakes ``S_g(W, s)`` into the weights and
  returns the keep-masks.
* **[choice]** ``st_decay`` different from the optimizer's own weight decay is applied as an
  extra coupled decay ``(st_decay − weight_decay) · s`` added to ``s``'s gradient (a tensor
  hook), which equals the official separate SGD parameter group for SGD with coupled decay.
* **[choice]** Which layers: every Linear / Conv weight given in ``names`` (the official
  ResNet-50 sparsifies every conv and the classifier; `first_layer_dense` is off by default).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from sparsecore.validation import check_number

__all__ = ["STRThreshold", "apply_str", "remove_str", "soft_threshold", "str_thresholds"]


def soft_threshold(weight: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """STR's sparse weight ``sign(w) · relu(|w| − sigmoid(s))``, differentiable in both."""
    return torch.sign(weight) * torch.relu(weight.abs() - torch.sigmoid(s))


class STRThreshold(nn.Module):
    """Parametrization holding one layer's learnable threshold parameter ``s``.

    Args:
        s_init: Initial value of ``s`` (official `--sInit_value`).
        extra_decay: Coupled decay added to ``s``'s gradient on top of the optimizer's own
            weight decay (``st_decay − weight_decay``; 0 keeps the official default).
        device: Device of ``s`` (the weight's).
    """

    def __init__(
        self, s_init: float, extra_decay: float = 0.0, device: torch.device | None = None
    ) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.full((1, 1), float(s_init), device=device))
        if extra_decay:
            self.s.register_hook(lambda grad: grad + extra_decay * self.s.detach())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return soft_threshold(weight, self.s.view(()))


def _weighted_modules(model: nn.Module, names: Sequence[str]) -> dict[str, nn.Module]:
    modules = {}
    for name in names:
        if not name.endswith(".weight"):
            raise ValueError(f"names: {name!r} is not a '.weight' parameter")
        module_name = name.removesuffix(".weight")
        try:
            module = model.get_submodule(module_name)
        except AttributeError as err:
            raise ValueError(f"names: no module {module_name!r} in the model") from err
        if not isinstance(getattr(module, "weight", None), nn.Parameter):
            raise ValueError(f"names: {name!r} is not a parameter")
        modules[name] = module
    return modules


def apply_str(
    model: nn.Module,
    names: Sequence[str],
    s_init: float,
    st_decay: float | None = None,
    weight_decay: float = 0.0,
) -> nn.Module:
    """Reparameterize ``names`` with STR's soft threshold, in place.

    Args:
        model: The model (dense).
        names: Weight parameter names (``"<module>.weight"``) to sparsify.
        s_init: Initial ``s`` of every layer (official `--sInit_value`).
        st_decay: Weight decay of ``s`` (official `--st_decay`); `None`: the optimizer's own.
        weight_decay: The weight decay the optimizer applies to every parameter (only used to
            add the difference when ``st_decay`` is given).

    Returns:
        The model, with a ``weight`` parametrization on every named module.

    Raises:
        ValueError: Empty or invalid ``names``, a non-finite ``s_init``, a negative decay, or a
            module that is already parametrized (checked before the model is touched).
    """
    check_number(s_init, "s_init", finite=True)
    check_number(weight_decay, "weight_decay", 0.0)
    if st_decay is not None:
        check_number(st_decay, "st_decay", 0.0)
    if not names:
        raise ValueError("names is empty: nothing to sparsify")
    modules = _weighted_modules(model, names)
    for name, module in modules.items():
        if parametrize.is_parametrized(module, "weight"):
            raise ValueError(f"names: {name!r} is already parametrized")
    extra = 0.0 if st_decay is None else float(st_decay) - float(weight_decay)
    for module in modules.values():
        threshold = STRThreshold(s_init, extra, module.weight.device)
        parametrize.register_parametrization(module, "weight", threshold)
    return model


def _str_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {
        f"{name}.weight": module
        for name, module in model.named_modules()
        if parametrize.is_parametrized(module, "weight")
        and isinstance(module.parametrizations.weight[0], STRThreshold)
    }


def str_thresholds(model: nn.Module) -> dict[str, float]:
    """The current threshold ``sigmoid(s)`` of every STR layer, by weight name."""
    return {
        name: float(torch.sigmoid(module.parametrizations.weight[0].s))
        for name, module in _str_modules(model).items()
    }


def remove_str(model: nn.Module) -> dict[str, torch.Tensor]:
    """Bake ``S_g(W, s)`` into the weights, drop ``s``, and return the keep-masks (``ŵ != 0``).

    Raises:
        ValueError: The model has no STR parametrization.
    """
    modules = _str_modules(model)
    if not modules:
        raise ValueError("model has no STR parametrization")
    masks = {}
    for name, module in modules.items():
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        masks[name] = module.weight.detach() != 0
    return masks
