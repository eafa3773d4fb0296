"""``unclip eval prior``: the retrieval maths on hand-made embeddings, the nearest-caption baseline, the settings
a prior is sampled with, and the command on tiny random stacks (both prior kinds, bad input)."""

import json

import pytest
import torch
import torch.nn.functional as F
from tiny_stack import tiny_pipeline

from unclip.cli.main import main
from unclip.eval.prior_eval import nearest_caption, retrieval_ranks, sampling_settings, score_embeddings
from unclip.pipeline import SamplingSettings
from unclip.prior import ARPrior, DiffusionPrior, ar_prior_config, diffusion_prior_config, save_pretrained


# ---- metric maths -----------------------------------------------------------------------------------------------
def test_a_prior_returning_the_true_z_i_scores_cosine_1_and_r_at_1_1():
    z = torch.randn(40, 16, generator=torch.Generator().manual_seed(0))
    for pred in (z, 3.0 * z):  # cosine-based: the scale of a prediction does not matter
        s = score_embeddings(pred, z)
        assert s.cosine == pytest.approx(1.0, abs=1e-9)
        assert s.recall == {1: 1.0, 10: 1.0}


def test_a_random_prior_is_at_chance():
    g = torch.Generator().manual_seed(1)
    n = 400
    targets, pred = torch.randn(n, 32, generator=g), torch.randn(n, 32, generator=g)
    s = score_embeddings(pred, targets)
    # Binomial(400, 1/400) and (400, 10/400): the bounds are about four standard deviations.
    assert s.recall[1] <= 6 / n
    assert abs(s.recall[10] - 10 / n) < 0.032
    assert s.recall[10] >= s.recall[1]
    assert abs(s.cosine) < 0.05


def test_ranks_on_a_hand_made_example():
    targets = torch.eye(5)
    pred = torch.zeros(5, 5)
    pred[0] = torch.tensor([0.5, 0.9, 0.8, 0.0, 0.0])  # true target 0 is third most similar
    pred[1] = torch.tensor([0.0, 1.0, 0.1, 0.0, 0.0])  # first
    pred[2] = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0])  # target 2 ties with 0, 1, 4 at similarity 0: counted after
    pred[3] = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0])  # first
    # pred[4] is all zeros: every target ties, so it ranks last rather than first.
    assert retrieval_ranks(pred, targets).tolist() == [2, 0, 4, 0, 4]
    s = score_embeddings(pred, targets, ks=(1, 3, 10))
    assert s.recall == {1: 0.4, 3: 0.6, 10: 1.0}
    expected = torch.tensor([0.5 / (0.25 + 0.81 + 0.64) ** 0.5, 1 / 1.01**0.5, 0.0, 1.0, 0.0]).mean()
    assert s.cosine == pytest.approx(float(expected))


def test_several_draws_per_caption_score_against_their_own_image():
    z = F.normalize(torch.randn(30, 8, generator=torch.Generator().manual_seed(2)), dim=1)
    shuffled = z[torch.roll(torch.arange(30), 1)]  # draw 2 of caption i is caption i-1's image: always wrong
    s = score_embeddings(torch.cat([z, shuffled]), z, truth=torch.arange(30).repeat(2))
    assert s.recall[1] == pytest.approx(0.5) and s.n_queries == 60
    with pytest.raises(ValueError, match="truth"):
        score_embeddings(torch.cat([z, z]), z)


def test_nearest_caption_uses_cosine_not_the_dot_product():
    pool_z_t = torch.stack(
        [5 * torch.eye(4)[0], torch.eye(4)[1], 0.1 * torch.eye(4)[2], torch.eye(4)[0] + torch.eye(4)[1]]
    )
    pool_z_i = torch.arange(4.0)[:, None] * torch.ones(4, 3)
    query = torch.stack([torch.eye(4)[2] + 0.3 * torch.eye(4)[0], torch.eye(4)[0] + 0.9 * torch.eye(4)[1]])
    # Query 0 is closest in angle to pool entry 2 (whose large-norm neighbour 0 wins by dot product);
    # query 1 to entry 3, the sum of e0 and e1.
    z_i, idx = nearest_caption(query, pool_z_t, pool_z_i)
    assert idx.tolist() == [2, 3]
    assert torch.equal(z_i, pool_z_i[[2, 3]])


# ---- sampling settings ------------------------------------------------------------------------------------------
def test_settings_come_from_the_pipeline_else_the_prior_then_the_overrides():
    prior = DiffusionPrior(diffusion_prior_config("tiny", sample_steps=7, best_of=3))
    own = sampling_settings(prior)
    assert (own["steps"], own["best_of"], own["guidance"]) == (7, 3, SamplingSettings().prior_guidance)
    stored = SamplingSettings(prior_steps=5, prior_guidance=2.0, prior_best_of=1, prior_sampler="ddpm")
    expected = {"sampler": "ddpm", "steps": 5, "guidance": 2.0, "best_of": 1, "combine": "best"}
    assert sampling_settings(prior, stored) == expected
    assert sampling_settings(prior, stored, steps=2, best_of=4)["steps"] == 2
    assert sampling_settings(prior, stored, combine="mean")["combine"] == "mean"
    with pytest.raises(ValueError, match="prior_best_of"):
        sampling_settings(prior, best_of=0)
    with pytest.raises(ValueError, match="prior_combine must be one of"):
        sampling_settings(prior, combine="median")
    ar = ARPrior(ar_prior_config("tiny"))
    assert sampling_settings(ar) == {"dot_percentile": 0.5}
    with pytest.raises(ValueError, match="--steps, --guidance only apply to a diffusion prior"):
        sampling_settings(ar, steps=3, guidance=2.0)


# ---- the command on tiny random stacks --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prior_eval") / "tiny"
    tiny_pipeline(upsampler=False).save_pretrained(folder)
    return folder


def _run(args, capsys):
    capsys.readouterr()
    code = main(["eval", "prior", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_json_on_a_tiny_pipeline(stack, capsys):
    from unclip.clip import load_clip
    from unclip.data.shapes.batch import render_batch

    code, out, _ = _run(["--model", str(stack), "--n", "12", "--pool", "20", "--samples-per-caption", "2", "--json"],
                        capsys)  # fmt: skip
    assert code == 0
    report = json.loads(out)
    assert report["kind"] == "diffusion" and report["n"] == 12 and report["pool"] == 20
    assert report["settings"] == {"sampler": "ddim", "steps": 3, "guidance": 4.0, "best_of": 2, "combine": "best"}
    for key in ("prior", "baseline_z_t", "baseline_nearest_caption"):
        assert set(report[key]) == {"cosine", "r_at_1", "r_at_10"}
        assert -1 <= report[key]["cosine"] <= 1 and report[key]["r_at_10"] >= report[key]["r_at_1"]
    assert report["chance"] == {"r_at_1": 1 / 12, "r_at_10": 10 / 12}
    assert report["seconds_per_embedding"] > 0 and report["anchor_laion_vit_l14_cosine"] == 0.75

    # The z_t baseline, recomputed on its own from the test split's first 12 renders and captions.
    clip = load_clip(stack / "clip")
    samples, images = render_batch(12, clip.image_size)
    with torch.no_grad():
        z_i, z_t = clip.encode_image(images), clip.encode_text([s.caption for s in samples]).embedding
    assert report["baseline_z_t"]["cosine"] == pytest.approx(F.cosine_similarity(z_t, z_i).mean().item(), abs=1e-5)


def test_cli_combine_mean_scores_the_mean_of_the_candidates(stack, capsys):
    # The same seeds draw the same candidates; --combine mean scores their mean direction (unclip.prior.mean_of_n).
    from unclip.eval.prior_eval import encode_shapes, load_prior_and_clip, sample_prior

    args = ["--model", str(stack), "--n", "6", "--pool", "8", "--best-of", "3", "--json"]
    code, out, _ = _run([*args, "--combine", "mean"], capsys)
    assert code == 0
    report = json.loads(out)
    assert report["settings"]["combine"] == "mean" and report["settings"]["best_of"] == 3
    prior, clip, _ = load_prior_and_clip(stack)
    held = encode_shapes(clip, "test", 6)
    z_i, _ = sample_prior(prior, held, report["settings"], list(range(6)))
    assert report["prior"]["cosine"] == pytest.approx(F.cosine_similarity(z_i, held.z_i).mean().item(), abs=1e-5)
    best, _ = sample_prior(prior, held, {**report["settings"], "combine": "best"}, list(range(6)))
    assert not torch.allclose(best, z_i)


def test_cli_point_estimate_row_is_one_unguided_call_at_t_max(stack, capsys):
    # The row beside the draws: the prior's x0 estimate at t = T - 1 without guidance, computed here by hand.
    from unclip.diffusion import ModelDenoiser, conditioned
    from unclip.eval.prior_eval import encode_shapes, load_prior_and_clip
    from unclip.prior.caption_tokens import fit_tokens

    code, out, _ = _run(["--model", str(stack), "--n", "6", "--pool", "8", "--json"], capsys)
    assert code == 0
    row = json.loads(out)["prior_point_estimate"]
    assert row["settings"]["sampler"] == "mmse" and row["settings"]["guidance"] == 1.0
    prior, clip, _ = load_prior_and_clip(stack)
    held = encode_shapes(clip, "test", 6)
    tokens, mask = fit_tokens(held.tokens, held.mask, prior.config.text_len)
    denoiser = ModelDenoiser(prior, prior.schedule(), prior.parameterization())
    x_T = torch.cat(
        [torch.randn(1, prior.config.embed_dim, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    )
    t = torch.full((6,), prior.config.train_steps - 1)
    cond = {"z_t": held.z_t, "tokens": tokens, "mask": mask, "keep": torch.ones(6, dtype=torch.bool)}
    with torch.no_grad():
        z_i = prior.norm.denormalize(conditioned(denoiser, cond)(x_T, t).x0)
    assert row["cosine"] == pytest.approx(F.cosine_similarity(z_i, held.z_i).mean().item(), abs=1e-5)
    code, out, _ = _run(["--model", str(stack), "--n", "6", "--pool", "8", "--no-point-estimate"], capsys)
    assert code == 0 and "point estimate" not in out and out.startswith("diffusion prior")
    assert any(line.split()[:1] == ["prior"] for line in out.splitlines())  # the draws' row is still there
    code, _, err = _run(["--model", str(stack), "--n", "6", "--sampler", "euler"], capsys)
    assert code == 2 and "prior_sampler must be one of" in err and "mmse" in err


def test_cli_on_an_ar_prior_folder_with_its_clip(stack, tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    z_i, z_t = (F.normalize(torch.randn(128, 32, generator=g), dim=1) for _ in range(2))
    ar = ARPrior.from_data(ar_prior_config("tiny", variance=0.5), z_i, z_t)  # few components: fast to sample
    save_pretrained(ar, tmp_path / "ar")
    args = ["--model", str(tmp_path / "ar"), "--clip", str(stack / "clip"), "--n", "6", "--pool", "8"]
    code, out, _ = _run(args, capsys)
    assert code == 0
    assert out.startswith("ar prior") and "nearest of 8 train captions" in out and "chance" in out
    code, _, err = _run([*args, "--steps", "4"], capsys)
    assert code == 2 and "--steps only apply to a diffusion prior" in err


def test_cli_bad_input(stack, tmp_path, capsys):
    small = DiffusionPrior(diffusion_prior_config("tiny", embed_dim=16))
    small.norm.fit(torch.randn(64, 16))
    save_pretrained(small, tmp_path / "p16")
    code, _, err = _run(["--model", str(tmp_path / "p16"), "--clip", str(stack / "clip"), "--json"], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "16-dim" in err and "32 dims" in err
    code, _, err = _run(["--model", str(tmp_path / "p16")], capsys)
    assert code == 2 and "--clip" in err
    code, _, err = _run(["--model", str(stack), "--clip", str(stack / "clip")], capsys)
    assert code == 2 and "own CLIP" in err
    code, _, err = _run(["--model", str(tmp_path / "missing")], capsys)
    assert code == 2 and "missing" in err
    code, _, err = _run(["--model", str(stack), "--n", "1"], capsys)
    assert code == 2 and "n must be an integer >= 2" in err


def test_cli_ceiling_rescores_the_prior_and_baselines_on_the_covered_captions(stack, capsys):
    from unclip.clip import load_clip
    from unclip.data.shapes.batch import render_batch
    from unclip.eval.prior_ceiling import same_claims_pool

    code, out, _ = _run(["--model", str(stack), "--n", "40", "--pool", "8", "--ceiling-pool", "4000", "--json"],
                        capsys)  # fmt: skip
    assert code == 0
    c = json.loads(out)["ceiling"]
    samples, images = render_batch(40, load_clip(stack / "clip").image_size)
    covered = sorted(same_claims_pool([s.caption for s in samples], 4000, min_matches=4, max_matches=8))
    assert c["pool"] == 4000 and c["covered"] == len(covered) > 0 and c["coverage"] == len(covered) / 40
    assert -1 <= c["perfect_sampler"] <= 1 and 0 <= c["best_prediction"] <= 1
    assert set(c["cosine_on_covered"]) == {"prior", "prior_point_estimate", "baseline_z_t", "baseline_nearest_caption"}
    clip = load_clip(stack / "clip")
    with torch.no_grad():
        z_i = clip.encode_image(images[covered])
        z_t = clip.encode_text([samples[i].caption for i in covered]).embedding
    expected = F.cosine_similarity(z_t, z_i).mean().item()
    assert c["cosine_on_covered"]["baseline_z_t"] == pytest.approx(expected, abs=1e-5)

    code, out, _ = _run(["--model", str(stack), "--n", "4", "--pool", "8", "--ceiling-pool", "5"], capsys)
    assert code == 0 and "no caption's claims recur often enough in 5 training captions" in out
    code, _, err = _run(["--model", str(stack), "--n", "4", "--ceiling-pool", "-1"], capsys)
    assert code == 2 and "ceiling_pool must be a non-negative integer" in err
