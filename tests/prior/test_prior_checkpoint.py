"""Prior folders: save -> load gives identical outputs; strict loading names what is wrong."""

from __future__ import annotations

import json

import pytest
import torch
from prior_data import synthetic_pairs
from safetensors.torch import load_file, save_file

from unclip.prior import (
    ARPrior,
    ARPriorConfig,
    CheckpointError,
    DiffusionPrior,
    DiffusionPriorConfig,
    from_pretrained,
    sample_ar_prior,
    sample_diffusion_prior,
    save_pretrained,
)


def diffusion_prior() -> DiffusionPrior:
    torch.manual_seed(0)
    m = DiffusionPrior(DiffusionPriorConfig(embed_dim=16, text_width=24, text_len=6, width=32, depth=1, heads=2))
    m.norm.fit(synthetic_pairs(64)[0])
    return m.eval()


def ar_prior() -> ARPrior:
    torch.manual_seed(0)
    z_i, z_t, _, _ = synthetic_pairs(128)
    cfg = ARPriorConfig(
        embed_dim=16, text_width=24, text_len=6, components=16, buckets=16, dot_bins=8, width=32, depth=1, heads=2
    )
    return ARPrior.from_data(cfg, z_i, z_t).eval()


def test_diffusion_prior_round_trip(tmp_path):
    m = diffusion_prior()
    loaded = from_pretrained(save_pretrained(m, tmp_path / "p"))
    assert isinstance(loaded, DiffusionPrior) and loaded.config == m.config
    _, z_t, tok, mask = synthetic_pairs(3)
    a = sample_diffusion_prior(m, z_t, tok, mask, steps=4, generator=torch.Generator().manual_seed(1))
    b = sample_diffusion_prior(loaded, z_t, tok, mask, steps=4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.z_i, b.z_i)
    torch.testing.assert_close(loaded.norm.std, m.norm.std, rtol=0, atol=0)


def test_ar_prior_round_trip(tmp_path):
    m = ar_prior()
    loaded = from_pretrained(save_pretrained(m, tmp_path / "p"))
    assert isinstance(loaded, ARPrior) and loaded.config == m.config
    _, z_t, tok, mask = synthetic_pairs(3)
    a = sample_ar_prior(m, z_t, tok, mask, generator=[torch.Generator().manual_seed(i) for i in range(3)])
    b = sample_ar_prior(loaded, z_t, tok, mask, generator=[torch.Generator().manual_seed(i) for i in range(3)])
    assert torch.equal(a.codes, b.codes) and torch.equal(a.z_i, b.z_i)


def _edit_config(folder, fn):
    path = folder / "config.json"
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


def test_strict_loading_names_the_problem(tmp_path):
    folder = save_pretrained(diffusion_prior(), tmp_path / "p")
    weights = folder / "model.safetensors"
    state = load_file(str(weights))

    del state["norm.std"]  # missing normalization statistics
    save_file(state, str(weights))
    with pytest.raises(CheckpointError, match=r"missing tensor\(s\) norm\.std"):
        from_pretrained(folder)

    state["norm.std"] = torch.ones(16)
    state["extra.weight"] = torch.ones(1)
    save_file(state, str(weights))
    with pytest.raises(CheckpointError, match=r"unexpected tensor\(s\) extra\.weight"):
        from_pretrained(folder)

    del state["extra.weight"]
    state["out.bias"] = torch.zeros(17)
    save_file(state, str(weights))
    with pytest.raises(CheckpointError, match=r"out\.bias: file \(17,\) vs model \(16,\)"):
        from_pretrained(folder)

    _edit_config(folder, lambda m: m.update(format_version=99))
    with pytest.raises(CheckpointError, match="unknown format_version 99"):
        from_pretrained(folder)
    _edit_config(folder, lambda m: m.update(format_version=1, kind="vae"))
    with pytest.raises(CheckpointError, match="unknown prior kind 'vae'"):
        from_pretrained(folder)
    _edit_config(folder, lambda m: (m.update(kind="diffusion"), m["config"].update(widht=3)))
    with pytest.raises(CheckpointError, match=r"unknown key\(s\) widht"):
        from_pretrained(folder)
    _edit_config(folder, lambda m: (m["config"].pop("widht"), m["config"].update(heads=5)))
    with pytest.raises(CheckpointError, match="divisible by heads 5"):
        from_pretrained(folder)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        from_pretrained(tmp_path / "empty")
