"""The procedure lifecycle, its registry entries and its conformance suite on a toy procedure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
from torch import nn

from sparsecore import Procedure, ProcedureConfig, get_method, get_procedure, register_procedure
from sparsecore.registry import available_methods, available_procedures
from sparsecore.taxonomy import Taxonomy
from sparsecore.testing import ProcedureConformance, model_fingerprint, tiny_mlp
from sparsecore.validation import check_number


@dataclass(frozen=True)
class InputDropConfig(ProcedureConfig):
    """Toy options: the fraction of input features zeroed at each forward."""

    rate: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number(self.rate, "rate", 0.0, 1.0, open_high=True)


class InputDrop(Procedure):
    """A toy procedure: zero a random ``rate`` of the model's input features in every forward,
    counting the forwards (state kept across calls)."""

    name = "toy-input-drop"
    config_class: ClassVar[type[ProcedureConfig]] = InputDropConfig
    config: InputDropConfig
    taxonomy: ClassVar[Taxonomy | None] = Taxonomy(
        ("unstructured",), "during", "dense-to-sparse", "dynamic", sparsifies=("inputs",)
    )

    def __init__(self, config: ProcedureConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.calls = 0

    def validate(self, model: nn.Module) -> None:
        if not any(isinstance(m, nn.Linear) for m in model.modules()):
            raise ValueError("model: needs a Linear layer")

    def on_attach(self, model: nn.Module) -> None:
        first = next(m for m in model.modules() if isinstance(m, nn.Linear))
        self.register(first.register_forward_pre_hook(self._drop))

    def _drop(self, _module: nn.Module, args: tuple) -> tuple:
        (x,) = args
        keep = torch.rand(x.shape, generator=self.generator) >= self.config.rate
        self.calls += 1
        return (x * keep,)

    def extra_state(self) -> dict[str, Any]:
        return {"calls": self.calls}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.calls = int(state["calls"])


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The toy is registered in-process for each test of this module only (no leak into other
    modules' registry scans)."""
    from sparsecore import registry

    monkeypatch.setitem(registry._PROCEDURES, "toy-input-drop", InputDrop)


class TestInputDropConformance(ProcedureConformance):
    """The suite itself, run on the toy."""

    procedure_cls = InputDrop

    def run(self, procedure: Procedure, model: nn.Module) -> Any:
        x = torch.ones(3, 16)
        with torch.no_grad():
            return [model(x) for _ in range(3)], procedure.extra_state()["calls"]


def test_procedure_acts_only_while_attached():
    model = tiny_mlp(0)
    x = torch.ones(2, 16)
    plain = model(x)
    with InputDrop(rate=0.9).attach(model) as procedure:
        dropped = model(x)
        assert procedure.calls == 1
    assert not torch.equal(plain, dropped)
    assert torch.equal(model(x), plain)  # detached on leaving the block


def test_validate_refuses_before_touching_the_model():
    model = nn.Sequential(nn.ReLU())
    before = model_fingerprint(model)
    with pytest.raises(ValueError, match="model: needs a Linear"):
        InputDrop().attach(model)
    assert model_fingerprint(model)["modules"] == before["modules"]


def test_generator_seed_is_mixed_not_the_raw_integer():
    raw = torch.Generator().manual_seed(7)
    procedure = InputDrop(seed=7)
    assert not torch.equal(
        torch.rand(8, generator=raw), torch.rand(8, generator=procedure.generator)
    )


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="rate"):
        InputDrop(rate=1.5)
    with pytest.raises(TypeError, match="config"):
        InputDrop(config=ProcedureConfig())


def test_registry_keeps_procedures_apart_from_weight_methods():
    assert available_procedures()["toy-input-drop"] is InputDrop
    assert get_procedure("toy-input-drop") is InputDrop
    assert "toy-input-drop" not in available_methods()
    with pytest.raises(ValueError, match="get_procedure"):
        get_method("toy-input-drop")
    with pytest.raises(ValueError, match="unknown procedure"):
        get_procedure("no-such-procedure")


def test_register_refuses_a_non_procedure(monkeypatch: pytest.MonkeyPatch):
    from sparsecore import registry

    monkeypatch.setattr(registry, "_PROCEDURES", {})
    with pytest.raises(TypeError, match="Procedure subclass"):
        register_procedure(nn.Linear)  # type: ignore[arg-type]
    assert register_procedure(InputDrop, "another-name") is InputDrop
    assert registry.available_procedures()["another-name"] is InputDrop


def test_detach_twice_raises():
    procedure = InputDrop().attach(tiny_mlp(0))
    procedure.detach()
    with pytest.raises(RuntimeError, match="not attached"):
        procedure.detach()
