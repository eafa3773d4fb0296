"""train.init_from: a run that starts from a model folder's weights (fine-tuning) instead of a fresh init."""

from pathlib import Path

import pytest
import torch
from tiny_stage import TinyConfig, TinyNet, TinyStage, make_folder, register

from unclip.cli.main import main
from unclip.model_folder import write_model_folder
from unclip.train.checkpoint import latest_checkpoint
from unclip.train.engine import init_weights


@pytest.fixture(autouse=True)
def _tiny_registered():
    register()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("data"), n=16)


def _folder(root: Path, cfg: TinyConfig, seed: int) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    net = TinyNet(cfg)
    folder = write_model_folder(root / f"model_{cfg.hidden}_{seed}", {"format": "tiny", "format_version": 1}, net)
    return folder, {k: v.clone() for k, v in net.state_dict().items()}


def _run(data, out, *extra):
    args = ["train", "tiny", "--data", f"folder:{data}", "--out", str(out), "--no-progress", "--steps", "1"]
    return main([*args, "--checkpoint-every", "1", "--lr", "1e-12", "--set", "train.warmup_steps=0", *extra])


def test_a_run_starts_from_the_folders_weights(data, tmp_path):
    folder, weights = _folder(tmp_path, TinyConfig(), seed=123)
    assert _run(data, tmp_path / "fresh") == 0
    assert _run(data, tmp_path / "tuned", "--set", f"train.init_from={folder}") == 0
    fresh = latest_checkpoint(tmp_path / "fresh" / "checkpoints").tensors["model"]
    tuned = latest_checkpoint(tmp_path / "tuned" / "checkpoints").tensors["model"]
    # One step at lr 1e-12 moves nothing visible: the run holds the folder's weights, not the seed's init.
    for name, w in weights.items():
        assert torch.allclose(tuned[name], w, atol=1e-6), name
        assert not torch.allclose(fresh[name], w, atol=1e-3), name


def test_a_folder_of_another_size_is_refused_and_leaves_no_run_folder(data, tmp_path, capsys):
    folder, _ = _folder(tmp_path, TinyConfig(hidden=128), seed=0)
    assert _run(data, tmp_path / "run", "--set", f"train.init_from={folder}") != 0
    err = capsys.readouterr().err
    assert "does not fit stage 'tiny'" in err and "shape mismatch" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
    assert _run(data, tmp_path / "run2", "--set", f"train.init_from={tmp_path / 'nowhere'}") != 0
    assert "does not exist" in capsys.readouterr().err


class _WithStatistics(TinyNet):
    """A net with a fitted buffer, as the priors have (normalization statistics, PCA)."""

    def __init__(self, cfg: TinyConfig, mean: float) -> None:
        super().__init__(cfg)
        self.register_buffer("data_mean", torch.full((4,), mean))


def test_parameters_come_from_the_folder_and_buffers_from_this_runs_build(tmp_path):
    torch.manual_seed(0)
    old = _WithStatistics(TinyConfig(), mean=1.0)
    folder = write_model_folder(tmp_path / "old", {"format": "tiny", "format_version": 1}, old, half=True)
    torch.manual_seed(1)
    new = _WithStatistics(TinyConfig(), mean=2.0)
    init_weights(TinyStage(), TinyConfig(), new, folder)
    assert torch.equal(new.data_mean, torch.full((4,), 2.0))  # fitted to this run's data: kept
    for (name, a), b in zip(new.named_parameters(), old.parameters(), strict=True):
        assert a.dtype == torch.float32 and torch.allclose(a, b, atol=1e-3), name  # float16 folder, float32 net


def test_a_clip_folder_with_another_tokenizer_is_refused(tmp_path):
    from unclip.clip import CLIP, PRESETS, make_tokenizer
    from unclip.train.clip_stage import ClipStage

    stage = ClipStage()
    config = stage.presets()["tiny"].model
    cfg = PRESETS["tiny"]
    same = CLIP(cfg, make_tokenizer("shapes-bpe", cfg.text.vocab_size, cfg.text.context_length))
    stage.check_init_from(config, same.save_pretrained(tmp_path / "same"))  # accepted
    # A BPE learnt to a smaller vocabulary: same special tokens, fits the tower, other merges and numbering.
    other = CLIP(cfg, make_tokenizer("shapes-bpe", 300, cfg.text.context_length))
    with pytest.raises(ValueError, match="tokenizer differs"):
        stage.check_init_from(config, other.save_pretrained(tmp_path / "other"))
