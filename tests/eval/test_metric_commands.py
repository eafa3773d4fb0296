"""``unclip eval precision-recall | diversity | clip-score`` on folders written the way ``unclip generate`` writes
them (PNG + JSON sidecar + contact sheet), with the maths checked against the library and bad input in one line."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_helpers import CountingExtractor, shapes_images, write_folder
from PIL import Image

from unclip.cli.main import main
from unclip.eval.clip_score import cosines
from unclip.pipeline.outputs import write_results


def generated_folder(path, images, prompts):
    """A folder as ``unclip generate`` leaves it: image_KKK.png + image_KKK.json with the prompt, contact sheet."""
    pil = [Image.fromarray(np.asarray(im, dtype=np.uint8)) for im in images]
    records = [{"prompt": p, "seed": k} for k, p in enumerate(prompts)]
    return write_results(path, pil, records, [f"seed {k}" for k in range(len(pil))])


def prompted_folder(path, images, prompts):
    """KEY.png + KEY.json sidecars only (no contact sheet: one Inception pass less per folder)."""
    write_folder(path, images)
    for k, prompt in enumerate(prompts):
        (path / f"img{k:03d}.json").write_text(json.dumps({"prompt": prompt}))
    return path


def noisy(image, sigma, n, seed):
    """n copies of a uint8 image with Gaussian noise of std sigma (on [0, 1] pixels); sigma = 0 gives copies."""
    rng = np.random.default_rng(seed)
    x = image[None].astype(np.float64) / 255 + sigma * rng.standard_normal((n, *image.shape))
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


def run_json(capsys, args):
    capsys.readouterr()
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def one_line_error(capsys, args, *needles):
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("unclip eval: error:") and "\n" not in err, err
    for needle in needles:
        assert needle in err, err


@pytest.fixture
def cheap_inception(monkeypatch):
    """The commands' Inception replaced by a 6-d per-channel mean/std extractor (the real one is tested below)."""
    monkeypatch.setattr("unclip.eval.inception.InceptionFeatures", lambda device="cpu": CountingExtractor())


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    from unclip.clip import CLIP, PRESETS, make_tokenizer

    torch.manual_seed(0)
    cfg = PRESETS["tiny"]
    clip = CLIP(cfg, make_tokenizer("shapes-bpe", cfg.text.vocab_size, cfg.text.context_length)).eval()
    return clip.save_pretrained(tmp_path_factory.mktemp("clip") / "clip")


# ---- precision / recall ------------------------------------------------------------------------------------------
def test_precision_recall_shares_the_fid_cache_and_matches_the_library(tmp_path, capsys, inception):
    from unclip.eval import folder_features, precision_recall

    real = write_folder(tmp_path / "real", shapes_images(5, resolution=32, seed=0))
    fake = write_folder(tmp_path / "fake", shapes_images(5, resolution=32, seed=1))
    cache = ["--cache-dir", str(tmp_path / "cache")]
    fid = run_json(capsys, ["eval", "fid", str(real), str(fake), *cache])
    assert not fid["cached_a"]
    report = run_json(capsys, ["eval", "precision-recall", str(real), str(fake), "--k", "2", *cache])
    assert report["metric"] == "precision_recall" and report["cached_real"] and report["cached_fake"]
    assert (report["n_real"], report["n_fake"], report["k"]) == (5, 5, 2)
    f_real = folder_features(real, inception, cache_dir=tmp_path / "cache").features
    f_fake = folder_features(fake, inception, cache_dir=tmp_path / "cache").features
    expected = precision_recall(f_real, f_fake, k=2)
    assert (report["precision"], report["recall"]) == (expected.precision, expected.recall)


def test_precision_recall_of_a_copy_is_one_and_of_a_disjoint_set_zero(tmp_path, capsys, cheap_inception):
    a = shapes_images(1, resolution=32, seed=4)[0]
    b = 255 - a  # the negative: far from the original in the cheap (per-channel mean and std) feature space
    real = write_folder(tmp_path / "real", noisy(a, 0.02, 6, seed=0))
    copy = shutil.copytree(real, tmp_path / "copy")
    far = write_folder(tmp_path / "far", noisy(b, 0.02, 6, seed=1))
    same = run_json(capsys, ["eval", "precision-recall", str(real), str(copy), "--no-cache"])
    assert (same["precision"], same["recall"]) == (1.0, 1.0)
    apart = run_json(capsys, ["eval", "precision-recall", str(real), str(far), "--no-cache"])
    assert (apart["precision"], apart["recall"]) == (0.0, 0.0)
    capsys.readouterr()
    assert main(["eval", "precision-recall", str(real), str(copy), "--no-cache"]) == 0
    assert capsys.readouterr().out.startswith("precision 1.0000  recall 1.0000  (k=3)")


# ---- diversity ---------------------------------------------------------------------------------------------------
def test_diversity_is_zero_for_identical_images_and_grows_with_noise(tmp_path, capsys, tiny_clip_dir):
    base = shapes_images(2, resolution=32, seed=3)
    values = []
    # Noise up to σ = 0.1 on [0, 1] pixels: beyond it Inception features of 32 px scenes saturate (σ = 0.2 gives
    # smaller pairwise distances than 0.1), as every image starts to look like noise to the network.
    for sigma in (0.0, 0.03, 0.1):
        images = np.concatenate([noisy(base[0], sigma, 2, seed=1), noisy(base[1], sigma, 2, seed=2)])
        folder = prompted_folder(tmp_path / f"s{sigma}", images, ["a red circle"] * 2 + ["two blue squares"] * 2)
        report = run_json(capsys, ["eval", "diversity", str(folder), "--clip", str(tiny_clip_dir), "--no-cache"])
        assert report["metric"] == "diversity" and report["n_groups"] == 2 and report["n_images"] == 4
        assert [g["prompt"] for g in report["groups"]] == ["a red circle", "two blue squares"]
        assert report["inception"] == pytest.approx(np.mean([g["inception"] for g in report["groups"]]))
        values.append((report["inception"], report["clip"]))
    assert values[0] == pytest.approx((0.0, 0.0), abs=1e-6)
    assert 0 < values[1][0] < values[2][0] and 0 < values[1][1] < values[2][1]


def test_diversity_groups_by_prompt_not_by_folder(tmp_path, capsys, cheap_inception):
    a, b = shapes_images(2, resolution=32, seed=5)
    # Two prompts, each with two identical images, but the prompts' images differ: 0 by prompt, > 0 as one group.
    folder = generated_folder(tmp_path / "gen", [a, a, b, b], ["p", "p", "q", "q"])
    by_prompt = run_json(capsys, ["eval", "diversity", str(folder), "--no-cache"])
    assert by_prompt["inception"] == 0.0 and by_prompt["clip"] is None
    assert by_prompt["skipped"] == []  # the contact sheet beside the samples is not a sample (features.list_images)
    whole = write_folder(tmp_path / "whole", [a, a, b, b])
    assert run_json(capsys, ["eval", "diversity", str(whole), "--group-by", "none", "--no-cache"])["inception"] > 0


# ---- CLIP score --------------------------------------------------------------------------------------------------
COLOURS = {"red": 0, "green": 1, "blue": 2}


class OracleCLIP:
    """A CLIP that knows the answer: an image embeds as its mean (R, G, B), a caption as the one-hot of its colour."""

    embed_dim, image_size = 3, 8

    def encode_image(self, images, normalize=True):
        return torch.nn.functional.normalize(((images + 1) / 2).mean((2, 3)), dim=-1)

    def encode_text(self, captions, normalize=True):
        from unclip.clip import TextEncoding

        z = torch.zeros(len(captions), 3)
        for i, c in enumerate(captions):
            z[i, COLOURS[c.split()[1]]] = 1.0
        return TextEncoding(z, torch.zeros(len(captions), 1, 1), torch.ones(len(captions), 1, dtype=torch.bool))


def solid(colour, n, seed):
    rng = np.random.default_rng(seed)
    im = np.zeros((n, 8, 8, 3))
    im[..., COLOURS[colour]] = 0.8
    return (np.clip(im + 0.1 * rng.random(im.shape), 0, 1) * 255).astype(np.uint8)


def test_clip_score_of_an_oracle_is_higher_for_matching_prompts(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("unclip.eval.clip_score.load_project_clip", lambda d, device="cpu": (OracleCLIP(), Path(d)))
    images = np.concatenate([solid(c, 2, seed=i) for i, c in enumerate(COLOURS)])
    matching = [f"a {c} image" for c in COLOURS for _ in range(2)]
    shuffled = matching[2:] + matching[:2]  # every image gets another colour's caption
    good = generated_folder(tmp_path / "good", images, matching)
    bad = generated_folder(tmp_path / "bad", images, shuffled)
    args = ["--clip", str(tmp_path), "--no-cache"]
    r_good = run_json(capsys, ["eval", "clip-score", str(good), *args])
    r_bad = run_json(capsys, ["eval", "clip-score", str(bad), *args])
    assert r_good["metric"] == "clip_score" and r_good["scale"] == 100.0
    assert (r_good["n"], r_good["n_prompts"]) == (6, 3)
    assert r_good["clip_score"] > 90 > 20 > r_bad["clip_score"]
    # The number is 100 × the mean cosine of what the oracle gives, computed here independently.
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    z_i = x.mean((2, 3)).numpy()
    z_t = np.eye(3)[[COLOURS[p.split()[1]] for p in matching]]
    assert r_good["clip_score"] == pytest.approx(100 * cosines(z_i, z_t).mean(), rel=1e-5)
    assert r_good["per_prompt"]["a red image"]["n"] == 2


def test_clip_score_with_a_project_clip_and_a_pipeline_folder(tmp_path, capsys, tiny_clip_dir):
    from unclip.clip import load_clip

    images = shapes_images(3, resolution=32, seed=7)
    prompts = ["a red circle", "a green square", "a red circle"]
    folder = generated_folder(tmp_path / "gen", images, prompts)
    direct = run_json(capsys, ["eval", "clip-score", str(folder), "--clip", str(tiny_clip_dir), "--no-cache"])
    clip = load_clip(tiny_clip_dir)
    with torch.no_grad():
        z_i = clip.encode_image(torch.from_numpy(images)).numpy()
        z_t = clip.encode_text(prompts).embedding.numpy()
    assert direct["clip_score"] == pytest.approx(100 * cosines(z_i, z_t).mean(), abs=1e-4)
    pipe = tmp_path / "pipe"
    shutil.copytree(tiny_clip_dir, pipe / "clip")
    index = {"format": "unclip-pipeline", "format_version": 1, "components": {"clip": "clip"}}
    (pipe / "pipeline.json").write_text(json.dumps(index))
    via_pipe = run_json(capsys, ["eval", "clip-score", str(folder), "--clip", str(pipe), "--no-cache"])
    assert via_pipe["clip_score"] == direct["clip_score"] and via_pipe["clip_model"] == str(pipe / "clip")
    capsys.readouterr()
    assert main(["eval", "clip-score", str(folder), "--clip", str(tiny_clip_dir), "--no-cache"]) == 0
    assert capsys.readouterr().out.startswith(f"CLIP score {direct['clip_score']:.2f}  (100 x mean cosine")


# ---- bad input ---------------------------------------------------------------------------------------------------
def test_bad_input_is_one_line_with_exit_2(tmp_path, capsys, cheap_inception, tiny_clip_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    clip = ["--clip", str(tiny_clip_dir), "--no-cache"]
    one_line_error(capsys, ["eval", "clip-score", str(empty), *clip], "no readable images")
    bare = write_folder(tmp_path / "bare", shapes_images(3, resolution=32))  # images, no sidecars
    one_line_error(capsys, ["eval", "clip-score", str(bare), *clip], "none of its 3 images has a prompt")
    one_line_error(capsys, ["eval", "diversity", str(bare), "--no-cache"], "none of its 3 images has a prompt")
    single = generated_folder(tmp_path / "single", shapes_images(2, resolution=32), ["p", "q"])
    one_line_error(capsys, ["eval", "diversity", str(single), "--no-cache"], "at least 2 images of one prompt")
    one_line_error(capsys, ["eval", "diversity", str(empty), "--no-cache"], "no readable images")
    one_line_error(capsys, ["eval", "precision-recall", str(bare), str(single), "--no-cache"],
                   "k=3 needs at least 4 readable images, found 3")  # fmt: skip
    one_line_error(capsys, ["eval", "precision-recall", str(bare), str(tmp_path / "nope")], "nope")
    one_line_error(capsys, ["eval", "clip-score", str(single), "--clip", str(tmp_path / "noclip")], "noclip")
    one_line_error(capsys, ["eval", "clip-score", str(single), "--clip", str(bare)], "not a CLIP checkpoint")
    (single / "image_000.json").write_text("{not json")
    one_line_error(capsys, ["eval", "clip-score", str(single), *clip], "image_000.json: not a valid JSON sidecar")
