"""The decoder's embedding-consistency term: its distances, its weighting, its gradient, and the stage option."""

import json

import pytest
import torch
import torch.nn.functional as F

from unclip.cli.main import main
from unclip.models.whitening import pca_whitening
from unclip.train.embedding_loss import embedding_consistency, embedding_distance


class _LinearClip(torch.nn.Module):
    """encode_image = normalize(flatten(x) @ P): a differentiable stand-in whose embeddings are known."""

    def __init__(self, pixels: int, dim: int) -> None:
        super().__init__()
        self.proj = torch.randn(pixels, dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        self.calls = 0

    def encode_image(self, x):
        self.calls += 1
        return F.normalize(x.flatten(1) @ self.proj, dim=-1)


def test_cosine_distance_is_one_minus_cos():
    e = torch.eye(3, dtype=torch.float64)
    z = torch.stack([e[0], e[0], e[0]])
    z_hat = torch.stack([e[0], e[1], -e[0]])
    assert torch.allclose(embedding_distance(z_hat, z, "cosine"), torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64))


def test_whitened_distance_is_one_between_random_draws_of_whitened_data():
    # Data of very unequal spread per direction: raw, a difference along the faint directions is nearly free;
    # whitened, every direction counts alike and two independent draws are 1 apart on average.
    g = torch.Generator().manual_seed(0)
    scales = torch.logspace(0, -3, 16, dtype=torch.float64)
    basis = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))[0]
    z = (torch.randn(20000, 16, generator=g, dtype=torch.float64) * scales) @ basis.T
    _, m = pca_whitening(z, floor=1e-9)
    a, b = z[:10000], z[10000:]
    assert embedding_distance(a, b, "whitened", m.double()).mean().item() == pytest.approx(1.0, rel=0.03)
    faint = basis[:, -1] * 1e-3  # a step along the faintest direction, of its own spread
    loud = basis[:, 0] * 1e-3  # the same length along the loudest
    d_faint = embedding_distance(z[:1] + faint, z[:1], "whitened", m.double())
    d_loud = embedding_distance(z[:1] + loud, z[:1], "whitened", m.double())
    assert d_faint.item() == pytest.approx(1.0 / 32, rel=0.05)  # one unit-variance direction of 16, halved
    assert d_faint.item() > 1e5 * d_loud.item()
    with pytest.raises(ValueError, match="whitening matrix"):
        embedding_distance(a, b, "whitened")
    with pytest.raises(ValueError, match="unknown embedding distance"):
        embedding_distance(a, b, "l1")


def test_consistency_term_is_alpha_bar_weighted_zero_where_z_i_dropped_and_differentiable():
    torch.manual_seed(0)
    clip = _LinearClip(3 * 4 * 4, 8)
    x0_hat = (0.5 * torch.randn(4, 3, 4, 4, dtype=torch.float64)).requires_grad_(True)
    z_i = F.normalize(torch.randn(4, 8, dtype=torch.float64), dim=-1)
    ab = torch.tensor([0.9, 0.5, 0.1, 0.7], dtype=torch.float64)
    keep = torch.tensor([True, False, True, True])
    term = embedding_consistency(clip, x0_hat, z_i, ab, keep)
    want = ab * (1 - F.cosine_similarity(clip.encode_image(x0_hat.clamp(-1, 1)), z_i, dim=-1)) * keep
    assert torch.allclose(term, want)
    term.sum().backward()
    assert x0_hat.grad[1].abs().max() == 0  # a dropped row gets no gradient
    assert all(x0_hat.grad[i].abs().max() > 0 for i in (0, 2, 3))
    # Other powers of ᾱ_t: 0 weights every step alike, 2 squares the weight.
    dist = want / ab
    assert torch.allclose(embedding_consistency(clip, x0_hat, z_i, ab, keep, signal_power=0.0), dist)
    assert torch.allclose(embedding_consistency(clip, x0_hat, z_i, ab, keep, signal_power=2.0), dist * ab**2)
    # All dropped: zeros, and the CLIP is not run at all.
    calls = clip.calls
    none = embedding_consistency(clip, x0_hat, z_i, ab, torch.zeros(4, dtype=torch.bool))
    assert clip.calls == calls and torch.equal(none, torch.zeros(4, dtype=torch.float64))


def test_the_term_trains_a_decoder_toward_the_embedding_it_was_given(tiny_clip):
    """Descending on the term alone moves the decoder's x̂0 toward images the CLIP embeds as z_i."""
    from unclip.clip import load_clip
    from unclip.diffusion import DiffusionLoss, NoiseSchedule, Parameterization
    from unclip.models.decoder import Decoder
    from unclip.train.decoder_stage import DecoderStage

    torch.manual_seed(0)
    clip = load_clip(tiny_clip).eval().requires_grad_(False)
    dc = DecoderStage().presets()["tiny"].model.decoder
    decoder = Decoder(dc)
    x0 = torch.rand(4, 3, dc.resolution, dc.resolution) * 2 - 1
    z_i = clip.encode_image(torch.rand(4, 3, 32, 32) * 2 - 1)  # embeddings of other images: a real gap to close
    text = clip.encode_text(["a red circle"] * 4)
    cond = {"z_i": z_i, "text": text.token_states, "text_mask": text.mask}
    loss_fn = DiffusionLoss(NoiseSchedule.named(dc.schedule), Parameterization("eps", dc.learned_variance))
    t, noise = torch.full((4,), 100), torch.randn_like(x0)
    ab, keep = loss_fn.schedule.alpha_bar[t], torch.ones(4, dtype=torch.bool)
    opt = torch.optim.Adam(decoder.parameters(), lr=3e-3)
    history = []
    for _ in range(25):
        out = loss_fn(decoder, x0, cond, t=t, noise=noise)
        term = embedding_consistency(clip, out.x0_hat, z_i, ab, keep).mean()
        history.append(float(term.detach()))
        opt.zero_grad()
        term.backward()
        opt.step()
    assert history[-1] < 0.5 * history[0]


def _train(out, clip, *args):
    return main(["train", "decoder", "--preset", "tiny", "--data", "shapes", "--out", str(out), "--no-progress",
                 "--steps", "1", "--batch-size", "4", "--set", f"model.clip={clip}", "--set", "train.log_every=1",
                 "--set", "train.checkpoint_every=1", *args])  # fmt: skip


def _first_row(run):
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[0])


@pytest.mark.parametrize("metric", ["cosine", "whitened"])
def test_the_stage_adds_the_weighted_term_and_leaves_the_rest_alone(tmp_path, tiny_clip, metric):
    extra = []
    if metric == "whitened":
        emb = tmp_path / "emb"
        assert main(["embed", "--model", str(tiny_clip), "--data", "shapes", "--n", "64", "--out", str(emb)]) == 0
        extra = ["--set", f"model.whitening_embeddings={emb}"]
    assert _train(tmp_path / "plain", tiny_clip) == 0
    weight = ["--set", "model.embedding_loss_weight=2.5", "--set", f"model.embedding_loss_metric={metric}"]
    assert _train(tmp_path / "term", tiny_clip, *weight, *extra) == 0
    plain, term = _first_row(tmp_path / "plain"), _first_row(tmp_path / "term")
    assert "train/embedding" not in plain and term["train/embedding"] > 0
    # Same seed, batch, noise and start: the diffusion terms are equal and the loss grows by exactly w·term.
    assert term["train/mse"] == pytest.approx(plain["train/mse"], abs=1e-7)
    assert term["loss"] == pytest.approx(plain["loss"] + 2.5 * term["train/embedding"], rel=1e-5)


def test_bad_embedding_loss_settings_are_refused_before_training(tmp_path, tiny_clip, capsys):
    code = _train(tmp_path / "a", tiny_clip, "--set", "model.embedding_loss_metric=l2",
                  "--set", "model.embedding_loss_weight=1")  # fmt: skip
    assert code == 2 and "unknown embedding_loss_metric" in capsys.readouterr().err
    code = _train(tmp_path / "b", tiny_clip, "--set", "model.embedding_loss_weight=-1")
    assert code == 2 and "embedding_loss_weight must be >= 0" in capsys.readouterr().err
    code = _train(tmp_path / "b2", tiny_clip, "--set", "model.embedding_loss_signal_power=-0.5")
    assert code == 2 and "embedding_loss_signal_power must be >= 0" in capsys.readouterr().err
    code = _train(tmp_path / "c", tiny_clip, "--set", "model.embedding_loss_weight=1",
                  "--set", "model.embedding_loss_metric=whitened")  # fmt: skip
    assert code == 2 and "model.whitening_embeddings=EMB_DIR" in capsys.readouterr().err
    assert not any((tmp_path / r / "checkpoints").exists() for r in ("a", "b", "b2", "c"))
