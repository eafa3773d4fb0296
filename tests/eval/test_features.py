"""Folder features: the cache hits and invalidates correctly; unreadable files are skipped; mixed sizes work."""

import os
import time

import numpy as np
import pytest
from eval_helpers import CountingExtractor, shapes_images, write_folder
from PIL import Image

from unclip.eval import fid_folders, folder_features


def test_cache_hit_returns_identical_features_and_a_changed_file_invalidates(tmp_path, extractor):
    folder = write_folder(tmp_path / "a", shapes_images(6))
    cache = tmp_path / "cache"
    first = folder_features(folder, extractor, batch_size=4, cache_dir=cache, progress=False)
    assert extractor.seen == 6 and not first.from_cache and len(list(cache.glob("*.npz"))) == 1
    hit = folder_features(folder, extractor, batch_size=4, cache_dir=cache, progress=False)
    assert extractor.seen == 6 and hit.from_cache  # nothing recomputed
    np.testing.assert_array_equal(hit.features, first.features)
    assert hit.files == first.files and hit.files == [f"img{i:03d}.png" for i in range(6)]

    # Replace one image with another of the same name: size/mtime change, so the key changes.
    Image.fromarray(shapes_images(7)[6]).save(folder / "img002.png")
    st = (folder / "img002.png").stat()
    os.utime(folder / "img002.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    fresh = folder_features(folder, extractor, batch_size=4, cache_dir=cache, progress=False)
    assert extractor.seen == 12 and not fresh.from_cache
    assert not np.array_equal(fresh.features[2], first.features[2])
    np.testing.assert_array_equal(np.delete(fresh.features, 2, 0), np.delete(first.features, 2, 0))

    # A different extractor id must not read the other's features.
    other = CountingExtractor()
    other.id = "another-model"
    assert not folder_features(folder, other, cache_dir=cache, progress=False).from_cache


def test_a_corrupt_cache_file_is_recomputed(tmp_path, extractor):
    folder = write_folder(tmp_path / "a", shapes_images(3))
    cache = tmp_path / "cache"
    folder_features(folder, extractor, cache_dir=cache, progress=False)
    (npz,) = cache.glob("*.npz")
    npz.write_bytes(b"garbage")
    again = folder_features(folder, extractor, cache_dir=cache, progress=False)
    assert not again.from_cache and again.n == 3 and extractor.seen == 6


def test_unreadable_files_are_skipped_and_counted_even_from_the_cache(tmp_path, extractor):
    folder = write_folder(tmp_path / "a", shapes_images(4))
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "notes.txt").write_text("ignored: not an image extension")
    Image.fromarray(shapes_images(1)[0]).convert("L").save(folder / "grey.jpg")  # greyscale → RGB
    for _ in range(2):
        ff = folder_features(folder, extractor, batch_size=2, cache_dir=tmp_path / "c", progress=False)
        assert ff.n == 5 and [name for name, _ in ff.skipped] == ["broken.png"]
        assert "broken.png" not in ff.files and "grey.jpg" in ff.files and ff.features.shape == (5, 6)


def test_mixed_sizes_are_resized_and_reported(tmp_path, extractor):
    folder = write_folder(tmp_path / "a", shapes_images(3, resolution=64))
    write_folder(folder, shapes_images(2, resolution=96), prefix="big")
    ff = folder_features(folder, extractor, batch_size=8, progress=False)
    assert ff.sizes == [(64, 64), (96, 96)] and ff.n == 5
    # Order follows the sorted file names even though each size went through the extractor separately.
    single = [folder_features(folder, CountingExtractor(), batch_size=1, progress=False).features]
    np.testing.assert_allclose(ff.features, single[0], rtol=1e-6)


def test_fid_folders_checks_sample_sizes_and_paths(tmp_path, extractor):
    one = write_folder(tmp_path / "one", shapes_images(1))
    few = write_folder(tmp_path / "few", shapes_images(5))
    with pytest.raises(ValueError, match="at least 2 readable images, found 1"):
        fid_folders(one, few, extractor=extractor, cache_dir=None, progress=False)
    with pytest.raises(FileNotFoundError, match="missing"):
        fid_folders(tmp_path / "missing", few, extractor=extractor, cache_dir=None)
    with pytest.warns(UserWarning, match="only 5 images"):
        result = fid_folders(few, few, extractor=extractor, cache_dir=None, progress=False)
    assert result.fid == pytest.approx(0.0, abs=1e-9) and result.n_a == result.n_b == 5
    assert extractor.seen == 6  # 1 + 5: the folder against itself was read once
    assert any("only 5 images" in w for w in result.warnings)


def test_the_default_cache_dir_follows_unclip_cache(tmp_path, monkeypatch):
    from unclip.eval import default_cache_dir

    monkeypatch.setenv("UNCLIP_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c" / "fid"
    monkeypatch.delenv("UNCLIP_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "unclip" / "fid"
    time.sleep(0)  # nothing was created: computing the path writes nothing
    assert not (tmp_path / "c").exists() and not (tmp_path / "home").exists()


def test_list_images_skips_the_contact_sheet_generate_writes(tmp_path):
    from PIL import Image

    from unclip.eval.features import list_images

    for name in ("a.png", "b.jpg", "contact_sheet.png", "notes.txt"):
        if name.endswith("txt"):
            (tmp_path / name).write_text("x")
        else:
            Image.new("RGB", (4, 4)).save(tmp_path / name)
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "b.jpg"]
