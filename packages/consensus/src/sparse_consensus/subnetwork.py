"""From a trained gated model to the static consensus sub-network, and its metrics.

* `measure_gates`: one pass over data (eval mode, gates on): every gate's average decision
  (written into its ``average`` buffer, which ``finalize`` thresholds) and the consensus rate.
* `consensus_subnetwork`: measure (optional), ``method.finalize()``, then
  `sparsecore.export.remove_channels`: a plain, physically smaller ``nn.Module`` whose outputs
  equal the gated model's with every gate fixed to its consensus decision.
* `accuracy`: top-1 accuracy of a model on tensors, in eval mode.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sparse_consensus.gates import find_gates
from sparsecore.evaluation import count_flops
from sparsecore.export import remove_channels

__all__ = ["GateStatistics", "accuracy", "consensus_subnetwork", "measure_gates"]


@dataclass
class GateStatistics:
    """Gate decisions over a data set.

    Attributes:
        averages: Average decision per gate target (block or producer name), ``(size,)``.
        consensus_rate: Share of (sample, gate) decisions equal to that gate's majority
            decision (1.0: every sample uses the same sub-network).
        sample_agreement: Share of samples whose decisions equal the majority on *every* gate.
        samples: Number of samples measured.
    """

    averages: dict[str, torch.Tensor] = field(repr=False)
    consensus_rate: float
    sample_agreement: float
    samples: int


def _batches(data: Any, batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(data, torch.Tensor):
        yield from data.split(batch_size)
        return
    for batch in data:
        yield batch[0] if isinstance(batch, tuple | list) else batch


@torch.no_grad()
def measure_gates(
    model: nn.Module, data: Any, batch_size: int = 256, write: bool = True
) -> GateStatistics:
    """Average decisions and consensus rate of the model's gates over ``data``.

    Args:
        model: A gated model (`sparse_consensus.attach_gates`).
        data: A tensor of inputs, or an iterable of input tensors / ``(x, y)`` batches.
        batch_size: Batch size when ``data`` is a tensor.
        write: Store the averages in the gates' ``average`` buffers (what ``finalize`` uses).

    Raises:
        ValueError: The model has no gates, or ``data`` is empty.
    """
    gates = find_gates(model)
    if gates is None:
        raise ValueError("model has no consensus gates")
    was_training = model.training
    model.eval()
    decisions: dict[str, list[torch.Tensor]] = {g.target: [] for g in gates.all()}
    try:
        for x in _batches(data, batch_size):
            model(x)
            for g in gates.all():
                decisions[g.target].append(g.last.detach().cpu())
                g.last = None
    finally:
        model.train(was_training)
    if not any(decisions.values()):
        raise ValueError("data is empty")
    stacked = {k: torch.cat(v) for k, v in decisions.items()}
    averages = {k: v.mean(0) for k, v in stacked.items()}
    agree = [(v == (averages[k] >= 0.5).float()) for k, v in stacked.items()]
    every = torch.cat(agree, dim=1)
    if write:
        for g in gates.all():
            g.average.copy_(averages[g.target].to(g.average))
    return GateStatistics(
        averages=averages,
        consensus_rate=float(every.float().mean()),
        sample_agreement=float(every.all(1).float().mean()),
        samples=int(every.shape[0]),
    )


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)`` in eval mode (its mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        hits = sum(
            int((model(xb).argmax(1) == yb).sum())
            for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True)
        )
    finally:
        model.train(was_training)
    return hits / max(len(y), 1)


def consensus_subnetwork(
    method: Any, example_input: torch.Tensor, data: Any | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """The static consensus sub-network of a trained `ConsensusPruning`, physically shrunk.

    Args:
        method: A set-up `sparse_consensus.ConsensusPruning` after training.
        example_input: A batch of inputs (traces the shrinking and checks it).
        data: Training inputs to measure the gate averages on (recommended: the paper removes
            gates by their *training-set* average); ``None`` keeps the running averages.

    Returns:
        ``(model, report)``: the plain smaller model (train/eval mode as before) and
        ``{"removed_channels", "removed_blocks", "macs", "dense_macs", "flops_ratio",
        "statistics"}`` (``statistics``: the `GateStatistics`, or ``None``).
    """
    model = method.model
    gates = find_gates(model)
    if gates is None:
        raise ValueError("method's model has no gates")
    stats = measure_gates(model, data) if data is not None else None
    with gates.disabled():
        dense = count_flops(model, example_input[:1]).dense
    small = method.finalize()
    blocks = list(method.removed_blocks)
    removed = remove_channels(small, example_input, {})
    macs = count_flops(small, example_input[:1]).dense
    report = {
        "removed_channels": removed,
        "removed_blocks": blocks,
        "macs": macs,
        "dense_macs": dense,
        "flops_ratio": macs / dense,
        "statistics": stats,
    }
    return small, report
