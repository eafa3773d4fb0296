import dataclasses
import math

import numpy as np
import pytest
import torch
from tiny_stack import analytic_pipeline, tiny_pipeline

from unclip.pipeline import UnCLIPPipeline, interpolate, invert, slerp, text_diff, to_pil, variations
from unclip.pipeline.manipulations import decode_latents
from unclip.pipeline.pipeline import from_pil


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def test_text_to_image_shapes_seeds_and_batch_independence(pipe):
    out = pipe(["a red circle", "two blue squares"], num_images=2, seed=10)
    assert out.tensors.shape == (4, 3, 32, 32) and len(out.images) == 4 and out.images[0].size == (32, 32)
    assert out.seeds == [10, 11, 12, 13] and out.prompts[1] == "a red circle"
    assert out.tensors.abs().max().item() <= 1.0
    again = pipe(["a red circle", "two blue squares"], num_images=2, seed=10)
    assert torch.equal(out.tensors, again.tensors)
    # Image 2 ("two blue squares", seed 12) alone equals its place in the batch: seeds, not batches, decide.
    alone = pipe("two blue squares", seed=[12])
    assert torch.allclose(alone.tensors[0], out.tensors[2], atol=1e-4)
    assert not torch.allclose(out.tensors[2], out.tensors[3], atol=1e-3)  # other seed, other image


def test_empty_prompt_is_the_unconditional_sample_and_bad_prompts_are_refused(pipe):
    out = pipe("", seed=1)
    assert out.tensors.shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="prompts must be strings"):
        pipe([3])
    with pytest.raises(ValueError, match="num_images must be a positive integer"):
        pipe("a star", num_images=0)
    with pytest.raises(ValueError, match="decoder_steps must be an integer from 1 to 1000"):
        pipe("a star", decoder_steps=0)
    with pytest.raises(ValueError, match="2 seeds for 1 images"):
        pipe("a star", seed=[1, 2])


def test_save_and_load_give_the_same_images(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "model")
    loaded = UnCLIPPipeline.from_pretrained(tmp_path / "model")
    assert loaded.settings == pipe.settings
    a, b = pipe("a green star", seed=3), loaded("a green star", seed=3)
    assert torch.allclose(a.tensors, b.tensors, atol=1e-5)
    with pytest.raises(FileNotFoundError, match=r"no pipeline\.json"):
        UnCLIPPipeline.from_pretrained(tmp_path)


def test_half_saving_halves_parameters_keeps_buffers_and_loads_into_float32(pipe, tmp_path):
    """`assemble --half`: float16 parameters (about half the bytes), full-precision buffers, and a loaded
    pipeline whose float32 weights are exactly the rounded originals."""
    from safetensors.torch import load_file

    pipe.save_pretrained(tmp_path / "full")
    pipe.save_pretrained(tmp_path / "half", half=True)
    for part, module in (("decoder", pipe.decoder), ("clip", pipe.clip), ("prior", pipe.prior)):
        full, half = (load_file(str(tmp_path / v / part / "model.safetensors")) for v in ("full", "half"))
        params = {n for n, _ in module.named_parameters()}
        assert all(half[n].dtype == torch.float16 for n in params)
        assert all(half[n].dtype == full[n].dtype for n in set(full) - params)  # buffers untouched
        size = [(tmp_path / v / part / "model.safetensors").stat().st_size for v in ("full", "half")]
        assert size[1] < 0.6 * size[0]
    loaded = UnCLIPPipeline.from_pretrained(tmp_path / "half")
    for name, p in loaded.decoder.named_parameters():
        assert p.dtype == torch.float32
        assert torch.equal(p, dict(pipe.decoder.named_parameters())[name].detach().half().float())
    with pytest.raises(ValueError, match="does not fit float16"):
        big = tiny_pipeline()
        with torch.no_grad():
            next(big.decoder.parameters()).fill_(1e6)
        big.save_pretrained(tmp_path / "big", half=True)
    assert not (tmp_path / "big" / "decoder").exists()  # nothing half-written


def test_slerp_endpoints_norms_and_midpoint():
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(5, 16, generator=g, dtype=torch.float64), dim=1)
    b = torch.nn.functional.normalize(torch.randn(5, 16, generator=g, dtype=torch.float64), dim=1)
    assert torch.allclose(slerp(a, b, 0.0), a) and torch.allclose(slerp(a, b, 1.0), b)
    mid = slerp(a, b, 0.5)
    assert torch.allclose(mid.norm(dim=1), torch.ones(5, dtype=torch.float64))
    angle = torch.arccos((a * b).sum(1))
    assert torch.allclose(torch.arccos((a * mid).sum(1)), angle / 2, atol=1e-9)
    assert torch.allclose(slerp(a, a.clone(), 0.3), a)  # parallel rows: no division by sin(0)
    assert torch.allclose(slerp(2 * a, 4 * b, 0.5).norm(dim=1), torch.full((5,), 3.0, dtype=torch.float64))
    x = torch.randn(2, 3, 4, 4, generator=g)  # image-shaped latents work row-wise too
    assert slerp(x, -x.flip(0), 0.25).shape == (2, 3, 4, 4)


def test_eta_zero_variation_reconstructs_its_input():
    # The decoder's eps is exact for Gaussian images (tiny_stack.AnalyticDecoder), as the issue allows.
    pipe = analytic_pipeline()
    image = pipe("a yellow heart", seed=5).tensors
    source = to_pil(image)[0]
    target = torch.from_numpy(np.asarray(source, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1
    errors = {}
    for steps in (8, 16, 32):
        pipe.settings.inversion_steps = steps
        errors[steps] = ((variations(pipe, source, n=1, eta=0.0)[0] - target).norm() / target.norm()).item()
    assert errors[8] > errors[16] > errors[32]  # plain inversion: first-order error, falls with the steps
    pipe.settings.inversion_steps, pipe.settings.inversion_refine = 16, 4
    refined = ((variations(pipe, source, n=1, eta=0.0)[0] - target).norm() / target.norm()).item()
    assert refined < 1e-3 and refined < errors[16] / 10, (refined, errors)  # float32 floor ~1e-4
    varied = variations(pipe, source, n=3, eta=1.0, seed=7)
    assert varied.shape == (3, 3, 16, 16)
    assert ((varied[0] - target).norm() / target.norm()).item() > 100 * refined  # eta > 0 really varies


def test_inversion_strength_sets_where_the_latent_sits():
    # Variations decode from the timestep the inversion stopped at, so eta = 0 reconstructs at any strength,
    # though the latents differ.
    pipe = analytic_pipeline()
    source = to_pil(pipe("a yellow heart", seed=5).tensors)[0]
    target = torch.from_numpy(np.asarray(source, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1
    pipe.settings.inversion_steps, pipe.settings.inversion_refine = 16, 4
    latents = {}
    for strength in (1.0, 0.5):
        pipe.settings.inversion_strength = strength
        rec = variations(pipe, source, n=1, eta=0.0)[0]
        assert ((rec - target).norm() / target.norm()).item() < 1e-3, strength
        latents[strength] = invert(pipe, [source])[1]
    assert ((latents[0.5] - latents[1.0]).norm() / latents[1.0].norm()).item() > 0.1
    z_i = pipe.clip.encode_image(from_pil([source], pipe.decoder.config.resolution))
    with torch.enable_grad():  # a direct call must not build the graph of every sampling step
        assert not decode_latents(pipe, z_i, latents[0.5], [0], 0.0).requires_grad
    with pytest.raises(ValueError, match="inversion_strength must be a number in"):
        dataclasses.replace(pipe.settings, inversion_strength=0.0)


def test_interpolation_and_text_diff_start_from_the_source():
    pipe = analytic_pipeline()
    pipe.settings.inversion_refine = 4
    a, b = (to_pil(pipe(p, seed=s).tensors)[0] for p, s in (("a red circle", 1), ("a blue square", 2)))
    path = interpolate(pipe, a, b, frames=4, latent="fixed")
    rec_a = variations(pipe, a, n=1, eta=0.0)
    assert path.shape == (4, 3, 16, 16) and torch.allclose(path[0], rec_a[0], atol=1e-4)
    assert path[-1].shape == path[0].shape  # a fixed x_T keeps a's layout; z_i alone moves toward b
    slerped = interpolate(pipe, a, b, frames=3, latent="slerp")
    rec_b = variations(pipe, b, n=1, eta=0.0)
    assert torch.allclose(slerped[-1], rec_b[0], atol=1e-4)  # both ends are the inverted images
    assert not torch.allclose(rec_a, rec_b, atol=1e-2)
    diff = text_diff(pipe, a, "a red circle", "a blue circle", frames=3, max_theta=0.5)
    assert diff.shape == (3, 3, 16, 16) and torch.allclose(diff[0], rec_a[0], atol=1e-4)
    with pytest.raises(ValueError, match="non-empty"):
        text_diff(pipe, a, "", "a blue circle")
    with pytest.raises(ValueError, match="'fixed' or 'slerp'"):
        interpolate(pipe, a, b, latent="linear")


def test_invert_accepts_files_of_any_size_and_mode_and_names_bad_ones(tmp_path):
    from PIL import Image

    pipe = tiny_pipeline(upsampler=False)
    Image.new("L", (40, 25), 128).save(tmp_path / "grey.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    z_i, x_T = invert(pipe, [tmp_path / "grey.png"])
    assert z_i.shape == (1, 32) and x_T.shape == (1, 3, 16, 16)
    assert math.isclose(z_i.norm().item(), 1.0, rel_tol=1e-4)  # CLIP embeddings are unit vectors
    with pytest.raises(ValueError, match=r"cannot read image .*bad\.png"):
        invert(pipe, [tmp_path / "bad.png"])


def test_invert_encodes_image_files_at_clips_size_and_tensors_as_given(tmp_path):
    # CLIP sees the image at its own input size (32 px here), the decoder's inversion at the decoder's (16 px):
    # a 16 px thumbnail would lose what a larger CLIP sees (Karlo: 224 against 64).
    from PIL import Image

    pipe = tiny_pipeline(upsampler=False)
    assert pipe.clip.image_size == 32 and pipe.decoder.config.resolution == 16
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    seen = []
    encode = pipe.clip.encode_image
    pipe.clip.encode_image = lambda x, **kw: seen.append(tuple(x.shape)) or encode(x, **kw)
    z_file, _ = invert(pipe, [tmp_path / "photo.png"])
    torch.testing.assert_close(z_file, encode(from_pil([tmp_path / "photo.png"], 32)))
    small = from_pil([tmp_path / "photo.png"], 16)
    z_tensor, _ = invert(pipe, small)
    assert seen == [(1, 3, 32, 32), (1, 3, 16, 16)]
    torch.testing.assert_close(z_tensor, encode(small))


def test_structured_variations_keep_the_sources_block_means_and_vary_the_rest():
    # ILVR (unclip.diffusion.ilvr) on the exact Gaussian decoder: with variation_structure 4 every variation's low-pass
    # part (linear, 4) is the source's, up to the inversion's float error; without it they wander.
    from unclip.diffusion.ilvr import lowpass

    pipe = analytic_pipeline()
    source = to_pil(pipe("a yellow heart", seed=5).tensors)[0]
    target = torch.from_numpy(np.asarray(source, dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1
    block = lowpass(4, "linear")  # the pipeline's low-pass
    free = variations(pipe, source, n=3, eta=1.0, seed=7)
    pipe.settings = dataclasses.replace(pipe.settings, variation_structure=4)
    kept = variations(pipe, source, n=3, eta=1.0, seed=7)
    assert (block(kept) - block(target)).abs().max().item() < 1e-4
    assert (block(free) - block(target)).abs().max().item() > 0.05
    assert ((kept - target).norm() / target.norm()).item() > 0.05  # the detail is redrawn, not copied
    assert not torch.allclose(kept[0], kept[1])
    pipe.settings = dataclasses.replace(pipe.settings, variation_structure=3)  # 16 px: 3 does not divide it
    with pytest.raises(
        ValueError, match=r"variation_structure 3 must divide the decoder's resolution 16 \(e.g. 2, 4, 8, 16\)"
    ):
        variations(pipe, source, n=1)
    for bad in (-1, 1, True, 2.5):
        with pytest.raises(ValueError, match=r"variation_structure must be 0 \(off\) or an integer from 2"):
            dataclasses.replace(pipe.settings, variation_structure=bad)


def test_best_variation_is_the_candidate_clip_finds_closest_to_the_source():
    from unclip.pipeline.manipulations import best_variations

    pipe = tiny_pipeline()
    z_i, x_T = invert(pipe, torch.rand(2, 3, 16, 16) * 2 - 1)
    pipe.settings = dataclasses.replace(pipe.settings, variation_best_of=1)
    assert torch.equal(best_variations(pipe, z_i, x_T, [4, 9], 1.0), decode_latents(pipe, z_i, x_T, [4, 9], 1.0))
    pipe.settings = dataclasses.replace(pipe.settings, variation_best_of=3)
    out = best_variations(pipe, z_i, x_T, [4, 9], 1.0)
    for row, seed in enumerate((4, 9)):  # candidate j of seed s has seed 3 s + j
        cands = decode_latents(pipe, z_i[row : row + 1].expand(3, -1), x_T[row : row + 1].expand(3, -1, -1, -1),
                               [3 * seed + j for j in range(3)], 1.0)  # fmt: skip
        score = torch.nn.functional.cosine_similarity(pipe.clip.encode_image(cands), z_i[row : row + 1])
        assert len(set(score.tolist())) == 3  # the candidates differ, so the choice means something
        assert torch.allclose(out[row], cands[int(score.argmax())], atol=1e-5)
