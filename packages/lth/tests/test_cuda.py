import pytest
import torch

from sparse_lth import LotteryExperiment, LotteryTicket, TrainSpec

torch.set_num_threads(1)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_method_and_experiment_on_cuda(tmp_path, make_model, data):
    model = make_model(0).cuda()
    method = LotteryTicket(fraction=0.5).setup(model)
    method.prune_round()
    method.rewind()
    method.randomly_prune("global")
    for name, mask in method.masks.masks().items():
        assert mask.is_cuda and not method.masks.param(name)[~mask].any()
    spec = TrainSpec(steps=8, batch_size=16)
    done = LotteryExperiment(
        tmp_path, lambda s: make_model(s).cuda(), data, spec, levels=1, rewind_step=2,
        branches=("random_reinit", "random_prune"), instability_levels=(1,), points=3,
    ).run()  # fmt: skip
    assert done["level_1/main"]["sparsity"] == pytest.approx(0.2, abs=0.01)
    errors = done["level_1/instability"]["errors"]
    assert errors[0] == done["level_1/instability/a"]["error"]
    assert done["level_1/instability"]["barrier"] == pytest.approx(
        max(errors) - (errors[0] + errors[-1]) / 2
    )
