"""Compact sparse checkpoints: safetensors holding packed bitmasks plus the kept values.

File layout (an ordinary ``.safetensors`` file, readable by any safetensors reader):

* a dense tensor ``key`` is stored as is, under ``key``;
* a sparse floating tensor ``key`` is stored as ``key::bits`` (``uint8``, the keep-bitmask of
  the flattened tensor packed 8 entries per byte, little bit order) and ``key::values`` (1-D, the
  original dtype, the kept entries in flat order);
* a ``bool`` tensor (a mask buffer) is stored as ``key::bits`` only; when it is the mask
  ``<param>_mask`` of a sparse tensor ``<param>`` and equals that tensor's bitmask, it is not
  stored at all but rebuilt from ``<param>::bits`` (so masks cost nothing extra);
* the metadata entry ``sparsecore`` holds JSON: format version and, per tensor, its kind,
  shape, dtype and number of kept entries, plus ``digests``: the SHA-256 of the bytes of every
  stored safetensors entry. Loading checks every one of these and raises ``ValueError`` on any
  difference, so a corrupted file never loads different weights silently (a byte flipped in a
  value, a bitmask or the header either raises or, when it lands somewhere that does not affect
  the tensors, loads exactly the saved ones). Files written before digests existed still load,
  with a ``UserWarning`` that they cannot be verified.

Which entries are kept: the entries selected by the tensor's ``<param>_mask`` buffer when the
state dict holds one (kept entries are stored even when their value is zero), plus every entry
whose value is not zero. Round trip semantics: every kept entry comes back with exactly its bits
(NaN payloads and ``-0.0`` included); an entry that was not stored comes back as ``+0.0``. So
``torch.equal`` (which treats ``-0.0 == 0.0``) holds for every tensor, and the only bit pattern
that can change is the sign of a zero in a pruned position: sparsecore's masking writes ``+0.0``
there, but other sources (multiplicative masking) may leave ``-0.0``, and spending a bit per entry
on that sign would defeat the purpose of the format.

A tensor is stored sparse only when that is smaller than storing it dense, i.e. when its sparsity
exceeds ``1 / (8 * itemsize)`` (3.1% for fp32), or when ``min_sparsity`` says so.

Nothing is ever unpickled: the file is safetensors, and only JSON metadata is parsed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

__all__ = ["FORMAT", "compact_size_report", "load_compact", "save_compact"]

#: Value of the ``format`` field in the file's metadata.
FORMAT = "sparsecore.compact/1"
_META_KEY = "sparsecore"
_SEP = "::"
_DTYPES = {
    str(d).removeprefix("torch."): d
    for d in (
        torch.float64,
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
    )
}
_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _pack(bits: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.packbits(bits.reshape(-1).cpu().numpy(), bitorder="little"))


def _unpack(packed: torch.Tensor, numel: int) -> torch.Tensor:
    flat = np.unpackbits(packed.numpy(), count=numel, bitorder="little")
    return torch.from_numpy(flat.astype(np.bool_))


def _nonzero_bits(tensor: torch.Tensor) -> torch.Tensor:
    """Entries whose value is not zero (``-0.0`` counts as zero, NaN as nonzero)."""
    return tensor != 0


def _state_dict_of(obj: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.parallel.DistributedDataParallel):
        obj = obj.module
    state = obj.state_dict() if isinstance(obj, nn.Module) else dict(obj)
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state_dict entry {key!r} is not a tensor ({type(value).__name__})")
        if _SEP in key:
            raise ValueError(f"tensor name {key!r} contains the reserved separator {_SEP!r}")
        if value.is_sparse or value.layout != torch.strided:
            raise ValueError(f"tensor {key!r} has layout {value.layout}; save a dense state_dict")
        if str(value.dtype).removeprefix("torch.") not in _DTYPES:
            raise TypeError(f"tensor {key!r} has unsupported dtype {value.dtype}")
    return state


def save_compact(
    obj: nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    *,
    min_sparsity: float | None = None,
    metadata: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Write a model's state dict as a compact sparse safetensors file.

    Args:
        obj: A model (its ``state_dict()`` is saved; DDP is unwrapped) or a state dict.
        path: Destination file.
        min_sparsity: Store a floating tensor sparse only at this sparsity or above. ``None``
            (default): whenever sparse storage is smaller than dense.
        metadata: Extra string metadata to store alongside (keys other than ``sparsecore``).

    Returns:
        The per-tensor description written into the file's metadata.

    Raises:
        ValueError: A tensor name contains ``::`` or a tensor is not strided.
        TypeError: An entry is not a tensor or has an unsupported dtype.
    """
    state = _state_dict_of(obj)
    tensors: dict[str, torch.Tensor] = {}
    info: dict[str, dict[str, Any]] = {}
    sparse_bits: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        value = value.detach().cpu()
        entry: dict[str, Any] = {"shape": list(value.shape), "dtype": _dtype_name(value)}
        if value.is_floating_point() and value.numel() > 0:
            mask = state.get(f"{key}_mask")
            keep = _nonzero_bits(value)
            if (
                isinstance(mask, torch.Tensor)
                and mask.dtype == torch.bool
                and mask.shape == value.shape
            ):
                keep |= mask.cpu()
            nnz = int(keep.sum())
            itemsize = value.element_size()
            cheaper = math.ceil(value.numel() / 8) + nnz * itemsize < value.numel() * itemsize
            wanted = cheaper if min_sparsity is None else 1 - nnz / value.numel() >= min_sparsity
            if wanted:
                flat = value.reshape(-1)
                ints = flat.view(_INT_VIEW[itemsize])[keep.reshape(-1)]
                tensors[key + _SEP + "bits"] = _pack(keep)
                tensors[key + _SEP + "values"] = ints.view(value.dtype).clone()
                entry.update(kind="sparse", nnz=nnz)
                sparse_bits[key] = keep
                info[key] = entry
                continue
        if value.dtype == torch.bool and value.numel() > 0:
            entry.update(kind="bits", nnz=int(value.sum()))
            info[key] = entry
            continue
        entry["kind"] = "dense"
        tensors[key] = value.contiguous().clone()
        info[key] = entry
    for key, entry in info.items():
        if entry["kind"] != "bits":
            continue
        owner = key.removesuffix("_mask")
        value = state[key].detach().cpu()
        if (
            key.endswith("_mask")
            and owner in sparse_bits
            and torch.equal(sparse_bits[owner], value)
        ):
            entry.update(kind="mask_of", source=owner)
        else:
            tensors[key + _SEP + "bits"] = _pack(value)
    meta = dict(metadata or {})
    if _META_KEY in meta:
        raise ValueError(f"metadata key {_META_KEY!r} is reserved")
    digests = {name: _digest(t) for name, t in tensors.items()}
    meta[_META_KEY] = json.dumps({"format": FORMAT, "tensors": info, "digests": digests})
    save_file(tensors, os.fspath(path), metadata=meta)
    return info


def _digest(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's bytes (dtype-agnostic, no copy for contiguous CPU tensors)."""
    data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    return hashlib.sha256(memoryview(data)).hexdigest()


def _verify(
    path: str | os.PathLike[str], header: dict[str, Any], raw: dict[str, torch.Tensor]
) -> None:
    """Check every stored entry against the header's digests (``ValueError`` naming it)."""
    digests = header.get("digests")
    if digests is None:
        warnings.warn(
            f"{os.fspath(path)}: compact checkpoint without digests (written by an older "
            "sparsecore); its integrity cannot be verified. Save it again to add them.",
            UserWarning,
            stacklevel=3,
        )
        return
    if not isinstance(digests, dict) or set(digests) != set(raw):
        raise ValueError(f"{os.fspath(path)}: corrupt digest table (entries differ from the file)")
    for name, tensor in raw.items():
        if digests[name] != _digest(tensor):
            raise ValueError(
                f"{os.fspath(path)}: entry {name!r} does not match its SHA-256 digest; "
                "the file is corrupt"
            )


def _dtype_name(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def _read(
    path: str | os.PathLike[str],
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    try:
        with safe_open(os.fspath(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            raw = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{os.fspath(path)}: not a readable safetensors file ({err})") from err
    if _META_KEY not in meta:
        raise ValueError(f"{os.fspath(path)}: no {_META_KEY!r} metadata; not a compact checkpoint")
    try:
        header = json.loads(meta[_META_KEY])
    except json.JSONDecodeError as err:
        raise ValueError(f"{os.fspath(path)}: corrupt {_META_KEY!r} metadata ({err})") from err
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else None
        raise ValueError(f"{os.fspath(path)}: unknown format {found!r}, expected {FORMAT!r}")
    tensors = header.get("tensors")
    if not isinstance(tensors, dict) or not all(isinstance(e, dict) for e in tensors.values()):
        raise ValueError(f"{os.fspath(path)}: corrupt {_META_KEY!r} metadata (no tensor table)")
    return tensors, raw, header


def _decode(
    key: str, entry: dict[str, Any], raw: dict[str, torch.Tensor], decoded: dict[str, torch.Tensor]
) -> torch.Tensor:
    """One tensor from the file, with every consistency check naming ``key``."""
    try:
        shape = torch.Size(entry["shape"])
        dtype = _DTYPES[entry["dtype"]]
        kind = entry["kind"]
    except (KeyError, TypeError, RuntimeError) as err:
        raise ValueError(f"tensor {key!r}: corrupt metadata entry {entry!r}") from err
    if any(not isinstance(d, int) or d < 0 for d in entry["shape"]):
        raise ValueError(f"tensor {key!r}: corrupt shape {entry['shape']!r}")
    numel = shape.numel()

    def need(name: str, want_dtype: torch.dtype, want_numel: int) -> torch.Tensor:
        stored = raw.get(name)
        if stored is None:
            raise ValueError(f"tensor {key!r}: {name!r} is missing from the file")
        if stored.dtype != want_dtype or stored.numel() != want_numel:
            raise ValueError(
                f"tensor {key!r}: {name!r} is {stored.dtype} with {stored.numel()} entries, "
                f"expected {want_dtype} with {want_numel}"
            )
        return stored

    if kind == "dense":
        stored = need(key, dtype, numel)
        if stored.shape != shape:
            raise ValueError(
                f"tensor {key!r}: stored shape {tuple(stored.shape)} != {tuple(shape)}"
            )
        return stored
    if kind == "mask_of":
        source = entry.get("source")
        if f"{source}{_SEP}keep" not in decoded or decoded[source].shape != shape:
            raise ValueError(f"tensor {key!r}: its source tensor {source!r} is missing or differs")
        return decoded[source + _SEP + "keep"].clone()
    bits = _unpack(need(key + _SEP + "bits", torch.uint8, math.ceil(numel / 8)), numel)
    nnz = int(bits.sum())
    if nnz != entry.get("nnz"):
        raise ValueError(
            f"tensor {key!r}: bitmask holds {nnz} entries, metadata says {entry.get('nnz')}"
        )
    if kind == "bits":
        if dtype != torch.bool:
            raise ValueError(f"tensor {key!r}: kind 'bits' needs dtype bool, got {dtype}")
        return bits.reshape(shape)
    if kind != "sparse" or not dtype.is_floating_point:
        raise ValueError(f"tensor {key!r}: unknown kind {kind!r} for dtype {dtype}")
    values = need(key + _SEP + "values", dtype, nnz)
    itemsize = values.element_size()
    out = torch.zeros(numel, dtype=_INT_VIEW[itemsize])
    out[bits] = values.view(_INT_VIEW[itemsize])
    decoded[key + _SEP + "keep"] = bits.reshape(shape)
    return out.view(dtype).reshape(shape)


def load_compact(
    path: str | os.PathLike[str],
    model: nn.Module | None = None,
    *,
    strict: bool = True,
) -> dict[str, torch.Tensor]:
    """Read a file written by `save_compact`; optionally load it into ``model``.

    Args:
        path: The file.
        model: If given, every tensor is checked against ``model.state_dict()`` (same names when
            ``strict``, same shapes and dtypes always) and then loaded with ``load_state_dict``.
        strict: Require the file and the model to hold exactly the same names.

    Returns:
        The state dict (CPU tensors), whether or not it was loaded into a model.

    Raises:
        ValueError: The file is unreadable, not a compact checkpoint, internally inconsistent, or
            does not match ``model``; the message names the offending tensor.
    """
    entries, raw, header = _read(path)
    decoded: dict[str, torch.Tensor] = {}
    order = sorted(entries, key=lambda k: entries[k].get("kind") == "mask_of")
    for key in order:
        decoded[key] = _decode(key, entries[key], raw, decoded)
    # after the structural checks (whose messages are more specific), the bytes themselves
    _verify(path, header, raw)
    state = {key: decoded[key] for key in entries}
    if model is not None:
        _check_against(state, model, strict)
        model.load_state_dict(state, strict=strict)
    return state


def _check_against(state: dict[str, torch.Tensor], model: nn.Module, strict: bool) -> None:
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    expected = model.state_dict()
    if strict:
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        if missing or unexpected:
            raise ValueError(
                f"checkpoint does not match the model: missing tensors {missing[:5]}, "
                f"unexpected tensors {unexpected[:5]}"
            )
    for key, value in state.items():
        want = expected.get(key)
        if want is None:
            continue
        if want.shape != value.shape:
            raise ValueError(
                f"tensor {key!r}: checkpoint shape {tuple(value.shape)} != model shape "
                f"{tuple(want.shape)}"
            )
        if want.dtype != value.dtype:
            raise ValueError(
                f"tensor {key!r}: checkpoint dtype {value.dtype} != model dtype {want.dtype}"
            )


def compact_size_report(path: str | os.PathLike[str]) -> dict[str, int]:
    """Bytes of the file and how many entries it stores sparse / dense (for reports).

    Returns:
        ``{"bytes", "tensors", "sparse_tensors", "numel", "stored_values"}``.
    """
    entries, _, _ = _read(path)
    sparse = [e for e in entries.values() if e["kind"] == "sparse"]
    numel = sum(math.prod(e["shape"]) for e in entries.values())
    stored = sum(e["nnz"] for e in sparse) + sum(
        math.prod(e["shape"]) for e in entries.values() if e["kind"] == "dense"
    )
    return {
        "bytes": os.path.getsize(path),
        "tensors": len(entries),
        "sparse_tensors": len(sparse),
        "numel": numel,
        "stored_values": stored,
    }
