"""Prompt files: reading them, generating a folder in batches that resumes after a stop, and the two layouts."""

import json
import re

import numpy as np
import pytest
from PIL import Image
from tiny_stack import tiny_pipeline

from unclip.cli.main import main
from unclip.pipeline import SamplingSettings
from unclip.pipeline.prompt_files import RUN_FILE, generate_from_prompts, read_prompt_file

CHEAP = SamplingSettings(prior_steps=2, decoder_steps=3, upsampler_steps=2, inversion_steps=3)


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(upsampler=False, settings=CHEAP)


def _pixels(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(int)


def test_batch_size_bounds_memory_and_leaves_the_images_alone(pipe):
    whole = pipe(["a red circle", "two blue squares"], num_images=3, seed=4)
    parts = pipe(["a red circle", "two blue squares"], num_images=3, seed=4, batch_size=4)
    assert parts.seeds == whole.seeds == [4, 5, 6, 7, 8, 9]
    assert parts.prompts == whole.prompts and parts.tensors.shape == whole.tensors.shape
    assert (parts.tensors - whole.tensors).abs().max() < 1e-4
    assert (parts.z_i - whole.z_i).abs().max() < 1e-4
    other = pipe(["a red circle", "two blue squares"], num_images=3, seed=5, batch_size=4)
    assert (other.tensors - whole.tensors).abs().max() > 0.1  # the comparison can tell seeds apart
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            pipe("a red circle", batch_size=bad)


def test_text_and_jsonl_prompt_files(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("  a red circle \n\nthree green squares\n")
    assert [(r.key, r.prompt, r.record) for r in read_prompt_file(txt)] == [
        ("p00000", "a red circle", {"prompt": "a red circle"}),
        ("p00001", "three green squares", {"prompt": "three green squares"}),
    ]
    jsonl = tmp_path / "p.jsonl"
    rows = [{"key": "k-1", "text": "a circle", "category": "single_object"},
            {"tag": "colors", "include": [{"class": "square", "count": 1, "color": "red"}], "prompt": "a red square"},
            {"caption": ""}]  # fmt: skip
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    got = read_prompt_file(jsonl)
    assert [(r.key, r.prompt) for r in got] == [("k-1", "a circle"), ("p00001", "a red square"), ("p00002", "")]
    assert [r.record for r in got] == rows  # every field is kept for the sidecars and GenEval's metadata


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("p.csv", "a,b\n", "expected a .txt file"),
        ("p.txt", "\n \n", "holds no prompts"),
        ("p.jsonl", '{"prompt": "a"}\n{"prompt": \n', "line 2: not JSON"),
        ("p.jsonl", '["a red circle"]\n', "line 1: expected a JSON object, got list"),
        ("p.jsonl", '{"prompt": 3}\n', "line 1: needs a string under one of prompt, text, caption"),
        ("p.jsonl", '{"prompt": "a", "key": "../up"}\n', "key '../up' cannot name a file"),
        ("p.jsonl", '{"prompt": "a", "key": "x"}\n{"prompt": "b", "key": "x"}\n', "key 'x' names prompts 0 and 1"),
    ],
)
def test_bad_prompt_files_are_refused_with_the_line(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(message)):
        read_prompt_file(path)


def test_missing_prompt_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such prompt file"):
        read_prompt_file(tmp_path / "nope.txt")


class StopAfter:
    """The pipeline, stopped (as by Ctrl-C) at its call number ``stop``; the calls' seeds are recorded."""

    def __init__(self, pipe, stop=None):
        self.pipe, self.stop, self.seeds = pipe, stop, []
        self.settings = pipe.settings

    def __call__(self, prompts, **kwargs):
        if len(self.seeds) + 1 == self.stop:
            raise KeyboardInterrupt
        self.seeds.append(list(kwargs["seed"]))
        return self.pipe(prompts, **kwargs)


def test_a_stopped_run_keeps_its_images_and_the_rerun_makes_only_the_rest(pipe, tmp_path):
    rows = read_prompt_file(_write(tmp_path / "p.txt", "a red circle\ntwo blue squares\na green triangle\n"))
    out = tmp_path / "out"
    stopped = StopAfter(pipe, stop=2)
    with pytest.raises(KeyboardInterrupt):
        generate_from_prompts(stopped, rows, out, images_per_prompt=2, seed=5, batch_size=4, progress=False)
    made = sorted(p.name for p in out.glob("*.png"))
    assert made == ["p00000_000.png", "p00000_001.png", "p00001_000.png", "p00001_001.png"]  # the first batch
    before = {name: (out / name).stat().st_mtime_ns for name in made}

    resumed = StopAfter(pipe)
    done = generate_from_prompts(resumed, rows, out, images_per_prompt=2, seed=5, batch_size=4, progress=False)
    assert done == {"images": 6, "generated": 2, "kept": 4, "out": str(out)}
    assert resumed.seeds == [[9, 10]]  # only the missing images, with the seeds they would have had
    assert {name: (out / name).stat().st_mtime_ns for name in made} == before
    # The folder holds what one call of the pipeline gives for the same prompts and seeds.
    reference = pipe([r.prompt for r in rows], num_images=2, seed=5).images
    for j, (i, k) in enumerate((i, k) for i in range(3) for k in range(2)):
        got = _pixels(out / f"p{i:05d}_{k:03d}.png")
        assert np.abs(got - np.asarray(reference[j]).astype(int)).max() <= 1
        side = json.loads((out / f"p{i:05d}_{k:03d}.json").read_text())
        assert (side["prompt"], side["seed"], side["index"]) == (rows[i].prompt, 5 + 2 * i + k, k)
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.width == 2 * 64  # a row per prompt, images_per_prompt across (cells are at least 64 px)


def test_a_rerun_that_would_mix_runs_is_refused(pipe, tmp_path):
    prompts = _write(tmp_path / "p.txt", "a red circle\n")
    out = tmp_path / "out"
    generate_from_prompts(pipe, read_prompt_file(prompts), out, images_per_prompt=1, progress=False)
    record = json.loads((out / RUN_FILE).read_text())
    assert record["seed"] == 0 and record["images_per_prompt"] == 1 and record["settings"]["decoder_steps"] == 3
    with pytest.raises(ValueError, match="other seed"):
        generate_from_prompts(pipe, read_prompt_file(prompts), out, images_per_prompt=1, seed=1, progress=False)
    with pytest.raises(ValueError, match=re.escape("other settings.decoder_steps")):
        generate_from_prompts(pipe, read_prompt_file(prompts), out, images_per_prompt=1, decoder_steps=4,
                              progress=False)  # fmt: skip
    changed = _write(tmp_path / "q.txt", "a blue circle\n")
    with pytest.raises(ValueError, match="the prompt file changed since"):
        generate_from_prompts(pipe, read_prompt_file(changed), out, images_per_prompt=1, progress=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="is not a prompt-file run"):
        generate_from_prompts(pipe, read_prompt_file(prompts), foreign, progress=False)
    assert [p.name for p in foreign.iterdir()] == ["holiday.jpg"]


def test_suite_rows_keep_their_requirements_for_the_judge(pipe, tmp_path):
    from unclip.data.shapes import PROMPT_SUITE
    from unclip.data.shapes.export import judge_folder, write_prompts

    suite = write_prompts([PROMPT_SUITE[0], PROMPT_SUITE[-1]], tmp_path / "suite")
    out = tmp_path / "out"
    generate_from_prompts(pipe, read_prompt_file(suite), out, images_per_prompt=2, progress=False)
    side = json.loads((out / f"{PROMPT_SUITE[-1].key}_001.json").read_text())
    assert side["requirement"] == PROMPT_SUITE[-1].requirement.to_json() and side["prompt"] == PROMPT_SUITE[-1].text
    report = judge_folder(out)
    assert report["judged"] == 4 and report["skipped"] == []  # the contact sheet is not taken for an image
    assert sum(c["n"] for c in report["categories"].values()) == 4


def test_geneval_layout(pipe, tmp_path):
    row = {"tag": "colors", "include": [{"class": "square", "count": 1, "color": "red"}], "prompt": "a red square"}
    lines = json.dumps({"prompt": "a circle"}) + "\n" + json.dumps(row)
    prompts = _write(tmp_path / "evaluation_metadata.jsonl", lines)
    out = tmp_path / "out"
    generate_from_prompts(pipe, read_prompt_file(prompts), out, images_per_prompt=3, seed=2, layout="geneval",
                          progress=False)  # fmt: skip
    assert json.loads((out / "00001" / "metadata.jsonl").read_text()) == row  # json.load, as GenEval reads it
    samples = sorted(p.name for p in (out / "00001" / "samples").iterdir())
    assert [s for s in samples if re.match(r"\d+\.png", s)] == ["0000.png", "0001.png", "0002.png"]  # GenEval's match
    assert json.loads((out / "00001" / "samples" / "0002.json").read_text())["seed"] == 2 + 3 + 2


def test_the_suite_in_genevals_schema_and_layout_is_judged_as_in_ours(pipe, tmp_path):
    from unclip.data.shapes import PROMPT_SUITE
    from unclip.data.shapes.export import GENEVAL_METADATA, judge_folder, write_prompts

    chosen = [PROMPT_SUITE[0], PROMPT_SUITE[250], PROMPT_SUITE[-1]]
    ours = write_prompts(chosen, tmp_path / "suite")
    reports = []
    for prompts, layout in ((ours, "flat"), (ours.with_name(GENEVAL_METADATA), "geneval")):
        out = tmp_path / layout
        generate_from_prompts(pipe, read_prompt_file(prompts), out, images_per_prompt=2, layout=layout, progress=False)
        reports.append(judge_folder(out))
    assert reports[0] == reports[1] and reports[0]["judged"] == 6 and len(reports[0]["categories"]) == 3


def test_generate_command_with_a_prompt_file(pipe, tmp_path, capsys):
    model = tmp_path / "model"
    pipe.save_pretrained(model)
    prompts = _write(tmp_path / "p.txt", "a red circle\na blue square\n")
    out = tmp_path / "out"
    args = ["generate", "--prompts", str(prompts), "--n", "2", "--batch-size", "3", "--model", str(model)]
    assert main([*args, "--out", str(out)]) == 0
    assert "4 images of 2 prompts" in capsys.readouterr().out
    assert main([*args, "--out", str(out)]) == 0
    assert "(0 made now, 4 kept from before)" in capsys.readouterr().out
    for wrong, message in [
        (["generate", "a", "--prompts", str(prompts)], "give a PROMPT or --prompts FILE"),
        (["generate"], "give a PROMPT or --prompts FILE"),
        (["generate", "a", "--layout", "geneval"], "--layout applies to --prompts runs"),
        (["generate", "a", "--batch-size", "0"], "--batch-size must be >= 1"),
        (["generate", "a red circle", "--model", str(model), "--out", str(out)], "holds a --prompts run"),
    ]:
        assert main(wrong) == 2
        assert message in capsys.readouterr().err
    assert len(list(out.glob("*.png"))) == 5  # the refused single-prompt run replaced nothing


def test_text_prompts_of_the_suite_carry_its_requirement(pipe, tmp_path):
    from unclip.data.shapes import PROMPT_SUITE
    from unclip.data.shapes.export import judge_folder

    model = tmp_path / "model"
    pipe.save_pretrained(model)
    prompts = _write(tmp_path / "p.txt", f"{PROMPT_SUITE[7].text}\na watercolour of a fox\n")
    out = tmp_path / "out"
    assert main(["generate", "--prompts", str(prompts), "--n", "1", "--model", str(model), "--out", str(out)]) == 0
    suite = json.loads((out / "p00000_000.json").read_text())
    assert suite["requirement"] == PROMPT_SUITE[7].requirement.to_json() and suite["key"] == "p00000"
    assert "requirement" not in json.loads((out / "p00001_000.json").read_text())
    report = judge_folder(out)
    assert report["judged"] == 1 and [s["file"] for s in report["skipped"]] == ["p00001_000.png"]


def _write(path, text):
    path.write_text(text)
    return path
