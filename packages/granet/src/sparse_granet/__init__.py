"""GraNet (Liu et al., NeurIPS 2021): gradual pruning with zero-cost neuroregeneration.

"Sparse Training via Boosting Pruning Plasticity with Neuroregeneration", arXiv 2106.10404,
official code https://github.com/Shiweiliuiiiiiii/GraNet. Built on ``sparsecore``; registered
as the ``granet`` method through the ``sparsecore.methods`` entry point.

```python
from sparse_granet import GraNet
method = GraNet(sparsity=0.9, update_every=50, end_step=1500).setup(model, optimizer)
```
"""

from sparse_granet.config import INIT_DISTRIBUTIONS, GraNetConfig
from sparse_granet.method import (
    GraNet,
    global_magnitude_prune,
    regenerate_layer,
    regeneration_count,
)

__version__ = "0.1.0"

__all__ = [
    "INIT_DISTRIBUTIONS",
    "GraNet",
    "GraNetConfig",
    "__version__",
    "global_magnitude_prune",
    "regenerate_layer",
    "regeneration_count",
]
