"""sparsecore's conformance suite for PDP (unstructured, N:M and channel), plus exact finalize."""

from typing import Any

import pytest
import torch

from sparse_pdp import PDP
from sparsecore import PruningMethod
from sparsecore.testing import MethodConformance, tiny_mlp

torch.set_num_threads(1)

# Warm-up 6 steps, ramp until step 18: the suite's 24 steps end with the full target in force and
# its resume point (step 12) falls in the middle of the ramp.
SCHEDULE = {"begin_step": 6, "end_step": 18, "update_every": 2, "tau": 1e-3}


class TestPDPUnstructured(MethodConformance):
    method_cls = PDP
    # The bool buffers hold the exact hard decision at the ramped target, so after the ramp the
    # target sparsity holds exactly (tolerance 0) even though the forward uses the soft mask.
    check_sparsity_after_training = True

    def make_method(self, **overrides: Any) -> PruningMethod:
        return PDP(**{"sparsity": self.sparsity, **SCHEDULE, **overrides})

    def test_finalized_model_has_exact_target_sparsity(self) -> None:
        _, method, _ = self.trained()
        total = sum(p.numel() for p in method.masks.params().values())
        final = method.finalize()
        kept = sum(int((m.weight != 0).sum()) for m in final if isinstance(m, torch.nn.Linear))
        assert kept == int((1 - self.sparsity) * total)


class TestPDPNM(MethodConformance):
    method_cls = PDP
    check_sparsity_after_training = True

    def make_method(self, **overrides: Any) -> PruningMethod:
        return PDP(**{"sparsity": self.sparsity, "pattern": "1:4", **SCHEDULE, **overrides})

    def test_finalized_model_is_exactly_1_of_4(self) -> None:
        _, method, _ = self.trained()
        final = method.finalize()
        for module in final:
            if isinstance(module, torch.nn.Linear):
                groups = (module.weight != 0).reshape(-1, 4).sum(-1)
                assert torch.equal(groups, torch.ones_like(groups))


class TestPDPChannel(MethodConformance):
    method_cls = PDP
    check_sparsity_after_training = True

    def make_method(self, **overrides: Any) -> PruningMethod:
        options = {"pattern": "channel", "distribution": "uniform", **SCHEDULE}
        return PDP(**{"sparsity": self.sparsity, **options, **overrides})

    def test_finalized_model_removes_whole_channels(self) -> None:
        _, method, _ = self.trained()
        final = method.finalize()
        for module, want in zip([final[0], final[2], final[4]], [8, 8, 1], strict=True):
            alive = (module.weight != 0).any(1)
            assert int(alive.sum()) == want
            assert bool(((module.weight != 0).all(1) == alive).all())


@pytest.mark.parametrize("steps", [0, 3, 9])
def test_finalize_before_ramp_end_still_exact(steps: int) -> None:
    """Finalize during warm-up or mid-ramp still bakes exactly the full target."""
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    method = PDP(sparsity=0.8, begin_step=4, end_step=40).setup(model, opt)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x, y = torch.randn(8, 16, generator=gen), torch.randint(0, 4, (8,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    total = sum(p.numel() for p in method.masks.params().values())
    final = method.finalize()
    kept = sum(int((m.weight != 0).sum()) for m in final if isinstance(m, torch.nn.Linear))
    assert kept == int(0.2 * total)
