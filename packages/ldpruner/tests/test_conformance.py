"""sparsecore's conformance suite on LD-Pruner's mask view (tiny MLP, calibrated at step 0).

The mask view's operators are output rows (whole rows are masked), so the target sparsity is met
to within one row: the tolerance is the largest row over all target weights (32 of 640 here).
"""

from typing import Any

import pytest
import torch

from sparse_ldpruner import LDPruner
from sparsecore.testing import MethodConformance, tiny_mlp

torch.set_num_threads(1)


class TestLDPrunerConformance(MethodConformance):
    method_cls = LDPruner
    sparsity = 0.5
    sparsity_tolerance = 32 / 640

    def make_method(self, **overrides: Any) -> LDPruner:
        return LDPruner(**{"sparsity": self.sparsity, "n_samples": 8, **overrides})


def _weights(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight"))


def test_calibrate_masks_whole_rows_ranked_by_the_score() -> None:
    model = tiny_mlp(0)
    method = LDPruner(sparsity=0.3, n_samples=8).setup(model)
    x = torch.randn(8, 16, generator=torch.Generator().manual_seed(5))
    method.calibrate([(x, torch.zeros(8, dtype=torch.long))])
    assert method.chosen, "nothing was pruned"
    masked = sum(int((~m).sum()) for m in method.masks.masks().values())
    assert 0.3 * _weights(model) <= masked < 0.3 * _weights(model) + 32
    for name, mask in method.masks.masks().items():
        rows = mask.flatten(1)
        assert bool((rows.all(1) | (~rows).all(1)).all()), name  # whole rows only
    scores = [float(c.rsplit(":", 1)[1]) for c in method.chosen]
    assert scores == sorted(scores)


def test_ranking_is_deterministic() -> None:
    x = torch.randn(8, 16, generator=torch.Generator().manual_seed(5))
    runs = []
    for _ in range(2):
        method = LDPruner(sparsity=0.4, n_samples=8).setup(tiny_mlp(0))
        method.calibrate([(x, torch.zeros(8, dtype=torch.long))])
        runs.append((method.chosen, {k: v.clone() for k, v in method.masks.masks().items()}))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [("n_samples", 1, ValueError), ("keep_ratio", 1.0, ValueError), ("steps", 0, ValueError),
     ("actions", ("prune",), ValueError), ("actions", (), TypeError)],
)  # fmt: skip
def test_bad_options_name_the_parameter(field: str, value: Any, error: type) -> None:
    with pytest.raises(error, match=field):
        LDPruner(**{field: value})
