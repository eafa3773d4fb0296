"""``unclip eval sweep``: the settings grid, the row names ``unclip report`` plots, and the scores' maths."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from unclip.data.shapes.batch import render_batch
from unclip.eval import sweep
from unclip.eval.generation import to_uint8
from unclip.eval.report import read_run
from unclip.pipeline import SamplingSettings
from unclip.pipeline.settings import expand_shorthands


def test_grid_is_the_product_of_the_axes_with_typed_values():
    grid = sweep.parse_grid(["decoder_sampler=ddpm,ddim", "decoder_steps=5,10,25"], SamplingSettings())
    assert len(grid) == 6
    assert grid[0] == {"decoder_sampler": "ddpm", "decoder_steps": 5}
    assert grid[-1] == {"decoder_sampler": "ddim", "decoder_steps": 25}
    assert all(isinstance(p["decoder_steps"], int) for p in grid)
    assert sweep.parse_grid([], SamplingSettings()) == [{}]


def test_decoder_guidance_sets_both_scales():
    (point,) = sweep.parse_grid(["decoder_guidance=2.5"], SamplingSettings())
    assert expand_shorthands(point) == {"decoder_guidance_image": 2.5, "decoder_guidance_text": 2.5}


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nonsense=1", "unknown setting"),
        ("decoder_steps=ten", "not an integer"),
        ("decoder_steps=0", "decoder_steps must be an integer from 1"),  # the settings' own check, before any work
        ("decoder_sampler=euler", "decoder_sampler must be one of"),
        ("z_source=image", "z_source must be one of"),
        ("decoder_steps", "expected KEY=V1,V2"),
    ],
)
def test_bad_grids_fail_before_any_work(spec, message):
    with pytest.raises(ValueError, match=message):
        sweep.parse_grid([spec], SamplingSettings())


def test_duplicate_axis_is_refused():
    with pytest.raises(ValueError, match="twice"):
        sweep.parse_grid(["decoder_steps=5", "decoder_steps=10"], SamplingSettings())


def test_row_names_are_the_reports_and_two_guidance_axes_keep_theirs():
    assert sweep.row_names({"decoder_guidance": 3.0, "decoder_steps": 10}) == {"guidance": 3.0, "steps": 10}
    both = {"decoder_guidance_image": 3.0, "decoder_guidance_text": 1.0}
    assert sweep.row_names(both) == both  # "guidance" would be ambiguous
    assert sweep.row_names({"z_source": "text"}) == {"z_source": "text"}


class UInt8Stats:
    """Per-channel means and standard deviations of uint8 NHWC images: a cheap stand-in for Inception."""

    id = "uint8-stats-test-v1"

    def __call__(self, images):
        x = torch.as_tensor(np.asarray(images)).float().permute(0, 3, 1, 2) / 255
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], dim=1).numpy().astype(np.float64)


class ConstantCLIP:
    """Embeds every image alike (so any two samples are at cosine distance 0) and every caption alike."""

    def encode_image(self, x):
        return torch.ones(x.shape[0], 4)

    def encode_text(self, captions):
        return SimpleNamespace(embedding=torch.ones(len(captions), 4))


def _jobs_with_repeated_images(images_per_prompt=3):
    jobs = sweep.suite_jobs(per_category=1, images_per_prompt=images_per_prompt)
    n_prompts = len(jobs) // images_per_prompt
    _, distinct = render_batch(n_prompts, 32)
    return jobs, distinct.repeat_interleave(images_per_prompt, dim=0)


def test_scores_identical_samples_of_a_prompt_have_zero_diversity():
    jobs, images = _jobs_with_repeated_images()
    stats = UInt8Stats()
    scorer = sweep.SweepScorer(ConstantCLIP(), stats, stats(to_uint8(images)))
    row = scorer(jobs, images)
    assert row["diversity"] == 0.0 and row["diversity_inception"] == 0.0
    assert row["fid"] == pytest.approx(0.0, abs=1e-6)  # the samples are their own reference
    assert row["kid"] < 0.0  # the unbiased estimate of a set against itself: the left-out diagonal makes it negative
    assert row["clip_score"] == pytest.approx(100.0)  # image and caption embeddings coincide
    assert 0.0 <= row["overall"] <= 1.0


def test_fid_grows_when_the_samples_move_away_from_the_reference():
    jobs, images = _jobs_with_repeated_images()
    stats = UInt8Stats()
    scorer = sweep.SweepScorer(ConstantCLIP(), stats, stats(to_uint8(images)))
    g = torch.Generator().manual_seed(0)
    rows = [scorer(jobs, (images + s * torch.randn(images.shape, generator=g)).clamp(-1, 1)) for s in (0.1, 0.4)]
    assert 0 < rows[0]["fid"] < rows[1]["fid"]
    assert rows[0]["kid"] < rows[1]["kid"] and rows[1]["kid"] > 0


class RecordingPipe:
    """Enough of UnCLIPPipeline for run_sweep: returns seeded noise images and records each call's settings."""

    def __init__(self):
        self.clip = ConstantCLIP()
        self.resolution = 32
        self.upsamplers = []
        self.settings = SamplingSettings()
        self.calls = []

    def __call__(self, prompts, seed, **overrides):
        self.calls.append((list(seed), overrides))
        x = torch.stack([torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(s)) for s in seed])
        return SimpleNamespace(tensors=x.clamp(-1, 1))


def test_run_sweep_uses_the_same_seeds_at_every_setting_and_writes_a_report_run(monkeypatch, tmp_path):
    monkeypatch.setattr("unclip.eval.inception.InceptionFeatures", UInt8Stats)
    blank = lambda inc, res, n, cache: inc(np.zeros((4, res, res, 3), np.uint8))  # noqa: E731
    monkeypatch.setattr(sweep, "reference_features", blank)
    pipe = RecordingPipe()
    grid = sweep.parse_grid(["decoder_guidance=1,4"], pipe.settings)
    rows = sweep.run_sweep(pipe, grid, per_category=1, images_per_prompt=2, batch_size=5, out=tmp_path, progress=False)
    assert [r["guidance"] for r in rows] == [1.0, 4.0]
    first = [c for c in pipe.calls if c[1]["decoder_guidance_image"] == 1.0]
    second = [c for c in pipe.calls if c[1]["decoder_guidance_image"] == 4.0]
    assert [s for s, _ in first] == [s for s, _ in second]  # same jobs, same seeds
    assert all(o["decoder_guidance_text"] == o["decoder_guidance_image"] for _, o in pipe.calls)
    assert rows[0]["fid"] == pytest.approx(rows[1]["fid"])  # the stub ignores guidance: equal images, equal scores
    saved = json.loads((tmp_path / sweep.SWEEP_FILE).read_text())
    assert [r["guidance"] for r in saved["rows"]] == [1.0, 4.0]
    assert [r["guidance"] for r in read_run(tmp_path).sweep] == [1.0, 4.0]  # unclip report reads it


def test_judge_clip_reaches_the_scorer_as_a_clip_not_a_tuple(monkeypatch, tmp_path):
    from unclip.cli.main import main

    judge, seen = ConstantCLIP(), {}
    monkeypatch.setattr("unclip.cli.generate.load_pipeline", lambda args: (RecordingPipe(), "m"))
    monkeypatch.setattr("unclip.clip.load_clip", lambda folder, device="cpu": judge)
    monkeypatch.setattr("unclip.pipeline.index.clip_folder", lambda folder: folder)
    monkeypatch.setattr(sweep, "run_sweep", lambda pipe, grid, **kw: seen.update(kw) or [{"fid": 1.0}])
    assert main(["eval", "sweep", "--out", str(tmp_path), "--judge-clip", str(tmp_path / "clip")]) == 0
    assert seen["judge_clip"] is judge  # load_project_clip returns (clip, folder)


def test_base_only_leaves_the_callers_pipeline_whole(monkeypatch, tmp_path):
    monkeypatch.setattr("unclip.eval.inception.InceptionFeatures", UInt8Stats)
    monkeypatch.setattr(
        sweep, "reference_features", lambda inc, res, n, cache: inc(np.zeros((4, res, res, 3), np.uint8))
    )
    pipe = RecordingPipe()
    ups = pipe.upsamplers = ["an upsampler"]
    sweep.run_sweep(pipe, [{}], per_category=1, images_per_prompt=2, base_only=True, progress=False)
    assert pipe.upsamplers is ups and ups == ["an upsampler"]


def test_a_batch_size_below_one_is_a_clear_error():
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        sweep.generate_jobs(RecordingPipe(), sweep.suite_jobs(1, 1), batch_size=0)
