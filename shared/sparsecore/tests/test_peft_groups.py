"""sparsecore.peft_groups: the setup / ending steps shared by the LoRA structure-gating methods."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from sparsecore import PruningMethod
from sparsecore.peft_groups import (
    add_frozen_targets,
    add_own_group,
    check_target_names,
    check_trainable_inputs,
    finalize_fixed,
    remove_parts,
    unwrap_for_setup,
)
from sparsecore.testing import tiny_mlp
from sparsecore.window import ScheduleIncompleteWarning

torch.set_num_threads(1)


def _frozen_base_with_adapter() -> tuple[nn.Module, dict[str, nn.Parameter]]:
    """A frozen two-layer base plus a trainable 'adapter' layer (a LoRA stand-in)."""
    model = tiny_mlp()
    for p in model.parameters():
        p.requires_grad_(False)
    model.add_module("adapter", nn.Linear(4, 4))
    targets = {n: p for n, p in model.named_parameters() if n in ("0.weight", "2.weight")}
    return model, targets


def test_unwrap_for_setup_checks_type_and_a_second_setup() -> None:
    model = tiny_mlp()
    assert unwrap_for_setup(model, "gates") is model
    with pytest.raises(TypeError, match=r"torch\.nn\.Module, got int"):
        unwrap_for_setup(3, "gates")
    model.add_module("gates", nn.Module())
    with pytest.raises(ValueError, match="already has a 'gates' submodule"):
        unwrap_for_setup(model, "gates")


def test_check_target_names_names_the_first_unknown() -> None:
    check_target_names(None, ["a.weight"])
    check_target_names(("a.weight",), ["a.weight", "b.weight"])
    with pytest.raises(ValueError, match=r"targets: 'lm_head\.weight' is not an attention"):
        check_target_names(("a.weight", "lm_head.weight", "x"), ["a.weight"])


def test_check_trainable_inputs_refuses_a_foreign_optimizer_and_bad_weights() -> None:
    model, targets = _frozen_base_with_adapter()
    good = torch.optim.SGD(model.adapter.parameters(), lr=0.1)
    check_trainable_inputs(model, good, targets)
    check_trainable_inputs(model, None, targets)
    with pytest.raises(TypeError, match=r"torch\.optim\.Optimizer"):
        check_trainable_inputs(model, "sgd", targets)  # type: ignore[arg-type]
    other = torch.optim.SGD(nn.Linear(4, 4).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="does not hold the target parameters"):
        check_trainable_inputs(model, other, targets)
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"'0\.weight' has NaN"):
        check_trainable_inputs(model, good, targets)


def test_add_frozen_targets_adds_exactly_the_missing_frozen_ones_at_lr_zero() -> None:
    model, targets = _frozen_base_with_adapter()
    opt = torch.optim.AdamW(model.adapter.parameters(), lr=1e-3, weight_decay=0.1)
    added = add_frozen_targets(opt, targets)
    assert [id(p) for p in added] == [id(p) for p in targets.values()]
    assert len(opt.param_groups) == 2
    assert opt.param_groups[1]["lr"] == 0.0 and opt.param_groups[1]["weight_decay"] == 0.0
    assert add_frozen_targets(opt, targets) == [] and len(opt.param_groups) == 2
    before = {n: p.clone() for n, p in targets.items()}
    loss = model.adapter(torch.ones(1, 4)).sum()
    loss.backward()
    opt.step()
    assert all(torch.equal(p, before[n]) for n, p in targets.items())


def test_add_frozen_targets_refuses_a_missing_trainable_target() -> None:
    model = tiny_mlp()
    targets = {n: p for n, p in model.named_parameters() if n in ("0.weight", "2.weight")}
    opt = torch.optim.SGD([model[0].weight], lr=0.1)
    with pytest.raises(ValueError, match=r"does not hold the trainable targets \['0.weight'"):
        add_frozen_targets(opt, targets)
    assert len(opt.param_groups) == 1


def test_add_own_group_moves_the_parameters_and_copies_the_options() -> None:
    model = tiny_mlp()
    gates = nn.Parameter(torch.ones(8))
    opt = torch.optim.AdamW([*model.parameters(), gates], lr=1e-3, weight_decay=0.1, eps=1e-6)
    opt.param_groups[0]["initial_lr"] = 1e-3  # as an LR scheduler leaves it
    assert add_own_group(opt, [gates], "my_gates", 0.5, weight_decay=0.0)
    first, own = opt.param_groups
    assert all(p is not gates for p in first["params"])
    assert len(first["params"]) == len(list(model.parameters()))
    assert own["params"] == [gates] and own["my_gates"] is True
    assert own["lr"] == 0.5 and own["initial_lr"] == 0.5 and own["weight_decay"] == 0.0
    assert own["eps"] == 1e-6 and own["betas"] == first["betas"]
    assert not add_own_group(opt, [gates], "my_gates", 0.1)  # idempotent
    assert len(opt.param_groups) == 2 and opt.param_groups[1]["lr"] == 0.5


def test_add_own_group_without_a_scheduler_sets_no_initial_lr() -> None:
    gates = nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD(tiny_mlp().parameters(), lr=0.1)
    add_own_group(opt, iter([gates]), "g", 0.2)
    assert "initial_lr" not in opt.param_groups[1] and opt.param_groups[1]["lr"] == 0.2


def test_remove_parts_removes_hooks_and_the_submodule() -> None:
    model = tiny_mlp()
    calls = []
    handle = model.register_forward_pre_hook(lambda *_: calls.append(1))
    model.add_module("gates", nn.Module())
    remove_parts(model, "gates", handle, None)
    model(torch.ones(1, 16))
    assert calls == [] and not hasattr(model, "gates")
    remove_parts(model, "gates")  # nothing left: no error
    remove_parts(None, "gates")


class _Fixing(PruningMethod):
    """Prunes the first row of the first layer when fixed; incomplete until then."""

    name = "fixing-test"

    def init_masks(self) -> None:
        self.is_fixed = False

    def schedule_gap(self) -> str | None:
        return None if self.is_fixed else "fixing-test: not fixed (prune_steps=9)"

    def settle(self) -> None:
        if not self.is_fixed:
            keep = torch.ones_like(self.masks.mask("0.weight"))
            keep[0] = False
            self.masks.update("0.weight", keep)
            self.is_fixed = True

    def finalize(self) -> nn.Module:
        return finalize_fixed(self, self.settle)


def test_finalize_fixed_warns_before_fixing_then_bakes_the_masks() -> None:
    model = tiny_mlp()
    method = _Fixing(sparsity=0.0, targets=("0.weight",)).setup(model)
    with pytest.warns(ScheduleIncompleteWarning, match="prune_steps=9") as record:
        final = method.finalize()
    assert len(record) == 1 and record[0].filename == __file__  # points at the caller
    assert method._masks is None and method.is_fixed
    assert int((final[0].weight == 0).sum()) == final[0].weight.shape[1]
    assert not any("mask" in n for n, _ in final.named_buffers())


def test_finalize_fixed_is_silent_when_the_schedule_is_complete() -> None:
    method = _Fixing(sparsity=0.0, targets=("0.weight",)).setup(tiny_mlp())
    method.settle()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScheduleIncompleteWarning)
        method.finalize()


def test_zero_lora_slices_removes_the_delta_on_exactly_those_rows_and_columns() -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from sparsecore.adapters import add_lora, lora_modules
    from sparsecore.bench.models import tiny_llama
    from sparsecore.peft_groups import zero_lora_slices

    model = add_lora(tiny_llama(), r=4, alpha=8.0, init_lora_weights=False)  # random A and B
    module = next(iter(lora_modules(model).values()))
    adapter = module.active_adapters[0]
    a0, b0 = module.lora_A[adapter].weight.clone(), module.lora_B[adapter].weight.clone()
    out_features, in_features = b0.shape[0], a0.shape[1]
    rows = torch.arange(out_features) % 3 != 0
    cols = torch.arange(in_features) % 4 != 1
    zero_lora_slices(module, rows=rows)  # the first active adapter by default
    b = module.lora_B[adapter].weight
    assert bool((b[~rows] == 0).all()) and torch.equal(b[rows], b0[rows])
    assert torch.equal(module.lora_A[adapter].weight, a0)
    zero_lora_slices(module, cols=cols, adapter=adapter)
    a = module.lora_A[adapter].weight
    assert bool((a[:, ~cols] == 0).all()) and torch.equal(a[:, cols], a0[:, cols])
    delta = b @ a
    assert bool((delta[~rows] == 0).all()) and bool((delta[:, ~cols] == 0).all())
    assert bool((delta[rows][:, cols] != 0).all())
