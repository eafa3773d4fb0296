"""GenEval's metadata schema and folder layout: the suite written in it, read back, and judged."""

import json

import numpy as np
import pytest
from PIL import Image

from unclip.data.shapes import PROMPT_SUITE, ObjectSpec, Requirement, judge, render
from unclip.data.shapes.export import GENEVAL_METADATA, judge_folder, write_prompts
from unclip.data.shapes.scene import Background, SceneGraph, SceneObject

# A red star left of a blue heart, and a second (green) star.
SCENE = SceneGraph(
    (
        SceneObject("star", "red", "medium", 0.2, 0.5),
        SceneObject("heart", "blue", "medium", 0.8, 0.5),
        SceneObject("star", "green", "small", 0.5, 0.2),
    ),
    Background("gradient", "white", "grey", 0.3),
)
HEART = {"class": "heart", "count": 1}
RED_STAR_LEFT_OF_IT = {"class": "star", "count": 1, "color": "red", "position": ["left of", 0]}


def test_every_suite_requirement_round_trips_through_genevals_schema():
    for prompt in PROMPT_SUITE:
        row = prompt.requirement.to_geneval()
        assert Requirement.from_geneval(json.loads(json.dumps(row))) == prompt.requirement, prompt.key


def test_rows_written_as_geneval_writes_them_mean_what_geneval_means():
    # GenEval places the second object relative to the first ("a dog right of a cat": include [cat, dog +
    # position ["right of", 0]]) and states an exact count as include n, exclude n + 1.
    image = render(SCENE, 64)
    left = {"tag": "position", "include": [HEART, RED_STAR_LEFT_OF_IT]}
    assert Requirement.from_geneval(left) == Requirement(
        "position", (ObjectSpec("star", "red"), ObjectSpec("heart")), "left of"
    )
    assert judge(image, Requirement.from_geneval(left))
    right = json.loads(json.dumps(left).replace("left of", "right of"))
    assert not judge(image, Requirement.from_geneval(right))
    two = {"tag": "counting", "include": [{"class": "star", "count": 2}], "exclude": [{"class": "star", "count": 3}]}
    three = {"tag": "counting", "include": [{"class": "star", "count": 3}], "exclude": [{"class": "star", "count": 4}]}
    assert judge(image, Requirement.from_geneval(two)) and not judge(image, Requirement.from_geneval(three))
    swapped = {"tag": "color_attr", "include": [{"class": "star", "count": 1, "color": "blue"},
                                               {"class": "heart", "count": 1, "color": "red"}]}  # fmt: skip
    assert not judge(image, Requirement.from_geneval(swapped))


@pytest.mark.parametrize(
    "row, message",
    [
        ({"tag": "texture", "include": [{"class": "star"}]}, "unknown GenEval tag 'texture'"),
        ({"tag": "single_object", "include": [{"class": "dog", "count": 1}]}, "unknown shape 'dog'"),
        (
            {
                "tag": "colors",
                "include": [{"class": "star", "color": "red"}],
                "exclude": [{"class": "star", "count": 2}],
            },
            "not an exact count",
        ),
        (
            {
                "tag": "position",
                "include": [{"class": "star"}, {"class": "heart"}, {"class": "cross", "position": ["above", 0]}],
            },
            "a position needs two objects",
        ),
        ({"tag": "colors"}, "malformed GenEval metadata"),
    ],
)
def test_rows_outside_the_shapes_world_are_refused(row, message):
    with pytest.raises(ValueError, match=message):
        Requirement.from_geneval(row)


def test_the_suite_is_written_in_both_schemas(tmp_path):
    write_prompts(PROMPT_SUITE[:5], tmp_path)
    rows = [json.loads(line) for line in (tmp_path / GENEVAL_METADATA).read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [p.text for p in PROMPT_SUITE[:5]]
    assert {r["tag"] for r in rows} == {"single_object"} and set(rows[0]) == {"tag", "include", "prompt"}
    position, counting = (next(p for p in PROMPT_SUITE if p.key == k) for k in ("position-000", "counting-000"))
    assert position.text == "a photo of a circle to the left of a square"
    assert counting.text == "a photo of two circles on a grey background"
    write_prompts([position, counting], tmp_path)
    assert [json.loads(line) for line in (tmp_path / GENEVAL_METADATA).read_text().splitlines()] == [
        {
            "tag": "position",
            "include": [{"class": "square", "count": 1}, {"class": "circle", "count": 1, "position": ["left of", 0]}],
            "prompt": position.text,
        },
        {
            "tag": "counting",
            "include": [{"class": "circle", "count": 2}],
            "exclude": [{"class": "circle", "count": 3}],
            "prompt": counting.text,
        },
    ]


def test_judge_reads_genevals_layout_by_genevals_rules(tmp_path):
    heart, star = SceneObject("heart", "blue", "medium", 0.2, 0.5), SceneObject("star", "red", "medium", 0.8, 0.5)
    other = SceneGraph((heart, star), Background("gradient", "white", "grey", 0.3))  # the star right of the heart
    row = {"tag": "position", "include": [HEART, RED_STAR_LEFT_OF_IT], "prompt": "a red star left of a heart"}
    samples = tmp_path / "00000" / "samples"
    samples.mkdir(parents=True)
    (tmp_path / "00000" / "metadata.jsonl").write_text(json.dumps(row))
    for name, scene in (("0000.png", SCENE), ("0001.png", other)):
        Image.fromarray(render(scene, 64)).save(samples / name)
    (samples / "0000.json").write_text("{}")  # our sidecar: not an image
    Image.fromarray(render(other, 64)).save(samples / "draft.png")  # not named by digits: not a sample
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "00000" / "grid.png")  # not a sample
    (tmp_path / "notes").mkdir()  # not numbered: not a prompt folder
    report = judge_folder(tmp_path)
    assert report["judged"] == 2 and report["skipped"] == []
    assert report["categories"] == {"position": {"accuracy": 0.5, "n": 2}}
    (samples.parent / "metadata.jsonl").unlink()
    report = judge_folder(tmp_path)
    assert report["judged"] == 0 and [s["file"] for s in report["skipped"]] == ["00000/samples/0000.png",
                                                                                "00000/samples/0001.png"]  # fmt: skip
    assert "metadata.jsonl: missing" in report["skipped"][0]["error"]
    (samples.parent / "metadata.jsonl").write_text(json.dumps({"prompt": "a red star left of a heart"}))
    assert "states nothing to judge" in judge_folder(tmp_path)["skipped"][0]["error"]  # a prompt alone is not judged
