"""Training-time weight quantization with learned decoders and an entropy penalty (NIRVANA §3).

Paper: Maiya et al., "NIRVANA: Neural Implicit Representations of Videos with Adaptive
Networks and Autoregressive Patch-wise Modeling", CVPR 2023, arXiv 2212.14593. The scheme is
the one of Girish et al. (LilNetX, arXiv 2204.02965; later SHACIRA, arXiv 2309.15848), which
NIRVANA adopts: "we maintain a set of quantized weights which are decoded to obtain the network
weights" (Fig. 2 caption) [paper]; "quantization of the network parameters during training,
requiring no post-hoc pruning or quantization" [paper, abstract].

`NirvanaQuantization` is a `sparsecore.Procedure` that attaches to any model and quantizes the
weight (and by default the bias) of every ``nn.Linear`` / ``nn.Conv2d``:

* each target tensor ``W`` gets a continuous latent ``W̃`` (same shape), rounded in the forward
  pass with a straight-through estimator, ``Ŵ = round(W̃)`` (integers) [paper/recall: LilNetX's
  ``StraightThrough`` round in its ``EntropyLinear`` layer, found through the code search];
* a per-tensor learned affine decoder ``W = s·Ŵ + b`` (scalars ``s``, ``b``) gives the weight the
  layer uses [recall: LilNetX's per-layer ``weight_decoder``; the affine form is the simplest
  one it describes] — the decoded weights lie on the grid ``b + s·ℤ`` by construction;
* a learned factorised prior per tensor, a logistic of location ``μ`` and scale ``σ``
  discretised to unit bins (``sparsecore.export.entropy.logistic_pmf``) [recon: LilNetX uses
  Ballé et al.'s non-parametric factorised density (compressai ``EntropyBottleneck``); a
  two-parameter discretised logistic is the cheapest prior whose parameters can be sent in a
  few bytes and it fits peaked integer distributions well];
* `rate_bits` is ``Σ −log₂ p(Ŵ − R)``, differentiable in ``W̃`` (STE), ``μ`` and ``σ``: the
  training objective adds ``λ·rate`` [paper: an entropy penalty on the quantized weights];
  ``R`` is the *reference*: zero by default, or (after `set_reference`) the integers of the
  previous group's network, so that the penalty is on the residual ``ΔŴ = Ŵ − R`` that is
  actually coded [recon: the paper codes residuals after training; penalising the residual
  makes the trained rate the coded rate];
* `param_groups` gives the optimizer the latents (learning rate divided by the initial step
  ``s₀``, so that ``lr`` is in weight units), decoders and priors.

Initialisation [recon]: ``s₀ = max|W| / (2^(init_bits−1) − 1)`` (``max|W|`` taken as 1/2 for an
all-zero tensor), ``b₀ = 0``, ``W̃ = W / s₀``, so the first decoded weights are ``W`` rounded to
``init_bits`` bits.

Masks: a target module carrying a sparsecore mask buffer ``weight_mask`` (``bias_mask``) keeps
its zeros: the decoded tensor is multiplied by the mask and masked positions are neither
penalised nor coded (`integers` returns them as 0) [recon: for stacking with weight sparsity].

Attach swaps each target parameter for its decoded tensor in a forward pre-hook and puts the
parameter back in a forward hook (``always_call``), so outside a forward the model holds its own
parameters and its ``state_dict`` is the plain one. `detach` writes the decoded weights into the
model when the quantized state was trained (any latent, decoder or prior moved since attach);
after an untrained attach the model is left bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from sparsecore.procedure import Procedure, ProcedureConfig
from sparsecore.taxonomy import Taxonomy
from sparsecore.validation import check_bool, check_int, check_number

__all__ = ["NirvanaQuantization", "QuantConfig", "logistic_bits", "ste_round"]

_TYPES = (nn.Linear, nn.Conv2d)


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` in the forward pass, identity gradient (straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


def logistic_bits(x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Elementwise ``−log₂ p(x)`` of integer-valued ``x`` under the discretised logistic."""
    upper = torch.sigmoid((x + 0.5 - loc) / scale)
    lower = torch.sigmoid((x - 0.5 - loc) / scale)
    return -torch.log2((upper - lower).clamp_min(1e-9))


@dataclass(frozen=True)
class QuantConfig(ProcedureConfig):
    """Options of `NirvanaQuantization`.

    Attributes:
        init_bits: Bits of the initial grid (``s₀ = max|W| / (2^(init_bits−1) − 1)``), 2..16.
        quantize_bias: Also quantize biases (each with its own decoder and prior).
        prior_scale: Initial scale ``σ`` of every prior (integers).
        min_scale: Lower bound of ``σ`` in the rate (keeps ``−log₂ p`` finite).
    """

    init_bits: int = 8
    quantize_bias: bool = True
    prior_scale: float = 4.0
    min_scale: float = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self.init_bits, "init_bits", 2)
        if self.init_bits > 16:
            raise ValueError(f"init_bits must be <= 16, got {self.init_bits}")
        check_bool(self.quantize_bias, "quantize_bias")
        check_number(self.prior_scale, "prior_scale", 0.0, open_low=True, finite=True)
        check_number(self.min_scale, "min_scale", 0.0, open_low=True, finite=True)


class _Tensor(nn.Module):
    """The quantized state of one target tensor."""

    def __init__(self, weight: torch.Tensor, init_bits: int, prior_scale: float) -> None:
        super().__init__()
        w = weight.detach().float()
        peak = float(w.abs().max()) if w.numel() else 0.0
        # an all-zero tensor (a zero-initialised bias) gets the grid of a tensor peaking at 1/2
        step = (peak if peak > 0 else 0.5) / (2 ** (init_bits - 1) - 1)
        self.step0 = step
        self.latent = nn.Parameter(w / step)
        self.scale = nn.Parameter(torch.tensor(step))
        self.shift = nn.Parameter(torch.tensor(0.0))
        self.prior_loc = nn.Parameter(torch.tensor(0.0))
        self.prior_log_scale = nn.Parameter(torch.tensor(float(prior_scale)).log())
        self.register_buffer("reference", torch.zeros_like(w))


class NirvanaQuantization(Procedure):
    """Quantize a model's Linear/Conv2d tensors during training (module docstring).

    Args:
        config: A `QuantConfig`; or keyword overrides.

    Example:
        >>> quant = NirvanaQuantization(init_bits=8).attach(model)
        >>> opt = torch.optim.Adam(quant.param_groups(lr=1e-3))
        >>> loss = mse(model(x), y) + lam * quant.rate_bits() / num_pixels
        >>> ints = quant.integers()        # {name: int64 tensor}, on each decoder's grid
        >>> quant.detach()                 # a plain model holding the decoded weights
    """

    name = "nirvana"
    config_class: ClassVar[type[ProcedureConfig]] = QuantConfig
    config: QuantConfig
    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("unstructured",),
        "during",
        "dense-to-sparse",
        "dynamic",
        sparsifies=("bits",),
        note="integer weights under an entropy penalty; residuals between groups mostly zero",
    )
    bench_scenario: ClassVar[str | None] = "video-inr"

    def __init__(self, config: QuantConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.states = nn.ModuleDict()
        self._targets: dict[str, tuple[nn.Module, str]] = {}
        self._initial: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ attach
    def _target_names(self, model: nn.Module) -> list[tuple[str, nn.Module, str]]:
        out = []
        for mname, module in model.named_modules():
            if not isinstance(module, _TYPES):
                continue
            params = ["weight"] + (["bias"] if self.config.quantize_bias else [])
            for pname in params:
                if isinstance(module._parameters.get(pname), nn.Parameter):
                    out.append((f"{mname}.{pname}" if mname else pname, module, pname))
        return out

    def validate(self, model: nn.Module) -> None:  # noqa: D102
        targets = self._target_names(model)
        if not targets:
            raise ValueError("model: no nn.Linear / nn.Conv2d weight to quantize")
        for name, module, pname in targets:
            w = module._parameters[pname]
            if not torch.isfinite(w).all():
                raise ValueError(f"model: {name} holds non-finite values")
            mask = getattr(module, f"{pname}_mask", None)
            if mask is not None and (not isinstance(mask, torch.Tensor) or mask.shape != w.shape):
                raise ValueError(f"model: {name}_mask does not match {name}")

    def on_attach(self, model: nn.Module) -> None:  # noqa: D102
        fresh = len(self.states) == 0
        for name, module, pname in self._target_names(model):
            key = name.replace(".", "__")
            if fresh:
                self.states[key] = _Tensor(
                    module._parameters[pname], self.config.init_bits, self.config.prior_scale
                )
            self._targets[key] = (module, pname)
        if set(self._targets) != set(self.states):
            raise ValueError("model: its tensors differ from the quantized state loaded")
        seen: set[int] = set()
        for module, _ in self._targets.values():
            if id(module) in seen:
                continue
            seen.add(id(module))
            self.register(module.register_forward_pre_hook(self._swap_in))
            self.register(module.register_forward_hook(self._swap_out, always_call=True))
        self._initial = {k: self._flat(s) for k, s in self.states.items()}

    @staticmethod
    def _flat(state: _Tensor) -> torch.Tensor:
        return torch.cat([p.detach().flatten().clone() for p in state.parameters()])

    def on_detach(self, model: nn.Module) -> None:  # noqa: D102
        trained = any(
            not torch.equal(self._flat(s), self._initial[k]) for k, s in self.states.items()
        )
        if trained:
            with torch.no_grad():
                for key, (module, pname) in self._targets.items():
                    module._parameters[pname].copy_(self.decoded(key))
        self._targets = {}

    # ------------------------------------------------------------------ hooks
    def _swap_in(self, module: nn.Module, _args: tuple) -> None:
        order = list(module._parameters)
        saved = {}
        for key, (mod, pname) in self._targets.items():
            if mod is module:
                saved[pname] = module._parameters.pop(pname)
                module.__dict__[pname] = self.decoded(key).to(saved[pname].dtype)
        module.__dict__["_nirvana_saved"] = (order, saved)

    def _swap_out(self, module: nn.Module, _args: tuple, _output: Any) -> None:
        order, saved = module.__dict__.pop("_nirvana_saved", (None, {}))
        if order is None:
            return
        params = dict(module._parameters)
        for pname, param in saved.items():
            module.__dict__.pop(pname, None)
            params[pname] = param
        module._parameters.clear()
        module._parameters.update({n: params[n] for n in order})

    # ------------------------------------------------------------------ quantities
    def _mask(self, key: str) -> torch.Tensor | None:
        module, pname = self._targets[key]
        mask = getattr(module, f"{pname}_mask", None)
        return mask.to(torch.bool) if mask is not None else None

    def decoded(self, key: str) -> torch.Tensor:
        """The weight ``s·round(W̃) + b`` of one tensor (masked positions 0), differentiable."""
        state = self.states[key]
        w = state.scale * ste_round(state.latent) + state.shift
        mask = self._mask(key) if key in self._targets else None
        return w * mask if mask is not None else w

    def integers(self) -> dict[str, torch.Tensor]:
        """``Ŵ`` of every tensor as int64 (masked positions 0), keyed by ``module__param``."""
        out = {}
        for key, state in self.states.items():
            ints = torch.round(state.latent.detach()).to(torch.int64)
            mask = self._mask(key) if key in self._targets else None
            out[key] = ints * mask if mask is not None else ints
        return out

    def residuals(self) -> dict[str, torch.Tensor]:
        """``ΔŴ = Ŵ − R`` of every tensor (int64)."""
        ints = self.integers()
        return {k: ints[k] - s.reference.to(torch.int64) for k, s in self.states.items()}

    def prior(self, key: str) -> tuple[float, float]:
        """``(μ, σ)`` of one tensor's prior as float32 values (what a coder stores)."""
        state = self.states[key]
        sigma = state.prior_log_scale.detach().exp().clamp_min(self.config.min_scale)
        return float(state.prior_loc.detach().float()), float(sigma.float())

    def rate_bits(self) -> torch.Tensor:
        """``Σ −log₂ p(Ŵ − R)`` over every unmasked entry (differentiable; STE through round)."""
        total = torch.zeros(())
        for key, state in self.states.items():
            x = ste_round(state.latent) - state.reference
            sigma = state.prior_log_scale.exp().clamp_min(self.config.min_scale)
            bits = logistic_bits(x, state.prior_loc, sigma)
            mask = self._mask(key) if key in self._targets else None
            total = total + (bits[mask].sum() if mask is not None else bits.sum())
        return total

    def set_reference(self) -> None:
        """Make the current integers the reference ``R`` (residual coding of the next group)."""
        with torch.no_grad():
            for key, ints in self.integers().items():
                self.states[key].reference.copy_(ints.to(torch.float32))

    def param_groups(self, lr: float, prior_lr: float | None = None) -> list[dict[str, Any]]:
        """Optimizer groups: latents at ``lr / s₀`` (weight units), decoders at ``lr``, priors."""
        check_number(lr, "lr", 0.0, open_low=True, finite=True)
        groups: list[dict[str, Any]] = []
        for state in self.states.values():
            groups.append({"params": [state.latent], "lr": lr / state.step0})
            groups.append({"params": [state.scale, state.shift], "lr": lr * 0.1})
            groups.append(
                {"params": [state.prior_loc, state.prior_log_scale], "lr": prior_lr or 10 * lr}
            )
        return groups

    # ------------------------------------------------------------------ resume
    def extra_state(self) -> dict[str, Any]:  # noqa: D102
        return {
            "tensors": {k: v.detach().clone() for k, v in self.states.state_dict().items()},
            "step0": {k: s.step0 for k, s in self.states.items()},
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: D102
        if self.attached:
            raise RuntimeError("load the state before attach")
        tensors, steps = state.get("tensors", {}), state.get("step0", {})
        self.states = nn.ModuleDict()
        for key, step in steps.items():
            ref = tensors[f"{key}.latent"]
            t = _Tensor(ref * step, self.config.init_bits, self.config.prior_scale)
            t.step0 = float(step)
            self.states[key] = t
        self.states.load_state_dict(tensors)
