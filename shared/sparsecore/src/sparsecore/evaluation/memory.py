"""Training-memory meters: bytes saved for backward, and the process / CUDA peak.

Activation memory is what memory-efficient fine-tuning methods (layer freezing, activation
quantization or pruning) sell, and on a CPU there is no allocator peak to read for one step.
`SavedTensorMeter` counts, through `torch.autograd.graph.saved_tensors_hooks`, the bytes of
every distinct storage that autograd (or a custom `torch.autograd.Function` through
``ctx.save_for_backward``) keeps for the backward pass; storages of the model's parameters are
left out (they are alive anyway), and views of one storage count once.

```python
meter = SavedTensorMeter(exclude=model.parameters())
with meter:
    loss = model(**batch).loss
loss.backward()
print(meter.bytes)       # activation bytes held at the end of the forward pass
```

`peak_memory_bytes` reads, since the last `reset_peak_memory`, the CUDA allocator's peak or, on
CPU, the process's resident-set high-water mark (Linux ``VmHWM``, resettable; elsewhere the
peak since the process started: measure one configuration per fresh process there).
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Iterable
from types import TracebackType

import torch

__all__ = ["SavedTensorMeter", "current_rss_bytes", "peak_memory_bytes", "reset_peak_memory"]


def _storage_key(tensor: torch.Tensor) -> tuple[str, int]:
    storage = tensor.untyped_storage()
    return (str(tensor.device), storage.data_ptr())


class SavedTensorMeter:
    """Bytes autograd saves for backward inside a ``with`` block (distinct storages).

    Args:
        exclude: Tensors (usually ``model.parameters()``) whose storages are not counted.

    Attributes:
        bytes: Bytes of the distinct storages saved in the last ``with`` block.
        count: Number of tensors saved (before deduplication).
        by_dtype: Bytes per dtype name (``"float32"``, ``"int8"``, ...).
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self._exclude = {_storage_key(t) for t in exclude}
        self._seen: dict[tuple[str, int], int] = {}
        self.bytes = 0
        self.count = 0
        self.by_dtype: dict[str, int] = {}
        self._context: torch.autograd.graph.saved_tensors_hooks | None = None

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        self.count += 1
        key = _storage_key(tensor)
        if key not in self._exclude and key not in self._seen:
            size = tensor.untyped_storage().nbytes()
            self._seen[key] = size
            self.bytes += size
            name = str(tensor.dtype).removeprefix("torch.")
            self.by_dtype[name] = self.by_dtype.get(name, 0) + size
        return tensor

    def __enter__(self) -> SavedTensorMeter:
        self._seen = {}
        self.bytes = 0
        self.count = 0
        self.by_dtype = {}
        self._context = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._context.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._context is not None
        self._context.__exit__(exc_type, exc, tb)
        self._context = None
        self._seen = {}  # keep no references to storages (only their addresses)


def _proc_status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def current_rss_bytes() -> int | None:
    """The process's resident set size now (Linux ``VmRSS``; ``None`` elsewhere)."""
    return _proc_status_bytes("VmRSS")


def reset_peak_memory(device: torch.device | str | None = None) -> bool:
    """Reset the peak that `peak_memory_bytes` reads.

    CUDA: the allocator's peak. CPU on Linux: the process's resident-set high-water mark
    (``VmHWM``, reset to the current RSS by writing ``5`` to ``/proc/self/clear_refs``).

    Returns:
        Whether a reset happened (``False`` where the platform offers none: then the CPU peak
        is the peak since the process started).
    """
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


def peak_memory_bytes(device: torch.device | str | None = None) -> int:
    """Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA, else the process's peak RSS.

    Args:
        device: The training device. ``None`` or CPU: the resident-set high-water mark (Linux
            ``VmHWM``, since the last `reset_peak_memory`; elsewhere ``getrusage``'s peak since
            the process started). On CPU it includes everything the process holds (the
            interpreter, libraries, the allocator's cached pages), so compare differences.
    """
    if device is not None and torch.device(device).type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = _proc_status_bytes("VmHWM")
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
