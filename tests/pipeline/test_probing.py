"""Probing (§4, Fig. 7): PCA of image embeddings, reconstructions from the top k components, and their decoding."""

import itertools
import json

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_stack import tiny_pipeline

from unclip.cli.main import main
from unclip.pipeline import probing
from unclip.pipeline.probing import EmbeddingPCA, fit_embedding_pca, parse_dims, probe


def _stretched(n=400, d=8, seed=0):
    """Gaussian data whose standard deviation along axis j is 2^-j, shifted off the origin: the principal
    components are the axes, in order."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * 2.0 ** -torch.arange(d).float() + 3.0


def test_components_are_the_axes_of_largest_variance_in_order():
    pca = fit_embedding_pca(_stretched())
    assert pca.components.shape == (8, 8) and pca.n == 400
    torch.testing.assert_close(pca.components @ pca.components.T, torch.eye(8), atol=1e-5, rtol=0)
    assert torch.allclose(pca.components.abs().argmax(1), torch.arange(8))  # component j is axis j
    assert float(pca.explained.sum()) == pytest.approx(1.0, abs=1e-5)
    assert bool((pca.explained[:-1] >= pca.explained[1:]).all())
    assert pca.cumulative(1) == pytest.approx(float(pca.explained[0]))


def test_projection_keeps_the_top_k_and_all_components_give_z_back():
    pca = fit_embedding_pca(_stretched())
    z = _stretched(5, seed=1)
    torch.testing.assert_close(pca.project(z, 8), z, atol=1e-4, rtol=0)  # full rank: exact
    assert pca.project(z, None) is z
    torch.testing.assert_close(pca.project(z, 0), pca.mean.expand(5, -1))
    errors = [float((pca.project(z, k) - z).norm()) for k in range(9)]
    assert all(a >= b - 1e-6 for a, b in itertools.pairwise(errors)) and errors[0] > 10 * errors[7]
    for k in (1, 3, 6):  # the residual has no part along the kept components
        residual = z - pca.project(z, k)
        torch.testing.assert_close(residual @ pca.components[:k].T, torch.zeros(5, k), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match=r"k must lie in \[0, 8\]"):
        pca.project(z, 9)


def test_pca_round_trips_through_a_file(tmp_path):
    pca = fit_embedding_pca(_stretched())
    pca.save(tmp_path / "p" / "pca.safetensors")
    back = EmbeddingPCA.load(tmp_path / "p" / "pca.safetensors")
    assert back.n == 400 and torch.equal(back.components, pca.components) and torch.equal(back.mean, pca.mean)


def test_parse_dims():
    assert parse_dims("1, 2,all") == [1, 2, None]
    with pytest.raises(ValueError, match="integers or 'all'"):
        parse_dims("1,two")
    with pytest.raises(ValueError, match=">= 0"):
        parse_dims("-1")


def test_probe_decodes_each_rebuilt_z_i_at_z_i_norm_from_the_same_noise():
    pipe = tiny_pipeline()
    g = torch.Generator().manual_seed(3)
    images = torch.rand(64, 3, 16, 16, generator=g) * 2 - 1
    with torch.no_grad():
        pca = fit_embedding_pca(pipe.clip.encode_image(images))
        z = pipe.clip.encode_image(images[5:6])
    full = pca.components.shape[0]
    assert full == z.shape[1]  # 64 images of a 32-dim CLIP: a full-rank fit
    decode, seen = pipe.decode, {}

    def recording(z_i, generators, **kw):
        seen["z_i"], seen["x_T"] = z_i.clone(), [gen.initial_seed() for gen in generators]
        return decode(z_i, generators, **kw)

    pipe.decode = recording
    out = probe(pipe, images[5], [None, full, 3, 0, None], pca, seed=4)
    assert out.shape == (5, 3, 32, 32)  # decoded at 16 px, upsampled to 32
    assert torch.equal(out[0], out[4])  # same z_i, same seed: the same image
    assert len(set(seen["x_T"])) == 1  # one seed for every row
    rows = seen["z_i"]
    torch.testing.assert_close(rows[0], z[0])
    torch.testing.assert_close(rows[1], z[0], atol=1e-4, rtol=0)  # every component: z_i itself
    for row, k in ((2, 3), (3, 0)):  # the top-k reconstruction, scaled back to |z_i|
        rebuilt = pca.project(z, k)[0]
        torch.testing.assert_close(rows[row], rebuilt / rebuilt.norm() * z.norm(), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(rows[2], rows[0], atol=1e-3)
    with pytest.raises(ValueError, match="fitted on 3-dim embeddings"):
        probe(pipe, images[5], [1], EmbeddingPCA(torch.zeros(3), torch.eye(3), torch.ones(3) / 3, 10))


def test_cli_writes_the_rows_and_caches_the_fit(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("UNCLIP_CACHE", str(tmp_path / "cache"))
    tiny_pipeline().save_pretrained(tmp_path / "m")
    Image.fromarray(np.full((20, 24, 3), (200, 40, 40), np.uint8)).save(tmp_path / "red.png")
    args = ["probe", str(tmp_path / "red.png"), "--model", str(tmp_path / "m"), "--pca-n", "40", "--dims", "0,4,all"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    records = [json.loads((tmp_path / "a" / f"probe_{i:03d}.json").read_text()) for i in range(3)]
    assert [r["dims"] for r in records] == [0, 4, "all"] and records[0]["variance"] == 0
    assert 0 < records[1]["variance"] < records[2]["variance"] == 1.0 and records[1]["pca_n"] == 40
    assert (tmp_path / "a" / "contact_sheet.png").is_file()
    assert len(list((tmp_path / "cache" / "pca").glob("*.safetensors"))) == 1

    def no_fit(*a, **k):
        raise AssertionError("the cached fit should have been used")

    monkeypatch.setattr(probing, "image_embeddings", no_fit)
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    for i in range(3):  # the same fit, the same seed: the same pictures
        a, b = (np.asarray(Image.open(tmp_path / d / f"probe_{i:03d}.png")) for d in ("a", "b"))
        assert np.array_equal(a, b)
    capsys.readouterr()
    assert main(["probe", str(tmp_path / "missing.png"), "--model", str(tmp_path / "m")]) == 2
    assert "cannot read image" in capsys.readouterr().err  # before any PCA work (no_fit would have raised)
    assert main([*args[:-1], "999", "--out", str(tmp_path / "c")]) == 2
    assert "the PCA has" in capsys.readouterr().err
    # unclip eval probing on the same model reads the same cached fit
    assert main(["eval", "probing", "--model", str(tmp_path / "m"), "--n", "2", "--pca-n", "40", "--dims", "0,all",
                 "--json"]) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert [r["dims"] for r in result["rows"]] == [0, "all"] and result["n"] == 2 and result["pca_n"] == 40
    assert all(0 <= r["faithful"] <= 1 and -1 <= r["clip_similarity"] <= 1 for r in result["rows"])


def test_probing_curve_judges_each_k_and_reaches_the_source_at_all_components(tmp_path, capsys):
    """A stub whose decoder draws the render of the scene whose z_i is nearest the one it is given: decodes from
    every component reproduce the scenes (faithful 1, similarity 1); from the mean alone they mostly do not."""
    from types import SimpleNamespace

    from unclip.data.shapes.batch import render_batch
    from unclip.eval.probing_eval import probing_curve

    _, truth = render_batch(8, 32)
    keys = truth.flatten(1)[:, ::97][:, :16]  # a fixed 16-dim "CLIP" of each render: some of its pixels

    def encode_image(x):
        return x.flatten(1)[:, ::97][:, :16] + 0.0

    def decode(z_i, generators, **kw):
        nearest = torch.cdist(torch.nn.functional.normalize(z_i, dim=1), torch.nn.functional.normalize(keys, dim=1))
        return truth[nearest.argmin(1)]

    stub = SimpleNamespace(
        decoder=SimpleNamespace(config=SimpleNamespace(resolution=32)), device=torch.device("cpu"),
        clip=SimpleNamespace(encode_image=encode_image), decode=decode, autocast=torch.no_grad,
    )  # fmt: skip
    pca = fit_embedding_pca(keys)
    out = probing_curve(stub, pca, [0, None, pca.components.shape[0]], n=8, batch_size=3)
    mean_row, source_row, full_row = out["rows"]
    assert source_row["faithful"] == full_row["faithful"] == 1.0 and full_row["variance"] == pytest.approx(1.0)
    assert source_row["clip_similarity"] == pytest.approx(1.0) and full_row["clip_similarity"] == pytest.approx(1.0)
    assert mean_row["faithful"] <= 0.25 and mean_row["variance"] == 0 and mean_row["dims"] == 0
    assert out["n"] == 8 and out["components"] == pca.components.shape[0]
