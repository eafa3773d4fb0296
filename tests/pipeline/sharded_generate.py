"""``python sharded_generate.py COUNTS_DIR ARGS`` runs ``unclip ARGS`` and writes the seeds of the images this process
sampled to ``COUNTS_DIR/rankR.json``, so a test can see how a torchrun run split its work."""

import json
import os
import sys
from pathlib import Path

from unclip.cli.main import main
from unclip.pipeline import UnCLIPPipeline

sampled: list[int] = []
_call = UnCLIPPipeline.__call__


def _counting(self, prompt, *args, **kwargs):
    sampled.extend(kwargs["seed"])
    return _call(self, prompt, *args, **kwargs)


if __name__ == "__main__":
    UnCLIPPipeline.__call__ = _counting
    code = main(sys.argv[2:])
    Path(sys.argv[1]).mkdir(parents=True, exist_ok=True)
    Path(sys.argv[1], f"rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(sampled))
    raise SystemExit(code)
