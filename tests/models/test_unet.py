import pytest
import torch

from unclip.diffusion import DiffusionLoss, ModelDenoiser, NoiseSchedule, Parameterization, conditioned, guided
from unclip.models.decoder import Decoder, decoder_config, guidance_conditions, random_drops
from unclip.models.presets import DECODER_SHAPES, UPSAMPLER_SHAPES, decoder_preset, upsampler_preset
from unclip.models.unet import UNet, UNetConfig
from unclip.models.upsampler import Upsampler, upsampler_config

CLIP_DIM, TEXT_DIM, L = 24, 20, 7


def tiny_decoder(**kw):
    torch.manual_seed(0)
    cfg = decoder_config(clip_dim=CLIP_DIM, text_dim=TEXT_DIM, resolution=16, **{**DECODER_SHAPES["tiny"], **kw})
    model = Decoder(cfg)
    # Zero-initialised output layers make a fresh network ignore its inputs; perturb every weight so the
    # conditioning tests can see what reaches the output.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def inputs(b=3, res=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, L, dtype=torch.bool)
    mask[:, 5:] = False
    return {
        "x": torch.randn(b, 3, res, res, generator=g),
        "t": torch.randint(0, 1000, (b,), generator=g),
        "z_i": torch.randn(b, CLIP_DIM, generator=g),
        "text": torch.randn(b, L, TEXT_DIM, generator=g),
        "text_mask": mask,
    }


@pytest.mark.parametrize("name", list(DECODER_SHAPES))
def test_every_decoder_preset_builds_with_consistent_shapes(name):
    cfg = decoder_preset(name, clip_dim=CLIP_DIM, text_dim=TEXT_DIM)
    assert cfg.unet.out_channels == 6 and cfg.unet.context_dim == cfg.context_dim
    if name == "tiny":  # the larger ones are too slow for a CPU forward in tests; their configs are checked
        d = Decoder(decoder_preset(name, clip_dim=CLIP_DIM, text_dim=TEXT_DIM, resolution=16))
        i = inputs()
        assert d(i["x"], i["t"], i["z_i"], i["text"], i["text_mask"]).shape == (3, 6, 16, 16)


@pytest.mark.parametrize("name", list(UPSAMPLER_SHAPES))
def test_every_upsampler_preset_builds(name):
    cfg = upsampler_preset(name, resolution=256)
    assert cfg.schedule == "cosine" and cfg.degradation == "blur" and cfg.low_resolution == 64
    assert upsampler_preset(name, resolution=1024).degradation == "bsr"
    if name == "tiny":
        up = Upsampler(upsampler_config(factor=4, resolution=32, **UPSAMPLER_SHAPES["tiny"]))
        out = up(torch.randn(2, 3, 32, 32), torch.tensor([1, 2]), torch.randn(2, 3, 8, 8))
        assert out.shape == (2, 3, 32, 32)


def test_dropped_z_i_uses_the_null_embedding_whatever_z_i_is():
    d, i = tiny_decoder(), inputs()
    drop = torch.tensor([True, False, True])
    a = d(i["x"], i["t"], i["z_i"], i["text"], i["text_mask"], drop_z_i=drop)
    b = d(i["x"], i["t"], torch.randn_like(i["z_i"]), i["text"], i["text_mask"], drop_z_i=drop)
    assert torch.allclose(a[drop], b[drop], atol=1e-6)
    assert not torch.allclose(a[~drop], b[~drop], atol=1e-3)


def test_dropped_caption_and_masked_tokens_do_not_reach_the_output():
    d, i = tiny_decoder(), inputs()
    other = torch.randn_like(i["text"])
    drop = torch.tensor([True, True, False])
    a = d(i["x"], i["t"], i["z_i"], i["text"], i["text_mask"], drop_text=drop)
    b = d(i["x"], i["t"], i["z_i"], other, i["text_mask"], drop_text=drop)
    assert torch.allclose(a[drop], b[drop], atol=1e-6)
    assert not torch.allclose(a[~drop], b[~drop], atol=1e-3)
    # Padding positions (mask False) are invisible: change only them.
    padded = i["text"].clone()
    padded[:, 5:] = 100.0
    c = d(i["x"], i["t"], i["z_i"], padded, i["text_mask"])
    assert torch.allclose(c, d(i["x"], i["t"], i["z_i"], i["text"], i["text_mask"]), atol=1e-5)


def test_guidance_with_both_scales_one_equals_the_fully_conditional_output():
    d, i = tiny_decoder(), inputs()
    sched = NoiseSchedule.named("cosine")
    den = ModelDenoiser(d, sched, Parameterization("eps", learned_variance=True))
    conds = guidance_conditions(i["z_i"], i["text"], i["text_mask"])
    full = conditioned(den, conds[2])(i["x"], i["t"])
    g = guided(den, conds, [1.0, 1.0])(i["x"], i["t"])
    assert torch.allclose(g.x0, full.x0, atol=1e-4) and torch.allclose(g.var_frac, full.var_frac, atol=1e-6)
    uncond = conditioned(den, conds[0])(i["x"], i["t"])
    assert torch.allclose(guided(den, conds, [0.0, 0.0])(i["x"], i["t"]).eps, uncond.eps, atol=1e-4)
    assert not torch.allclose(full.eps, uncond.eps, atol=1e-3)


def test_condition_dropout_rates():
    cfg = decoder_config(clip_dim=4, text_dim=4, **DECODER_SHAPES["tiny"])
    drops = random_drops(cfg, 200_000, torch.Generator().manual_seed(0))
    assert drops["drop_z_i"].float().mean().item() == pytest.approx(0.10, abs=0.003)
    assert drops["drop_text"].float().mean().item() == pytest.approx(0.50, abs=0.005)
    # Independent draws: both dropped about 5% of the time.
    both = (drops["drop_z_i"] & drops["drop_text"]).float().mean().item()
    assert both == pytest.approx(0.05, abs=0.003)


def test_tiny_decoder_overfits_one_batch():
    torch.manual_seed(0)
    cfg = decoder_config(clip_dim=CLIP_DIM, text_dim=TEXT_DIM, resolution=16, **DECODER_SHAPES["tiny"])
    d = Decoder(cfg)
    loss_fn = DiffusionLoss(NoiseSchedule.named("cosine"), Parameterization("eps", learned_variance=True))
    i = inputs(b=4)
    x0 = i["x"].clamp(-1, 1)
    cond = {k: i[k] for k in ("z_i", "text", "text_mask")}
    g = torch.Generator().manual_seed(0)
    t, noise = torch.tensor([100, 300, 500, 700]), torch.randn(x0.shape, generator=g)
    opt = torch.optim.Adam(d.parameters(), lr=3e-3)

    def loss():
        return loss_fn(d, x0, cond, t=t, noise=noise).mse.mean()

    first = loss().item()
    for _ in range(150):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < first / 10


def upsampler(norm):
    torch.manual_seed(0)
    up = Upsampler(upsampler_config(factor=2, resolution=64, norm=norm, **UPSAMPLER_SHAPES["tiny"]))
    with torch.no_grad():
        for p in up.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return up.eval().double()


def test_upsampler_on_a_crop_equals_the_full_image_away_from_borders():
    g = torch.Generator().manual_seed(3)
    # float64: in float32 the convolutions' accumulation order changes with the image size (~3e-5 apart).
    x = torch.randn(1, 3, 192, 192, generator=g, dtype=torch.float64)
    low = torch.randn(1, 3, 96, 96, generator=g, dtype=torch.float64)
    t = torch.tensor([400])
    # A crop aligned to the downsampling grid (offset a multiple of factor × 2^(levels-1)); the interior
    # farther from the crop's borders than the receptive-field radius (~35 px here) must match exactly.
    sl = (slice(None), slice(None), slice(48, 144), slice(48, 144))
    low_sl = (slice(None), slice(None), slice(24, 72), slice(24, 72))
    inner = (slice(None), slice(None), slice(40, 56), slice(40, 56))
    with torch.no_grad():
        local = upsampler("channel")
        full, crop = local(x, t, low)[sl], local(x[sl], t, low[low_sl])
        assert torch.allclose(full[inner], crop[inner], atol=1e-10)
        assert not torch.allclose(full, crop, atol=1e-3)  # the borders do differ: the check can fail
        # GroupNorm pools statistics over the whole image, so it breaks this property.
        grouped = upsampler("group")
        assert not torch.allclose(grouped(x, t, low)[sl][inner], grouped(x[sl], t, low[low_sl])[inner], atol=1e-3)


def test_bad_inputs_name_the_problem():
    d, i = tiny_decoder(), inputs()
    with pytest.raises(ValueError, match=rf"z_i must have shape \(3, {CLIP_DIM}\)"):
        d(i["x"], i["t"], torch.zeros(3, 512), i["text"])
    with pytest.raises(ValueError, match="text must have shape"):
        d(i["x"], i["t"], i["z_i"], torch.zeros(3, L, 5))
    with pytest.raises(ValueError, match="divisible by 2"):
        d(torch.zeros(3, 3, 15, 15), i["t"], i["z_i"], i["text"])
    up = upsampler("channel")
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\) for a ×2 upsampler"):
        up(torch.zeros(1, 3, 64, 64).double(), torch.tensor([1]), torch.zeros(1, 3, 16, 16).double())
    with pytest.raises(ValueError, match="inconsistent"):
        from dataclasses import replace

        cfg = decoder_config(clip_dim=4, text_dim=4, **DECODER_SHAPES["tiny"])
        replace(cfg, learned_variance=False)
    with pytest.raises(ValueError, match="attention_levels"):
        UNetConfig(channel_mult=(1, 2), attention_levels=(2,))
    with pytest.raises(ValueError, match="unknown decoder preset 'huge'"):
        decoder_preset("huge", clip_dim=4, text_dim=4)
    with pytest.raises(ValueError, match="head_channels"):
        UNet(UNetConfig(model_channels=24, channel_mult=(1,), attention_levels=(0,), head_channels=16))
