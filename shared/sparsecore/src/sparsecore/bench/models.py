"""Reference models for the embedded tasks, and tiny Hugging Face transformers.

* ``mlp``: flatten, then ``depth`` hidden Linear layers of ``width`` units with ReLU, then the
  classifier (default 2 × 256: 78k weights on MNIST-1D).
* ``convbase``: the MNIST-1D paper's ``ConvBase`` (greydanus/mnist1d ``models.py``): Conv1d
  1→25 (kernel 5, stride 2, padding 1), two Conv1d 25→25 (kernel 3, stride 2, padding 1), ReLU
  after each, flatten (25 × 5 = 125 for length 40), Linear 125→10. For 1-D inputs only.
* ``resnet``: a small ResNet with BatchNorm and 3×3 convolutions (stem, three stages of basic
  blocks at ``width``, ``2·width``, ``4·width`` channels, the last two with stride 2, global
  average pooling, Linear). Conv2d for image tasks (``digits``), Conv1d for sequences.

`tiny_bert`, `tiny_gpt2` and `tiny_llama` build randomly initialised
``transformers`` models from small configs (the optional extra ``hf``; imported lazily).

Every builder seeds its own initialisation without touching the global random state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from sparsecore.bench.tasks import Task

__all__ = [
    "MLP",
    "MODELS",
    "ConvBase",
    "ResNet",
    "make_model",
    "tiny_bert",
    "tiny_gpt2",
    "tiny_llama",
]


class MLP(nn.Module):
    """Flatten, ``depth`` hidden layers of ``width`` ReLU units, then a linear classifier.

    Args:
        in_features: Flattened input size.
        num_classes: Number of outputs.
        width: Hidden units per layer.
        depth: Number of hidden layers.
    """

    def __init__(self, in_features: int, num_classes: int, width: int = 256, depth: int = 2):
        super().__init__()
        if width < 1 or depth < 0:
            raise ValueError(f"MLP: need width >= 1 and depth >= 0, got {width}, {depth}")
        layers: list[nn.Module] = [nn.Flatten()]
        size = in_features
        for _ in range(depth):
            layers += [nn.Linear(size, width), nn.ReLU()]
            size = width
        layers.append(nn.Linear(size, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(batch, num_classes)``."""
        return self.net(x)


class ConvBase(nn.Module):
    """The MNIST-1D paper's ConvBase: three strided Conv1d layers and a Linear classifier.

    Args:
        length: Input sequence length (40 for MNIST-1D).
        num_classes: Number of outputs.
        channels: Channels of every convolution (25 in the paper).
    """

    def __init__(self, length: int, num_classes: int, channels: int = 25):
        super().__init__()
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        out = length
        for kernel in (5, 3, 3):
            out = (out + 2 - kernel) // 2 + 1
        if out < 1:
            raise ValueError(f"ConvBase: input length {length} is too short")
        self.linear = nn.Linear(channels * out, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(batch, num_classes)`` for inputs ``(batch, length)``."""
        h = x.reshape(x.shape[0], 1, x.shape[-1])
        h = self.conv1(h).relu()
        h = self.conv2(h).relu()
        h = self.conv3(h).relu()
        return self.linear(h.flatten(1))


class _BasicBlock(nn.Module):
    def __init__(self, conv: type[nn.Module], norm: type[nn.Module], cin: int, cout: int, stride):
        super().__init__()
        self.conv1 = conv(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(cout)
        self.conv2 = conv(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = norm(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(conv(cin, cout, 1, stride=stride, bias=False), norm(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(self.conv1(x)).relu()
        out = self.bn2(self.conv2(out))
        return (out + self.shortcut(x)).relu()


class ResNet(nn.Module):
    """A small ResNet with BatchNorm: stem, three stages of basic blocks, pooling, Linear.

    Args:
        input_shape: ``(C, H, W)`` (Conv2d), ``(C, L)`` or ``(L,)`` (Conv1d).
        num_classes: Number of outputs.
        width: Channels of the first stage (the others have 2× and 4×).
        blocks: Basic blocks per stage.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        width: int = 16,
        blocks: tuple[int, int, int] = (1, 1, 1),
    ):
        super().__init__()
        if len(input_shape) == 3:
            conv, norm, pool = nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d(1)
        elif len(input_shape) in (1, 2):
            conv, norm, pool = nn.Conv1d, nn.BatchNorm1d, nn.AdaptiveAvgPool1d(1)
        else:
            raise ValueError(f"ResNet: unsupported input shape {input_shape}")
        self.input_shape = tuple(input_shape)
        channels = input_shape[0] if len(input_shape) >= 2 else 1
        self.stem = nn.Sequential(
            conv(channels, width, 3, padding=1, bias=False), norm(width), nn.ReLU()
        )
        stages: list[nn.Module] = []
        cin = width
        for i, count in enumerate(blocks):
            cout = width * 2**i
            for j in range(count):
                stride = 2 if (i > 0 and j == 0) else 1
                stages.append(_BasicBlock(conv, norm, cin, cout, stride))
                cin = cout
        self.stages = nn.Sequential(*stages)
        self.pool = pool
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(batch, num_classes)``."""
        if len(self.input_shape) == 1:
            x = x.reshape(x.shape[0], 1, x.shape[-1])
        h = self.stages(self.stem(x))
        return self.fc(self.pool(h).flatten(1))


def _mlp(task: Task, width: int = 256, depth: int = 2) -> nn.Module:
    return MLP(math.prod(task.input_shape), task.num_classes, width, depth)


def _convbase(task: Task, channels: int = 25) -> nn.Module:
    if len(task.input_shape) != 1:
        raise ValueError(f"convbase needs 1-D inputs; task {task.name!r} has {task.input_shape}")
    return ConvBase(task.input_shape[0], task.num_classes, channels)


def _resnet(task: Task, width: int = 16, blocks: tuple[int, int, int] = (1, 1, 1)) -> nn.Module:
    return ResNet(task.input_shape, task.num_classes, width, tuple(blocks))  # type: ignore[arg-type]


#: Builders by name: ``builder(task, **options) -> nn.Module``.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": _mlp,
    "convbase": _convbase,
    "resnet": _resnet,
}


def _seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def make_model(name: str, task: Task, seed: int = 0, **options: Any) -> nn.Module:
    """Build a reference model for ``task`` with a seeded initialisation.

    Args:
        name: ``"mlp"``, ``"convbase"`` or ``"resnet"``.
        task: The task (gives the input shape and the number of classes).
        seed: Seed of the initialisation (the global random state is left untouched).
        **options: Model options: ``width``, ``depth`` (mlp); ``channels`` (convbase);
            ``width``, ``blocks`` (resnet).

    Returns:
        The model, in training mode, on the CPU.

    Raises:
        ValueError: Unknown model name, or a model that does not fit the task.
        TypeError: An unknown option.
    """
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    if not isinstance(task, Task):
        raise TypeError(f"task must be a sparsecore.bench.Task, got {type(task).__name__}")
    return _seeded(seed, lambda: MODELS[key](task, **options))


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "tiny transformers need 'transformers': pip install sparse-core[hf]"
        ) from err
    return transformers


def tiny_bert(num_labels: int = 2, seed: int = 0, **config: Any) -> nn.Module:
    """A randomly initialised ``BertForSequenceClassification`` from a tiny config.

    Defaults: vocabulary 1000, hidden 64, 2 layers, 4 heads, intermediate 128, 128 positions.

    Args:
        num_labels: Number of classes.
        seed: Initialisation seed.
        **config: Overrides of ``transformers.BertConfig`` fields.
    """
    tf = _transformers()
    options = dict(
        vocab_size=1000,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=128,
        num_labels=num_labels,
        attn_implementation="eager",
    )
    options.update(config)
    return _seeded(seed, lambda: tf.BertForSequenceClassification(tf.BertConfig(**options)))


def tiny_gpt2(seed: int = 0, **config: Any) -> nn.Module:
    """A randomly initialised ``GPT2LMHeadModel`` from a tiny config.

    Defaults: vocabulary 1000, 64-dimensional embeddings, 2 layers, 4 heads, 128 positions,
    token 0 as BOS/EOS.

    Args:
        seed: Initialisation seed.
        **config: Overrides of ``transformers.GPT2Config`` fields.
    """
    tf = _transformers()
    options = dict(
        vocab_size=1000,
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_positions=128,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation="eager",
    )
    options.update(config)
    return _seeded(seed, lambda: tf.GPT2LMHeadModel(tf.GPT2Config(**options)))


def tiny_llama(seed: int = 0, **config: Any) -> nn.Module:
    """A randomly initialised ``LlamaForCausalLM`` from a tiny config.

    Defaults: vocabulary 1000, hidden 64, 2 layers, 4 heads (2 key/value heads), intermediate
    128, 128 positions.

    Args:
        seed: Initialisation seed.
        **config: Overrides of ``transformers.LlamaConfig`` fields.
    """
    tf = _transformers()
    options = dict(
        vocab_size=1000,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        max_position_embeddings=128,
        attn_implementation="eager",
    )
    options.update(config)
    return _seeded(seed, lambda: tf.LlamaForCausalLM(tf.LlamaConfig(**options)))
