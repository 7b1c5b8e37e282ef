import json
import math

import pytest
import torch
from safetensors.torch import load_file

from sparse_lth import LotteryExperiment, TrainSpec

torch.set_num_threads(1)

SPEC = TrainSpec(steps=12, batch_size=16, lr=0.1, schedule="cosine")
K = 3


class Stop(Exception):
    pass


def _experiment(root, make_model, data, levels=3, **options):
    defaults = {
        "fraction": 0.3,
        "rewind_step": K,
        "seed": 1,
        "branches": ("random_reinit", "random_prune"),
        "branch_levels": (2,),
        "instability_levels": (2,),
        "checkpoint_every": 4,
        "layers_to_ignore": ("4.weight",),
    }
    return LotteryExperiment(root, make_model, data, SPEC, levels=levels, **{**defaults, **options})


def _strip(done):
    return {
        run: {k: v for k, v in m.items() if k not in ("wall_s", "resumed_from")}
        for run, m in done.items()
    }


def test_levels_masks_branches_and_lr(tmp_path, make_model, data):
    done = _experiment(tmp_path, make_model, data).run()
    expected = {"pretrain", "level_2/random_reinit", "level_2/random_prune", "level_2/instability"}
    expected |= {f"level_{i}/main" for i in range(4)}
    expected |= {"level_2/instability/a", "level_2/instability/b"}
    assert set(done) == expected
    previous = None
    for level in range(4):
        masks = load_file(str(tmp_path / f"level_{level}" / "mask.safetensors"))
        nnz = sum(int(m.sum()) for m in masks.values())
        assert masks["4.weight"].all()
        if previous is not None:
            before = sum(int(m.sum()) for m in previous.values())
            assert nnz == before - math.ceil(0.3 * before)
            assert all(not (masks[n] & ~previous[n]).any() for n in masks)
            # the mask is the global top-|w| of the PREVIOUS level's trained weights (the ignored
            # classifier keeps its ones), not of the rewind point or the initialisation
            trained = load_file(str(tmp_path / f"level_{level - 1}" / "main" / "final.safetensors"))
            names = [n for n in masks if n != "4.weight"]
            flat = torch.cat(
                [torch.where(previous[n], trained[n].abs(), -1.0).flatten() for n in names]
            )
            keep = sum(int(masks[n].sum()) for n in names)
            expected = torch.zeros_like(flat, dtype=torch.bool)
            expected[flat.argsort(descending=True, stable=True)[:keep]] = True
            assert torch.equal(torch.cat([masks[n].flatten() for n in names]), expected), level
            theta_k = load_file(str(tmp_path / "pretrain" / "final.safetensors"))
            rewound = torch.cat(
                [torch.where(previous[n], theta_k[n].abs(), -1.0).flatten() for n in names]
            )
            from_rewind = torch.zeros_like(expected)
            from_rewind[rewound.argsort(descending=True, stable=True)[:keep]] = True
            assert not torch.equal(expected, from_rewind), level
        main = done[f"level_{level}/main"]
        assert main["nnz"] == nnz
        assert main["start_step"] == K and main["end_step"] == SPEC.steps
        assert main["lr_first"] == pytest.approx(SPEC.lr_at(K), rel=1e-12)
        previous = masks
    assert done["pretrain"]["start_step"] == 0 and done["pretrain"]["end_step"] == K
    # rewinding: the level-2 ticket starts from the pretrain weights θ_k
    theta_k = load_file(str(tmp_path / "pretrain" / "final.safetensors"))
    masks = load_file(str(tmp_path / "level_2" / "mask.safetensors"))
    reinit = load_file(str(tmp_path / "level_2" / "random_reinit" / "final.safetensors"))
    ticket = load_file(str(tmp_path / "level_2" / "main" / "final.safetensors"))
    rand_mask = load_file(str(tmp_path / "level_2" / "random_prune" / "mask.safetensors"))
    for name, mask in masks.items():
        assert torch.equal(reinit[name + "_mask"], mask)
        assert torch.equal(ticket[name + "_mask"], mask)
        assert not reinit[name][~mask].any()
        assert int(rand_mask[name].sum()) == int(mask.sum())
        assert theta_k[name].ne(0).all()
    assert not torch.equal(reinit["0.weight"], ticket["0.weight"])
    assert not torch.equal(rand_mask["0.weight"], masks["0.weight"])
    assert done["level_2/random_prune"]["nnz"] == done["level_2/main"]["nnz"]
    inst = done["level_2/instability"]
    assert inst["errors"][0] == done["level_2/instability/a"]["error"]
    assert inst["errors"][-1] == done["level_2/instability/b"]["error"]
    assert inst["barrier"] == pytest.approx(
        max(inst["errors"]) - (inst["errors"][0] + inst["errors"][-1]) / 2
    )
    assert not (tmp_path / "level_2" / "main" / "checkpoint.pt").exists()


@pytest.mark.parametrize("stop_at", [9, 30])
def test_interrupted_experiment_resumes_to_the_same_result(tmp_path, make_model, data, stop_at):
    reference = _experiment(tmp_path / "ref", make_model, data).run()

    count = 0

    def stopper(step, model, optimizer):
        nonlocal count
        count += 1
        if count == stop_at:
            raise Stop

    with pytest.raises(Stop):
        _experiment(tmp_path / "cut", make_model, data, callbacks=(stopper,)).run()
    partial = json.loads((tmp_path / "cut" / "progress.json").read_text())["done"]
    assert len(partial) < len(reference)
    resumed = _experiment(tmp_path / "cut", make_model, data).run()
    assert _strip(resumed) == _strip(reference)
    assert any(m.get("resumed_from") for m in resumed.values())
    for path in (tmp_path / "ref").rglob("*.safetensors"):
        other = tmp_path / "cut" / path.relative_to(tmp_path / "ref")
        a, b = load_file(str(path)), load_file(str(other))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), path


def test_levels_can_grow_and_identity_is_checked(tmp_path, make_model, data):
    first = _experiment(tmp_path, make_model, data, levels=1).run()
    assert "level_2/main" not in first
    second = _experiment(tmp_path, make_model, data, levels=2).run()
    assert _strip({k: second[k] for k in first}) == _strip(first)
    assert "level_2/main" in second
    with pytest.raises(ValueError, match="different experiment"):
        _experiment(tmp_path, make_model, data, levels=2, fraction=0.5).run()


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"levels": -1}, "levels"),
        ({"branches": ("shuffle",)}, "branches"),
        ({"random_prune_strategy": "even"}, "random_prune_strategy"),
        ({"rewind_step": 12}, "rewind_step"),
        ({"instability_levels": (-1,)}, "instability_levels"),
        ({"fraction": 1.5}, "fraction"),
        ({"points": 1}, "points"),
        ({"checkpoint_every": -2}, "checkpoint_every"),
    ],
)
def test_bad_experiment_options(tmp_path, make_model, data, options, match):
    with pytest.raises(ValueError, match=match):
        _experiment(tmp_path, make_model, data, **options)
    assert not any(tmp_path.iterdir())
