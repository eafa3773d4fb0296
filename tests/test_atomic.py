import pytest

from unclip.atomic import atomic_directory, atomic_write_text


def test_atomic_write_text_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")
    assert atomic_write_text(path, "new\n") == path
    assert path.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_an_interrupted_directory_keeps_the_old_one(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(dest) as tmp:
        (tmp / "new.txt").write_text("half")
        raise RuntimeError("stopped half-way")
    assert sorted(p.name for p in dest.iterdir()) == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_atomic_directory_gets_ordinary_permissions_not_private_ones(tmp_path):
    """mkdtemp's 0700 folder and a writer's 0600 file must not make a model folder unreadable to others."""
    import os

    umask = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "model") as tmp:
            weights = tmp / "model.safetensors"
            weights.write_bytes(b"x")
            weights.chmod(0o600)
            (tmp / "sub").mkdir(mode=0o700)
        assert (tmp_path / "model").stat().st_mode & 0o777 == 0o755
        assert (tmp_path / "model" / "model.safetensors").stat().st_mode & 0o777 == 0o644
        assert (tmp_path / "model" / "sub").stat().st_mode & 0o777 == 0o755
    finally:
        os.umask(umask)


def test_atomic_file_replaces_on_success_and_leaves_the_old_file_on_failure(tmp_path):
    from unclip.atomic import atomic_file

    path = tmp_path / "a.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]
    with atomic_file(path) as tmp:
        tmp.write_bytes(b"new")
    assert path.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]
