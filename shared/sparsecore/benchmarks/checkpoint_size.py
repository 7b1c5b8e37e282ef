"""Compact checkpoint size vs the dense safetensors file, and the round-trip check.

Run:  python shared/sparsecore/benchmarks/checkpoint_size.py [--out r.json]

A 4-layer MLP of width 1024 is pruned by magnitude (unstructured at 50/80/90/95 %, and 2:4), in
fp32 and fp16. Each row compares, from the files on disk, the ``save_compact`` file with the plain
``safetensors`` file of the same state dict, for the finalized model (weights only) and for the
model with its mask buffers still attached (the masks are stored for free, as the bitmask of
their weight, while the dense file pays one byte per mask entry). Every file is loaded back and
compared with ``torch.equal`` (asserted).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile

import torch
from safetensors.torch import save_file
from torch import nn

import sparsecore as sc
from sparsecore.export import load_compact, save_compact


def build(width: int, depth: int, dtype: torch.dtype) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(depth):
        layers.append(nn.Linear(width, width))
        if i < depth - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).to(dtype)


def ratio(model: nn.Module, folder: str, tag: str) -> float:
    dense_path = os.path.join(folder, f"{tag}-dense.safetensors")
    compact_path = os.path.join(folder, f"{tag}-compact.safetensors")
    state = model.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, dense_path)
    save_compact(model, compact_path)
    back = load_compact(compact_path, model)
    assert all(torch.equal(back[k], v) for k, v in state.items()), f"{tag}: round trip differs"
    return os.path.getsize(compact_path) / os.path.getsize(dense_path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    configs = [("unstructured", s) for s in (0.5, 0.8, 0.9, 0.95)] + [("2:4", 0.5)]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for dtype in (torch.float32, torch.float16):
            for pattern, sparsity in configs:
                model = build(args.width, args.depth, dtype)
                method = sc.OneShotMagnitude(sparsity=sparsity, pattern=pattern).setup(model)
                tag = f"{pattern.replace(':', '_')}-{sparsity}-{dtype}"
                with_masks = ratio(model, folder, tag + "-masked")
                method.finalize()
                rows.append(
                    {
                        "dtype": str(dtype).removeprefix("torch."),
                        "pattern": pattern,
                        "sparsity": sparsity,
                        "ratio": ratio(model, folder, tag),
                        "ratio_with_masks": with_masks,
                    }
                )
    print(f"MLP {args.depth}x{args.width}: compact file / dense safetensors file")
    print(f"{'dtype':>8} {'pattern':>13} {'sparsity':>8} {'finalized':>10} {'with masks':>11}")
    for r in rows:
        print(
            f"{r['dtype']:>8} {r['pattern']:>13} {r['sparsity']:>8.2f} {r['ratio']:>10.4f} "
            f"{r['ratio_with_masks']:>11.4f}"
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(
                {
                    "rows": rows,
                    "command": " ".join(sys.argv),
                    "torch": torch.__version__,
                    "python": platform.python_version(),
                },
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
