import torch

from sparse_lth import LotteryTicket
from sparsecore.testing import MethodConformance

torch.set_num_threads(1)


class TestLotteryTicketConformance(MethodConformance):
    method_cls = LotteryTicket


class TestLotteryTicketRewindConformance(MethodConformance):
    """The same suite with a rewind point captured mid-run and an ignored layer."""

    method_cls = LotteryTicket

    def make_method(self, **overrides):
        options = {"sparsity": self.sparsity, "rewind_step": 5, "layers_to_ignore": ("4.weight",)}
        return LotteryTicket(**{**options, **overrides})
