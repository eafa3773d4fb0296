"""``unclip train noised_clip``: the noise-aware tower is distilled from a frozen CLIP, starts from its image side
(train.init_from a CLIP folder) and exports a folder the pipeline loads."""

from dataclasses import replace

import pytest
import torch

from unclip.cli.main import main
from unclip.clip import load_clip
from unclip.clip.noised import NoisedImageEncoder
from unclip.data.shapes.batch import render_batch
from unclip.train.noised_clip_stage import NoisedClipStage
from unclip.train.stage import Batch, get_stage


def test_registered_with_presets_that_round_trip():
    stage = get_stage("noised_clip")
    assert isinstance(stage, NoisedClipStage)
    presets = stage.presets()
    assert list(presets) == ["small", "small-64", "tiny"]
    assert stage.resolution(presets["small"].model) == 32 and stage.resolution(presets["small-64"].model) == 64
    for preset in presets.values():
        assert stage.config_from_dict(stage.config_to_dict(preset.model)) == preset.model


def test_distillation_raises_the_cosine_to_the_clean_embedding(tiny_clip):
    stage = NoisedClipStage()
    config = replace(stage.presets()["tiny"].model, clip=str(tiny_clip))
    stage.prepare(config)
    torch.manual_seed(0)
    model = stage.build(config)  # a fresh tower: the untrained tiny CLIP reads noise and images almost alike
    _, images = render_batch(8, 32, split="train")
    batch = Batch(images, [""] * 8, [None] * 8, torch.arange(8), torch.arange(8))  # fixed t and noise per sample
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(15):
        out = stage.loss(model, batch, config)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses
    assert set(out.metrics) >= {"cos", "cos_high"} and -1 <= out.metrics["cos"] <= 1


def test_a_run_from_a_clip_folder_exports_the_clip_image_side(tiny_clip, tmp_path):
    run, folder = tmp_path / "run", tmp_path / "noised"
    args = ["train", "noised_clip", "--preset", "tiny", "--clip", str(tiny_clip), "--data", "shapes", "--out", str(run),
            "--steps", "1", "--lr", "1e-12", "--checkpoint-every", "1", "--no-progress",
            "--set", "train.warmup_steps=0", "--set", f"train.init_from={tiny_clip}"]  # fmt: skip
    assert main(args) == 0
    assert main(["export", str(run), "--raw", "--out", str(folder)]) == 0
    model, clip = NoisedImageEncoder.from_pretrained(folder), load_clip(tiny_clip)
    _, images = render_batch(3, 32, split="val")
    with torch.no_grad():  # one step at lr 1e-12: still the CLIP's image side, for every t
        torch.testing.assert_close(model(images, torch.tensor([0, 400, 999])), clip.encode_image(images),
                                   atol=1e-4, rtol=1e-4)  # fmt: skip


def test_a_missing_or_mismatched_clip_is_refused(tiny_clip):
    stage = NoisedClipStage()
    tiny = stage.presets()["tiny"].model
    with pytest.raises(ValueError, match=r"model\.clip=CLIP_DIR"):
        stage.prepare(tiny)
    small = replace(stage.presets()["small"].model, clip=str(tiny_clip))
    with pytest.raises(ValueError, match="embeds in 32 dims but the noised tower in 256"):
        stage.prepare(small)
