"""The package's promises: cheap, side-effect-free imports (DESIGN.md §2) and working entry points."""

import subprocess
import sys

import pytest


def _python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout


def test_importing_unclip_imports_no_heavy_part():
    loaded = _python("import sys, unclip; print(' '.join(sorted(sys.modules)))").split()
    assert "torch" not in loaded and not any(m.startswith("unclip.") for m in loaded)


def test_the_diffusion_core_does_not_import_the_optional_layers():
    loaded = set(_python("import sys, unclip.diffusion, unclip.models.decoder; print(' '.join(sys.modules))").split())
    for heavy in ("unclip.train", "unclip.data", "unclip.cli", "accelerate", "webdataset", "diffusers"):
        assert heavy not in loaded, heavy


def test_cli_help_is_fast_to_load_and_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "unclip", "--help"], check=True, capture_output=True, text=True).stdout
    for command in ("demo", "train", "data", "judge"):
        assert command in out
    loaded = _python(
        "import sys; from unclip.cli.main import build_parser; build_parser(); print(' '.join(sys.modules))"
    )
    assert "torch" not in loaded.split()


def test_version_and_unknown_command():
    import unclip
    from unclip.cli.main import main

    out = subprocess.run([sys.executable, "-m", "unclip", "--version"], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == f"unclip {unclip.__version__}"
    with pytest.raises(SystemExit):
        main(["no-such-command"])


def test_demo_runs_on_the_bundled_model(tmp_path):
    """The bundled model loads and `unclip demo` writes its gallery (with fewer steps: the full demo is `make demo`)."""
    from unclip.cli.main import main

    short = ["--set", "decoder_steps=8", "--set", "inversion_steps=8", "--set", "prior_steps=8"]
    assert main(["demo", "--out", str(tmp_path / "demo"), "--per-category", "1", *short]) == 0
    assert (tmp_path / "demo" / "index.html").is_file() and (tmp_path / "demo" / "variation_3.png").is_file()
