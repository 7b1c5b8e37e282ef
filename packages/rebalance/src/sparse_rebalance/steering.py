"""ReBalance online: confidence-guided steering at reasoning-step boundaries, through hooks.

Paper: Li et al., "Efficient Reasoning with Balanced Thinking" (ReBalance), ICLR 2026,
arXiv 2603.12372; official code yu-lin-li/ReBalance (``modeling_qwen2_dynamic_3D.py``,
``Qwen2ForCausalLM.forward`` and ``Qwen2Model.forward``), which forks the Qwen2 modelling file.
Here the same controller acts on *any* Hugging Face causal LM through three hooks
(`sparsecore.Procedure`), with no forked model code:

1. a forward pre-hook on the model reads the new input tokens and keeps, per batch row, the
   official state: whether the row is inside ``<think>`` (set by the start token, cleared by the
   end token; at a prefill, whether the prompt holds the start token), the running sum and count
   of the max next-token probability over the current step's tokens (the token that *ended* a
   forward is scored by the distribution it was drawn from), and on a separator token with a
   non-empty step: ``c`` = that mean, ``v = (c − c_prev)²/4`` (0 without a previous step),
   ``α = F(c, v)`` (`ControlSurface`), then the sums reset and ``c_prev = c``;
2. a forward pre-hook on decoder layer ``layer`` (or the final norm when ``layer`` equals the
   layer count) adds ``α·S`` to the hidden state at the last position of every row whose last
   input token is a separator inside ``<think>``;
3. a forward hook on the model stores the max probability of the last position's distribution.

Choices, labelled: a forward whose input is longer than one token starts a new round (the
official code needs ``start_new_round()`` called by hand); ``α`` starts at ``initial_coef``
(official ``--steer_coef``, default 1.0) until a row's first scored boundary, as in the official
per-row coefficient buffer. ``dynamic=False`` steers with the constant ``initial_coef``
(the official static mode).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from sparse_rebalance.control import ControlSurface
from sparse_rebalance.offline import SteeringCalibration
from sparsecore.calibration import decoder_layers
from sparsecore.procedure import Procedure, ProcedureConfig
from sparsecore.taxonomy import Taxonomy
from sparsecore.validation import check_bool, check_int, check_number

__all__ = ["ReBalance", "ReBalanceConfig"]


@dataclass(frozen=True)
class ReBalanceConfig(ProcedureConfig):
    r"""Options of the online controller (official defaults).

    Attributes:
        think_start_id: Token id of ``<think>``.
        think_end_id: Token id of ``</think>``.
        split_ids: Token ids that end a reasoning step (official: every token containing
            ``"\n\n"``).
        low_val_1: ``F1(q25c)``.
        low_val_2: ``F(q25c, q75v)`` target.
        high_val_2: ``F(1, q25v)`` target.
        initial_coef: ``α`` before a row's first scored boundary (official ``--steer_coef``).
        dynamic: Use ``F(c, v)``; ``False`` keeps ``initial_coef`` throughout.
    """

    think_start_id: int = 256
    think_end_id: int = 257
    split_ids: tuple[int, ...] = (258,)
    low_val_1: float = -1.0
    low_val_2: float = -2.0
    high_val_2: float = 0.1
    initial_coef: float = 1.0
    dynamic: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self.think_start_id, "think_start_id", 0)
        check_int(self.think_end_id, "think_end_id", 0)
        if isinstance(self.split_ids, int | str) or not self.split_ids:
            raise TypeError(f"split_ids must be a non-empty tuple of ints, got {self.split_ids!r}")
        object.__setattr__(self, "split_ids", tuple(self.split_ids))
        for i in self.split_ids:
            check_int(i, "split_ids", 0)
        for name in ("low_val_1", "low_val_2", "high_val_2", "initial_coef"):
            check_number(getattr(self, name), name)
        check_bool(self.dynamic, "dynamic")


class ReBalance(Procedure):
    """Steer a causal LM away from over-thinking and under-thinking (module docstring).

    Args:
        calibration: The offline pass's result (`sparse_rebalance.offline.calibrate`).
        config: A `ReBalanceConfig`; or keyword overrides.

    Example:
        >>> steer = ReBalance(calibration, think_start_id=256, split_ids=(258,))
        >>> with steer.attach(model):
        ...     out = model.generate(ids, max_new_tokens=200, do_sample=True)
    """

    name = "rebalance"
    config_class: ClassVar[type[ProcedureConfig]] = ReBalanceConfig
    config: ReBalanceConfig
    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("unstructured",),
        "after",
        "dense-to-sparse",
        "dynamic",
        sparsifies=("reasoning",),
        note="redundant reasoning steps removed at inference by activation steering",
    )
    bench_scenario: ClassVar[str | None] = "reasoning-toy"

    def __init__(
        self,
        calibration: SteeringCalibration | None = None,
        config: ReBalanceConfig | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__(config, **overrides)
        if calibration is not None and not isinstance(calibration, SteeringCalibration):
            raise TypeError(
                f"calibration must be a SteeringCalibration, got {type(calibration).__name__}"
            )
        self.calibration = calibration
        self._split_ids = torch.tensor(self.config.split_ids)
        self.alphas: list[float] = []  # every α injected, for analysis
        self._reset(0)

    @property
    def surface(self) -> ControlSurface:
        """The control function built from the calibration quartiles and the config (built once
        per calibration: its constants are solved by bisection, not at every step boundary).
        """
        cal = self._need_calibration()
        cached = getattr(self, "_surface", None)
        if cached is None or cached[0] is not cal:
            c = self.config
            surface = ControlSurface(
                cal.q25c, cal.q75c, cal.q25v, cal.q75v, c.low_val_1, c.low_val_2, c.high_val_2
            )
            self._surface = (cal, surface)
        return self._surface[1]

    def _need_calibration(self) -> SteeringCalibration:
        if self.calibration is None:
            raise ValueError("calibration: run sparse_rebalance.offline.calibrate first")
        return self.calibration

    # ------------------------------------------------------------------ attach
    def validate(self, model: nn.Module) -> None:  # noqa: D102
        cal = self._need_calibration()
        layers = decoder_layers(model)  # raises for a non-decoder model
        if not 0 <= cal.layer <= len(layers):
            raise ValueError(f"calibration.layer {cal.layer} outside 0..{len(layers)}")
        hidden = model.get_input_embeddings().weight.shape[1]
        if cal.vector.shape != (hidden,):
            raise ValueError(
                f"calibration.vector has shape {tuple(cal.vector.shape)}, not ({hidden},)"
            )

    def on_attach(self, model: nn.Module) -> None:  # noqa: D102
        layers = decoder_layers(model)
        layer = self._need_calibration().layer
        target = layers[layer] if layer < len(layers) else _final_norm(model)
        self.register(model.register_forward_pre_hook(self._read_inputs, with_kwargs=True))
        self.register(target.register_forward_pre_hook(self._inject, with_kwargs=True))
        self.register(model.register_forward_hook(self._read_logits))

    # ------------------------------------------------------------------ state
    def _reset(self, rows: int) -> None:
        self._think = torch.zeros(rows, dtype=torch.bool)
        self._sum = torch.zeros(rows)
        self._count = torch.zeros(rows, dtype=torch.long)
        self._prev = torch.full((rows,), float("nan"))
        self._coef = torch.full((rows,), float(self.config.initial_coef))
        self._last_max: torch.Tensor | None = None
        self._steer_rows: torch.Tensor | None = None

    def extra_state(self) -> dict[str, Any]:  # noqa: D102
        cal = self.calibration
        state: dict[str, Any] = {"alphas": list(self.alphas)}
        if cal is not None:
            state["calibration"] = {
                "layer": cal.layer, "vector": cal.vector.clone(), "q25c": cal.q25c,
                "q75c": cal.q75c, "q25v": cal.q25v, "q75v": cal.q75v, "r2": list(cal.r2),
                "positives": cal.positives, "negatives": cal.negatives,
            }  # fmt: skip
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: D102
        self.alphas = [float(a) for a in state.get("alphas", [])]
        if "calibration" in state:
            self.calibration = SteeringCalibration(**state["calibration"])

    # ------------------------------------------------------------------ hooks
    def _read_inputs(self, _module: nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            self._steer_rows = None
            return
        ids = ids.detach().cpu()
        c = self.config
        if ids.shape[1] > 1 or self._think.shape[0] != ids.shape[0]:
            self._reset(ids.shape[0])
            self._think = (ids == c.think_start_id).any(1)
        last = ids[:, -1]
        self._think = (self._think | (last == c.think_start_id)) & (last != c.think_end_id)
        split = torch.isin(last, self._split_ids)
        if self._last_max is not None:
            grow = ~split
            self._sum[grow] += self._last_max[grow]
            self._count[grow] += 1
        ready = split & (self._count > 0)
        if c.dynamic and ready.any():
            mean = self._sum[ready] / self._count[ready].float()
            prev = self._prev[ready]
            v = torch.where(torch.isfinite(prev), (mean - prev) ** 2 / 4.0, torch.zeros_like(mean))
            self._coef[ready] = self.surface(mean, v)
            self._prev[ready] = mean
        self._sum[ready] = 0.0
        self._count[ready] = 0
        rows = split & self._think
        self._steer_rows = rows if rows.any() else None

    def _inject(self, _module: nn.Module, args: tuple, kwargs: dict) -> tuple | None:
        rows = self._steer_rows
        if rows is None:
            return None
        positional = bool(args)
        hidden = args[0] if positional else kwargs["hidden_states"]
        vector = self._need_calibration().vector.to(hidden.device, hidden.dtype)
        coef = self._coef[rows].to(hidden.device, hidden.dtype)
        self.alphas.extend(float(a) for a in coef)
        hidden = hidden.clone()
        index = rows.nonzero().flatten().to(hidden.device)
        hidden[index, -1] = hidden[index, -1] + coef[:, None] * vector
        if positional:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    def _read_logits(self, _module: nn.Module, _args: tuple, output: Any) -> None:
        logits = output.logits if hasattr(output, "logits") else output[0]
        self._last_max = torch.softmax(logits[:, -1].detach().float(), -1).max(-1).values.cpu()


def _final_norm(model: nn.Module) -> nn.Module:
    inner = getattr(model, "model", model)
    for name in ("norm", "final_layernorm", "ln_f"):
        if isinstance(getattr(inner, name, None), nn.Module):
            return getattr(inner, name)
    raise ValueError("model: no final norm found for calibration.layer == number of layers")
