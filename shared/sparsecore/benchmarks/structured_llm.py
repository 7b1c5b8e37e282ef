"""Shrunk vs dense Llama on CPU: latency, tokens/s and peak memory at 25% / 50% heads+FFN removed.

Run:  python shared/sparsecore/benchmarks/structured_llm.py [--threads 2] [--repeats 9]
      [--seq 128] [--out r.json] [--quick]

A randomly initialised Llama (hidden 512, 8 layers, 8 query heads in 4 key/value groups, FFN
1408, vocabulary 4096; latency does not depend on trained weights) is pruned by group magnitude
(`sparsecore.structures.group_scores` → `masks_from_scores`: the same fraction of key/value groups
and FFN channels removed in every layer) and physically shrunk (`sparsecore.structures.shrink`,
which checks the shrunk logits against the masked model). Dense and shrunk forwards over
``batch × seq`` tokens are timed side by side, interleaved
(`sparsecore.evaluation.compare_latency`), for batch 1 and 8. FLOPs are
`sparsecore.evaluation.count_flops` (projections and attention matmuls).
``efficiency = speedup / FLOP reduction``; the goal is ≥ 0.9 (Torch-Pruning reports 0.92 on
CNNs). Peak memory per model is its weight bytes plus the resident-set growth during one
forward (Linux: ``/proc/self/status`` VmHWM after a reset through ``/proc/self/clear_refs``);
``n/a`` elsewhere.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from sparsecore.bench.models import tiny_llama
from sparsecore.evaluation import compare_latency, count_flops
from sparsecore.structures import group_scores, masks_from_scores, shrink


def _vm(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def peak_memory(model: torch.nn.Module, fn) -> float | None:
    """Weights of ``model`` plus the resident-set growth while ``fn()`` runs (MiB), or ``None``.

    The high-water mark is reset first, so the growth is what the forward allocated on top of
    everything already resident (both models, the runtime); adding the model's own weight bytes
    gives a per-model peak that does not count the other model.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    before = _vm("VmRSS")
    fn()
    peak = _vm("VmHWM")
    if peak is None or before is None:
        return None
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return (weights + max(0, peak - before)) / 2**20


def build(quick: bool) -> torch.nn.Module:
    if quick:
        options = dict(hidden_size=128, num_hidden_layers=2, intermediate_size=352, vocab_size=1024)
    else:
        options = dict(
            hidden_size=512, num_hidden_layers=8, intermediate_size=1408, vocab_size=4096
        )
    model = tiny_llama(
        seed=0,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=512,
        attn_implementation="sdpa",
        **options,
    )
    return model.eval()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="tiny model, 3 repeats (CI)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else args.repeats
    dense = build(args.quick)
    scores = {kind: group_scores(dense, kind) for kind in ("heads", "ffn")}
    gen = torch.Generator().manual_seed(1)
    rows = []
    print("| removed | batch | dense ms | shrunk ms | tok/s dense | tok/s shrunk | speedup | "
          "FLOP reduction | efficiency | params | MiB dense / shrunk |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for ratio in (0.25, 0.5):
        masks = masks_from_scores(scores, {"heads": ratio, "ffn": ratio})
        small = shrink(dense, masks).eval()
        params = sum(p.numel() for p in small.parameters()) / sum(
            p.numel() for p in dense.parameters()
        )
        for batch in (1, 8):
            ids = torch.randint(0, dense.config.vocab_size, (batch, args.seq), generator=gen)
            inputs = {"input_ids": ids, "use_cache": False}
            flops = count_flops(dense, inputs).dense / count_flops(small, inputs).dense
            with torch.inference_mode():
                ratio_t = compare_latency(
                    lambda m=small, i=inputs: m(**i),
                    lambda i=inputs: dense(**i),
                    warmup=2,
                    repeats=repeats,
                )
                mem_dense = peak_memory(dense, lambda i=inputs: dense(**i))
                mem_small = peak_memory(small, lambda m=small, i=inputs: m(**i))
            tokens = batch * args.seq
            row = {
                "removed": ratio,
                "batch": batch,
                "dense_ms": ratio_t.reference.median_s * 1e3,
                "shrunk_ms": ratio_t.candidate.median_s * 1e3,
                "tokens_per_s_dense": tokens / ratio_t.reference.median_s,
                "tokens_per_s_shrunk": tokens / ratio_t.candidate.median_s,
                "speedup": ratio_t.speedup,
                "flop_reduction": flops,
                "efficiency": ratio_t.speedup / flops,
                "params_ratio": params,
                "peak_mib_dense": mem_dense,
                "peak_mib_shrunk": mem_small,
            }
            rows.append(row)
            mem = (
                "n/a"
                if mem_dense is None or mem_small is None
                else f"{mem_dense:.0f} / {mem_small:.0f}"
            )
            print(
                f"| {ratio:.0%} | {batch} | {row['dense_ms']:.1f} | {row['shrunk_ms']:.1f} | "
                f"{row['tokens_per_s_dense']:.0f} | {row['tokens_per_s_shrunk']:.0f} | "
                f"{row['speedup']:.2f}× | {flops:.2f}× | {row['efficiency']:.2f} | "
                f"{params:.2f} | {mem} |",
                flush=True,
            )
    result = {
        "rows": rows,
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "threads": args.threads,
        "seq": args.seq,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
