"""PDP (Cho, Adya & Naik, NeurIPS 2023, arXiv 2305.11203): parameter-free differentiable pruning.

A soft mask ``m(w) = σ((w² − t²)/τ)`` with no learnable parameters, ``t`` midway between the
smallest kept and the largest pruned magnitude of each layer; the forward uses ``m(w)·w`` so every
weight receives a gradient. Unstructured, N:M and channel variants; dense warm-up, per-layer
targets from one global magnitude ranking, ramped in; final hard mask ``m >= 0.5``.

```python
from sparse_pdp import PDP

pdp = PDP.for_epochs(steps_per_epoch=len(loader), warmup_epochs=5, ramp_epochs=15,
                     sparsity=0.9).setup(model, optimizer)
...  # the usual training loop
model = pdp.finalize()
```
"""

from sparse_pdp.config import DISTRIBUTIONS, PDPConfig, ramp_fraction
from sparse_pdp.functional import allocate_keep, hard_mask, soft_mask, threshold
from sparse_pdp.method import PDP

__version__ = "0.1.0"

__all__ = [
    "DISTRIBUTIONS",
    "PDP",
    "PDPConfig",
    "__version__",
    "allocate_keep",
    "hard_mask",
    "ramp_fraction",
    "soft_mask",
    "threshold",
]
