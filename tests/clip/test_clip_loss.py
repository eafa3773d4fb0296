import math

import pytest
import torch

from unclip.clip import contrastive_loss


def _ce(logits_row: list[float], target: int) -> float:
    return -logits_row[target] + math.log(sum(math.exp(v) for v in logits_row))


def test_two_by_two_matches_hand_computation():
    # Unit vectors at 0° and 90° for images, 30° and 120° for captions: cosines are easy to write down.
    z_i = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    c, s = math.cos(math.pi / 6), math.sin(math.pi / 6)
    z_t = torch.tensor([[c, s], [-s, c]], dtype=torch.float64)
    scale = 10.0
    sims = [[c, s], [-s, c]]  # z_i @ z_t.T
    rows = [[scale * v for v in r] for r in sims]
    cols = [[rows[0][0], rows[1][0]], [rows[0][1], rows[1][1]]]
    i2t = (_ce(rows[0], 0) + _ce(rows[1], 1)) / 2
    t2i = (_ce(cols[0], 0) + _ce(cols[1], 1)) / 2
    out = contrastive_loss(z_i, z_t, scale)
    assert float(out.image_to_text) == pytest.approx(i2t, abs=1e-12)
    assert float(out.text_to_image) == pytest.approx(t2i, abs=1e-12)
    assert float(out.loss) == pytest.approx((i2t + t2i) / 2, abs=1e-12)
    assert float(out.accuracy) == 1.0


def test_hard_negatives_enter_only_image_to_text():
    torch.manual_seed(0)
    z_i = torch.nn.functional.normalize(torch.randn(4, 8, dtype=torch.float64), dim=-1)
    z_t = torch.nn.functional.normalize(torch.randn(4, 8, dtype=torch.float64), dim=-1)
    z_neg = z_i.clone()  # negatives identical to the images: the hardest possible
    plain = contrastive_loss(z_i, z_t, 5.0)
    hard = contrastive_loss(z_i, z_t, 5.0, z_neg)
    assert float(hard.text_to_image) == pytest.approx(float(plain.text_to_image), abs=1e-12)
    assert float(hard.image_to_text) > float(plain.image_to_text) + 0.5
    # Row i of the extended logits: its own caption vs 4 captions and 4 negatives, computed by hand for row 0.
    row = [5.0 * float(z_i[0] @ v) for v in torch.cat([z_t, z_neg])]
    expected = sum(_ce([5.0 * float(z_i[k] @ v) for v in torch.cat([z_t, z_neg])], k) for k in range(4)) / 4
    assert float(hard.image_to_text) == pytest.approx(expected, abs=1e-10)
    assert row.index(max(row)) == 4  # the negative that equals image 0 beats every caption
    assert float(hard.accuracy) == 0.0


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(2, 4\) and \(3, 4\)"):
        contrastive_loss(torch.randn(2, 4), torch.randn(3, 4), 1.0)
    with pytest.raises(ValueError, match="z_neg"):
        contrastive_loss(torch.randn(2, 4), torch.randn(2, 4), 1.0, torch.randn(2, 5))
