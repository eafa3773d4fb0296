"""PCA whitening of the decoder's z_i (unclip.models.whitening): the maths, and that folding it keeps the function."""

import dataclasses

import pytest
import torch
from torch import nn

from unclip.models.decoder import Decoder
from unclip.models.presets import decoder_preset
from unclip.models.whitening import fold_into_linear, pca_whitening, unfold_from_linear


def _embeddings(n=2000, dim=16, seed=0):
    """Correlated embeddings with variances spread over six decades and a non-zero mean."""
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    scales = torch.logspace(0, -3, dim, dtype=torch.float64)
    return (torch.randn(n, dim, generator=g, dtype=torch.float64) * scales) @ basis.T + 0.5


def test_whitened_embeddings_have_unit_variance_and_the_floor_caps_the_gain():
    z = _embeddings()
    mean, matrix = pca_whitening(z, floor=1e-9)
    w = (z - mean.double()) @ matrix.double()
    cov = torch.cov(w.T)
    assert torch.allclose(cov, torch.eye(16, dtype=torch.float64), atol=2e-3)
    # With a floor, direction k gets variance λ_k / (λ_k + floor·λ_max): about 1 for the loud, far less for the faint.
    floor = 1e-3
    mean, matrix = pca_whitening(z, floor=floor)
    variances = torch.cov(((z - mean.double()) @ matrix.double()).T).diagonal()
    sample = torch.linalg.eigvalsh(torch.cov(z.T)).flip(0)
    assert torch.allclose(variances, sample / (sample + floor * sample[0]), rtol=1e-3, atol=1e-6)
    assert variances[0] > 0.99 and variances[-1] < 0.002  # the last direction: λ = 1e-6 against a floor of 1e-3


def test_fold_and_unfold_are_inverse_and_keep_a_linear_layer_s_output():
    z = _embeddings()
    mean, matrix = pca_whitening(z, floor=1e-3)
    torch.manual_seed(0)
    layer = nn.Linear(16, 5).double()
    before = layer(z[:10])
    weight, bias = layer.weight.clone(), layer.bias.clone()
    fold_into_linear(layer, mean, matrix)
    assert not torch.allclose(layer.weight, weight)
    w = (z[:10] - mean.double()) @ matrix.double()
    assert torch.allclose(layer(w), before, atol=1e-9)
    unfold_from_linear(layer, mean, matrix)
    assert torch.allclose(layer.weight, weight, atol=1e-10) and torch.allclose(layer.bias, bias, atol=1e-10)
    with pytest.raises(ValueError, match="bias"):
        fold_into_linear(nn.Linear(16, 5, bias=False), mean, matrix)


@pytest.mark.parametrize(
    ("z", "floor", "match"),
    [(torch.ones(10, 4), 1e-3, "all equal"), (torch.randn(1, 4), 1e-3, "at least 2"),
     (torch.randn(10, 4), 0.0, "floor must be > 0"), (torch.full((10, 4), float("nan")), 1e-3, "NaN")],
)  # fmt: skip
def test_whitening_refuses_what_it_cannot_fit(z, floor, match):
    with pytest.raises(ValueError, match=match):
        pca_whitening(z, floor)


def _decoder(whitening=True):
    torch.manual_seed(0)
    cfg = dataclasses.replace(decoder_preset("tiny", clip_dim=16, text_dim=8, resolution=16), z_whitening=whitening)
    decoder = Decoder(cfg).double().eval()
    with torch.no_grad():  # the output layer starts at zero: give every weight a value so outputs differ
        for p in decoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return decoder


def _inputs(z):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 16, 16, generator=g, dtype=torch.float64)
    text = torch.randn(4, 3, 8, generator=g, dtype=torch.float64)
    return {"x": x, "t": torch.tensor([3, 300, 600, 990]), "z_i": z[:4], "text": text,
            "drop_z_i": torch.tensor([False, True, False, False])}  # fmt: skip


def test_refitting_with_preserve_function_keeps_the_decoder_s_output_and_whitens_its_input():
    z = _embeddings()
    decoder = _decoder()
    inputs = _inputs(z)
    before = decoder(**inputs)
    decoder.fit_z_whitening(z, preserve_function=True)  # from the identity (raw z_i) ...
    assert torch.allclose(decoder(**inputs), before, atol=1e-9)
    whitened = (z - decoder.z_mean) @ decoder.z_whiten
    assert torch.cov(whitened.T).diagonal()[0] == pytest.approx(1.0, abs=0.01)
    decoder.fit_z_whitening(2 * z[:500] - 1, preserve_function=True)  # ... and from one whitening to another
    assert torch.allclose(decoder(**inputs), before, atol=1e-9)
    decoder.fit_z_whitening(z)  # without it, the projections now see other numbers and the output changes
    assert (decoder(**inputs) - before).abs().max() > 1e-3


def test_the_null_embedding_is_whitened_like_an_embedding():
    # A dropped z_i is replaced by the null before the whitening, so refitting keeps the unconditional branch too.
    z = _embeddings()
    decoder = _decoder()
    inputs = dict(_inputs(z), drop_z_i=torch.ones(4, dtype=torch.bool))
    before = decoder(**inputs)
    decoder.fit_z_whitening(z, preserve_function=True)
    assert torch.allclose(decoder(**inputs), before, atol=1e-9)


def test_whitening_is_refused_on_a_decoder_built_without_it_and_for_embeddings_of_another_size():
    z = _embeddings()
    with pytest.raises(ValueError, match="z_whitening=true"):
        _decoder(whitening=False).fit_z_whitening(z)
    with pytest.raises(ValueError, match=r"shape \(rows, 16\)"):
        _decoder().fit_z_whitening(z[:, :8])
    with pytest.raises(ValueError, match="z_whitening_floor"):
        dataclasses.replace(decoder_preset("tiny", clip_dim=16, text_dim=8), z_whitening=True, z_whitening_floor=0)


def test_a_whitened_decoder_folder_round_trips(tmp_path):
    from unclip.models.checkpoint import from_pretrained, save_pretrained

    z = _embeddings()
    decoder = _decoder().float()
    decoder.fit_z_whitening(z.float(), preserve_function=True)
    save_pretrained(decoder, tmp_path / "dec", half=True)
    loaded = from_pretrained(tmp_path / "dec")
    assert loaded.config.z_whitening
    assert torch.equal(loaded.z_whiten, decoder.z_whiten)  # buffers keep float32 in a half folder
    inputs = {k: (v.float() if v.is_floating_point() else v) for k, v in _inputs(z).items()}
    assert torch.allclose(loaded(**inputs), decoder(**inputs), atol=2e-2)
