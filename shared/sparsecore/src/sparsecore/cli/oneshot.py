"""``sparse oneshot``: prune a local Hugging Face causal LM with Wanda, SparseGPT or magnitude.

```console
$ sparse oneshot --model tiny --method sparsegpt --sparsity 0.5 --out pruned/
$ sparse oneshot --model path/to/llama --method wanda --pattern 2:4 --calib-blocks 64
```

``--model`` is a directory with a ``config.json`` (loaded with ``from_pretrained``, offline) or a
built-in pretrained tiny Llama (``micro``, ``tiny``, ``small``, see
`sparsecore.bench.pretrained_tiny_lm`). Calibration and evaluation use the byte-level
``stdlib-lm`` task. Every argument is checked, and the model loaded and the method set up
(which validates targets and patterns), before any weight changes. Output in ``--out``:
``model/`` (``save_pretrained``), ``model.compact.safetensors`` (the core's compact checkpoint)
and ``oneshot.json`` (perplexities, per-layer sparsity, timings, the command). With
``--format compressed-tensors`` also ``model-compressed-tensors/``, the compressed-tensors
``sparse-bitmask`` folder (`sparsecore.export.compressed_tensors`), reloaded once to check that its
logits equal the pruned model's exactly.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from sparsecore.validation import check_choice, check_int, check_number

__all__ = ["cmd_oneshot", "register"]

BUILTIN_MODELS = ("micro", "tiny", "small")
BYTE_VOCAB = 256
FORMATS = ("dense", "compressed-tensors")


def register(subparsers: Any) -> None:
    """Add the ``oneshot`` subcommand to the ``sparse`` parser."""
    p = subparsers.add_parser("oneshot", help="one-shot prune a causal LM (Wanda, SparseGPT)")
    p.add_argument("--model", default="tiny", help="HF model directory, or micro | tiny | small")
    p.add_argument("--method", default="wanda", help="wanda | sparsegpt | magnitude")
    p.add_argument("--sparsity", type=float, default=0.5, help="fraction pruned, in [0, 1)")
    p.add_argument("--pattern", default="unstructured", help="unstructured or N:M, e.g. 2:4")
    p.add_argument("--calib-blocks", type=int, default=32, help="calibration blocks")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per block (default: 128)")
    p.add_argument("--eval-blocks", type=int, default=128, help="evaluation blocks scored")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration draw")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument(
        "--format",
        default="dense",
        help="dense (save_pretrained + compact) or compressed-tensors (also sparse-bitmask)",
    )
    p.add_argument("--out", default=None, help="output folder (must be new or empty)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=cmd_oneshot)


def _load_model(spec: str, progress: bool) -> Any:
    path = Path(spec)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ValueError(f"--model: {spec!r} has no config.json (not a Hugging Face model)")
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
    if spec in BUILTIN_MODELS:
        from sparsecore.bench.pretrained import pretrained_tiny_lm

        return pretrained_tiny_lm(spec, progress=progress)
    raise ValueError(
        f"--model: {spec!r} is neither a model directory nor a built-in "
        f"({', '.join(BUILTIN_MODELS)})"
    )


def _check_args(args: argparse.Namespace) -> None:
    from sparsecore.bench.lm_bench import ONESHOT_METHODS
    from sparsecore.patterns import parse_pattern

    if args.method not in ONESHOT_METHODS:
        raise ValueError(
            f"--method must be one of {', '.join(ONESHOT_METHODS)}, got {args.method!r}"
        )
    check_number(args.sparsity, "--sparsity", 0.0, 1.0, open_high=True)
    try:
        parse_pattern(args.pattern)
    except (TypeError, ValueError) as err:
        raise ValueError(f"--pattern: {err}") from err
    check_int(args.calib_blocks, "--calib-blocks", 1)
    check_int(args.eval_blocks, "--eval-blocks", 1)
    check_int(args.seed, "--seed", 0)
    check_choice(args.format, "--format", FORMATS)
    if args.seq_len is not None:
        check_int(args.seq_len, "--seq-len", 2)
    if args.out is not None:
        out = Path(args.out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ValueError(f"--out: {args.out!r} exists and is not an empty folder")


def _check_model(model: Any, seq_len: int) -> None:
    config = getattr(model, "config", None)
    vocab = getattr(config, "vocab_size", None)
    if vocab is None or vocab < BYTE_VOCAB:
        raise ValueError(
            f"--model: vocabulary of {vocab} tokens does not match the byte-level stdlib-lm "
            f"tokenizer ({BYTE_VOCAB} ids); use a model trained on bytes"
        )
    context = getattr(config, "max_position_embeddings", None) or getattr(
        config, "n_positions", None
    )
    if context is not None and seq_len > context:
        raise ValueError(
            f"--seq-len: calibration blocks of {seq_len} tokens are longer than the model's "
            f"context ({context})"
        )


def cmd_oneshot(args: argparse.Namespace) -> int:
    """``sparse oneshot``: prune, report perplexity before/after and per-layer sparsity, save."""
    import torch

    from sparsecore.bench.lm import calibration_blocks, load_lm_task, perplexity
    from sparsecore.bench.lm_bench import build_oneshot, layer_sparsity, prune_lm
    from sparsecore.bench.pretrained import LM_SIZES
    from sparsecore.export import save_compact

    _check_args(args)
    if args.threads:
        torch.set_num_threads(check_int(args.threads, "--threads", 1))
    model = _load_model(args.model, args.progress)
    default_len = LM_SIZES[args.model]["seq_len"] if args.model in BUILTIN_MODELS else 128
    seq_len = args.seq_len or min(
        default_len, getattr(model.config, "max_position_embeddings", 128)
    )
    _check_model(model, seq_len)
    task = load_lm_task(seq_len=seq_len)
    if args.calib_blocks > task.train_blocks.shape[0]:
        raise ValueError(f"--calib-blocks: at most {task.train_blocks.shape[0]} blocks available")
    try:
        method = build_oneshot(args.method, model, args.sparsity, args.pattern, seed=args.seed)
    except ValueError as err:
        raise ValueError(f"--model: {err}") from err
    calib = calibration_blocks(task, args.calib_blocks, seed=args.seed)
    before = perplexity(model, task, max_blocks=args.eval_blocks)
    try:
        method.setup(model)  # validates targets and patterns; all-or-nothing
    except ValueError as err:
        raise ValueError(f"--pattern: {err}") from err
    start = time.perf_counter()
    pruned = prune_lm(model, method, calib, progress=args.progress)
    seconds = time.perf_counter() - start
    after = perplexity(pruned, task, max_blocks=args.eval_blocks)
    zeros = layer_sparsity(pruned)
    width = max(len(n) for n in zeros)
    for name, value in zeros.items():
        print(f"{name:<{width}}  {value:6.2%}")
    mean = sum(zeros.values()) / len(zeros)
    print(f"method {args.method}  pattern {args.pattern}  layer sparsity {mean:.2%}")
    print(f"perplexity before {before:.3f}  after {after:.3f}  ({seconds:.1f} s pruning)")
    out = Path(args.out or f"sparse-results/oneshot-{args.method}")
    out.mkdir(parents=True, exist_ok=True)
    pruned.save_pretrained(out / "model", safe_serialization=True)
    save_compact(pruned, out / "model.compact.safetensors")
    written = [out / "model", out / "model.compact.safetensors"]
    reload_equal = None
    if args.format == "compressed-tensors":
        reload_equal = _export_compressed_tensors(pruned, out / "model-compressed-tensors", task)
        written.append(out / "model-compressed-tensors")
    report = {
        "model": args.model,
        "method": args.method,
        "sparsity": args.sparsity,
        "pattern": args.pattern,
        "calib_blocks": args.calib_blocks,
        "seq_len": seq_len,
        "seed": args.seed,
        "corpus_hash": task.corpus_hash,
        "perplexity_before": before,
        "perplexity_after": after,
        "prune_seconds": seconds,
        "layer_sparsity": zeros,
        "format": args.format,
        "compressed_tensors_reload_equal": reload_equal,
        "command": "sparse " + " ".join(getattr(args, "argv", [])),
    }
    (out / "oneshot.json").write_text(json.dumps(report, indent=2) + "\n")
    print("wrote " + ", ".join(str(p) for p in [*written, out / "oneshot.json"]))
    return 0


def _export_compressed_tensors(model: Any, folder: Path, task: Any) -> bool:
    """Write the sparse-bitmask folder, reload it and compare logits on one evaluation block."""
    import torch

    from sparsecore.export.compressed_tensors import (
        load_compressed_tensors,
        save_compressed_tensors,
    )

    save_compressed_tensors(model, folder)
    back = load_compressed_tensors(folder, model_class=type(model))
    ids = task.eval_blocks[:1]
    with torch.no_grad():
        equal = torch.equal(back(ids).logits, model.eval()(ids).logits)
    if not equal:
        raise RuntimeError(f"{folder}: the reloaded compressed-tensors model's logits differ")
    print(f"compressed-tensors sparse-bitmask: {folder} (reload: identical logits)")
    return equal
