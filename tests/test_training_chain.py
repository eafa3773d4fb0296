"""The whole training chain, from nothing to a generated image, on tiny presets and 2 steps per stage.

train clip → export → embed → train prior → export → train decoder (on the CLIP) → export → train upsampler →
export → assemble → generate, as scripts/train_shapes_model.sh runs it to re-create the bundled model.
"""

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from unclip.cli.main import main


@pytest.mark.parametrize("parallel", [False, True], ids=["in-order", "side-by-side"])
def test_the_documented_script_trains_a_stack_from_nothing(tmp_path, parallel):
    """scripts/train_shapes_model.sh in its tiny profile: every command of the chain, in order; side by side
    (the bundle profile's way: stages in the background, both priors, a float16 stack) it gives the same chain."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "scripts" / "train_shapes_model.sh"
    env = {**os.environ, "UNCLIP_PROFILE": "tiny", "UNCLIP": f"{sys.executable} -m unclip", "OMP_NUM_THREADS": "1"}
    if parallel:
        env.update(PARALLEL_TINY="1", AR_PRIOR_TINY="1", HALF="1")
    else:  # DATA: the user's own captioned images, here a folder with a metadata.jsonl table
        env.update(DATA=f"folder:{_captioned_folder(tmp_path / 'data', 20)}")
    done = subprocess.run(["bash", str(script), str(tmp_path)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "embeddings" / "meta.json").read_text())["count"] == 16
    for run in ("clip", "decoder", "upsampler"):
        data = json.loads((tmp_path / "runs" / run / "config.json").read_text())["data"]
        assert data == env.get("DATA", "shapes:seed=0"), run
    # With DATA, CLIP's tokenizer is a BPE trained on the data's captions; the Shapes world keeps its own.
    tokenizer = json.loads((tmp_path / "runs" / "clip" / "config.json").read_text())["model"]["tokenizer"]
    assert tokenizer == ("shapes-bpe" if parallel else str(tmp_path / "tokenizer.json"))
    stack = tmp_path / "model"
    assert json.loads((stack / "pipeline.json").read_text())["settings"]["decoder_steps"] == 2
    weights = load_file(str(stack / "decoder" / "model.safetensors"))
    assert weights["text_emb.weight"].dtype == (torch.float16 if parallel else torch.float32)
    if parallel:  # every stage's progress in its own log, and the AR prior trained beside the diffusion prior
        assert {"clip.log", "decoder.log", "prior.log", "ar_prior.log", "upsampler.log"} <= {
            p.name for p in (tmp_path / "runs").iterdir()
        }
        assert (tmp_path / "parts" / "ar_prior" / "config.json").is_file()
    assert main(["generate", "a red circle", "--n", "2", "--model", str(stack), "--out", str(tmp_path / "out")]) == 0
    # The tiny decoder draws 32 px and the upsampler takes it to 128 px.
    assert Image.open(tmp_path / "out" / "image_001.png").size == (128, 128)
    if parallel:
        # INIT_FROM fine-tunes every stage from the stack's parts; the AR prior, which a stack lacks, starts fresh.
        env.update(INIT_FROM=str(stack), CLIP_NEGATIVES="3", CLIP_BINDING="1", DECODER_WHITENING="1")
        again = tmp_path / "again"
        done = subprocess.run(["bash", str(script), str(again)], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        runs = {p.name: json.loads((p / "config.json").read_text()) for p in (again / "runs").iterdir() if p.is_dir()}
        parts = {"clip": "clip", "prior": "prior", "decoder": "decoder", "upsampler": "upsampler0", "ar_prior": None}
        for run, part in parts.items():
            assert runs[run]["train"]["init_from"] == (str(stack / part) if part else ""), run
        clip = runs["clip"]["model"]
        assert clip["negatives_per_caption"] == 3  # CLIP_NEGATIVES overrides CLIP_BINDING's 5
        assert clip["counterfactual_kinds"] == ["swap", "relation"] and clip["separation_weight"] == 1
        assert runs["decoder"]["data"] == "shapes:seed=1"  # a fine-tune sees scenes the first run did not
        # DECODER_WHITENING: the embeddings are written first and the decoder's z_i whitening is fitted on them.
        decoder = runs["decoder"]["model"]
        assert decoder["decoder"]["z_whitening"] and decoder["whitening_embeddings"] == str(again / "embeddings")
        whiten = load_file(str(again / "model" / "decoder" / "model.safetensors"))["z_whiten"]
        assert not torch.allclose(whiten.float(), torch.eye(whiten.shape[0]))
    else:
        # CLIP_FROM and UPSAMPLER_FROM take finished parts as they are: only the priors and the decoder train.
        env.update(CLIP_FROM=str(stack / "clip"), UPSAMPLER_FROM=str(stack / "upsampler0"))
        env.update(DECODER_EMBEDDING_LOSS="0.5")
        again = tmp_path / "again"
        done = subprocess.run(["bash", str(script), str(again)], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        assert {p.name for p in (again / "runs").iterdir() if p.is_dir()} == {"prior", "decoder"}
        # DECODER_EMBEDDING_LOSS: the decoder trained with the whitened consistency term, fitted on the embeddings.
        decoder = json.loads((again / "runs" / "decoder" / "config.json").read_text())["model"]
        assert decoder["embedding_loss_weight"] == 0.5 and decoder["embedding_loss_metric"] == "whitened"
        rows = [json.loads(r) for r in (again / "runs" / "decoder" / "metrics.jsonl").read_text().splitlines()]
        assert any(r.get("train/embedding", 0) > 0 for r in rows)
        for src, dst in (("clip", "clip"), ("upsampler0", "upsampler0")):
            a, b = (
                load_file(str(stack / src / "model.safetensors")),
                load_file(str(again / "model" / dst / "model.safetensors")),
            )
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), src
        env.update(CLIP_FROM=str(tmp_path / "nowhere"))
        done = subprocess.run(["bash", str(script), str(tmp_path / "bad")], env=env, capture_output=True, text=True)
        assert done.returncode == 2 and "CLIP_FROM: not a model folder" in done.stderr


def _captioned_folder(root, n):
    """``n`` Shapes-world images in Hugging Face's imagefolder layout: images/ and a metadata.jsonl of captions."""
    from unclip.data.shapes import ShapesWorld

    (root / "images").mkdir(parents=True)
    world = ShapesWorld(split="train", seed=5, resolution=32)
    rows = []
    for i in range(n):
        sample = world[i]
        Image.fromarray(sample.image).save(root / "images" / f"{i:03d}.png")
        rows.append(json.dumps({"file_name": f"images/{i:03d}.png", "text": sample.caption}))
    (root / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return root


def test_export_refuses_what_is_not_a_finished_run(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    assert "not a run folder" in capsys.readouterr().err
