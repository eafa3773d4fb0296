import pytest
import torch
from torch import nn

from unclip.model_folder import load_weights
from unclip.train import checkpoint as ckpt


def _groups(scale: float):
    return {"model": {"w": torch.full((3, 2), scale), "b": torch.arange(4.0)}, "rng": {"r": torch.get_rng_state()}}


def test_round_trip_and_keep_last(tmp_path):
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint(tmp_path, step, _groups(step), {"step": step, "note": "x"}, keep_last=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [3, 4]
    c = ckpt.latest_checkpoint(tmp_path)
    assert c.step == 4 and c.state["note"] == "x"
    assert torch.equal(c.tensors["model"]["w"], torch.full((3, 2), 4.0))
    assert torch.equal(c.tensors["rng"]["r"], torch.get_rng_state())


def test_corrupt_or_truncated_checkpoint_falls_back_to_previous(tmp_path):
    ckpt.save_checkpoint(tmp_path, 5, _groups(5), {"step": 5})
    newest = ckpt.save_checkpoint(tmp_path, 10, _groups(10), {"step": 10})
    data = (newest / "model.safetensors").read_bytes()
    (newest / "model.safetensors").write_bytes(data[: len(data) - 7])  # truncated
    with pytest.raises(ckpt.CheckpointError, match=r"model.safetensors is corrupt"):
        ckpt.load_checkpoint(newest)
    with pytest.warns(UserWarning, match="skipping checkpoint at step 10"):
        c = ckpt.latest_checkpoint(tmp_path)
    assert c.step == 5
    # A flipped byte in the JSON state is caught as well.
    older = ckpt.step_dir(tmp_path, 5)
    raw = bytearray((older / "state.json").read_bytes())
    raw[3] ^= 1
    (older / "state.json").write_bytes(bytes(raw))
    with pytest.warns(UserWarning):
        assert ckpt.latest_checkpoint(tmp_path) is None


def test_unfinished_temporary_folder_is_ignored_and_cleaned(tmp_path):
    ckpt.save_checkpoint(tmp_path, 1, _groups(1), {"step": 1})
    stale = tmp_path / ".step_00000002.tmp-abc"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    assert ckpt.latest_checkpoint(tmp_path).step == 1
    ckpt.save_checkpoint(tmp_path, 2, _groups(2), {"step": 2})
    assert not stale.exists()


def test_unknown_format_version(tmp_path):
    path = ckpt.save_checkpoint(tmp_path, 1, _groups(1), {"step": 1})
    text = (path / "manifest.json").read_text().replace('"format_version": 1', '"format_version": 99')
    (path / "manifest.json").write_text(text)
    with pytest.raises(ckpt.CheckpointError, match="format version 99"):
        ckpt.load_checkpoint(path)


def test_strict_loading_names_what_differs():
    net = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    good = {k: v.clone() for k, v in net.state_dict().items()}
    load_weights(net, good, "test")
    missing = {k: v for k, v in good.items() if k != "1.bias"}
    with pytest.raises(ckpt.CheckpointError, match=r"missing tensor\(s\) 1\.bias"):
        load_weights(net, missing, "test")
    with pytest.raises(ckpt.CheckpointError, match=r"unexpected tensor\(s\) extra"):
        load_weights(net, {**good, "extra": torch.zeros(1)}, "test")
    with pytest.raises(ckpt.CheckpointError, match=r"0\.weight: file \(4, 2\) vs model \(3, 2\)"):
        load_weights(net, {**good, "0.weight": torch.zeros(4, 2)}, "test")


def test_optimizer_state_round_trips_exactly():
    net = nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=0.1)
    for _ in range(3):
        net(torch.randn(4, 3)).square().sum().backward()
        opt.step()
        opt.zero_grad()
    tensors, meta = ckpt.flatten_optimizer(opt.state_dict())
    import json

    meta = json.loads(json.dumps(meta))  # through JSON, as in a checkpoint
    tensors = {k: v.clone() for k, v in tensors.items()}  # as if read back from the file
    net2 = nn.Linear(3, 2)
    net2.load_state_dict(net.state_dict())
    opt2 = torch.optim.AdamW(net2.parameters(), lr=0.1)
    opt2.load_state_dict(ckpt.unflatten_optimizer(tensors, meta))
    x = torch.randn(4, 3)
    for n, o in ((net, opt), (net2, opt2)):
        n(x).square().sum().backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), net2.parameters(), strict=True))


def test_rng_states_round_trip():
    import random

    import numpy as np

    tensors, meta = ckpt.rng_state_tensors(0)
    a = (torch.rand(3), random.random(), np.random.rand())
    ckpt.set_rng_state(tensors, meta, 0)
    b = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and a[2] == b[2]
