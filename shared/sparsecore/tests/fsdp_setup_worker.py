"""One rank of the FSDP2 ``PruningMethod.setup`` test (two gloo processes, see test_fsdp_setup.py).

Usage: ``fsdp_setup_worker.py RANK WORLD STORE_FILE OUT_DIR``. For each case the same model is
built on every rank; a plain copy is pruned in-process by the same method (the single-process
reference) and the ``fully_shard`` model through `PruningMethod.setup` and training steps; the
gathered ``DTensor`` masks are compared bit for bit. Writes OUT_DIR/rank{RANK}.json.
"""

from __future__ import annotations

import copy
import json
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(16, 13), nn.ReLU(), nn.Linear(13, 7), nn.ReLU(), nn.Linear(7, 4)
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.round(p * 8) / 8)  # few distinct magnitudes: ties at the threshold
    return model


def _run(method_factory, steps: int, mesh) -> dict:
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    from sparsecore.fsdp import local

    ref_model = _model()
    model = copy.deepcopy(ref_model)
    for layer in (model[0], model[2], model[4]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    results = {}
    for label, net in (("ref", ref_model), ("fsdp", model)):
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        method = method_factory().setup(net, opt)
        first = {n: m.full_tensor() if label == "fsdp" else m.clone()
                 for n, m in method.masks.masks().items()}  # fmt: skip
        data = torch.Generator().manual_seed(7)  # the same batches on every rank
        for _ in range(steps):
            x = torch.randn(8, 16, generator=data)
            y = torch.randint(0, 4, (8,), generator=data)
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        masks = method.masks.masks()
        if label == "fsdp":
            results["dtensor"] = all(isinstance(m, DTensor) for m in masks.values())
            params = method.masks.params()
            results["placements"] = all(
                masks[n].placements == params[n].placements
                and local(masks[n]).shape == local(params[n]).shape
                for n in masks
            )
            results["zeros"] = all(
                bool((local(params[n])[~local(masks[n])] == 0).all()) for n in masks
            )
            results["nnz"] = method.masks.nnz()
            masks = {n: m.full_tensor() for n, m in masks.items()}
        results[label] = {n: m.clone() for n, m in masks.items()}
        results[f"{label}_changed"] = any(not torch.equal(first[n], masks[n]) for n in masks)
        results[f"{label}_step"] = method.step
    ref, got = results.pop("ref"), results.pop("fsdp")
    results["equal"] = all(torch.equal(ref[n], got[n]) for n in ref)
    results["sparsity"] = 1 - sum(int(m.sum()) for m in ref.values()) / sum(
        m.numel() for m in ref.values()
    )
    results["ref_nnz_equal"] = results.pop("nnz") == {n: int(m.sum()) for n, m in ref.items()}
    return results


def main() -> None:
    torch.set_num_threads(1)
    rank, world, store, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world,
        timeout=timedelta(seconds=90),
    )  # fmt: skip
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from sparsecore.baselines import GMP, SET, OneShotMagnitude, RigL

    mesh = init_device_mesh("cpu", (world,))
    cases = {
        "magnitude_layer": (lambda: OneShotMagnitude(sparsity=0.6), 1),
        "magnitude_global": (lambda: OneShotMagnitude(sparsity=0.6, scope="global"), 1),
        "gmp_global": (lambda: GMP(sparsity=0.7, scope="global", end_step=3, update_every=1), 3),
        "gmp_layer": (lambda: GMP(sparsity=0.7, end_step=3, update_every=1), 3),
        "rigl": (
            lambda: RigL(sparsity=0.6, update_every=1, end_step=3, seed=11, distribution="erk"),
            3,
        ),
    }
    report = {name: _run(factory, steps, mesh) for name, (factory, steps) in cases.items()}
    # refused methods: a clear error naming the method, the model untouched
    model = _model()
    fully_shard(model, mesh=mesh)
    before = {n: p.full_tensor().clone() for n, p in model.named_parameters()}
    refused = {}
    for label, factory in (
        ("set", lambda: SET(sparsity=0.5, update_every=1, end_step=2)),
        ("channel", lambda: OneShotMagnitude(sparsity=0.5, pattern="channel")),
    ):
        try:
            factory().setup(model)
            refused[label] = ""
        except ValueError as err:
            refused[label] = str(err)
    unchanged = all(torch.equal(p.full_tensor(), before[n]) for n, p in model.named_parameters())
    buffers = [n for n, _ in model.named_buffers()]
    report["refused"] = {**refused, "unchanged": unchanged and not buffers}
    Path(out, f"rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
