"""Both priors train through the engine (`unclip train diffusion_prior|ar_prior`) on an embedding folder."""

from __future__ import annotations

import json

import pytest
import torch
from prior_data import synthetic_pairs

from unclip.cli.main import main
from unclip.prior import ARPrior, DiffusionPrior, from_pretrained, save_pretrained
from unclip.prior.checkpoint import load_prior_weights
from unclip.prior.embeddings import EmbeddingSet, load_embeddings, write_embeddings
from unclip.train.checkpoint import latest_checkpoint
from unclip.train.stage import get_stage


@pytest.fixture(scope="module")
def emb_dir(tmp_path_factory):
    z_i, z_t, tokens, mask = synthetic_pairs(300)
    return write_embeddings(tmp_path_factory.mktemp("emb"), EmbeddingSet(z_i, z_t, tokens, mask), shard_size=128)


def test_embedding_folder_round_trip(emb_dir):
    data = load_embeddings(emb_dir)
    z_i, _, tokens, mask = synthetic_pairs(300)
    assert len(data) == 300 and data.dims == {"embed_dim": 16, "text_len": 6, "text_width": 24}
    assert torch.equal(data.z_i, z_i) and torch.equal(data.mask, mask)
    torch.testing.assert_close(data.tokens.float(), tokens, atol=1e-2, rtol=1e-3)  # stored as float16
    rows = data.rows(torch.arange(600))
    assert sorted(rows[:300].tolist()) == list(range(300)) and not torch.equal(rows[:300], rows[300:])


@pytest.mark.parametrize("stage", ["diffusion_prior", "ar_prior"])
def test_prior_trains_through_the_engine(stage, emb_dir, tmp_path):
    out = tmp_path / "run"
    sets = [f"model.embeddings={json.dumps(str(emb_dir))}", "model.embed_dim=16", "model.text_len=6",
            "model.text_width=24", "train.log_every=1"]  # fmt: skip
    if stage == "ar_prior":
        sets += ["model.components=16", "model.buckets=16", "model.dot_bins=4"]
    args = ["train", stage, "--preset", "tiny", "--data", "shapes", "--out", str(out), "--no-progress",
            "--steps", "30", "--batch-size", "32"]  # fmt: skip
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    first, last = (sum(r["loss"] for r in rows[i : i + 5]) / 5 for i in (0, 25))
    assert last < first, (first, last)
    # The checkpoint's EMA weights load strictly into a freshly built prior, which saves as a prior folder.
    st = get_stage(stage)
    cfg = st.config_from_dict(json.loads((out / "config.json").read_text())["model"])
    net = st.build(cfg)
    load_prior_weights(net, latest_checkpoint(out / "checkpoints").tensors["ema"])
    loaded = from_pretrained(save_pretrained(net, tmp_path / "prior"))
    assert isinstance(loaded, DiffusionPrior if stage == "diffusion_prior" else ARPrior)


def test_stage_refuses_mismatched_dims(emb_dir):
    st = get_stage("diffusion_prior")
    _, preset = st.preset("tiny")
    cfg = preset.model
    cfg.embeddings = str(emb_dir)
    with pytest.raises(ValueError, match=r"model.embed_dim is 32 but the embeddings .* have embed_dim 16"):
        st.build(cfg)


def test_stage_without_embeddings_builds_for_shapes_but_will_not_train():
    from unclip.train.prior_stage import _embeddings

    st = get_stage("ar_prior")
    _, preset = st.preset("tiny")
    assert isinstance(st.build(preset.model), ARPrior)
    with pytest.raises(ValueError, match=r"model\.embeddings=FOLDER"):
        _embeddings("")


def test_prior_draws_made_in_a_loader_worker_give_the_loss_made_in_the_step(emb_dir):
    from unclip.data.loader import MicroBatch
    from unclip.train.stage import Batch

    st = get_stage("diffusion_prior")
    base = st.config_to_dict(st.presets()["tiny"].model)
    cfg = st.config_from_dict({**base, "embeddings": str(emb_dir), "embed_dim": 16, "text_len": 6, "text_width": 24})
    torch.manual_seed(0)
    net = st.build(cfg)
    seeds, index = torch.tensor([3, 4, 5, 6]), torch.arange(4)
    mb = MicroBatch(0, torch.zeros(4, 3, 8, 8), [""] * 4, [None] * 4, index, seeds, 0, [])
    extra = st.batch_extras(cfg)(mb)
    assert set(extra) == {"t", "noise", "keep"} and extra["noise"].shape == (4, 16)
    in_worker = st.loss(net, Batch(mb.image, mb.caption, mb.scene, index, seeds, extra), cfg)
    in_step = st.loss(net, Batch(mb.image, mb.caption, mb.scene, index, seeds), cfg)
    assert torch.equal(in_worker.loss, in_step.loss)
    assert not torch.equal(
        st.loss(net, Batch(mb.image, mb.caption, mb.scene, index, seeds + 1), cfg).loss, in_step.loss
    )
