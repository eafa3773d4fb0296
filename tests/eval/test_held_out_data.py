"""Evaluations on a user's own held-out data (``--data SPEC``) instead of the Shapes world."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from tiny_stack import tiny_pipeline

from unclip.cli.main import main
from unclip.clip.interface import TextEncoding
from unclip.data.datasets import parse_data_spec
from unclip.data.loader import to_training_image
from unclip.eval import generation
from unclip.eval.clip_eval import evaluate_data
from unclip.eval.held_out import caption_relevance, load_held_out

COLOURS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}


def _colour_folder(root, captions, size=(12, 10)):
    """Flat images of the named colour, in the imagefolder layout, one row per caption."""
    root.mkdir(parents=True)
    rows = []
    for i, caption in enumerate(captions):
        colour = COLOURS[caption.split()[1]]
        Image.fromarray(np.full((*size, 3), colour, dtype=np.uint8)).save(root / f"{i}.png")
        rows.append(json.dumps({"file_name": f"{i}.png", "text": caption}))
    (root / "metadata.jsonl").write_text("\n".join(rows))
    return root


def _shapes_folder(root, split, n, resolution):
    """The first ``n`` records of a Shapes-world split, written as PNGs with a metadata table: the same pairs the
    default Shapes evaluations read, through the user-data path."""
    source = parse_data_spec(f"shapes:split={split}", resolution)
    root.mkdir(parents=True)
    rows = []
    for i in range(n):
        record = source.get(i)
        Image.fromarray(record.image).save(root / f"{i:03d}.png")
        rows.append(json.dumps({"file_name": f"{i:03d}.png", "text": record.caption}))
    (root / "metadata.jsonl").write_text("\n".join(rows))
    return root


def test_held_out_pairs_skip_bad_records_and_say_so(tmp_path):
    root = _colour_folder(tmp_path / "d", ["a red square", "a blue square", "a green square", "a red square"])
    (root / "1.png").write_bytes(b"not a png")
    (root / "metadata.jsonl").write_text(
        (root / "metadata.jsonl").read_text() + '\n{"file_name": "0.png", "text": "  "}'
    )
    with pytest.warns(UserWarning) as caught:
        held = load_held_out(str(root), 10, 8)
    messages = " ".join(str(w.message) for w in caught)
    assert "holds 3 usable pairs, fewer than the 10 asked for" in messages and "2 records skipped" in messages
    assert held.captions == ["a red square", "a green square", "a red square"] and held.skipped == 2
    expected = to_training_image(np.full((12, 10, 3), COLOURS["green"], dtype=np.uint8), 8)
    assert torch.equal(held.images[1], expected) and held.scene_graphs() is None
    rows = [
        '{"file_name": "1.png", "text": "x"}',
        '{"file_name": "2.png", "text": ""}',
        '{"file_name": "3.png", "text": "y"}',
    ]
    (root / "metadata.jsonl").write_text("\n".join(rows))
    with pytest.raises(ValueError, match=r"holds 1 usable \(image, caption\) pairs \(2 skipped\)"):
        load_held_out(str(root), 5, 8)


def test_caption_relevance_folds_case_and_spacing():
    rel = caption_relevance(["A red  square", "a blue square", "a red square"])
    assert rel.tolist() == [[True, False, True], [False, True, False], [True, False, True]]


class ColourCLIP:
    """z_i: the image's mean colour; z_t: the colour its caption names. Retrieval is perfect when every caption
    tells the truth, whatever the order of the pairs."""

    image_size = 8

    def encode_image(self, images):
        return images.mean(dim=(2, 3)) + 1

    def encode_text(self, captions):
        z = torch.stack([torch.tensor(COLOURS[c.split()[1]], dtype=torch.float) / 127.5 for c in captions])
        return TextEncoding(z, None, None)


def test_retrieval_on_data_counts_any_image_with_the_same_caption(tmp_path):
    captions = ["a red square", "a blue square", "a green square", "a red square", "a blue square"]
    out = evaluate_data(ColourCLIP(), str(_colour_folder(tmp_path / "d", captions)), n=5, batch_size=2)
    r = out["data"]["retrieval"]
    assert r["image_to_text"]["R@1"] == 1.0 and r["text_to_image"]["R@1"] == 1.0 and out["n"] == 5
    # chance: image 0 has 2 relevant of 5 candidates
    assert r["text_to_image"]["chance"]["R@1"] == pytest.approx((2 + 2 + 1 + 2 + 2) / 5 / 5)
    # Captions that lie: the red images captioned blue and the blue ones red.
    lies = ["a blue square", "a red square", "a green square", "a blue square", "a red square"]
    images = [c.split()[1] for c in captions]
    folder = _colour_folder(tmp_path / "lies", lies)
    for i, colour in enumerate(images):
        Image.fromarray(np.full((12, 10, 3), COLOURS[colour], dtype=np.uint8)).save(folder / f"{i}.png")
    r = evaluate_data(ColourCLIP(), str(folder), n=5, batch_size=2)["data"]["retrieval"]
    assert r["image_to_text"]["R@1"] == pytest.approx(1 / 5)  # only the green pair is right


def _stub_stack(resolution, served):
    """decode returns the next of ``served`` (the truth, or blanks); CLIP embeds by mean colour."""
    from types import SimpleNamespace

    state = {"at": 0}

    def serve(n):
        out = served[state["at"] : state["at"] + n]
        state["at"] += n
        return out

    return SimpleNamespace(
        decoder=SimpleNamespace(config=SimpleNamespace(resolution=resolution)),
        clip=SimpleNamespace(encode_image=lambda x: x.mean(dim=(2, 3)) + 1),
        device=torch.device("cpu"),
        upsamplers=[object()],
        resolution=resolution,
        decode=lambda z_i, generators: serve(z_i.shape[0]),
        upsample=lambda low, generators: serve(low.shape[0]),
    )


def test_decoder_and_upsampler_evaluations_read_user_data(tmp_path):
    folder = str(_colour_folder(tmp_path / "d", ["a red square", "a blue square", "a green square"]))
    truth = load_held_out(folder, 3, 16).images
    exact = generation.decoder_reconstruction(_stub_stack(16, truth), n=3, batch_size=2, data=folder)
    assert exact["clip_similarity"] == pytest.approx(1.0) and exact["n"] == 3 and exact["data"] == folder
    assert "faithful" not in exact  # no scene graphs to judge against
    grey = generation.decoder_reconstruction(_stub_stack(16, torch.zeros_like(truth)), n=3, data=folder)
    # mean colour + 1 of a mid-grey image is (1, 1, 1): its cosine with each colour's embedding, by hand
    colours = truth.mean(dim=(2, 3)) + 1
    expected = F.cosine_similarity(torch.ones_like(colours), colours, dim=-1).mean().item()
    assert grey["clip_similarity"] == pytest.approx(expected) and expected < 0.95
    up = generation.upsampler_fidelity(_stub_stack(16, truth), n=3, batch_size=2, data=folder)
    assert up["psnr"] > 60 and up["data"] == folder and up["n"] == 3


def test_shapes_data_given_as_a_spec_is_judged_like_the_default(tmp_path):
    from unclip.data.shapes.batch import render_batch

    _, truth = render_batch(4, 32)
    default = generation.decoder_reconstruction(_stub_stack(32, truth), n=4)
    spec = generation.decoder_reconstruction(_stub_stack(32, truth), n=4, data="shapes:split=test")
    assert default["faithful"] == spec["faithful"] == 1.0 and default["clip_similarity"] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("held_out") / "tiny"
    tiny_pipeline(upsampler=False).save_pretrained(folder)
    return folder


def _eval(capsys, *args):
    capsys.readouterr()
    code = main(["eval", *args])
    return code, capsys.readouterr()


def test_prior_eval_on_a_folder_of_the_shapes_pairs_matches_the_default(stack, tmp_path, capsys):
    from unclip.clip import load_clip

    size = load_clip(stack / "clip").image_size
    held = _shapes_folder(tmp_path / "test", "test", 8, size)
    pool = _shapes_folder(tmp_path / "train", "train", 12, size)
    base = ["prior", "--model", str(stack), "--n", "8", "--pool", "12", "--json"]
    code, default = _eval(capsys, *base)
    assert code == 0
    code, data = _eval(capsys, *base, "--data", str(held), "--train-data", str(pool))
    assert code == 0
    default, data = json.loads(default.out), json.loads(data.out)
    for key in ("prior", "baseline_z_t", "baseline_nearest_caption"):
        assert data[key] == pytest.approx(default[key], abs=1e-5), key
    assert data["split"] == str(held) and data["pool"] == 12 and data["skipped"] == 0
    other = _shapes_folder(tmp_path / "heldout", "heldout", 8, size)  # other pairs, other figures
    code, out = _eval(capsys, *base, "--data", str(other))
    assert code == 0 and json.loads(out.out)["baseline_z_t"]["cosine"] != pytest.approx(
        default["baseline_z_t"]["cosine"], abs=1e-4
    )
    code, text = _eval(capsys, *base[:-1], "--data", str(held))  # no training pool: that baseline is left out
    assert code == 0 and "nearest of" not in text.out and "z_t as z_i" in text.out
    code, err = _eval(capsys, *base, "--train-data", str(pool))
    assert code == 2 and "give data too" in err.err


def test_clip_eval_cli_on_data(stack, tmp_path, capsys):
    from unclip.clip import load_clip

    held = _shapes_folder(tmp_path / "test", "test", 6, load_clip(stack / "clip").image_size)
    code, out = _eval(capsys, "clip", "--model", str(stack), "--data", str(held), "--n", "6")
    assert code == 0 and "6 pairs of" in out.out and "retrieval image→text R@1" in out.out
    code, out = _eval(capsys, "clip", "--model", str(stack), "--data", str(held), "--n", "6", "--json")
    result = json.loads(out.out)
    assert result["data"]["n"] == 6 and set(result["data"]["retrieval"]) == {"image_to_text", "text_to_image"}


def test_eval_all_on_data_runs_what_needs_no_scene_graph(stack, tmp_path, capsys):
    from unclip.clip import load_clip

    held = _shapes_folder(tmp_path / "test", "test", 4, load_clip(stack / "clip").image_size)
    out = tmp_path / "run"
    args = ["all", "--model", str(stack), "--out", str(out), "--data", str(held)]
    args += ["--train-data", str(held)]  # also the images of the probing PCA
    code, printed = _eval(capsys, *args, "--only", "clip", "decoder", "compositional", "probing")
    assert code == 0 and "compositional: skipped (it judges Shapes-world prompts" in printed.out
    assert sorted(p.name for p in out.iterdir()) == ["clip.json", "decoder.json", "probing.json"]
    probing = json.loads((out / "probing.json").read_text())
    assert probing["pca_n"] == 4 and probing["n"] == 4 and "dims.all.clip_similarity" in probing
    assert probing["dims.all.clip_similarity"] == probing["details"]["rows"][-1]["clip_similarity"]
    clip = json.loads((out / "clip.json").read_text())
    assert clip["data.n"] == 4 and "data.retrieval.image_to_text" not in clip  # flattened to three levels
    decoder = json.loads((out / "decoder.json").read_text())
    assert decoder["n"] == 4 and -1 <= decoder["clip_similarity"] <= 1 and "faithful" not in decoder
