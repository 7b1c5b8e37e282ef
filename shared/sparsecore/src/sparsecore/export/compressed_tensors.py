"""Export to and reload from the compressed-tensors ``sparse-bitmask`` checkpoint format.

compressed-tensors (neuralmagic / vllm-project) is the on-disk format llm-compressor writes and
transformers / vLLM read through ``quantization_config``. Its ``sparse-bitmask`` format stores a
pruned Hugging Face model as a ``save_pretrained`` folder whose targeted weights are replaced by
four tensors each (``<module>`` is the weight's name without ``.weight``):

* ``<module>.shape``: ``int64`` ``[rows, cols]``;
* ``<module>.compressed``: the non-zero values, row-major, in the weight's dtype;
* ``<module>.bitmask``: ``uint8`` ``(rows, ceil(cols / 8))``, the non-zero pattern packed along
  each row with little bit order (column ``8k + b`` is bit ``b`` of byte ``k``: numpy's
  ``packbits(..., axis=-1, bitorder="little")``);
* ``<module>.row_offsets``: ``int64`` ``(rows,)``, index in ``compressed`` where each row starts.

``config.json`` gains ``quantization_config = {"quant_method": "compressed-tensors",
"sparsity_config": {"format": "sparse-bitmask", "global_sparsity", "ignore",
"registry_requires_subclass": false, "sparsity_structure", "targets"}, "transform_config": {},
"version"}``. The layout was read in the official source (compressed-tensors 0.13.0,
``compressors/sparse_compressors/sparse_bitmask.py``, ``utils/helpers.py:pack_bitmasks`` and
``ModelCompressor.update_config``); this is our own writer and reader, and the tests check it bit
for bit against a checkpoint written by that release's ``ModelCompressor``.

Status of the format (checked December 2026): compressed-tensors 0.13.0 is the last release with
a ``BitmaskCompressor`` that installs next to transformers 5 (0.14 pins ``transformers<5``; 0.15
and later, up to 0.20.1, keep ``sparse-bitmask`` only as a legacy config name, without a
compressor). transformers 5.24 requires compressed-tensors >= 0.15, and with 0.20.1 it loads a
``sparse-bitmask`` folder with the targeted weights reported MISSING and randomly initialised.
So `load_compressed_tensors` (decompress, then a plain ``from_pretrained``) is the reader that
gives identical logits today; older stacks (transformers 4.x with compressed-tensors <= 0.14)
decompress the same folder themselves.

Choices (labelled; the format leaves them open):

* ``global_sparsity`` is the fraction (not percent) of zero entries over all parameters of the
  model, compressed-tensors' documented meaning ("average sparsity of the entire model").
* ``sparsity_structure`` is inferred: ``"2:4"`` when every targeted weight is 2:4 along its rows,
  else ``"unstructured"``.
* Targets are module class names (default ``Linear``) or ``re:`` regular expressions on module
  names; ``ignore`` holds module names or ``re:`` expressions (default ``lm_head``), as in
  compressed-tensors' ``match_named_modules``.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = [
    "FORMAT",
    "bitmask_compress",
    "bitmask_decompress",
    "decompress_state",
    "load_compressed_tensors",
    "pack_bits",
    "save_compressed_tensors",
    "unpack_bits",
]

#: ``sparsity_config.format`` written and read here.
FORMAT = "sparse-bitmask"
#: ``quantization_config.version``: the last compressed-tensors release with a bitmask compressor.
WRITER_VERSION = "0.13.0"
_PARTS = ("shape", "compressed", "bitmask", "row_offsets")
_BIT_VALUES = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def pack_bits(keep: torch.Tensor) -> torch.Tensor:
    """Pack a bool ``(rows, cols)`` tensor along rows, little bit order, into ``uint8``."""
    rows, cols = keep.shape
    padded = torch.zeros(rows, -(-cols // 8) * 8, dtype=torch.uint8)
    padded[:, :cols] = keep.to(torch.uint8)
    return (padded.view(rows, -1, 8) * _BIT_VALUES).sum(-1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, cols: int) -> torch.Tensor:
    """Inverse of `pack_bits`: the bool ``(rows, cols)`` tensor."""
    bits = packed.to(torch.uint8).unsqueeze(-1).bitwise_and(_BIT_VALUES).ne(0)
    return bits.reshape(packed.shape[0], -1)[:, :cols]


def bitmask_compress(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """The four tensors of one 2-D weight (keys ``shape``, ``compressed``, ``bitmask``,
    ``row_offsets``).

    Raises:
        ValueError: ``weight`` is not 2-D.
    """
    if weight.ndim != 2:
        raise ValueError(f"weight: sparse-bitmask stores 2-D weights, got {tuple(weight.shape)}")
    weight = weight.detach().cpu()
    keep = weight != 0
    counts = keep.sum(dim=-1)
    return {
        "shape": torch.tensor(list(weight.shape), dtype=torch.int64),
        "compressed": weight[keep],
        "bitmask": pack_bits(keep),
        "row_offsets": torch.cumsum(counts, 0) - counts,
    }


def bitmask_decompress(parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """The dense weight from the four tensors of `bitmask_compress`.

    Raises:
        ValueError: The parts are inconsistent (value count, mask size or row offsets).
    """
    rows, cols = (int(v) for v in parts["shape"].tolist())
    keep = unpack_bits(parts["bitmask"], cols)
    values = parts["compressed"]
    if keep.shape != (rows, cols) or int(keep.sum()) != values.numel():
        raise ValueError(
            f"bitmask of shape {tuple(parts['bitmask'].shape)} with {int(keep.sum())} set bits "
            f"does not fit shape {[rows, cols]} and {values.numel()} values"
        )
    counts = keep.sum(dim=-1)
    if not torch.equal(parts["row_offsets"].to(torch.int64), torch.cumsum(counts, 0) - counts):
        raise ValueError("row_offsets do not match the bitmask")
    dense = torch.zeros(rows, cols, dtype=values.dtype)
    dense[keep] = values
    return dense


def _matches(pattern: str, name: str, module: nn.Module) -> bool:
    if pattern.startswith("re:"):
        return re.match(pattern[3:], name) is not None
    return pattern == type(module).__name__ or pattern == name


def _target_modules(model: nn.Module, targets: Sequence[str], ignore: Sequence[str]) -> list[str]:
    names = []
    for name, module in model.named_modules():
        if not any(_matches(t, name, module) for t in targets):
            continue
        if any(i == name or (i.startswith("re:") and re.match(i[3:], name)) for i in ignore):
            continue
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.ndim == 2:
            names.append(name)
    return names


def _structure(weights: Sequence[torch.Tensor]) -> str:
    from sparsecore.export.semi_structured import is_two_four

    return "2:4" if weights and all(is_two_four(w) for w in weights) else "unstructured"


def _shards(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.safetensors"))


def save_compressed_tensors(
    model: nn.Module,
    directory: str | Path,
    targets: Sequence[str] = ("Linear",),
    ignore: Sequence[str] = ("lm_head",),
) -> dict[str, Any]:
    """Write ``model`` (a plain pruned HF model) as a compressed-tensors ``sparse-bitmask`` folder.

    The folder is first written by ``model.save_pretrained`` (config, tied weights, shards as
    transformers decides), then every targeted weight in the shards is replaced by its four
    bitmask tensors and ``config.json`` gains the ``quantization_config``.

    Args:
        model: A Hugging Face ``PreTrainedModel`` with its masks squashed into the weights.
        directory: Output folder (created; must be new or empty).
        targets: Module class names or ``re:`` name expressions to compress.
        ignore: Module names or ``re:`` name expressions left dense.

    Returns:
        The ``sparsity_config`` written.

    Raises:
        TypeError: ``model`` has no ``save_pretrained``.
        ValueError: ``directory`` is not empty, the model still carries sparsecore mask buffers,
            or no module matches ``targets``.
    """
    if not callable(getattr(model, "save_pretrained", None)):
        raise TypeError(f"model: expected a Hugging Face model, got {type(model).__name__}")
    out = Path(directory)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"directory: {str(out)!r} exists and is not an empty folder")
    buffers = [n for n, _ in model.named_buffers() if n.endswith("_mask")]
    if buffers:
        raise ValueError(f"model: squash the masks first (finalize()); found {buffers[:2]}")
    names = _target_modules(model, targets, ignore)
    if not names:
        raise ValueError(f"targets: no 2-D weight of the model matches {list(targets)}")
    params = {id(p): p for p in model.parameters()}.values()
    total = sum(p.numel() for p in params)
    zeros = sum(int((p == 0).sum()) for p in params)
    modules = dict(model.named_modules())
    config = {
        "format": FORMAT,
        "global_sparsity": zeros / total,
        "ignore": list(ignore),
        "registry_requires_subclass": False,
        "sparsity_structure": _structure([modules[n].weight.detach() for n in names]),
        "targets": list(targets),
    }
    model.save_pretrained(out, safe_serialization=True)
    wanted = {f"{n}.weight" for n in names}
    for shard in _shards(out):
        state = load_file(shard)
        packed: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            if key not in wanted:
                packed[key] = value
                continue
            prefix = key[: -len(".weight")]
            packed.update({f"{prefix}.{k}": v for k, v in bitmask_compress(value).items()})
        save_file(packed, shard, metadata={"format": "pt"})
    index = out / "model.safetensors.index.json"
    if index.exists():  # sharded: the weight map points each new key at its shard
        data = json.loads(index.read_text())
        mapping = {}
        for key, file in data["weight_map"].items():
            prefix = key[: -len(".weight")]
            keys = [f"{prefix}.{p}" for p in _PARTS] if key in wanted else [key]
            mapping.update(dict.fromkeys(keys, file))
        data["weight_map"] = mapping
        index.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["quantization_config"] = {
        "quant_method": "compressed-tensors",
        "sparsity_config": config,
        "transform_config": {},
        "version": WRITER_VERSION,
    }
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return config


def _sparsity_config(directory: Path) -> dict[str, Any]:
    cfg_path = directory / "config.json"
    if not cfg_path.exists():
        raise ValueError(f"directory: {str(directory)!r} has no config.json")
    quant = json.loads(cfg_path.read_text()).get("quantization_config") or {}
    sparsity = quant.get("sparsity_config") or {}
    if quant.get("quant_method") != "compressed-tensors" or sparsity.get("format") != FORMAT:
        raise ValueError(
            f"directory: {str(directory)!r} is not a compressed-tensors {FORMAT!r} checkpoint"
        )
    if quant.get("config_groups"):
        raise ValueError("directory: quantized compressed-tensors checkpoints are not supported")
    return sparsity


def decompress_state(directory: str | Path) -> dict[str, torch.Tensor]:
    """The dense state of a ``sparse-bitmask`` folder (all shards), weights decompressed.

    Raises:
        ValueError: Not a compressed-tensors ``sparse-bitmask`` folder, or a weight whose four
            tensors are incomplete or inconsistent.
    """
    folder = Path(directory)
    _sparsity_config(folder)
    state: dict[str, torch.Tensor] = {}
    for shard in _shards(folder):
        state.update(load_file(shard))
    prefixes = [k[: -len(".compressed")] for k in state if k.endswith(".compressed")]
    dense = {k: v for k, v in state.items() if not k.endswith(tuple(f".{p}" for p in _PARTS))}
    for prefix in prefixes:
        missing = [p for p in _PARTS if f"{prefix}.{p}" not in state]
        if missing:
            raise ValueError(f"{prefix}: missing {missing} in the checkpoint")
        dense[f"{prefix}.weight"] = bitmask_decompress({p: state[f"{prefix}.{p}"] for p in _PARTS})
    return dense


def load_compressed_tensors(directory: str | Path, model_class: Any = None) -> nn.Module:
    """Reload a ``sparse-bitmask`` folder as a plain HF model (``from_pretrained``, offline).

    The weights are decompressed into a temporary dense ``save_pretrained`` folder (config without
    ``quantization_config``), which ``from_pretrained`` then loads, so tied weights, dtype and the
    model class are handled by transformers.

    Args:
        directory: A folder written by `save_compressed_tensors` or by compressed-tensors.
        model_class: A transformers class with ``from_pretrained`` (default
            ``AutoModelForCausalLM``).

    Returns:
        The model in eval mode.
    """
    folder = Path(directory)
    state = decompress_state(folder)
    if model_class is None:
        from transformers import AutoModelForCausalLM as model_class
    with tempfile.TemporaryDirectory() as tmp:
        cfg = json.loads((folder / "config.json").read_text())
        cfg.pop("quantization_config", None)
        (Path(tmp) / "config.json").write_text(json.dumps(cfg))
        for extra in ("generation_config.json",):
            if (folder / extra).exists():
                shutil.copy(folder / extra, Path(tmp) / extra)
        save_file(state, Path(tmp) / "model.safetensors", metadata={"format": "pt"})
        model = model_class.from_pretrained(tmp, local_files_only=True)
    return model.eval()
