"""One-shot LM pruning benchmark: wall time per layer, peak memory, perplexity, a 7B estimate.

Prunes the default pretrained tiny Llama (``pretrained_tiny_lm("tiny")``, 4 layers, hidden 128)
to 50% unstructured with magnitude, Wanda and SparseGPT on the same 32 calibration blocks of
``stdlib-lm``, each in its own subprocess so that the peak resident memory (``ru_maxrss``) is that
method's alone, and reports:

* wall time of the whole pruning and per decoder layer (calibration forwards included);
* peak RSS above the loaded model;
* validation perplexity (128 blocks); the papers' order is SparseGPT <= Wanda <= magnitude,
  reported as it comes out (not tuned);
* a Llama-2-7B estimate from a documented cost model (below).

Cost model for Llama-2-7B (32 layers, hidden d = 4096, MLP 11008, layers pruned one at a time):
SparseGPT per Linear of ``rows x cols``: ``cols³`` for the Cholesky inverse plus about
``2 · rows · cols²`` for the column sweep (the in-block updates plus the lazy block updates);
the Hessians of one layer held at once: ``(6 · 4096² + 11008²) · 4 B ≈ 0.89 GB`` (q/k/v, o, gate,
up with 4096 inputs, down with 11008; the official code keeps one per Linear). The measured time
per estimated FLOP on the tiny model is scaled to 7B's FLOP count: a CPU-to-CPU extrapolation, not
a GPU number (the paper reports about 4 GPU-minutes per 7B model on an A100 for the sweep).

Run: ``python shared/sparsecore/benchmarks/oneshot_llm.py [--size tiny|micro] [--quick]
[--llmcompressor /tmp/llmc/bin/python]``; the llm-compressor venv is made with the pinned
``llmcompressor-requirements.txt`` (commands in ``llmcompressor_runner.py``). Wall and CPU
seconds (``time.process_time``) are both reported: on a loaded machine the CPU time is the
better-comparable number.
Numbers in docs/language-models.md; taken on a shared 2-core machine (other jobs running).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

LLAMA2_7B = {"layers": 32, "hidden": 4096, "mlp": 11008}


def linear_shapes(hidden: int, mlp: int, kv_hidden: int | None = None) -> list[tuple[int, int]]:
    """``(rows, cols)`` of the seven Linears of one Llama decoder layer."""
    kv = kv_hidden or hidden
    return [(hidden, hidden), (kv, hidden), (kv, hidden), (hidden, hidden),
            (mlp, hidden), (mlp, hidden), (hidden, mlp)]  # fmt: skip


def sparsegpt_flops(shapes: list[tuple[int, int]]) -> float:
    """The cost model above: ``cols³ + 2 · rows · cols²`` per Linear."""
    return float(sum(c**3 + 2 * r * c * c for r, c in shapes))


def hessian_bytes(shapes: list[tuple[int, int]]) -> int:
    """float32 Hessians of one layer (one per Linear, as the official code)."""
    return sum(4 * c * c for _, c in shapes)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def single(method_name: str, size: str, calib_blocks: int, eval_blocks: int) -> dict:
    """Prune once in this process and measure (called in a subprocess by `main`)."""
    import torch

    from sparsecore.bench.lm import calibration_blocks, load_lm_task, perplexity
    from sparsecore.bench.lm_bench import build_oneshot, layer_sparsity
    from sparsecore.bench.pretrained import LM_SIZES, pretrained_tiny_lm

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    task = load_lm_task(seq_len=LM_SIZES[size]["seq_len"])
    model = pretrained_tiny_lm(size, task=task, progress=False)
    calib = calibration_blocks(task, calib_blocks, seed=0)
    base_rss = _rss_mb()
    method = build_oneshot(method_name, model, 0.5)
    layer_start: dict[int, float] = {}
    if method.needs_calibration:
        original = method._prune

        def timed(module, name, stats):
            index = int(name.split(".layers.")[1].split(".")[0])
            layer_start.setdefault(index, time.perf_counter())
            original(module, name, stats)

        method._prune = timed
    start, cpu = time.perf_counter(), time.process_time()
    method.setup(model)
    if method.needs_calibration:
        method.calibrate([calib[i : i + 8] for i in range(0, len(calib), 8)])
    pruned = method.finalize()
    total, cpu = time.perf_counter() - start, time.process_time() - cpu
    # layer i: from its first pruned Linear to the next layer's (its calibration forwards and
    # the refresh of its outputs are inside); the last one ends with the run.
    marks = [layer_start[i] for i in sorted(layer_start)] + [start + total]
    per_layer = [b - a for a, b in itertools.pairwise(marks)]
    zeros = layer_sparsity(pruned)
    return {
        "method": method_name,
        "total_s": total,
        "cpu_s": cpu,
        "per_layer_s": per_layer,
        "peak_rss_above_model_mb": _rss_mb() - base_rss,
        "perplexity": perplexity(pruned, task, max_blocks=eval_blocks),
        "sparsity": sum(zeros.values()) / len(zeros),
        "config": LM_SIZES[size]["config"],
    }


def side_by_side(args: argparse.Namespace) -> list[dict]:
    """llm-compressor's SparseGPT and Wanda on the same saved model, blocks and sparsity."""
    import tempfile

    from safetensors.torch import save_file

    from sparsecore.bench.lm import calibration_blocks, load_lm_task
    from sparsecore.bench.pretrained import LM_SIZES, tiny_lm_path

    task = load_lm_task(seq_len=LM_SIZES[args.size]["seq_len"])
    runner = Path(__file__).with_name("llmcompressor_runner.py")
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        blocks = Path(tmp) / "blocks.safetensors"
        calib = calibration_blocks(task, args.calib_blocks, seed=0)
        save_file(
            {"calib": calib, "eval": task.eval_blocks[: args.eval_blocks].contiguous()}, blocks
        )
        for name in ("wanda", "sparsegpt"):
            threads = os.environ.get("BENCH_THREADS", "2")
            model_dir = str(tiny_lm_path(args.size, task))
            command = [
                args.llmcompressor,
                str(runner),
                model_dir,
                str(blocks),
                name,
                "0.5",
                threads,
            ]
            env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
            done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
            out.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return out


def main(argv: list[str] | None = None) -> int:
    """Run every method in a subprocess, print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--quick", action="store_true", help="micro model, 8 blocks")
    parser.add_argument("--calib-blocks", type=int, default=32)
    parser.add_argument("--eval-blocks", type=int, default=128)
    parser.add_argument("--single", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--llmcompressor", default=None, help="python of a venv with llmcompressor (side by side)"
    )
    parser.add_argument("--out", default="sparse-results/oneshot_llm.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.calib_blocks, args.eval_blocks = "micro", 8, 16
    if args.single:
        print(json.dumps(single(args.single, args.size, args.calib_blocks, args.eval_blocks)))
        return 0
    from sparsecore.bench.lm import load_lm_task
    from sparsecore.bench.pretrained import LM_SIZES, pretrained_tiny_lm

    pretrained_tiny_lm(args.size, task=load_lm_task(seq_len=LM_SIZES[args.size]["seq_len"]))
    results = []
    for name in ("magnitude", "wanda", "sparsegpt"):
        command = [sys.executable, __file__, "--single", name, "--size", args.size,
                   "--calib-blocks", str(args.calib_blocks),
                   "--eval-blocks", str(args.eval_blocks)]  # fmt: skip
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    theirs = side_by_side(args) if args.llmcompressor else []
    config = results[0]["config"]
    tiny = linear_shapes(config["hidden_size"], config["intermediate_size"])
    big = linear_shapes(LLAMA2_7B["hidden"], LLAMA2_7B["mlp"])
    scale = (
        sparsegpt_flops(big)
        * LLAMA2_7B["layers"]
        / (sparsegpt_flops(tiny) * config["num_hidden_layers"])
    )
    print(f"load average {os.getloadavg()[0]:.1f} (wall times are contended when it exceeds "
          f"the core count; CPU seconds much less so)")  # fmt: skip
    print(f"{'method':<10} {'wall s':>8} {'CPU s':>8} {'per layer s':>12} {'peak MB':>8} "
          f"{'ppl':>8}")  # fmt: skip
    for r in results:
        per = sum(r["per_layer_s"]) / max(1, len(r["per_layer_s"]))
        print(f"{r['method']:<10} {r['total_s']:8.2f} {r['cpu_s']:8.2f} {per:12.3f} "
              f"{r['peak_rss_above_model_mb']:8.1f} {r['perplexity']:8.3f}")  # fmt: skip
    sgpt = next(r for r in results if r["method"] == "sparsegpt")
    estimate = {
        "sparsegpt_7b_cpu_hours": sgpt["total_s"] * scale / 3600,
        "hessians_one_layer_gb": hessian_bytes(big) / 1e9,
        "flop_scale_factor": scale,
    }
    print(f"Llama-2-7B estimate (cost model in the docstring): SparseGPT sweep "
          f"~{estimate['sparsegpt_7b_cpu_hours']:.1f} CPU-hours at this machine's rate; "
          f"Hessians of one layer {estimate['hessians_one_layer_gb']:.2f} GB")  # fmt: skip
    for r in theirs:
        ours = next(o for o in results if o["method"] == r["method"])
        print(f"llm-compressor {r['method']:<9} {r['total_s']:8.2f} s  ppl {r['perplexity']:8.3f}"
              f"  | ours {ours['total_s']:8.2f} s  ppl {ours['perplexity']:8.3f}  "
              f"wall ratio ours/theirs {ours['total_s'] / r['total_s']:.2f}, CPU ratio "
              f"{ours['cpu_s'] / r['cpu_s']:.2f}")  # fmt: skip
    ppl = {r["method"]: r["perplexity"] for r in results}
    order = ppl["sparsegpt"] <= ppl["wanda"] <= ppl["magnitude"]
    print(f"SparseGPT <= Wanda <= magnitude at 50%: {'holds' if order else 'does NOT hold'} {ppl}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"size": args.size, "results": results, "llmcompressor": theirs, "estimate": estimate,
              "order_holds": order, "command": " ".join(sys.argv)}  # fmt: skip
    out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
