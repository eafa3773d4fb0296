"""model.decoder.z_whitening through the engine: fitted on an `unclip embed` folder, function kept on init_from."""

import json

import torch

from unclip.cli.main import main


def _train(out, clip, *args):
    return main(["train", "decoder", "--preset", "tiny", "--data", "shapes", "--out", str(out), "--no-progress",
                 "--steps", "1", "--batch-size", "4", "--set", f"model.clip={clip}", "--set", "train.log_every=1",
                 "--set", "train.checkpoint_every=1", *args])  # fmt: skip


def _base_decoder(folder):
    """The tiny preset's decoder with every weight given a value (its output layer starts at zero, which would
    make any z_i projection give the same loss), saved as a model folder to start from."""
    from unclip.models.checkpoint import save_pretrained
    from unclip.models.decoder import Decoder
    from unclip.train.decoder_stage import DecoderStage

    torch.manual_seed(0)
    decoder = Decoder(DecoderStage().presets()["tiny"].model.decoder)
    with torch.no_grad():
        for p in decoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_pretrained(decoder, folder)


def _first_row(run):
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[0])


def test_a_whitened_fine_tune_starts_from_the_same_function(tmp_path, tiny_clip):
    emb = tmp_path / "emb"
    assert main(["embed", "--model", str(tiny_clip), "--data", "shapes", "--n", "96", "--out", str(emb)]) == 0
    _base_decoder(tmp_path / "base_dec")
    init = ["--set", f"train.init_from={tmp_path / 'base_dec'}"]
    whiten = ["--set", "model.decoder.z_whitening=true", "--set", f"model.whitening_embeddings={emb}"]
    assert _train(tmp_path / "raw", tiny_clip, *init) == 0
    assert _train(tmp_path / "white", tiny_clip, *init, *whiten) == 0
    # Same seed, batch and noise: the first step's loss is computed by the same function, so it is the same.
    raw, white = _first_row(tmp_path / "raw"), _first_row(tmp_path / "white")
    assert abs(white["train/mse"] - raw["train/mse"]) < 1e-6
    assert abs(white["train/vlb"] - raw["train/vlb"]) < 1e-5
    # ... while the whitening was fitted (not the identity) and the projections rewritten for it.
    assert main(["export", str(tmp_path / "white"), "--out", str(tmp_path / "white_dec")]) == 0
    from unclip.models.checkpoint import from_pretrained

    dec = from_pretrained(tmp_path / "white_dec")
    assert dec.config.z_whitening and not torch.allclose(dec.z_whiten, torch.eye(dec.config.clip_dim))
    # From scratch the same option trains too (a different start: the first loss differs).
    assert _train(tmp_path / "scratch", tiny_clip, *whiten) == 0


def test_whitening_without_or_with_foreign_embeddings_is_refused_before_training(tmp_path, tiny_clip, capsys):
    code = _train(tmp_path / "run", tiny_clip, "--set", "model.decoder.z_whitening=true")
    assert code == 2 and "model.whitening_embeddings=EMB_DIR" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()
    other = tmp_path / "other_clip"
    import shutil

    shutil.copytree(tiny_clip, other)
    emb = tmp_path / "emb"
    assert main(["embed", "--model", str(other), "--data", "shapes", "--n", "8", "--out", str(emb)]) == 0
    code = _train(tmp_path / "run2", tiny_clip, "--set", "model.decoder.z_whitening=true",
                  "--set", f"model.whitening_embeddings={emb}")  # fmt: skip
    assert code == 2 and "were made by the CLIP at" in capsys.readouterr().err
    assert not (tmp_path / "run2" / "checkpoints").exists()
