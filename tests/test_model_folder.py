"""The shared model-folder rules: strict configs and weights, atomic writes."""

from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

from unclip.model_folder import (
    CheckpointError,
    config_from_dict,
    load_weights,
    read_meta,
    read_weights,
    write_model_folder,
)


@dataclass
class Inner:
    sizes: tuple[int, ...] = (1, 2)
    name: str = "a"

    def __post_init__(self):
        if not self.sizes:
            raise ValueError("sizes must not be empty")


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    maybe: Inner | None = None
    width: int = 3


def test_config_round_trip_restores_tuples_and_nested_dataclasses():
    cfg = Outer(Inner((4, 5), "b"), Inner((6,)), 7)
    import dataclasses
    import json

    back = config_from_dict(Outer, json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert back == cfg and isinstance(back.inner.sizes, tuple) and isinstance(back.maybe, Inner)


def test_config_errors_name_the_place():
    with pytest.raises(CheckpointError, match=r"config.inner: unknown key\(s\) szes"):
        config_from_dict(Outer, {"inner": {"szes": [1]}})
    with pytest.raises(CheckpointError, match=r"config\.inner: sizes must not be empty"):
        config_from_dict(Outer, {"inner": {"sizes": []}})
    with pytest.raises(ValueError, match="must be a JSON object, got list"):
        config_from_dict(Outer, [], error=ValueError)


def meta():
    return {"format": "unclip-test", "format_version": 1, "config": {}}


def test_write_then_read_round_trip(tmp_path):
    net = nn.Linear(3, 2)
    folder = write_model_folder(tmp_path / "m", meta(), net, extra=lambda d: (d / "extra.txt").write_text("x"))
    assert read_meta(folder, "unclip-test", 1, {"config"}, "test") == meta()
    other = nn.Linear(3, 2)
    load_weights(other, read_weights(folder), "m")
    assert torch.equal(other.weight, net.weight) and (folder / "extra.txt").read_text() == "x"
    with pytest.raises(CheckpointError, match="unknown format_version 1; this unclip reads version 2"):
        read_meta(folder, "unclip-test", 2, {"config"}, "test")
    with pytest.raises(CheckpointError, match="format is 'unclip-test', expected 'unclip-clip'"):
        read_meta(folder, "unclip-clip", 1, {"config"}, "test")
    with pytest.raises(CheckpointError, match=r"unknown key\(s\) config"):
        read_meta(folder, "unclip-test", 1, set(), "test")


def test_a_failed_write_leaves_the_previous_folder_intact(tmp_path):
    net = nn.Linear(3, 2)
    folder = write_model_folder(tmp_path / "m", meta(), net)
    before = read_weights(folder)

    def fail(_):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_model_folder(folder, meta(), nn.Linear(3, 2), extra=fail)
    after = read_weights(folder)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary folder left behind


def test_damaged_weights_are_reported(tmp_path):
    folder = write_model_folder(tmp_path / "m", meta(), nn.Linear(3, 2))
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        read_weights(folder)
    with pytest.raises(CheckpointError, match=r"missing tensor\(s\) bias"):
        load_weights(nn.Linear(3, 2), {"weight": torch.zeros(2, 3)}, "m")
