"""The conformance suite of procedures (`sparsecore.procedure.Procedure`).

Usage in a procedure package's ``tests/test_conformance.py``:

```python
from sparsecore.testing import ProcedureConformance
from sparse_rebalance import ReBalance

class TestReBalanceConformance(ProcedureConformance):
    procedure_cls = ReBalance
    def make_model(self, seed=0):
        return tiny_causal_lm(seed)
    def run(self, procedure, model):
        return model.generate(prompt, max_new_tokens=8, do_sample=True)  # one short episode
```

It checks what every procedure owes (`sparsecore.procedure`): registration under the
``sparsecore.methods`` entry point, a declared taxonomy, config fields refusing wrong types
with an error naming the field, attach refusing a wrong model type before touching it, an
all-or-nothing attach (a failure inside `Procedure.on_attach` leaves the model exactly as it
was), detach leaving the model bit-identical with no hooks, determinism for a seed, and exact
resume from a ``weights_only`` state dict. What the procedure *does* is for the package's own
tests.
"""

from __future__ import annotations

import io
from typing import Any, ClassVar

import pytest
import torch
from torch import nn

from sparsecore.procedure import Procedure
from sparsecore.registry import available_procedures
from sparsecore.taxonomy import Taxonomy
from sparsecore.testing import _same_fingerprint, model_fingerprint, tiny_mlp, wrong_type_values

__all__ = ["ProcedureConformance", "same_outputs"]


def same_outputs(a: Any, b: Any) -> bool:
    """Exact equality of nested outputs (tensors, numbers, strings, lists, tuples, dicts)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.shape == b.shape
            and a.dtype == b.dtype
            and bool(torch.equal(a, b))
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_outputs(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_outputs(x, y) for x, y in zip(a, b, strict=True))
    if hasattr(a, "to_tuple") and hasattr(b, "to_tuple"):  # transformers ModelOutput
        return same_outputs(a.to_tuple(), b.to_tuple())
    return a == b


class ProcedureConformance:
    """Pytest base class: subclass it, set `procedure_cls`, override the ``make_*`` hooks and
    `run` (one short, seeded episode of the procedure acting on the model).
    """

    procedure_cls: ClassVar[type[Procedure]]

    def make_procedure(self, **overrides: Any) -> Procedure:
        """A procedure with test-sized options."""
        return self.procedure_cls(**overrides)

    def make_model(self, seed: int = 0) -> nn.Module:
        """The model the procedure attaches to (default: the core's tiny MLP)."""
        return tiny_mlp(seed)

    def run(self, procedure: Procedure, model: nn.Module) -> Any:
        """One short episode with ``procedure`` attached to ``model``; returns its outputs.

        The default feeds the tiny MLP one batch drawn from the procedure's generator.
        """
        x = torch.randn(4, 16, generator=procedure.generator)
        with torch.no_grad():
            return model(x)

    def wrong_models(self) -> list[Any]:
        """Objects `attach` must refuse with ``TypeError`` (default: a string and a tensor)."""
        return ["not a model", torch.zeros(2)]

    # ------------------------------------------------------------------ the checks
    def test_registered_as_entry_point(self) -> None:
        """The procedure is found through the ``sparsecore.methods`` entry point group."""
        assert self.procedure_cls in available_procedures().values()

    def test_declares_its_taxonomy(self) -> None:
        """A Sparseland place, saying what is made sparse."""
        taxonomy = getattr(self.procedure_cls, "taxonomy", None)
        assert isinstance(taxonomy, Taxonomy), "set the class attribute `taxonomy`"
        assert taxonomy.sparsifies

    def test_config_fields_reject_wrong_types(self) -> None:
        """Each plainly typed config field refuses a value of the wrong type, naming the field."""
        for field, value in wrong_type_values(self.procedure_cls.config_class):
            with pytest.raises((TypeError, ValueError), match=field):
                self.make_procedure(**{field: value})

    def test_wrong_model_type_raises(self) -> None:
        """`attach` refuses objects that are not models with a TypeError naming ``model``."""
        for wrong in self.wrong_models():
            with pytest.raises(TypeError, match="model"):
                self.make_procedure().attach(wrong)

    def test_attach_then_detach_leaves_the_model_unchanged(self) -> None:
        """After attach, an episode and detach, the model is bit-identical and hook-free."""
        model = self.make_model()
        before = model_fingerprint(model)
        procedure = self.make_procedure().attach(model)
        assert procedure.attached
        self.run(procedure, model)
        assert procedure.detach() is model
        assert not procedure.attached
        _same_fingerprint(before, model_fingerprint(model))

    def test_double_attach_raises(self) -> None:
        """Attaching an attached procedure again is refused."""
        model = self.make_model()
        procedure = self.make_procedure().attach(model)
        with pytest.raises(RuntimeError, match="already attached"):
            procedure.attach(model)
        procedure.detach()

    def test_failed_attach_rolls_back(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An exception at the end of `on_attach` leaves the model as it was, unattached."""
        model = self.make_model()
        before = model_fingerprint(model)
        procedure = self.make_procedure()
        original = procedure.on_attach

        def failing(m: nn.Module) -> None:
            original(m)
            raise RuntimeError("injected failure")

        monkeypatch.setattr(procedure, "on_attach", failing)
        with pytest.raises(RuntimeError, match="injected failure"):
            procedure.attach(model)
        assert not procedure.attached
        _same_fingerprint(before, model_fingerprint(model))
        monkeypatch.undo()
        procedure.attach(model).detach()  # and it can still attach afterwards

    def test_same_seed_same_outputs(self) -> None:
        """Two fresh procedures with one seed give identical episodes."""
        outputs = []
        for _ in range(2):
            model = self.make_model(seed=0)
            with self.make_procedure(seed=3).attach(model) as procedure:
                outputs.append(self.run(procedure, model))
        assert same_outputs(outputs[0], outputs[1])

    def test_exact_resume_from_weights_only_state(self) -> None:
        """Run, save, run again; a fresh procedure loaded from the save repeats the second run."""
        model = self.make_model(seed=0)
        first = self.make_procedure(seed=5).attach(model)
        self.run(first, model)
        buffer = io.BytesIO()
        torch.save({"procedure": first.state_dict(), "model": model.state_dict()}, buffer)
        expected = self.run(first, model)
        first.detach()
        buffer.seek(0)
        saved = torch.load(buffer, weights_only=True)
        twin = self.make_model(seed=0)
        twin.load_state_dict(saved["model"])  # a procedure that trains the model resumes it too
        second = self.make_procedure(seed=5)
        second.load_state_dict(saved["procedure"])
        second.attach(twin)
        got = self.run(second, twin)
        second.detach()
        assert same_outputs(expected, got)

    def test_state_of_another_config_is_refused(self) -> None:
        """`load_state_dict` refuses a state saved under another config."""
        state = self.make_procedure(seed=5).state_dict()
        with pytest.raises(ValueError, match="config"):
            self.make_procedure(seed=6).load_state_dict(state)
