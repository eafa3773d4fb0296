"""The decoder-conditioning probe: distances between binding twins through the decoder's z_i projections."""

import dataclasses

import pytest
import torch

from unclip.eval.conditioning_probe import conditioning_paths, separation
from unclip.models.decoder import Decoder
from unclip.models.presets import decoder_preset


def _pairs(seed=0, n=64, dim=8):
    g = torch.Generator().manual_seed(seed)
    z_1, z_2 = (
        torch.randn(n, dim, generator=g, dtype=torch.float64),
        torch.randn(n, dim, generator=g, dtype=torch.float64),
    )
    d = torch.zeros(dim, dtype=torch.float64)
    d[0] = 0.3  # the twins differ along one axis only
    return z_1, z_1 + d, z_1, z_2


def test_separation_is_the_ratio_of_mean_distances():
    z_a, z_b, z_1, z_2 = _pairs()
    expected = 0.3 / (z_1 - z_2).norm(dim=1).mean().item()
    assert separation(lambda z: z, z_a, z_b, z_1, z_2) == pytest.approx(expected, rel=1e-12)
    assert separation(lambda z: 5 * z, z_a, z_b, z_1, z_2) == pytest.approx(expected, rel=1e-12)  # scale-free


def test_a_map_that_drops_the_twins_direction_separates_them_not_at_all_and_one_that_stretches_it_more():
    z_a, z_b, z_1, z_2 = _pairs()
    drop = torch.eye(8, dtype=torch.float64)
    drop[0, 0] = 0.0
    stretch = torch.eye(8, dtype=torch.float64)
    stretch[0, 0] = 10.0
    plain = separation(lambda z: z, z_a, z_b, z_1, z_2)
    assert separation(lambda z: z @ drop, z_a, z_b, z_1, z_2) == 0.0
    assert separation(lambda z: z @ stretch, z_a, z_b, z_1, z_2) > 3 * plain
    with pytest.raises(ValueError, match="same shape"):
        separation(lambda z: z, z_a, z_b[:3], z_1, z_2)


def test_a_function_preserving_whitening_leaves_the_decoder_s_paths_unchanged():
    torch.manual_seed(0)
    cfg = dataclasses.replace(decoder_preset("tiny", clip_dim=8, text_dim=8, resolution=16), z_whitening=True)
    decoder = Decoder(cfg).double()
    z_a, z_b, z_1, z_2 = _pairs()
    before = {k: separation(f, z_a, z_b, z_1, z_2) for k, f in conditioning_paths(decoder).items()}
    assert set(before) == {"z_i", "whitened_z_i", "timestep_embedding", "context_tokens"}
    assert before["whitened_z_i"] == pytest.approx(before["z_i"])  # not fitted yet: the identity
    # The twins differ along axis 0, the data's loudest: whitening shrinks their separation relative to random pairs.
    decoder.fit_z_whitening(torch.cat([z_1, z_2]) * torch.logspace(0, -2, 8, dtype=torch.float64), True)
    after = {k: separation(f, z_a, z_b, z_1, z_2) for k, f in conditioning_paths(decoder).items()}
    assert after["whitened_z_i"] < 0.5 * before["whitened_z_i"]
    del before["whitened_z_i"], after["whitened_z_i"]
    assert after == pytest.approx(before, rel=1e-9)
