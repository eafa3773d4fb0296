"""Embedding guidance through a noise-aware CLIP tower (``decoder_embedding_guidance_gradient="noised"``): it
pulls x̂0 toward the decoder's own z_i as the tower reads x_t, persists with the model folder, and is refused
clearly where the folder has no tower or one for another decoder."""

import dataclasses

import pytest
import torch
from tiny_stack import tiny_pipeline

from unclip.cli.main import main
from unclip.clip.noised import from_clip
from unclip.pipeline import UnCLIPPipeline


def _with_tower(pipe: UnCLIPPipeline) -> UnCLIPPipeline:
    torch.manual_seed(1)
    tower = from_clip(pipe.clip, pipe.decoder.config.resolution)
    with torch.no_grad():
        tower.time[2].weight.normal_(std=0.05)  # a tower whose reading depends on t, as a trained one does
    return UnCLIPPipeline(pipe.clip, pipe.prior, pipe.decoder, pipe.upsamplers, pipe.settings, tower.eval())


def test_guided_estimate_moves_toward_its_own_z_i_as_the_tower_reads_x_t():
    pipe = _with_tower(tiny_pipeline(upsampler=False))
    g = torch.Generator().manual_seed(0)
    res = pipe.decoder.config.resolution
    z = torch.nn.functional.normalize(torch.randn(3, pipe.clip.embed_dim, generator=g), dim=-1)
    x, t = torch.randn(3, 3, res, res, generator=g), torch.full((3,), 300)
    plain, _ = pipe.decoder_denoiser(z)
    noised = {"decoder_embedding_guidance": 50.0, "decoder_embedding_guidance_gradient": "noised"}
    s = dataclasses.replace(pipe.settings, **noised)
    guided, schedule = pipe.decoder_denoiser(z, s=s)
    with torch.no_grad():
        before, after = plain(x, t), guided(x, t)
        # The sampler's next x_t moves along the x̂0 change; read at the same t, the tower now finds it nearer z_i.
        ab = schedule.alpha_bar[t].view(-1, 1, 1, 1).float()
        moved = x + ab.sqrt() * (after.x0 - before.x0)
        cos = lambda v, target: torch.nn.functional.cosine_similarity(pipe.noised_clip(v, t), target, dim=-1)  # noqa: E731
        gain_own = cos(moved, z) - cos(x, z)
        gain_other = cos(moved, z.roll(1, 0)) - cos(x, z.roll(1, 0))
    assert not torch.allclose(before.x0, after.x0)
    assert bool((gain_own > 0).all()) and bool((gain_own > gain_other).all())
    assert after.x0.abs().max() <= 1.0  # clamped again after the move


def test_without_a_tower_the_setting_is_refused_with_how_to_get_one():
    pipe = tiny_pipeline(upsampler=False)
    z = torch.nn.functional.normalize(torch.randn(1, pipe.clip.embed_dim), dim=-1)
    s = dataclasses.replace(pipe.settings, decoder_embedding_guidance=1.0, decoder_embedding_guidance_gradient="noised")
    with pytest.raises(ValueError, match="unclip train noised_clip"):
        pipe.decoder_denoiser(z, s=s)


def test_a_tower_for_another_resolution_is_refused():
    pipe = tiny_pipeline(upsampler=False)
    with pytest.raises(ValueError, match="reads 32 px x_t"):
        UnCLIPPipeline(pipe.clip, pipe.prior, pipe.decoder, [], pipe.settings, from_clip(pipe.clip, 32))


def test_the_tower_persists_with_the_folder_and_assemble_adds_it(tmp_path):
    pipe = _with_tower(tiny_pipeline(upsampler=False))
    pipe.save_pretrained(tmp_path / "model")
    back = UnCLIPPipeline.from_pretrained(tmp_path / "model")
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([5, 600])
    with torch.no_grad():
        torch.testing.assert_close(back.noised_clip(x, t), pipe.noised_clip(x, t))
    plain = tiny_pipeline(upsampler=False)
    plain.save_pretrained(tmp_path / "plain")
    assert UnCLIPPipeline.from_pretrained(tmp_path / "plain").noised_clip is None
    parts = [f"--{p}={tmp_path / 'plain' / p}" for p in ("clip", "prior", "decoder")]
    assert main(["assemble", *parts, f"--noised-clip={tmp_path / 'model' / 'noised_clip'}",
                 "--out", str(tmp_path / "assembled")]) == 0  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(UnCLIPPipeline.from_pretrained(tmp_path / "assembled").noised_clip(x, t),
                                   pipe.noised_clip(x, t))  # fmt: skip


def test_assemble_from_a_pipeline_folder_keeps_its_parts_and_settings(tmp_path, capsys):
    pipe = _with_tower(tiny_pipeline(upsampler=True))
    pipe.settings = dataclasses.replace(pipe.settings, decoder_steps=9, prior_guidance=2.5)
    pipe.save_pretrained(tmp_path / "model")
    tiny_pipeline(upsampler=False).save_pretrained(tmp_path / "plain")
    out = tmp_path / "plus"
    tower = str(tmp_path / "model" / "noised_clip")
    assert main(["assemble", "--from", str(tmp_path / "plain"), "--noised-clip", tower,
                 "--set", "decoder_steps=7", "--out", str(out)]) == 0  # fmt: skip
    plus, plain = UnCLIPPipeline.from_pretrained(out), UnCLIPPipeline.from_pretrained(tmp_path / "plain")
    assert plus.settings == dataclasses.replace(plain.settings, decoder_steps=7)
    assert plus.noised_clip is not None and plus.upsamplers == [] == plain.upsamplers
    for a, b in zip(plus.decoder.state_dict().values(), plain.decoder.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # parts given beside --from replace its own; its settings stay unless --set
    assert main(["assemble", "--from", str(tmp_path / "model"), "--decoder", str(tmp_path / "plain" / "decoder"),
                 "--out", str(tmp_path / "swapped")]) == 0  # fmt: skip
    swapped = UnCLIPPipeline.from_pretrained(tmp_path / "swapped")
    assert swapped.settings.decoder_steps == 9 and len(swapped.upsamplers) == 1 and swapped.noised_clip is not None
    assert main(["assemble", "--clip", str(tmp_path / "plain" / "clip"), "--out", str(tmp_path / "none")]) == 2
    assert "assemble needs --prior, --decoder" in capsys.readouterr().err
