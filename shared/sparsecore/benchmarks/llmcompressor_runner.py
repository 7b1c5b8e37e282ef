"""Run llm-compressor's ``oneshot`` on a saved model and calibration blocks; print JSON.

Executed by ``oneshot_llm.py --llmcompressor VENV_PYTHON`` inside a throwaway virtual environment
(llm-compressor 0.14 pins torch 2.14 / transformers 5.17, the workspace locks torch 2.15 /
transformers 5.24, so it cannot join a dependency group of the workspace). Create it with the
pinned versions of ``llmcompressor-requirements.txt`` next to this file::

    uv venv /tmp/llmc --python 3.11
    cd shared/sparsecore/benchmarks
    uv pip install --python /tmp/llmc/bin/python -r llmcompressor-requirements.txt

Only torch, transformers, safetensors and llm-compressor are imported here, never sparsecore.

Usage: ``python llmcompressor_runner.py MODEL_DIR BLOCKS.safetensors METHOD SPARSITY THREADS``
where BLOCKS holds ``calib`` and ``eval`` int64 token blocks.
"""

from __future__ import annotations

import json
import math
import sys
import time

import torch
from safetensors.torch import load_file
from torch.nn import functional as F


def _byte_tokenizer():
    """A 256-id tokenizer object: oneshot insists on a processor even for a tokenized dataset."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {f"<{i}>": i for i in range(256)}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="<0>")))


def main() -> int:
    """Prune with SparseGPTModifier or WandaPruningModifier, report wall time and perplexity."""
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.obcq import SparseGPTModifier
    from llmcompressor.modifiers.pruning import WandaPruningModifier
    from transformers import AutoModelForCausalLM

    model_dir, blocks_path, method, sparsity = sys.argv[1:5]
    torch.set_num_threads(int(sys.argv[5]) if len(sys.argv) > 5 else 2)
    blocks = load_file(blocks_path)
    calib, held = blocks["calib"], blocks["eval"]
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    data = Dataset.from_dict(
        {"input_ids": calib.tolist(), "attention_mask": [[1] * calib.shape[1]] * calib.shape[0]}
    )
    modifier = {"sparsegpt": SparseGPTModifier, "wanda": WandaPruningModifier}[method]
    recipe = modifier(
        sparsity=float(sparsity), mask_structure="0:0", targets=["Linear"], ignore=["lm_head"]
    )
    start, cpu = time.perf_counter(), time.process_time()
    oneshot(
        model=model,
        dataset=data,
        recipe=recipe,
        processor=_byte_tokenizer(),
        num_calibration_samples=calib.shape[0],
        max_seq_length=calib.shape[1],
        output_dir=None,
    )
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, held.shape[0], 8):
            ids = held[i : i + 8]
            logits = model(input_ids=ids).logits
            total += float(
                F.cross_entropy(
                    logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="sum"
                )
            )
            count += ids[:, 1:].numel()
    zeros = [
        float((m.weight == 0).float().mean())
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and "lm_head" not in n
    ]
    print(
        json.dumps(
            {
                "method": method,
                "total_s": wall,
                "cpu_s": cpu,
                "perplexity": math.exp(total / count),
                "sparsity": sum(zeros) / len(zeros),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
