"""Karlo-layout (diffusers) unCLIP folders through UnCLIPPipeline, against diffusers' own pipelines.

The folders are tiny and random (diffusers_unclip_folder.py). With Karlo's settings our pipeline must give
diffusers' image for the same seed: that pins every convention the adapters encode (unnormalized embeddings, the
empty prompt as the unconditional caption, z_t in the decoder's timestep embedding, text_proj's null z_i,
the ±5 clip of the prior, the super-res pair and its bicubic condition).
"""

import dataclasses
import json

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from diffusers_unclip_folder import exact_schedules, make_folder, make_variation_folder

from unclip.diffusion import generators_from_seeds
from unclip.model_folder import CheckpointError
from unclip.pipeline import UnCLIPPipeline

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


def _saved(tmp_path_factory, name, build):
    folder = tmp_path_factory.mktemp(name)
    ref = build(folder)
    ref.set_progress_bar_config(disable=True)
    exact_schedules(ref)
    return folder, ref


@pytest.fixture(scope="module")
def karlo(tmp_path_factory):
    return _saved(tmp_path_factory, "karlo", make_folder)


@pytest.fixture(scope="module")
def karlo_variations(tmp_path_factory):
    return _saved(tmp_path_factory, "karlo_variations", make_variation_folder)


def _unit(images: torch.Tensor) -> torch.Tensor:
    return ((images.float() + 1) / 2).clamp(0, 1)


def _reference(ref, *args, **kwargs) -> torch.Tensor:
    """diffusers' images (NHWC numpy in [0, 1]) as (N, 3, H, W)."""
    return torch.from_numpy(ref(*args, output_type="np", **kwargs).images).permute(0, 3, 1, 2)


def _stages(ref, prompt, seed):
    """diffusers' z_i, decoder image (as the super-resolution condition sees it) and final image for one prompt."""
    seen = {}
    post, first = ref.prior.post_process_latents, ref.super_res_first.forward

    def keep_z(x):
        return seen.setdefault("z_i", post(x))

    def keep_condition(sample, timestep, **kw):
        seen.setdefault("condition", sample[:, 3:].clone())
        return first(sample, timestep, **kw)

    ref.prior.post_process_latents, ref.super_res_first.forward = keep_z, keep_condition
    try:
        final = _reference(ref, prompt, generator=torch.Generator().manual_seed(seed))
    finally:
        ref.prior.post_process_latents, ref.super_res_first.forward = post, first
    return seen["z_i"], seen["condition"], final


@pytest.mark.parametrize(("prompt", "seed"), [("a red circle", 3), ("blue", 0), ("", 1)])
def test_text_to_image_equals_diffusers_unclip_pipeline(karlo, prompt, seed):
    import torch.nn.functional as F

    folder, ref = karlo
    pipe = UnCLIPPipeline.from_pretrained(folder)
    z_ref, condition_ref, final_ref = _stages(ref, prompt, seed)
    out = pipe([prompt], seed=seed)
    assert out.tensors.shape == (1, 3, 32, 32) and pipe.resolution == 32
    # The prior, its ±5 clip included (the test folder's estimates pass 5 for two of the prompts), to rounding.
    torch.testing.assert_close(out.z_i, z_ref, rtol=1e-5, atol=1e-5)
    assert pipe.prior.norm.normalize(out.z_i).abs().max().item() <= 5.0 + 1e-5
    gens = generators_from_seeds([seed])  # the call's generator: prior draws, then the decoder's
    with torch.no_grad():
        enc, empty = pipe.encode_text([prompt])
        low = pipe.decode(pipe.sample_z_i(enc, empty, gens, pipe.settings), gens, text=enc, drop_text=empty)
    condition = F.interpolate(low, size=(32, 32), mode="bicubic", align_corners=False, antialias=True)
    # The decoder through 25 guided steps, then the super-resolution pair through 7: float32 rounding grows with
    # every random network (measured: 7e-5 to 2e-4 after the decoder, up to 3e-3 at the end; a wrong convention
    # moves the decoder's image by 0.05 to 1).
    assert (condition - condition_ref).abs().max().item() < 1e-3
    assert (_unit(out.tensors) - final_ref).abs().max().item() < 1e-2


def test_separate_decoder_scales_drop_the_caption_to_the_empty_prompt(karlo):
    # Nested guidance on Karlo's decoder: [null z_i + "", z_i + "", z_i + caption] with scales (8, 3), each branch
    # computed here with diffusers' own text_proj and U-Net.
    import torch.nn.functional as F

    folder, ref = karlo
    pipe = UnCLIPPipeline.from_pretrained(folder)
    z_i = torch.randn(1, 32, generator=torch.Generator().manual_seed(1)) * 3
    x, t = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(2)), 600
    s = dataclasses.replace(pipe.settings, decoder_guidance_image=8.0, decoder_guidance_text=3.0)
    enc, empty = pipe.encode_text(["a red circle"])
    with torch.no_grad():
        den, schedule = pipe.decoder_denoiser(z_i, enc, empty, s)
        ours = den(x, torch.tensor([t])).x0
        pe, hs, mask = ref._encode_prompt(["a red circle"], "cpu", 1, True)  # rows: "", caption
        null = ref.text_proj.learned_classifier_free_guidance_embeddings[None]

        def eps(z, row):
            ctx, emb = ref.text_proj(
                image_embeddings=z,
                prompt_embeds=pe[row : row + 1],
                text_encoder_hidden_states=hs[row : row + 1],
                do_classifier_free_guidance=False,
            )
            m = F.pad(mask[row : row + 1], (4, 0), value=True)
            return ref.decoder(x, t, encoder_hidden_states=ctx, class_labels=emb, attention_mask=m).sample[:, :3]

        e0, e1, e2 = eps(null, 0), eps(z_i, 0), eps(z_i, 1)
    e = e0 + 8.0 * (e1 - e0) + 3.0 * (e2 - e1)
    ab = schedule.alpha_bar[t].item()
    expected = ((x - (1 - ab) ** 0.5 * e) / ab**0.5).clamp(-1, 1)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-4)


def test_super_resolution_runs_last_for_the_step_from_zero(karlo):
    folder, ref = karlo
    up = UnCLIPPipeline.from_pretrained(folder).upsamplers[0]
    x, low = torch.randn(2, 3, 32, 32), torch.rand(2, 3, 16, 16) * 2 - 1
    cond = torch.nn.functional.interpolate(low, size=(32, 32), mode="bicubic", align_corners=False, antialias=True)
    with torch.no_grad():
        for t, net in ((0, ref.super_res_last), (1, ref.super_res_first), (500, ref.super_res_first)):
            expected = net(torch.cat([x, cond], dim=1), torch.tensor(t)).sample
            torch.testing.assert_close(up(x, torch.full((2,), t), low), expected, rtol=0, atol=1e-5)


def test_a_batch_with_per_image_generators_equals_diffusers(karlo):
    # diffusers draws each row's noise from its own generator when given a list, as ours always does. Mixed batches
    # (an empty prompt among others) drift further in float32 (2e-3 measured for the empty row; one guided
    # decoder step agrees to 2e-5 on every row), still far below a wrong convention's 0.05 or more.
    folder, ref = karlo
    pipe = UnCLIPPipeline.from_pretrained(folder)
    prompts, seeds = ["a red circle", "", "blue"], [5, 6, 7]
    expected = _reference(ref, prompts, generator=[torch.Generator().manual_seed(s) for s in seeds])
    ours = pipe(prompts, seed=seeds)
    assert (_unit(ours.tensors) - expected).abs().amax(dim=(1, 2, 3)).max().item() < 1e-2  # see above


def test_karlo_settings_and_parts(karlo):
    folder, _ = karlo
    pipe = UnCLIPPipeline.from_pretrained(folder)
    s = pipe.settings
    assert (s.prior_sampler, s.prior_steps, s.prior_guidance, s.prior_best_of) == ("ddpm", 25, 4.0, 1)
    assert (s.decoder_steps, s.decoder_guidance_image, s.decoder_guidance_text, s.upsampler_steps) == (25, 8.0, 8.0, 7)
    assert pipe.prior.config.sample_clamp == 5.0 and pipe.decoder.config.learned_variance
    from unclip.eval.prior_eval import prior_kind

    assert prior_kind(pipe.prior) == "diffusion"  # unclip eval prior / all take it
    # Karlo's embeddings are not normalized: z_t is text_embeds itself.
    z_t = pipe.clip.encode_text(["a red circle"]).embedding
    assert abs(z_t.norm().item() - 1.0) > 1e-3


def test_best_of_two_and_ddim_run_on_karlo_weights(karlo):
    # What diffusers' pipeline lacks: §2.2's best-of-2 and other samplers, on the same weights.
    folder, _ = karlo
    pipe = UnCLIPPipeline.from_pretrained(folder)
    enc, _ = pipe.encode_text(["a red circle"])
    gens = generators_from_seeds([0])
    from unclip.prior import sample_diffusion_prior

    out = sample_diffusion_prior(pipe.prior, enc.embedding, enc.token_states, enc.mask, guidance_scale=4.0,
                                 steps=5, sampler="ddim", best_of=2, generator=gens)  # fmt: skip
    # Karlo's embeddings are not unit vectors: candidates are ranked by cosine with z_t, not by raw dot product.
    cosines = torch.nn.functional.cosine_similarity(out.candidates, enc.embedding[:, None], dim=2)
    assert out.z_i.shape == (1, 32) and torch.equal(out.z_i[0], out.candidates[0, int(cosines.argmax())])
    # The ±5 clip holds in the prior's standardized space.
    assert pipe.prior.norm.normalize(out.candidates).abs().max().item() <= 5.0 + 1e-4


def test_karlo_weights_inpaint_and_return_the_unmasked_pixels(karlo, karlo_variations):
    # RePaint needs no retraining: the text-to-image folder edits with a caption, the variation folder repairs.
    from unclip.pipeline.inpainting import inpaint_batch

    for folder, caption in ((karlo[0], ["a red circle"]), (karlo_variations[0], None)):
        pipe = UnCLIPPipeline.from_pretrained(folder)
        pipe.settings = dataclasses.replace(pipe.settings, decoder_steps=4, upsampler_steps=3, prior_steps=3,
                                            inpaint_resample=2, inpaint_jump=2)  # fmt: skip
        res = pipe.resolution
        image = torch.rand(1, 3, res, res, generator=torch.Generator().manual_seed(1)) * 2 - 1
        fill = torch.zeros(1, 1, res, res)
        fill[..., : res // 2, : res // 2] = 1
        out = inpaint_batch(pipe, image, fill, caption, [0])
        assert torch.equal(out[..., res // 2 :, :], image[..., res // 2 :, :])
        assert (out - image)[..., : res // 2, : res // 2].abs().mean() > 0.05


def test_variation_folder_decodes_embeddings_like_diffusers(karlo_variations):
    folder, ref = karlo_variations
    pipe = UnCLIPPipeline.from_pretrained(folder)
    assert pipe.prior is None
    image = torch.rand(1, 3, 30, 30, generator=torch.Generator().manual_seed(4)) * 2 - 1
    z_i = pipe.clip.encode_image(image)
    # The image tower itself, against transformers with the folder's pixel statistics.
    mean = torch.tensor(ref.feature_extractor.image_mean)[:, None, None]
    std = torch.tensor(ref.feature_extractor.image_std)[:, None, None]
    with torch.no_grad():
        expected_z = ref.image_encoder(pixel_values=((image + 1) / 2 - mean) / std).image_embeds
    torch.testing.assert_close(z_i, expected_z, rtol=0, atol=1e-5)
    expected = _reference(ref, image_embeddings=z_i, generator=torch.Generator().manual_seed(2))
    gens = generators_from_seeds([2])
    with torch.no_grad():
        ours = pipe.upsample(pipe.decode(z_i, gens), gens)
    assert (_unit(ours) - expected).abs().max().item() < 1e-3


def test_variation_folder_refuses_to_sample_z_i_but_decodes_z_t(karlo_variations):
    folder, _ = karlo_variations
    pipe = UnCLIPPipeline.from_pretrained(folder)
    with pytest.raises(ValueError, match="no prior"):
        pipe(["a red circle"])
    out = pipe(["a red circle"], z_source="text", decoder_steps=2, upsampler_steps=2)
    torch.testing.assert_close(out.z_i, pipe.clip.encode_text(["a red circle"]).embedding)
    with pytest.raises(ValueError, match="own networks"):
        pipe.save_pretrained(folder / "copy")


def test_not_an_unclip_pipeline(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(CheckpointError, match="StableDiffusionPipeline"):
        UnCLIPPipeline.from_pretrained(tmp_path)


def test_text_to_image_folder_without_image_tower(tmp_path, karlo):
    # Karlo's own text-to-image folder has no image_encoder/: it generates, and says how to get the tower.
    from PIL import Image

    from unclip.pipeline.manipulations import variations

    folder, ref = karlo
    text_only = tmp_path / "text_only"
    text_only.mkdir()
    for item in folder.iterdir():
        if item.name != "image_encoder":
            (text_only / item.name).symlink_to(item)
    pipe = UnCLIPPipeline.from_pretrained(text_only)
    expected = _reference(ref, "a red circle", generator=torch.Generator().manual_seed(3))
    assert (_unit(pipe(["a red circle"], seed=3).tensors) - expected).abs().max().item() < 1e-3
    with pytest.raises(ValueError, match=r"no image_encoder/.*karlo-v1-alpha-image-variations"):
        variations(pipe, Image.new("RGB", (16, 16)), n=1)


def test_cli_generates_from_a_karlo_folder(karlo, tmp_path):
    from PIL import Image

    from unclip.cli.main import main

    folder, _ = karlo
    out = tmp_path / "gen"
    args = ["generate", "a red circle", "--n", "2", "--model", str(folder), "--out", str(out)]
    assert main([*args, "--set", "decoder_steps=3", "--set", "upsampler_steps=2"]) == 0
    assert Image.open(out / "image_001.png").size == (32, 32)
    side = json.loads((out / "image_001.json").read_text())
    assert side["settings"]["decoder_steps"] == 3 and side["settings"]["prior_sampler"] == "ddpm"


def test_cli_varies_with_a_karlo_variation_folder(karlo_variations, tmp_path):
    from PIL import Image

    from unclip.cli.main import main

    folder, _ = karlo_variations
    Image.new("RGB", (40, 30), (200, 30, 30)).save(tmp_path / "red.png")
    args = ["vary", str(tmp_path / "red.png"), "--n", "2", "--model", str(folder), "--out", str(tmp_path / "v")]
    assert main([*args, "--set", "inversion_steps=3", "--set", "upsampler_steps=2"]) == 0
    assert [Image.open(p).size for p in sorted((tmp_path / "v").glob("variation_*.png"))] == [(32, 32)] * 2
    assert main(["generate", "a red circle", "--model", str(folder), "--out", str(tmp_path / "g")]) == 2


def test_half_precision_folders_load_in_float32(tmp_path):
    import copy

    ref = make_folder(tmp_path)
    copy.deepcopy(ref.decoder).half().save_pretrained(str(tmp_path / "decoder"))  # as Karlo's fp16 variant stores it
    pipe = UnCLIPPipeline.from_pretrained(tmp_path)
    assert {p.dtype for p in pipe.decoder.parameters()} == {torch.float32}
    out = pipe(["a red circle"], decoder_steps=2, upsampler_steps=2, prior_steps=2)
    assert out.tensors.dtype == torch.float32 and bool(torch.isfinite(out.tensors).all())


def test_decoder_refuses_captions_without_their_z_t(karlo):
    from unclip.models.decoder import guided_denoiser

    folder, _ = karlo
    pipe = UnCLIPPipeline.from_pretrained(folder)
    enc = pipe.clip.encode_text(["a red circle"])
    den, _ = guided_denoiser(pipe.decoder, torch.randn(1, 32), enc.token_states, enc.mask, scales=(3.0, 3.0))
    with pytest.raises(ValueError, match="text_embedding"):
        den(torch.randn(1, 3, 16, 16), torch.tensor([500]))


def test_evaluations_on_karlo_folders(karlo_variations, tmp_path):
    # CLIP evaluations compare directions whatever the CLIP returns; a folder without a prior skips what needs one.
    from unclip.eval.clip_eval import _encode
    from unclip.eval.evaluate_all import evaluate_all

    folder, _ = karlo_variations
    pipe = UnCLIPPipeline.from_pretrained(folder)
    images, texts = torch.rand(3, 3, 30, 30) * 2 - 1, ["a red circle", "blue", "a red"]
    z_i, z_t = _encode(pipe.clip, images, texts, batch_size=2, desc="", progress=False)
    raw = pipe.clip.encode_text(texts).embedding
    torch.testing.assert_close(z_t, raw / raw.norm(dim=1, keepdim=True))
    torch.testing.assert_close(z_i.norm(dim=1), torch.ones(3))
    lines = []
    assert evaluate_all(pipe, folder, tmp_path, only=("prior", "compositional"), log=lines.append) == {}
    skipped = "skipped (the model has no prior: an image-variation folder)"
    assert lines == [f"prior: {skipped}", f"compositional: {skipped}"]
