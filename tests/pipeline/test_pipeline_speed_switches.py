"""bf16/fp16 autocast and torch.compile as pipeline switches: same images within precision, same plumbing."""

import dataclasses

import pytest
import torch
from tiny_stack import tiny_pipeline


def test_bf16_autocast_changes_only_the_network_precision():
    pipe = tiny_pipeline()
    ref = pipe(["a red circle", "two blue squares"], seed=3)
    low = pipe.set_precision("bf16")(["a red circle", "two blue squares"], seed=3)
    assert pipe.precision == "bf16" and low.tensors.dtype == torch.float32 and low.z_i.dtype == torch.float32
    diff = (low.tensors - ref.tensors).abs().mean().item()
    assert 0 < diff < 0.1  # autocast really ran (not bit-identical), and stayed close to fp32
    assert all(p.dtype == torch.float32 for p in pipe.decoder.parameters())  # weights untouched
    back = pipe.set_precision("fp32")(["a red circle", "two blue squares"], seed=3)
    assert torch.equal(back.tensors, ref.tensors)


def test_bf16_variations_keep_fp32_latents():
    from tiny_stack import FAST

    from unclip.pipeline import invert

    pipe = tiny_pipeline(upsampler=False, settings=dataclasses.replace(FAST, inversion_refine=0)).set_precision("bf16")
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    z_i, x_T = invert(pipe, x)
    assert z_i.dtype == torch.float32 and x_T.dtype == torch.float32 and torch.isfinite(x_T).all()


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16"):
        tiny_pipeline().set_precision("fp8")


def test_compile_wraps_every_forward_in_place_and_the_pipeline_runs_through_them(monkeypatch):
    # torch.compile itself is torch's to test (and tracing takes a minute on a CPU); this checks what the pipeline
    # does with it: every network's forward wrapped with the options given, modules kept, and the wrapped forwards
    # the ones a call runs.
    calls, wrapped = {}, []

    def fake_compile(fn, **options):
        wrapped.append((fn.__self__, options))

        def run(*args, **kwargs):
            calls[id(fn.__self__)] = calls.get(id(fn.__self__), 0) + 1
            return fn(*args, **kwargs)

        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    pipe = tiny_pipeline()
    ref = pipe("a green star", seed=1).tensors
    nets = (pipe.clip, pipe.prior, pipe.decoder, *pipe.upsamplers)
    assert pipe.compile(mode="max-autotune") is pipe
    assert [n for n, _ in wrapped] == list(nets) and all(o == {"mode": "max-autotune"} for _, o in wrapped)
    assert pipe.decoder.config.resolution == 16 and "unet" in dict(pipe.decoder.named_children())
    torch.testing.assert_close(pipe("a green star", seed=1).tensors, ref)
    assert all(calls.get(id(n), 0) > 0 for n in (pipe.prior, pipe.decoder, *pipe.upsamplers))


def test_generate_command_takes_the_switches(tmp_path, capsys):
    from unclip.cli.main import main

    tiny_pipeline().save_pretrained(tmp_path / "m")
    args = ["generate", "a red circle", "--model", str(tmp_path / "m"), "--n", "1", "--out", str(tmp_path / "o")]
    assert main([*args, "--precision", "bf16"]) == 0
    assert (tmp_path / "o" / "contact_sheet.png").is_file()
