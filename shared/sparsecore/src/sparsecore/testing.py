"""The conformance suite every method package subclasses.

Usage in a package's ``tests/test_conformance.py``:

```python
from sparsecore.testing import MethodConformance
from sparse_granet import GraNet

class TestGraNetConformance(MethodConformance):
    method_cls = GraNet
    def make_method(self, **overrides):
        return GraNet(**{"sparsity": 0.75, "update_every": 4, **overrides})
```

The suite trains the method on a tiny MLP (or `MethodConformance.make_model`) for
`MethodConformance.train_steps` steps and checks: setup/finalize, the target sparsity
(exactly, or within `MethodConformance.sparsity_tolerance`), pattern validity, that pruned
weights are exactly zero, exact resume from state dicts, and clear errors on bad input raised
before the model is touched. A package overrides the ``make_*`` hooks or the tolerance; it should
not need to skip tests.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
from torch import nn

from sparsecore.method import PruningMethod
from sparsecore.registry import available_methods
from sparsecore.window import ScheduleIncompleteWarning

__all__ = [  # noqa: F822 (ProcedureConformance is served by the module __getattr__)
    "MethodConformance",
    "ProcedureConformance",
    "WindowCase",
    "check_window_case",
    "model_fingerprint",
    "tiny_mlp",
    "window_cases",
    "window_property_test",
    "wrong_type_values",
]

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)


def model_fingerprint(
    model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, Any]:
    """Everything a setup may change: state_dict keys and values, hooks, parametrizations,
    module classes and the optimizer's step hooks (to compare before/after a rejected setup).

    Meta tensors are compared by shape and dtype (they have no values).
    """
    state = {
        k: (v.shape, v.dtype) if v.is_meta else v.detach().clone()
        for k, v in model.state_dict(keep_vars=True).items()
    }
    modules = {
        name: (
            type(m),
            tuple(len(getattr(m, attr, {})) for attr in _HOOK_DICTS),
            tuple(m.parametrizations) if hasattr(m, "parametrizations") else (),
            tuple(m._buffers),
            tuple(m._parameters),
        )
        for name, m in model.named_modules()
    }
    opt_hooks = None
    if optimizer is not None:
        opt_hooks = (
            len(optimizer._optimizer_step_pre_hooks),
            len(optimizer._optimizer_step_post_hooks),
        )
    return {"state": state, "modules": modules, "optimizer": opt_hooks}


def _same_fingerprint(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert before["modules"] == after["modules"], "modules, hooks or parametrizations changed"
    assert before["optimizer"] == after["optimizer"], "optimizer hooks changed"
    assert before["state"].keys() == after["state"].keys(), "state_dict keys changed"
    for key, value in before["state"].items():
        other = after["state"][key]
        if isinstance(value, torch.Tensor):
            same = value.shape == other.shape and value.dtype == other.dtype
            if same and value.is_floating_point():  # NaN equals NaN here
                same = torch.allclose(value, other, rtol=0.0, atol=0.0, equal_nan=True)
            elif same:
                same = torch.equal(value, other)
            assert same, f"state_dict value {key} changed"
        else:
            assert value == other, f"meta tensor {key} changed"


def tiny_mlp(seed: int = 0, in_features: int = 16, hidden: int = 32, classes: int = 4) -> nn.Module:
    """A three-layer MLP with widths divisible by 4 (valid for 2:4 and channel patterns)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, classes),
    )


def wrong_type_values(config_class: type) -> list[tuple[str, Any]]:
    """``(field, value of the wrong type)`` for every config field with a plain annotation.

    Numbers and flags get a string, strings and name sequences get ``42``; fields annotated
    with other types (patterns, callables, mappings) are left to the config's own tests.
    """
    import dataclasses

    out: list[tuple[str, Any]] = []
    for field in dataclasses.fields(config_class):
        if not field.init or field.name.startswith("_"):
            continue
        kinds = {t.strip() for t in str(field.type).replace("None", "").split("|") if t.strip()}
        if kinds and kinds <= {"int", "float", "bool"}:
            out.append((field.name, "not-a-number"))
        elif kinds and kinds <= {"str", "tuple[str, ...]", "Pattern", "Pattern | str"}:
            out.append((field.name, 42))
    return out


class MethodConformance:
    """Pytest base class: subclass it and set `method_cls`."""

    method_cls: ClassVar[type[PruningMethod]]
    #: Sparsity the suite asks for (ignored by N:M methods).
    sparsity: ClassVar[float] = 0.75
    #: Optimizer steps of the training scenario.
    train_steps: ClassVar[int] = 24
    #: Allowed absolute deviation from the target sparsity after `run`.
    sparsity_tolerance: ClassVar[float] = 0.0
    #: Whether the target sparsity must hold at the end of training (False for methods whose
    #: sparsity is reached only after finalize, e.g. soft masks).
    check_sparsity_after_training: ClassVar[bool] = True
    #: Config fields `test_config_fields_reject_wrong_types` leaves out (say why).
    wrong_type_exempt: ClassVar[tuple[str, ...]] = ()

    # ---------------------------------------------------------------- hooks for packages
    def make_method(self, **overrides: Any) -> PruningMethod:
        """The method under test; override to pass required options."""
        return self.method_cls(**{"sparsity": self.sparsity, **overrides})

    def make_model(self, seed: int = 0) -> nn.Module:
        """A small model the method applies to."""
        return tiny_mlp(seed)

    def make_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A deterministic batch for ``step``."""
        gen = torch.Generator().manual_seed(1000 + step)
        model_in = self.input_shape()
        x = torch.randn(8, *model_in, generator=gen)
        y = torch.randint(0, 4, (8,), generator=gen)
        return x, y

    def input_shape(self) -> tuple[int, ...]:
        """Input shape without the batch dimension."""
        return (16,)

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """SGD with momentum and weight decay (masking must survive both)."""
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)

    def expected_sparsity(self, method: PruningMethod) -> float:
        """The sparsity the method should have reached after `run`."""
        pattern = method.config.pattern
        if hasattr(pattern, "n") and hasattr(pattern, "m"):
            return 1.0 - pattern.n / pattern.m
        return method.config.sparsity

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Task loss of one batch."""
        x, y = batch
        return nn.functional.cross_entropy(model(x), y)

    # ---------------------------------------------------------------- scenario
    def run(
        self,
        model: nn.Module,
        method: PruningMethod,
        optimizer: torch.optim.Optimizer,
        steps: range,
    ) -> None:
        """Train ``model`` for ``steps`` with ``method`` attached."""
        for step in steps:
            batch = self.make_batch(step)
            if method.needs_calibration and method.step == 0 and step == 0:
                method.calibrate([batch])
            loss = self.loss(model, batch) + method.regularization()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    def trained(self) -> tuple[nn.Module, PruningMethod, torch.optim.Optimizer]:
        """A model trained for `train_steps` with the method."""
        model = self.make_model()
        optimizer = self.make_optimizer(model)
        method = self.make_method().setup(model, optimizer)
        self.run(model, method, optimizer, range(self.train_steps))
        return model, method, optimizer

    # ---------------------------------------------------------------- the suite
    def test_registered_as_entry_point(self) -> None:
        """The method is discoverable through the ``sparsecore.methods`` entry point."""
        assert self.method_cls in available_methods().values()

    def test_declares_its_sparseland_taxonomy(self) -> None:
        """The method says where it sits in the Sparseland taxonomy (arXiv 2302.02596, R2)."""
        from sparsecore.taxonomy import Taxonomy

        taxonomy = self.method_cls.taxonomy
        assert isinstance(taxonomy, Taxonomy), f"{self.method_cls.__name__}.taxonomy is not set"
        assert taxonomy.as_row()["granularity"]

    def test_setup_adds_bool_mask_buffers(self) -> None:
        """Every target gets a persistent bool buffer in the model's state_dict."""
        model = self.make_model()
        method = self.make_method().setup(model, self.make_optimizer(model))
        state = model.state_dict()
        assert method.masks.names
        for target in method.masks.targets.values():
            key = target.state_key
            assert key in state and state[key].dtype == torch.bool

    def test_target_sparsity_and_pattern(self) -> None:
        """After training, the target sparsity holds and every mask is a valid pattern."""
        _, method, _ = self.trained()
        if self.check_sparsity_after_training:
            got = method.masks.sparsity()
            want = self.expected_sparsity(method)
            assert abs(got - want) <= self.sparsity_tolerance + 1.0 / sum(
                method.masks.nnz().values()
            )
        for name, mask in method.masks.masks().items():
            assert method.masks.targets[name].pattern.is_valid(mask), name

    def test_pruned_weights_are_zero(self) -> None:
        """In hard mode, every masked weight is exactly zero after training."""
        _, method, _ = self.trained()
        if method.mask_mode != "hard":
            pytest.skip("ste/soft modes keep dense weights under the mask by design")
        for name, param in method.masks.params().items():
            assert not param[~method.masks.mask(name)].any(), name

    def test_finalize_gives_plain_model(self) -> None:
        """Finalize removes buffers and bakes exactly the masked zeros into the weights."""
        _, method, _ = self.trained()
        masks = {n: m.clone() for n, m in method.masks.masks().items()}
        final = method.finalize()
        assert not any(k.endswith("_mask") for k in final.state_dict())
        params = dict(final.named_parameters())
        for name, mask in masks.items():
            assert not params[name][~mask].any(), name

    def test_finalize_warns_iff_schedule_incomplete(self) -> None:
        """``schedule_complete`` is a bool; ``finalize()`` warns once exactly when it is false."""
        _, method, _ = self.trained()
        complete = method.schedule_complete
        assert isinstance(complete, bool)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ScheduleIncompleteWarning)
            method.finalize()
        raised = [w for w in caught if issubclass(w.category, ScheduleIncompleteWarning)]
        assert len(raised) == (0 if complete else 1)

    def test_exact_resume(self) -> None:
        """Train k steps, save, load into a fresh setup, continue: equal to an uninterrupted run."""
        half = self.train_steps // 2
        model_a = self.make_model()
        opt_a = self.make_optimizer(model_a)
        method_a = self.make_method().setup(model_a, opt_a)
        self.run(model_a, method_a, opt_a, range(self.train_steps))

        model_b = self.make_model()
        opt_b = self.make_optimizer(model_b)
        method_b = self.make_method().setup(model_b, opt_b)
        self.run(model_b, method_b, opt_b, range(half))
        buffer = io.BytesIO()
        torch.save(
            {
                "model": model_b.state_dict(),
                "opt": opt_b.state_dict(),
                "method": method_b.state_dict(),
            },
            buffer,
        )
        buffer.seek(0)
        saved = torch.load(buffer, weights_only=True)

        model_c = self.make_model(seed=123)  # different init: everything must come from the save
        opt_c = self.make_optimizer(model_c)
        method_c = self.make_method().setup(model_c, opt_c)
        model_c.load_state_dict(saved["model"])
        opt_c.load_state_dict(saved["opt"])
        method_c.load_state_dict(saved["method"])
        self.run(model_c, method_c, opt_c, range(half, self.train_steps))

        for (name, a), (_, c) in zip(
            model_a.state_dict().items(), model_c.state_dict().items(), strict=True
        ):
            assert torch.equal(a, c), name

    @pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan")])
    def test_bad_sparsity_raises(self, bad: float) -> None:
        """Sparsity outside [0, 1) is a ValueError naming the parameter."""
        with pytest.raises(ValueError, match="sparsity"):
            self.make_method(sparsity=bad)

    def test_unknown_target_raises_before_touching_model(self) -> None:
        """A target that does not exist raises, and the model is left exactly as it was."""
        model = self.make_model()
        before = copy.deepcopy(model.state_dict())
        method = self.make_method(targets=("no_such_layer.weight",))
        with pytest.raises(ValueError, match="no_such_layer"):
            method.setup(model, self.make_optimizer(model))
        after = model.state_dict()
        assert before.keys() == after.keys()
        assert all(torch.equal(before[k], after[k]) for k in before)

    # ---------------------------------------------------------------- transactional setup
    def _rejected_setup_case(
        self, case: str
    ) -> tuple[nn.Module, torch.optim.Optimizer | None, type[BaseException], str]:
        if case == "foreign_optimizer":
            model = self.make_model()
            return model, self.make_optimizer(self.make_model(seed=1)), ValueError, "optimizer"
        if case == "meta_model":
            with torch.device("meta"):
                model = self.make_model()
            return model, self.make_optimizer(model), ValueError, "meta"
        model = self.make_model()
        with torch.no_grad():
            for param in model.parameters():  # every one, so whichever the targets are
                if param.is_floating_point() and param.numel():
                    param.view(-1)[0] = float("nan")
        return model, self.make_optimizer(model), ValueError, "NaN"

    @pytest.mark.parametrize("case", ["foreign_optimizer", "meta_model", "nan_weight"])
    def test_rejected_setup_leaves_no_trace(self, case: str) -> None:
        """A setup that is refused leaves state_dict, hooks, parametrizations and optimizer
        hooks exactly as they were (and the model can then be set up properly).
        """
        method = self.make_method()
        if case == "nan_weight" and not method.requires_finite_weights:
            pytest.skip("the method does not use the weights' values")
        model, optimizer, error, match = self._rejected_setup_case(case)
        before = model_fingerprint(model, optimizer)
        with pytest.raises(error, match=match):
            method.setup(model, optimizer)
        _same_fingerprint(before, model_fingerprint(model, optimizer))
        if case == "foreign_optimizer":
            method.setup(model, self.make_optimizer(model))  # not stuck: a fresh setup works
            assert method.masks.names

    def test_failed_setup_rolls_back(self) -> None:
        """An error raised late in setup (after masks were built and set) is undone completely."""
        model = self.make_model()
        optimizer = self.make_optimizer(model)
        method = self.make_method()
        original = method.init_masks
        reached: list[bool] = []

        def failing_init_masks() -> None:
            original()
            reached.append(True)
            raise RuntimeError("injected failure")

        method.init_masks = failing_init_masks  # type: ignore[method-assign]
        before = model_fingerprint(model, optimizer)
        try:
            method.setup(model, optimizer)
        except RuntimeError as err:
            assert "injected failure" in str(err)
        if not reached:
            pytest.skip("this method's setup does not go through init_masks")
        _same_fingerprint(before, model_fingerprint(model, optimizer))
        del method.init_masks
        method.setup(model, optimizer)  # the same method object can be set up again
        assert method.masks.names

    def test_config_fields_reject_wrong_types(self) -> None:
        """Every config field, given a value of the wrong type, raises a TypeError / ValueError
        that names the field (``sparsecore.validation``), at construction.
        """
        for field, bad in wrong_type_values(self.method_cls.config_class):
            if field in self.wrong_type_exempt:
                continue
            try:
                self.make_method(**{field: bad})
            except (TypeError, ValueError) as err:
                assert field in str(err), f"{field}={bad!r}: the error does not name it: {err}"
            else:
                raise AssertionError(f"{field}={bad!r} was accepted")

    def test_wrong_model_type_raises(self) -> None:
        """A model that is not an nn.Module is a TypeError."""
        with pytest.raises(TypeError, match="model"):
            self.make_method().setup("not a model")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- schedule-window property
@dataclass(frozen=True)
class WindowCase:
    """One drawn schedule: train ``total`` steps with a window ``[begin, end]``, period ``every``.

    A method factory maps it onto its own fields (``begin_step`` / ``end_step`` /
    ``update_every`` / ``total_steps``, or ``prune_steps``...).
    """

    total: int
    every: int
    begin: int
    end: int


def _zero_fraction(model: nn.Module, names: Sequence[str]) -> float:
    params = dict(model.named_parameters())
    zeros = sum(int((params[n].detach() == 0).sum()) for n in names)
    return zeros / sum(params[n].numel() for n in names)


def _mlp_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(2000 + step)
    return torch.randn(8, 16, generator=gen), torch.randint(0, 4, (8,), generator=gen)


def check_window_case(
    case: WindowCase,
    make_method: Callable[[WindowCase], PruningMethod],
    *,
    make_model: Callable[[], nn.Module] = tiny_mlp,
    make_batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]] = _mlp_batch,
    expect_complete: Callable[[WindowCase, PruningMethod], bool] | None = None,
    expected: Callable[[PruningMethod], float] | None = None,
    achieved: Callable[[nn.Module, PruningMethod, list[str]], float] | None = None,
    tolerance: float = 0.0,
    count_zeros: bool = True,
    fields: Sequence[str] = ("begin_step", "end_step", "update_every", "total_steps"),
) -> None:
    """The schedule-window property for one case: the target is reached, or setup raises.

    Either building / setting up the method raises a ``TypeError`` / ``ValueError`` that names
    one of ``fields`` (the user's field names), or the method trains ``case.total`` steps and

    * ``schedule_complete`` is true whenever ``expect_complete`` says the window fits
      (default: ``case.end <= case.total``);
    * when complete, ``finalize()`` does not warn and the finalized model's sparsity over the
      targets equals ``expected`` (default: ``config.sparsity``) up to per-layer rounding
      (one entry per target) plus ``tolerance``; zeros are counted in the weights
      (``count_zeros``), so weights regrown at exactly zero fail it (methods that grow at
      random positions, where a weight may legitimately keep a zero gradient, count the masks
      before ``finalize()`` instead);
    * when not complete, ``finalize()`` warns once with ``ScheduleIncompleteWarning``.

    Args:
        case: The drawn schedule.
        make_method: Builds the method for ``case`` (may raise for impossible windows).
        make_model: A fresh small model.
        make_batch: ``(inputs, labels)`` for a step (cross-entropy loss).
        expect_complete: Whether the window fits in ``case.total`` steps.
        expected: The target sparsity of a method.
        achieved: Sparsity of the finalized model (default: fraction of exact zeros over the
            targets); ``(model, method, target names)``.
        tolerance: Extra allowed deviation.
        count_zeros: Count exact zeros of the finalized weights (else the masks' sparsity just
            before ``finalize()``).
        fields: User field names an error message must contain one of.
    """
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    try:
        method = make_method(case)
        method.setup(model, optimizer)
    except (TypeError, ValueError) as error:
        assert any(f in str(error) for f in fields), f"error names no field of {fields}: {error}"
        return
    for step in range(case.total):
        x, y = make_batch(step)
        loss = nn.functional.cross_entropy(model(x), y) + method.regularization()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    fits = expect_complete(case, method) if expect_complete else case.end <= case.total
    complete = method.schedule_complete
    if fits:
        assert complete, f"{case}: the window fits in training but schedule_complete is False"
    names = list(method.masks.names)
    want = expected(method) if expected else method.config.sparsity
    mask_sparsity = method.masks.sparsity()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ScheduleIncompleteWarning)
        final = method.finalize()
    raised = [w for w in caught if issubclass(w.category, ScheduleIncompleteWarning)]
    if not complete:
        assert len(raised) == 1, (
            f"{case}: incomplete schedule finalized with {len(raised)} warnings"
        )
        return
    assert not raised, f"{case}: complete schedule warned: {raised[0].message}"
    if achieved is not None:
        got = achieved(final, method, names)
    else:
        got = _zero_fraction(final, names) if count_zeros else mask_sparsity
    total = sum(dict(final.named_parameters())[n].numel() for n in names)
    assert abs(got - want) <= tolerance + len(names) / total, (case, got, want)


def window_cases(max_total: int = 40, max_every: int = 12) -> Any:
    """A hypothesis strategy of `WindowCase` (see `window_property_test`).

    Args:
        max_total: Largest training length drawn.
        max_every: Largest update period drawn.
    """
    from hypothesis import strategies as st

    @st.composite
    def cases(draw: Any) -> WindowCase:
        total = draw(st.integers(1, max_total))
        short = st.integers(1, max(1, min(max_every, total // 2)))
        every = draw(st.one_of(short, short, st.integers(1, max_every)))
        begin = draw(st.one_of(st.just(0), st.integers(0, total)))
        inside = st.integers(begin + 1, max(begin + 1, total))
        outside = st.integers(max(0, begin - 2), total + 3)
        end = draw(st.one_of(inside, inside, outside))
        return WindowCase(total=total, every=every, begin=begin, end=end)

    return cases()


def window_property_test(
    make_method: Callable[[WindowCase], PruningMethod],
    *,
    max_total: int = 40,
    max_every: int = 12,
    max_examples: int = 25,
    **kwargs: Any,
) -> Callable[[], None]:
    """A pytest test (hypothesis) of `check_window_case` over drawn windows.

    Usage in a package's tests: ``test_window = window_property_test(lambda c: GMP(...))``.
    Draws ``total`` in ``[1, max_total]``, ``every`` in ``[1, max_every]`` (mostly at most half
    of ``total``), ``begin`` in ``[0, total]`` (often 0) and ``end`` mostly in
    ``(begin, total]``, sometimes in ``[begin - 2, total + 3]`` (impossible windows included:
    they must raise with a field name). Deterministic (``derandomize``), no example database.

    Args:
        make_method: Builds the method for a `WindowCase`.
        max_total: Largest training length drawn.
        max_every: Largest update period drawn.
        max_examples: Hypothesis examples (keep small: each trains a tiny model).
        **kwargs: Passed to `check_window_case`.
    """
    from hypothesis import HealthCheck, given, settings

    @settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(case=window_cases(max_total, max_every))
    def test_window_schedule(case: WindowCase) -> None:
        torch.set_num_threads(1)
        check_window_case(case, make_method, **kwargs)

    return test_window_schedule


def __getattr__(name: str) -> Any:
    """`ProcedureConformance` lives in `sparsecore.testing_procedure` (imported on first use)."""
    if name == "ProcedureConformance":
        from sparsecore.testing_procedure import ProcedureConformance

        return ProcedureConformance
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
