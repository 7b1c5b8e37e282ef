"""The stdlib-lm task, perplexity, and the cached pretrained tiny Llama."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from sparsecore.bench import load_task
from sparsecore.bench import pretrained as pretrained_module
from sparsecore.bench.lm import (
    calibration_blocks,
    load_lm_task,
    perplexity,
    stdlib_files,
    unigram_perplexity,
)
from sparsecore.bench.pretrained import pretrained_tiny_lm, tiny_lm_path


def _small(root=None):
    return load_lm_task(seq_len=32, max_train_bytes=40_000, max_eval_bytes=4_096, root=root)


def test_task_is_deterministic_and_split_by_file():
    task = load_task("stdlib-lm")
    again = load_lm_task("stdlib-lm")
    assert torch.equal(task.train_blocks, again.train_blocks)
    assert task.corpus_hash == again.corpus_hash and len(task.corpus_hash) == 64
    train_files, eval_files = task.files
    names = [p.name for p in stdlib_files()]
    assert eval_files[0] == names[0] and set(train_files).isdisjoint(eval_files)
    assert all(names.index(f) % 10 == 0 for f in eval_files)
    assert task.train_blocks.shape[1] == task.eval_blocks.shape[1] == 128
    assert int(task.train_blocks.max()) < 256 and task.vocab_size == 256
    assert task.decode(task.encode("def f(): pass")) == "def f(): pass"
    assert _small().corpus_hash != task.corpus_hash  # block settings are part of the hash


def test_bad_task_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="unknown LM task"):
        load_lm_task("wikitext")
    with pytest.raises(ValueError, match="seq_len"):
        load_lm_task(seq_len=1)
    with pytest.raises(ValueError, match="count"):
        calibration_blocks(_small(), 10**6)


def test_perplexity_of_uniform_model_is_vocab_size_and_unigram_is_lower():
    task = _small()

    class Uniform(torch.nn.Module):
        def forward(self, ids):
            return torch.zeros(*ids.shape, 256)

    assert math.isclose(perplexity(Uniform(), task), 256.0, rel_tol=1e-5)
    assert unigram_perplexity(task) < 60
    with pytest.raises(ValueError, match="vocabulary"):

        class Small(torch.nn.Module):
            def forward(self, ids):
                return torch.zeros(*ids.shape, 100)

        perplexity(Small(), task)


def test_calibration_blocks_come_from_training_text_and_follow_the_seed():
    task = _small()
    a, b = calibration_blocks(task, 4, seed=0), calibration_blocks(task, 4, seed=1)
    assert a.shape == (4, 32) and not torch.equal(a, b)
    rows = {tuple(r.tolist()) for r in task.train_blocks}
    assert all(tuple(r.tolist()) in rows for r in a)


@pytest.fixture
def fast_micro(monkeypatch, tmp_path):
    """``micro`` with a 20-step recipe in a fresh cache; records every training call."""
    monkeypatch.setenv("SPARSE_CACHE_DIR", str(tmp_path / "cache"))
    sizes = {**pretrained_module.LM_SIZES}
    sizes["micro"] = {**sizes["micro"], "train": dict(steps=20, batch=4, lr=1e-2)}
    monkeypatch.setattr(pretrained_module, "LM_SIZES", sizes)
    trained = []
    original = pretrained_module.pretrain_lm

    def recording(model, *args, **kwargs):
        trained.append(model)
        return original(model, *args, **kwargs)

    monkeypatch.setattr(pretrained_module, "pretrain_lm", recording)
    return trained


def test_cached_model_reloads_bit_identically_and_new_corpus_retrains(fast_micro, tmp_path):
    task = _small()
    first = pretrained_tiny_lm("micro", task=task, progress=False)
    assert len(fast_micro) == 1
    path = tiny_lm_path("micro", task)
    assert (path / "model.safetensors").exists() and (path / "sparse_meta.json").exists()
    trained = fast_micro[0].state_dict()
    assert all(torch.equal(trained[k], v) for k, v in first.state_dict().items())
    second = pretrained_tiny_lm("micro", task=task, progress=False)
    assert len(fast_micro) == 1  # loaded, not retrained
    assert all(torch.equal(v, second.state_dict()[k]) for k, v in first.state_dict().items())
    assert perplexity(first, task) == perplexity(second, task)

    root = tmp_path / "lib"  # a different "stdlib": one file changed -> another corpus hash
    root.mkdir()
    for source in stdlib_files()[:12]:
        shutil.copy(source, root / source.name)
    (root / stdlib_files()[1].name).write_text("x = 1\n" * 2000)
    other = _small(root)
    assert other.corpus_hash != task.corpus_hash
    pretrained_tiny_lm("micro", task=other, progress=False)
    assert len(fast_micro) == 2 and tiny_lm_path("micro", other) != path
    with pytest.raises(ValueError, match="unknown tiny LM size"):
        pretrained_tiny_lm("huge")


def test_stdlib_topics_text_task_is_balanced_and_disjoint():
    from sparsecore.bench.text import load_text_task

    task = load_text_task("stdlib-topics", train_per_class=6, test_per_class=3)
    assert len(task.train_texts) == 30 and len(task.test_texts) == 15
    assert sorted(set(task.train_labels)) == [0, 1, 2, 3, 4]
    assert set(task.train_texts).isdisjoint(task.test_texts)
    assert task == load_text_task("stdlib-topics", train_per_class=6, test_per_class=3)
    with pytest.raises(ValueError, match="unknown text task"):
        load_text_task("imdb")
