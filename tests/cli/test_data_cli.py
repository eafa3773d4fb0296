"""CLI round trip: write a Shapes folder, judge it, read the JSON; bad files are skipped, not fatal."""

import json
import tarfile

from unclip.cli.main import main


def test_shapes_then_judge_round_trip(tmp_path, capsys):
    out = tmp_path / "ds"
    assert (
        main(["data", "shapes", "--out", str(out), "--n", "12", "--res", "64", "--split", "test", "--seed", "3"]) == 0
    )
    assert len(list(out.glob("*.png"))) == len(list(out.glob("*.json"))) == len(list(out.glob("*.txt"))) == 12
    (out / "broken.png").write_bytes(b"not a png")
    (out / "broken.json").write_text((out / "test-3-00000000.json").read_text())
    (out / "orphan.png").write_bytes((out / "test-3-00000001.png").read_bytes())
    (out / "badjson.png").write_bytes((out / "test-3-00000001.png").read_bytes())
    (out / "badjson.json").write_text("{nope")
    capsys.readouterr()
    assert main(["judge", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["judged"] == 12
    assert {s["file"] for s in report["skipped"]} == {"broken.png", "orphan.png", "badjson.png"}
    assert "unreadable" in captured.err and "malformed JSON" in captured.err and "missing" in captured.err
    assert report["overall"] == 1.0
    assert report["categories"]["single_object"] == {"accuracy": 1.0, "n": 12}


def test_judge_detects_mismatched_images(tmp_path, capsys):
    out = tmp_path / "ds"
    main(["data", "shapes", "--out", str(out), "--n", "10", "--split", "val", "--seed", "1"])
    # Shuffle the scene graphs: most requirements are now false, so accuracy must drop.
    jsons = sorted(out.glob("*.json"))
    texts = [p.read_text() for p in jsons]
    for p, t in zip(jsons, texts[1:] + texts[:1], strict=True):
        p.write_text(t)
    capsys.readouterr()
    main(["judge", str(out), "--json"])
    assert json.loads(capsys.readouterr().out)["overall"] < 0.6


def test_shards_and_prompts(tmp_path, capsys):
    assert main(["data", "shapes", "--out", str(tmp_path / "sh"), "--n", "5", "--shards", "--shard-size", "2"]) == 0
    shards = sorted((tmp_path / "sh").glob("*.tar"))
    assert [p.name for p in shards] == [f"shapes-train-00000{k}.tar" for k in range(3)]
    with tarfile.open(shards[0]) as tar:
        assert tar.getnames() == [f"train-0-0000000{i}.{e}" for i in range(2) for e in ("png", "txt", "json")]
    assert main(["data", "prompts", "--out", str(tmp_path / "p")]) == 0
    lines = (tmp_path / "p" / "prompts.jsonl").read_text().splitlines()
    assert len(lines) == 720 and json.loads(lines[0])["suite"] == "shapes-prompts-v1"


def test_bad_options_give_clear_errors(tmp_path, capsys):
    assert main(["data", "shapes", "--out", str(tmp_path), "--n", "2", "--res", "2048"]) == 2
    assert "2048" in capsys.readouterr().err
    assert main(["judge", str(tmp_path / "missing"), "--json"]) == 2
    assert "missing" in capsys.readouterr().err
