import math

import pytest
import torch
from torch import nn

from unclip.train.ema import EMA, ema_decay_at
from unclip.train.schedule import lr_at


def test_warmup_is_linear_and_starts_above_zero():
    kw = dict(base_lr=1.0, total_steps=100, warmup_steps=10)
    assert lr_at(0, **kw) == pytest.approx(0.1)
    assert lr_at(4, **kw) == pytest.approx(0.5)
    assert lr_at(9, **kw) == pytest.approx(1.0)


def test_cosine_values_at_chosen_steps():
    kw = dict(base_lr=2.0, total_steps=111, warmup_steps=11, schedule="cosine", min_lr_ratio=0.1)
    # After warm-up, progress = (step - 11) / 99; lr = 0.2 + 1.8 * (1 + cos(pi * progress)) / 2.
    assert lr_at(11, **kw) == pytest.approx(2.0)
    assert lr_at(11 + 33, **kw) == pytest.approx(0.2 + 1.8 * 0.5 * (1 + math.cos(math.pi / 3)))
    assert lr_at(11 + 99 // 2, **kw) == pytest.approx(0.2 + 1.8 * 0.5 * (1 + math.cos(math.pi * 49 / 99)))
    assert lr_at(110, **kw) == pytest.approx(0.2)  # the last update uses the floor
    assert lr_at(500, **kw) == pytest.approx(0.2)  # and stays there past the end


def test_constant_schedule_and_errors():
    assert lr_at(50, base_lr=3e-4, total_steps=100, warmup_steps=5, schedule="constant") == 3e-4
    with pytest.raises(ValueError, match="unknown learning-rate schedule"):
        lr_at(50, base_lr=1.0, total_steps=100, schedule="linear-ish")
    with pytest.raises(ValueError, match="step must be"):
        lr_at(-1, base_lr=1.0, total_steps=100)


def test_ema_decay_warmup_values():
    assert ema_decay_at(0, 0.999, 2 / 3) == pytest.approx(1 - 1 ** -(2 / 3))  # 0: the first update copies
    assert ema_decay_at(7, 0.999, 2 / 3) == pytest.approx(1 - 8 ** (-2 / 3))  # = 0.75
    assert ema_decay_at(10**9, 0.999, 2 / 3) == 0.999  # capped
    assert ema_decay_at(0, 0.95, 0.0) == 0.95  # no warm-up


def test_ema_update_maths_by_hand():
    net = nn.Linear(2, 1)
    net.register_buffer("counter", torch.zeros(()))
    with torch.no_grad():
        net.weight.fill_(1.0)
        net.bias.fill_(0.0)
    ema = EMA(net, max_decay=0.5, power=0.0)  # fixed decay 0.5
    expected_w = 1.0
    for value in (3.0, -1.0, 10.0):
        with torch.no_grad():
            net.weight.fill_(value)
            net.counter.fill_(value)
        assert ema.update(net) == 0.5
        expected_w = 0.5 * expected_w + 0.5 * value
        assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), expected_w))
        assert ema.shadow["counter"].item() == value  # buffers are copied, not averaged
    assert expected_w == pytest.approx(5.25)  # ((1 * .5 + 3 * .5) * .5 - .5) * .5 + 5
    assert ema.num_updates == 3
    target = nn.Linear(2, 1)
    target.register_buffer("counter", torch.zeros(()))
    ema.copy_to(target)
    assert torch.allclose(target.weight, torch.full((1, 2), 5.25))


def test_ema_follows_a_module_whose_tensors_move_to_new_storage():
    # The update reuses its (shadow, live tensor) pairs between steps; a module converted after the first update
    # (new storage behind the same parameters) must be averaged from its new values, not the stale old ones.
    net = nn.Linear(3, 2)
    ema = EMA(net, max_decay=0.5, power=0.0)
    start = ema.shadow["weight"].clone()
    ema.update(net)
    net.double()  # every parameter now lives in new float64 storage: averaged through a cast to float32
    with torch.no_grad():
        net.weight.fill_(4.0)
    ema.update(net)
    assert torch.allclose(ema.shadow["weight"], 0.5 * start + 0.5 * 4.0)
    assert ema.shadow["weight"].dtype == torch.float32
    net.float()
    with torch.no_grad():
        net.weight.fill_(-2.0)
    ema.update(net)
    assert torch.allclose(ema.shadow["weight"], 0.5 * (0.5 * start + 2.0) - 1.0)


def test_ema_rejects_mismatched_state():
    ema = EMA(nn.Linear(2, 1))
    with pytest.raises(ValueError, match="missing"):
        ema.load_state_dict({"weight": torch.zeros(1, 2)}, 0)
    with pytest.raises(ValueError, match="shape"):
        ema.load_state_dict({"weight": torch.zeros(2, 2), "bias": torch.zeros(1)}, 0)


def test_every_registered_stage_preset_builds_and_round_trips_its_config():
    from unclip.train import get_stage, stage_names
    from unclip.train.config import TrainConfig

    assert "toy" in stage_names()
    for name in stage_names():
        stage = get_stage(name)
        for preset_name, preset in stage.presets().items():
            with torch.device("meta"):  # shapes only: the real-data presets hold hundreds of millions of weights
                net = stage.build(preset.model)
            assert sum(p.numel() for p in net.parameters()) > 0, (name, preset_name)
            assert stage.config_from_dict(stage.config_to_dict(preset.model)) == preset.model
            assert isinstance(preset.train, TrainConfig)


def test_config_validation_messages():
    from unclip.train.config import TrainConfig, from_dict

    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        TrainConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="unknown key"):
        from_dict(TrainConfig, {"stepz": 3})
    with pytest.raises(ValueError, match="multiple of 8"):
        TrainConfig(batch_size=12, grad_accum=4).local_batch(2)
    assert TrainConfig(batch_size=16, grad_accum=2).local_batch(2) == 4
