import pytest
import torch

from unclip.diffusion import Denoised, cat_conditions, conditioned, guided
from unclip.diffusion.guidance import merge_equal_scales


class ShiftDenoiser:
    """x0 = 0.5 x + shift_img + 2 shift_txt: each condition moves the estimate by a known amount.

    Records every call so the tests can check that all guidance branches share one forward pass.
    """

    def __init__(self):
        self.batch_sizes = []

    def __call__(self, x, t, cond):
        self.batch_sizes.append(x.shape[0])
        x0 = 0.5 * x + cond["img"] + 2 * cond["txt"]
        return Denoised(x0, x - x0, cond["img"].sigmoid())  # a per-sample stand-in for a learned variance


def branches(b=3, d=4):
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)
    zeros = torch.zeros(b, d)
    return [
        {"img": zeros, "txt": zeros},  # c_0: unconditional
        {"img": img, "txt": zeros},  # c_1: image embedding only
        {"img": img, "txt": txt},  # c_2: image embedding and caption
    ]


def test_scale_one_is_conditional_and_scale_zero_unconditional():
    conds = branches()[::2]  # [unconditional, fully conditional]
    net = ShiftDenoiser()
    x, t = torch.randn(3, 4), torch.full((3,), 10)
    cond_out = net(x, t, conds[1])
    uncond_out = net(x, t, conds[0])
    assert torch.allclose(guided(net, conds, [1.0])(x, t).x0, cond_out.x0, atol=1e-6)
    assert torch.allclose(guided(net, conds, [0.0])(x, t).x0, uncond_out.x0, atol=1e-6)
    out = guided(net, conds, [4.0])(x, t)
    assert torch.allclose(out.x0, uncond_out.x0 + 4 * (cond_out.x0 - uncond_out.x0), atol=1e-5)
    assert torch.allclose(out.eps, uncond_out.eps + 4 * (cond_out.eps - uncond_out.eps), atol=1e-5)


def test_separate_scales_for_image_and_text_in_one_forward_pass():
    conds = branches()
    net = ShiftDenoiser()
    x, t = torch.randn(3, 4), torch.full((3,), 10)
    out = guided(net, conds, [2.0, 5.0])(x, t)
    assert net.batch_sizes == [9]  # three branches, one call
    # x0 = 0.5 x + s_img * img + s_txt * 2 txt for this linear toy network.
    expected = 0.5 * x + 2.0 * conds[1]["img"] + 5.0 * 2 * conds[2]["txt"]
    assert torch.allclose(out.x0, expected, atol=1e-5)
    # Learned variance comes from the fully conditional branch.
    assert torch.allclose(out.var_frac, conds[2]["img"].sigmoid())
    assert torch.allclose(guided(net, conds, [1.0, 1.0])(x, t).x0, net(x, t, conds[2]).x0, atol=1e-6)
    assert torch.allclose(guided(net, conds, [0.0, 0.0])(x, t).x0, net(x, t, conds[0]).x0, atol=1e-6)


def test_all_scales_one_run_only_the_full_condition_branch():
    """Scales (1, 1) telescope to the fully conditional branch: one forward of b, not one of 3b, and the same
    x0, eps and variance as the three-branch sum (to rounding) and as the branch itself (exactly)."""
    conds = branches()
    x, t = torch.randn(3, 4), torch.full((3,), 10)
    net = ShiftDenoiser()
    one = guided(net, conds, [1.0, 1.0])(x, t)
    assert net.batch_sizes == [3]
    full = net(x, t, conds[2])
    assert torch.equal(one.x0, full.x0) and torch.equal(one.eps, full.eps) and torch.equal(one.var_frac, full.var_frac)
    near = guided(net, conds, [1.0, 1.0 + 1e-7])(x, t)  # the three-branch path, same value to first order
    assert torch.allclose(one.x0, near.x0, atol=1e-5) and torch.allclose(one.eps, near.eps, atol=1e-5)
    net.batch_sizes.clear()
    guided(net, conds, [1.0, 3.0])(x, t)
    assert net.batch_sizes == [9]  # any other scale keeps every branch


def test_equal_scales_skip_the_branch_between_them():
    """s (D(c1) - D(c0)) + s (D(c2) - D(c1)) = s (D(c2) - D(c0)): one scale over z_i and caption (the paper's and
    Karlo's decoder guidance) runs two branches, with the three-branch result and the full branch's variance."""
    conds = branches()
    x, t = torch.randn(3, 4), torch.full((3,), 10)
    net = ShiftDenoiser()
    two = guided(net, conds, [3.0, 3.0])(x, t)
    assert net.batch_sizes == [6]
    assert torch.allclose(two.x0, 0.5 * x + 3.0 * conds[2]["img"] + 3.0 * 2 * conds[2]["txt"], atol=1e-5)
    assert torch.allclose(two.var_frac, conds[2]["img"].sigmoid())
    three = guided(net, conds, [3.0, 3.0 + 1e-7])(x, t)
    assert net.batch_sizes[-1] == 9
    assert torch.allclose(two.x0, three.x0, atol=1e-5) and torch.allclose(two.eps, three.eps, atol=1e-5)


def test_merge_equal_scales_keeps_the_outer_branches():
    kept, scales = merge_equal_scales(["c0", "c1", "c2", "c3", "c4"], [2.0, 2.0, 5.0, 5.0])
    assert (kept, scales) == (["c0", "c2", "c4"], [2.0, 5.0])
    assert merge_equal_scales(["c0", "c1", "c2"], [2.0, 5.0]) == (["c0", "c1", "c2"], [2.0, 5.0])


def test_conditioned_binds_without_guidance():
    conds = branches()
    net = ShiftDenoiser()
    x, t = torch.randn(3, 4), torch.full((3,), 10)
    assert torch.equal(conditioned(net, conds[2])(x, t).x0, net(x, t, conds[2]).x0)


def test_cat_conditions_handles_trees_and_shared_values():
    merged = cat_conditions([{"a": torch.ones(2, 3), "b": (torch.zeros(2), None), "k": 4}] * 3)
    assert merged["a"].shape == (6, 3) and merged["b"][0].shape == (6,) and merged["b"][1] is None
    assert merged["k"] == 4


def test_guidance_errors_name_the_problem():
    net = ShiftDenoiser()
    conds = branches()
    with pytest.raises(ValueError, match="2 guidance scales for 1 conditions"):
        guided(net, conds[:2], [1.0, 2.0])
    with pytest.raises(ValueError, match="unconditional branch"):
        guided(net, conds[:1], [])
    with pytest.raises(ValueError, match="keys"):
        cat_conditions([{"img": torch.ones(1)}, {"txt": torch.ones(1)}])
    with pytest.raises(ValueError, match="differ in shape"):
        cat_conditions([torch.ones(1, 2), torch.ones(1, 3)])
    with pytest.raises(ValueError, match="batch size 3 but x has 2"):
        guided(net, conds, [1.0, 1.0])(torch.zeros(2, 4), torch.zeros(2, dtype=torch.int64))
