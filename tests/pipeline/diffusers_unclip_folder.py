"""A tiny random diffusers unCLIP folder (Karlo's layout) for the tests of unclip.pipeline.diffusers_folder."""

from __future__ import annotations

import json
from pathlib import Path

import torch

EMBED = 32  # CLIP projection size = text width, as Karlo's parts require (768 there)
TEXT_LEN = 16


def write_clip_bpe(folder: Path, merges: list[str]) -> None:
    """A CLIP-style byte-level BPE (``vocab.json`` + ``merges.txt``): every byte with and without ``</w>``, the
    ``merges``, then the start and end tokens (the last two ids, as in OpenAI's vocabulary)."""
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab.update({ch + "</w>": len(alphabet) + i for i, ch in enumerate(alphabet)})
    for m in merges:
        vocab["".join(m.split())] = len(vocab)
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def _tokenizer(folder: Path):
    import transformers

    merges = ["r e", "re d</w>", "c i", "ci r", "cir c", "l e</w>", "circ le</w>", "b l", "bl u", "blu e</w>"]
    write_clip_bpe(folder, merges)
    tok = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=TEXT_LEN)
    tok.save_pretrained(str(folder))
    return tok


def make_components(folder: Path, seed: int = 0, width: int = 32, resolution: int = 16) -> dict:
    """Every part of a tiny diffusers ``UnCLIPPipeline`` with random weights (and an image encoder); ``width``
    and ``resolution`` grow the U-Nets (decoder at ``resolution``, upsamplers to twice it) for benchmarks."""
    import transformers
    from diffusers import PriorTransformer, UnCLIPScheduler, UNet2DConditionModel, UNet2DModel
    from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel

    torch.manual_seed(seed)
    tok = _tokenizer(folder / "tokenizer")
    vocab = len(tok)
    text = transformers.CLIPTextModelWithProjection(transformers.CLIPTextConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=TEXT_LEN, projection_dim=EMBED, bos_token_id=vocab - 2, eos_token_id=vocab - 1,
        pad_token_id=vocab - 1,
    )).eval()  # fmt: skip
    image = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(
        image_size=30, patch_size=6, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, projection_dim=EMBED,
    )).eval()  # fmt: skip
    prior = PriorTransformer(
        num_attention_heads=2, attention_head_dim=16, embedding_dim=EMBED, num_layers=1, num_embeddings=TEXT_LEN
    )
    # Karlo's prior stores statistics of its training embeddings; random ones make the test see them used.
    with torch.no_grad():
        prior.clip_mean.copy_(torch.randn_like(prior.clip_mean) * 0.1)
        prior.clip_std.copy_(torch.rand_like(prior.clip_std) + 0.5)
        # Outputs beyond ±5 in places, so that the ±5 clip of Karlo's prior sampling binds and is under test.
        prior.proj_to_clip_embeddings.weight.mul_(4.0)
    text_proj = UnCLIPTextProjModel(clip_embeddings_dim=EMBED, time_embed_dim=4 * width, cross_attention_dim=32)
    # Zero-initialised in diffusers: a non-zero null embedding makes the tests see it used.
    with torch.no_grad():
        text_proj.learned_classifier_free_guidance_embeddings.normal_()
    decoder = UNet2DConditionModel(
        sample_size=resolution, layers_per_block=1, block_out_channels=(width, 2 * width),
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", in_channels=3, out_channels=6, cross_attention_dim=32,
        attention_head_dim=16, resnet_time_scale_shift="scale_shift", class_embed_type="identity",
    )  # fmt: skip

    def super_res():
        return UNet2DModel(
            sample_size=2 * resolution, layers_per_block=1, block_out_channels=(width, 2 * width), in_channels=6,
            out_channels=3,
            down_block_types=("ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D"),
            up_block_types=("ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"), resnet_time_scale_shift="scale_shift",
        )  # fmt: skip

    return {
        "prior": prior.eval(), "decoder": decoder.eval(), "text_proj": text_proj.eval(), "text_encoder": text,
        "tokenizer": tok, "super_res_first": super_res().eval(), "super_res_last": super_res().eval(),
        "prior_scheduler": UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="sample",
                                           num_train_timesteps=1000, clip_sample_range=5.0),
        "decoder_scheduler": UnCLIPScheduler(variance_type="learned_range", prediction_type="epsilon",
                                             num_train_timesteps=1000),
        "super_res_scheduler": UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="epsilon",
                                               num_train_timesteps=1000),
        "image_encoder": image,
    }  # fmt: skip


def exact_schedules(pipe) -> None:
    """Give diffusers' schedulers the float64 cosine table. In float32, UnCLIPScheduler's step coefficient
    sqrt(1 - beta) for the step from t = 999 cancels (beta = 1 - 1.7e-8 rounds) and moves x by ~1e-4; our
    samplers keep the schedule in float64, so image-for-image comparisons need diffusers to as well."""
    from unclip.diffusion import NoiseSchedule

    table = NoiseSchedule.named("cosine")
    for name in ("prior_scheduler", "decoder_scheduler", "super_res_scheduler"):
        sch = getattr(pipe, name, None)
        if sch is not None:
            sch.betas, sch.alphas = table.betas.clone(), 1 - table.betas
            sch.alphas_cumprod, sch.one = table.alpha_bar.clone(), torch.tensor(1.0, dtype=torch.float64)


def make_variation_folder(folder: Path, seed: int = 0):
    """Save a tiny Karlo-layout image-variation folder (no prior) and return diffusers' pipeline."""
    import transformers
    from diffusers import UnCLIPImageVariationPipeline

    parts = make_components(folder, seed)
    for name in ("prior", "prior_scheduler"):
        parts.pop(name)
    processor = transformers.CLIPImageProcessor(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30})
    pipe = UnCLIPImageVariationPipeline(feature_extractor=processor, **parts)
    pipe.save_pretrained(str(folder))
    return pipe


def make_folder(folder: Path, seed: int = 0, **sizes: int):
    """Save a tiny Karlo-layout text-to-image folder (with an image encoder) and return diffusers' pipeline."""
    from diffusers import UnCLIPPipeline

    parts = make_components(folder, seed, **sizes)
    image = parts.pop("image_encoder")
    pipe = UnCLIPPipeline(**parts)
    pipe.save_pretrained(str(folder))
    image.save_pretrained(str(folder / "image_encoder"))
    return pipe
