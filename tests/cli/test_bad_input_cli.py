"""Bad input on the command line: one error line naming the value, exit status 2, nothing written or destroyed."""

import pytest

from unclip.cli.main import main


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_out_never_replaces_a_file_or_a_folder_of_other_files(model, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("precious")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("precious")
    for out in (mine, a_file):
        assert main(["generate", "a red circle", "--n", "1", "--model", str(model), "--out", str(out)]) == 2
        assert "choose a new or empty folder" in _error(capsys)
    for command in (["export", str(tmp_path / "no-run")], ["assemble", "--from", str(model)]):
        for out in (mine, a_file):
            assert main([*command, "--out", str(out)]) == 2
    assert (mine / "thesis.txt").read_text() == "precious" and a_file.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "notes.txt"]  # no temporary folder either
    # Earlier results, an earlier pipeline folder and an empty folder are fine to write over.
    out, empty = tmp_path / "gen", tmp_path / "empty"
    empty.mkdir()
    for target in (out, out, empty):
        assert main(["generate", "a red circle", "--n", "1", "--model", str(model), "--out", str(target)]) == 0
    assert main(["assemble", "--from", str(model), "--out", str(tmp_path / "asm")]) == 0
    assert main(["assemble", "--from", str(model), "--out", str(tmp_path / "asm")]) == 0


def test_model_folders_are_written_over_only_when_they_are_model_folders(tmp_path):
    from torch import nn

    from unclip.model_folder import write_model_folder

    meta = {"format": "test", "format_version": 1}
    folder = tmp_path / "m"
    write_model_folder(folder, meta, nn.Linear(2, 2))
    write_model_folder(folder, meta, nn.Linear(2, 2))  # an earlier model folder: replaced
    run = tmp_path / "run"  # a training run's folder also has a config.json, but no weights
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="holds other files"):
        write_model_folder(run, meta, nn.Linear(2, 2))
    assert (run / "checkpoints").is_dir()


def test_unwritable_out_and_interruptions_are_one_line(model, tmp_path, capsys, monkeypatch):
    from PIL import Image

    import unclip.pipeline

    src = tmp_path / "src.png"
    Image.new("RGB", (8, 8)).save(src)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("precious")
    assert main(["vary", str(src), "--n", "1", "--model", str(model), "--out", str(a_file / "sub")]) == 2
    assert f"{str(a_file)!r} is not a folder" in _error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "src.png"]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(unclip.pipeline, "interpolate", interrupted)
    out = tmp_path / "frames"
    assert main(["interpolate", str(src), str(src), "--model", str(model), "--out", str(out)]) == 130
    assert "interrupted" in _error(capsys) and not out.exists()


def test_a_prompt_longer_than_the_context_is_truncated_with_a_warning(model, tmp_path):
    long = " ".join(["a red circle left of a blue square"] * 40)
    with pytest.warns(UserWarning, match="truncated to context length"):
        assert main(["generate", long, "--n", "1", "--model", str(model), "--out", str(tmp_path / "g")]) == 0


def test_image_counts_are_bounded_before_any_work(model, tmp_path, capsys):
    # A mistyped --n once allocated until the machine ran out of memory.
    src = tmp_path / "src.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(src)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n")
    out = str(tmp_path / "out")
    for command in (
        ["generate", "a red circle", "--n", "100000000"],
        ["generate", "a red circle", "--batch-size", "5000"],
        ["generate", "--prompts", str(prompts), "--n", "100000000"],
        ["vary", str(src), "--n", "100000000"],
        ["inpaint", str(src), "--box", "0,0,1,1", "--n", "100000000"],
        ["interpolate", str(src), str(src), "--frames", "100000000"],
        ["textdiff", str(src), "--from", "a red circle", "--to", "a blue circle", "--frames", "100000000"],
    ):
        assert main([*command, "--model", str(model), "--out", out]) == 2
        assert "at most 1000" in _error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.txt", "src.png"]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("train.steps=2.5", "train.steps must be an integer, got 2.5"),
        ("train.seed=abc", "train.seed must be an integer, got 'abc'"),
        ("train.lr=abc", "train.lr must be a number, got 'abc'"),
        ("train.compile=yes", "train.compile must be true or false"),
        ("train.batch_size=true", "train.batch_size must be an integer, got True"),
        ("train.adam_betas=[0.9]", "train.adam_betas must be a list of 2"),
        ("model.sample_steps=abc", "upsampler config.sample_steps must be an integer"),
        ("model.upsampler.unet.channel_mult=[1,2.5]", "channel_mult must be a list whose items are each an integer"),
    ],
)
def test_train_set_refuses_values_of_the_wrong_type(setting, message, tmp_path, capsys):
    args = ["train", "upsampler", "--preset", "tiny", "--data", "shapes", "--dry-run", "--set", setting]
    assert main(args) == 2
    assert message in _error(capsys)


def test_train_refuses_an_infinite_learning_rate(capsys):
    assert main(["train", "upsampler", "--preset", "tiny", "--data", "shapes", "--dry-run", "--lr", "inf"]) == 2
    assert "train.lr must be a finite number > 0, got inf" in _error(capsys)


def test_train_set_still_takes_a_comma_separated_list_of_words(tmp_path, capsys):
    # The binding recipe's own command line (scripts/experiments/binding_recipe.sh): the stage splits the words.
    args = ["train", "clip", "--preset", "tiny", "--data", "shapes", "--dry-run", "--out", str(tmp_path / "run")]
    assert main([*args, "--set", "model.counterfactual_kinds=swap,relation"]) == 0
    assert '"counterfactual_kinds": [\n      "swap",\n      "relation"' in capsys.readouterr().out


def test_train_data_without_captions_or_with_only_corrupt_images(tmp_path, capsys):
    from PIL import Image

    empty, uncaptioned, corrupt = (tmp_path / name for name in ("empty", "uncaptioned", "corrupt"))
    for folder in (empty, uncaptioned, corrupt):
        folder.mkdir()
    for k in range(3):
        Image.new("RGB", (16, 16)).save(uncaptioned / f"{k}.png")
        (corrupt / f"{k}.png").write_bytes(b"not an image")
        (corrupt / f"{k}.txt").write_text("a red circle")
    train = ["train", "toy", "--preset", "tiny", "--steps", "1", "--no-progress"]
    assert main([*train, "--data", f"folder:{empty}", "--out", str(tmp_path / "r1")]) == 2
    assert "holds no images" in _error(capsys)
    assert main([*train, "--data", f"folder:{uncaptioned}", "--out", str(tmp_path / "r2")]) == 2
    assert "none of its 3 images has a caption" in _error(capsys)
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()  # refused before the run folder
    assert main([*train, "--data", f"folder:{corrupt}", "--out", str(tmp_path / "r3")]) == 2
    assert "samples in a row could not be used" in _error(capsys)
    assert not (tmp_path / "r3").exists()  # the failed run took back its config.json and metrics.jsonl


@pytest.mark.parametrize("command", [["generate", "a red circle"], ["eval", "decoder"], ["data", "shapes"]])
def test_seeds_beyond_the_generators_range_are_refused_by_name(command, capsys):
    for seed in (str(2**64), "-1", "1.5"):
        with pytest.raises(SystemExit) as stop:
            main([*command, "--seed", seed, "--out", "never"])
        assert stop.value.code == 2 and "argument --seed:" in _error(capsys)


def test_the_library_names_a_seed_torch_cannot_take():
    from unclip.diffusion import generators_from_seeds

    assert len(generators_from_seeds([0, 2**64 - 1, -(2**63)])) == 3  # torch's whole range is accepted
    with pytest.raises(ValueError, match=r"seed 18446744073709551616 is out of range: torch generators take"):
        generators_from_seeds([3, 2**64])


def test_images_of_any_mode_are_converted_and_16_bit_is_scaled_not_clipped(tmp_path):
    import io

    import numpy as np
    from PIL import Image

    from unclip.data.datasets import Record, decode_image
    from unclip.pipeline.pipeline import from_pil, rgb_image

    ramp = tmp_path / "ramp16.png"
    Image.fromarray(np.array([[0, 1028, 32896, 65535]], dtype=np.uint16)).save(ramp)
    assert Image.open(ramp).mode.startswith("I;16")
    assert np.array(rgb_image(ramp))[0, :, 0].tolist() == [0, 4, 128, 255]  # PIL alone gives [0, 255, 255, 255]
    assert np.array(decode_image(Record("k", ramp.read_bytes(), "a caption")))[0, :, 1].tolist() == [0, 4, 128, 255]
    assert np.array(rgb_image(Image.new("L", (2, 2), 77).convert("I"))).max() == 77  # 8-bit values in mode I
    images = [Image.new(mode, (13, 29)) for mode in ("RGBA", "LA", "L", "P", "1", "CMYK", "I;16", "F")]
    buffer = io.BytesIO()
    Image.new("RGB", (3000, 2)).save(buffer, "PNG")
    assert from_pil([*images, Image.open(buffer)], 16).shape == (len(images) + 1, 3, 16, 16)


def test_a_prompt_of_undecodable_bytes_is_one_error_line(model, tmp_path, capsys):
    out = tmp_path / "g"
    # A shell passes bytes that are not UTF-8 as lone surrogates (os.fsdecode); the tokenizer raised a TypeError.
    assert main(["generate", "a red \udcff circle", "--n", "1", "--model", str(model), "--out", str(out)]) == 2
    assert "is not valid text" in _error(capsys) and not out.exists()


def test_nan_weights_are_refused_when_the_model_loads(model, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(model, broken)
    weights = broken / "decoder" / "model.safetensors"
    state = load_file(str(weights))
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name].view(-1)[0] = float("nan")
    save_file(state, str(weights))
    assert main(["generate", "a red circle", "--n", "1", "--model", str(broken), "--out", str(tmp_path / "g")]) == 2
    assert f"NaN values in tensor(s) {name}" in _error(capsys)


def test_eval_upsampler_refuses_a_count_below_one(model, capsys):
    assert main(["eval", "upsampler", "--n", "-3", "--no-fid", "--model", str(model)]) == 2
    assert "n must be >= 1, got -3" in _error(capsys)
