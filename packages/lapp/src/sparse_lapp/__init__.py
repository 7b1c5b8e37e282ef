"""LAPP (Zhai et al. 2023): layer-adaptive progressive pruning of CNNs from scratch, on sparsecore.

```python
from sparse_lapp import LAPP, add_bypasses, compact
add_bypasses(model, LAPP.prunable_convs(model, (1, 8, 8)))   # before the optimizer
lapp = LAPP(sparsity=0.5, input_shape=(1, 8, 8), prune_steps=300).setup(model, opt)
```
"""

from sparse_lapp.bypass import BypassConv, add_bypasses
from sparse_lapp.config import LAPPConfig
from sparse_lapp.method import LAPP, compact
from sparse_lapp.models import PlainCNN
from sparse_lapp.units import FlopsModel, Unit, analyze

__version__ = "0.1.0"

__all__ = [
    "LAPP",
    "BypassConv",
    "FlopsModel",
    "LAPPConfig",
    "PlainCNN",
    "Unit",
    "__version__",
    "add_bypasses",
    "analyze",
    "compact",
]
