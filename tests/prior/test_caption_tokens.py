import warnings

import pytest
import torch

from unclip.prior.caption_tokens import fit_tokens


def _states(lengths: list[int], width: int = 3, total: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.arange(total)[None] < torch.tensor(lengths)[:, None]
    tokens = torch.randn(len(lengths), total, width) * mask[..., None]
    return tokens, mask


def test_pads_with_zero_states_and_false_mask():
    tokens, mask = _states([2, 6])
    t, m = fit_tokens(tokens, mask, 9)
    assert t.shape == (2, 9, 3) and m.shape == (2, 9)
    assert torch.equal(t[:, :6], tokens) and torch.equal(m[:, :6], mask)
    assert not m[:, 6:].any() and not t[:, 6:].any()


def test_cutting_only_padding_is_silent_and_exact():
    tokens, mask = _states([2, 4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t, m = fit_tokens(tokens, mask, 4)
    assert torch.equal(t, tokens[:, :4]) and torch.equal(m, mask[:, :4])


def test_a_caption_longer_than_the_prior_is_cut_with_a_warning():
    tokens, mask = _states([2, 6])
    with pytest.warns(UserWarning, match="longer than the prior's 3 tokens"):
        t, m = fit_tokens(tokens, mask, 3)
    assert torch.equal(t, tokens[:, :3]) and m.sum().item() == 2 + 3
