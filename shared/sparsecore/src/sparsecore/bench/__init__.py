"""Embedded tasks, reference models and the training loop (optional extra ``bench``).

```python
from sparsecore.bench import load_task, make_model, train
task = load_task("mnist1d")
model = make_model("mlp", task, seed=0)
result = train(model, task, method=RigL(sparsity=0.9, update_every=50), epochs=10)
```
"""

from sparsecore.bench.lm import LM_TASKS, LMTask, load_lm_task, perplexity, unigram_perplexity
from sparsecore.bench.models import (
    MLP,
    MODELS,
    ConvBase,
    ResNet,
    make_model,
    tiny_bert,
    tiny_gpt2,
    tiny_llama,
)
from sparsecore.bench.pretrained import LM_SIZES, pretrained_tiny_lm
from sparsecore.bench.tasks import TASK_SHAPES, TASKS, Task, load_task, task_spec
from sparsecore.bench.train import (
    TrainResult,
    applicability,
    build_method,
    evaluate,
    fixed_sparsity,
    model_sparsity,
    train,
)

__all__ = [
    "LM_SIZES",
    "LM_TASKS",
    "MLP",
    "MODELS",
    "TASKS",
    "TASK_SHAPES",
    "ConvBase",
    "LMTask",
    "ResNet",
    "Task",
    "TrainResult",
    "applicability",
    "build_method",
    "evaluate",
    "fixed_sparsity",
    "load_lm_task",
    "load_task",
    "make_model",
    "model_sparsity",
    "perplexity",
    "pretrained_tiny_lm",
    "task_spec",
    "tiny_bert",
    "tiny_gpt2",
    "tiny_llama",
    "train",
    "unigram_perplexity",
]
