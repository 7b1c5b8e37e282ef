"""CSR inference vs dense on CPU: a 4-layer MLP of width 1024, batch 32.

Run:  python shared/sparsecore/benchmarks/inference.py [--threads 2] [--repeats 7] [--runs 5]
      [--out r.json]

For each sparsity, the model is pruned by magnitude (every layer, unstructured), finalized, and
converted with ``sparsecore.export.to_sparse_inference``. Dense and CSR are timed side by side,
interleaved repeat by repeat (so machine noise hits both), and the medians are compared. Outputs
must agree with the dense model to 1e-5 (asserted). ``--orientations`` also times the other CSR
orientation, ``x @ W_csr^T``, to justify the one ``CSRLinear`` uses.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings

import torch
from torch import nn

import sparsecore as sc
from sparsecore.export import CSRLinear, to_sparse_inference


class TransposedCSRLinear(nn.Module):
    """The orientation CSRLinear does not use: ``x @ W^T`` with ``W^T`` as a CSR matrix."""

    def __init__(self, layer: CSRLinear) -> None:
        super().__init__()
        self.weight_t = layer.weight.to_dense().t().contiguous().to_sparse_csr()
        self.bias = layer.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W^T + b`` with the CSR matrix on the right."""
        return x @ self.weight_t + self.bias


def build(width: int, depth: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(depth):
        layers.append(nn.Linear(width, width))
        if i < depth - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).eval()


def time_once(model: nn.Module, x: torch.Tensor, iters: int) -> float:
    start = time.perf_counter()
    for _ in range(iters):
        model(x)
    return (time.perf_counter() - start) / iters


def measure(
    models: dict[str, nn.Module], x: torch.Tensor, repeats: int, iters: int
) -> dict[str, float]:
    for m in models.values():  # warm-up
        time_once(m, x, 3)
    samples: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(repeats):
        for name, m in models.items():
            samples[name].append(time_once(m, x, iters))
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--sparsities", default="0.9,0.95")
    parser.add_argument(
        "--orientations", action="store_true", help="also time x @ W_csr^T (slow on CPU)"
    )
    parser.add_argument(
        "--runs", type=int, default=1, help="independent runs (fresh models); medians reported"
    )
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    torch.set_num_threads(args.threads)
    x = torch.randn(args.batch, args.width, generator=torch.Generator().manual_seed(1))
    rows = []
    with torch.no_grad():
        for run, sparsity in (
            (r, float(s)) for r in range(args.runs) for s in args.sparsities.split(",")
        ):
            dense = build(args.width, args.depth, seed=0)
            sc.OneShotMagnitude(sparsity=sparsity).setup(dense).finalize()
            csr = to_sparse_inference(dense, min_sparsity=0.5)
            assert all(isinstance(csr[i], CSRLinear) for i in range(0, len(csr), 2))
            models = {"dense": dense, "csr": csr}
            if args.orientations:
                models["csr_xWt"] = nn.Sequential(
                    *[TransposedCSRLinear(m) if isinstance(m, CSRLinear) else m for m in csr]
                )
            want = dense(x)
            err = max((m(x) - want).abs().max().item() for m in models.values())
            assert err <= 1e-5, f"CSR output differs from dense by {err}"
            t = measure(models, x, args.repeats, args.iters)
            row = {
                "run": run,
                "sparsity": sparsity,
                "dense_ms": t["dense"] * 1e3,
                "csr_ms": t["csr"] * 1e3,
                "speedup": t["dense"] / t["csr"],
                "max_abs_err": err,
            }
            if args.orientations:
                row["csr_xWt_ms"] = t["csr_xWt"] * 1e3
                row["speedup_xWt"] = t["dense"] / t["csr_xWt"]
            rows.append(row)
    print(
        f"MLP {args.depth}x{args.width}, batch {args.batch}, {args.threads} threads, "
        f"median of {args.repeats} x {args.iters} forwards, torch {torch.__version__}"
    )
    extra = f" {'x@Wt ms':>8} {'speedup':>8}" if args.orientations else ""
    print(f"{'run':>3} {'sparsity':>8} {'dense ms':>9} {'CSR ms':>8} {'speedup':>8}{extra}")
    for r in rows:
        line = (
            f"{r['run']:>3} {r['sparsity']:>8.2f} {r['dense_ms']:>9.3f} {r['csr_ms']:>8.3f} "
            f"{r['speedup']:>7.2f}x"
        )
        if args.orientations:
            line += f" {r['csr_xWt_ms']:>8.3f} {r['speedup_xWt']:>7.2f}x"
        print(line)
    medians = {
        sparsity: statistics.median(r["speedup"] for r in rows if r["sparsity"] == sparsity)
        for sparsity in dict.fromkeys(r["sparsity"] for r in rows)
    }
    if args.runs > 1:
        summary = ", ".join(f"{s:.2f}: {m:.2f}x" for s, m in medians.items())
        print(f"median speed-up over {args.runs} runs: {summary}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(
                {
                    "rows": rows,
                    "median_speedup": {str(k): v for k, v in medians.items()},
                    "command": " ".join(sys.argv),
                    "torch": torch.__version__,
                    "python": platform.python_version(),
                    "threads": args.threads,
                },
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
