"""The prompt of each image in a folder, from the files beside it.

Two layouts are read, both keyed by the image's stem: ``KEY.json`` with a ``"prompt"`` string (the sidecars that
``unclip generate`` writes, see :mod:`unclip.pipeline.outputs`, and the prompt-suite records of
``unclip data``), else ``KEY.txt`` holding the caption (the img2dataset layout of exported Shapes-world data, so
real images can be scored against their own captions for reference). An image with neither (a contact sheet, the
output of ``unclip vary``) is skipped and listed, never guessed; a sidecar that is not valid JSON is an error.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Prompts:
    """``prompts[name]`` for each image that has one; ``skipped`` holds (name, reason) for the others."""

    prompts: dict[str, str]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def groups(self) -> dict[str, list[str]]:
        """Image names per prompt, prompts in order of first appearance, names in the given order."""
        out: dict[str, list[str]] = {}
        for name, prompt in self.prompts.items():
            out.setdefault(prompt, []).append(name)
        return out


def prompt_of(image: Path) -> str | None:
    """The prompt of one image file (see the module docs), or None when it has none."""
    sidecar = image.with_suffix(".json")
    if sidecar.is_file():
        try:
            record = json.loads(sidecar.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{sidecar}: not a valid JSON sidecar ({err})") from err
        prompt = record.get("prompt") if isinstance(record, dict) else None
        if prompt is not None and not isinstance(prompt, str):
            raise ValueError(f"{sidecar}: 'prompt' must be a string, got {type(prompt).__name__}")
        if prompt is not None:
            return prompt
    caption = image.with_suffix(".txt")
    if caption.is_file():
        return caption.read_text(encoding="utf-8").strip()
    return None


def read_prompts(folder: str | Path, names: Sequence[str], *, allow_empty: bool = True) -> Prompts:
    """The prompts of the images ``names`` directly in ``folder``; raises when none of them has one.

    ``allow_empty=False`` skips images whose prompt is "" (unconditional samples, which no caption describes).
    """
    folder = Path(folder)
    if not names:
        raise ValueError(f"{folder}: no readable images")
    found: dict[str, str] = {}
    skipped: list[tuple[str, str]] = []
    for name in names:
        prompt = prompt_of(folder / name)
        if prompt is None:
            stem = Path(name).stem
            skipped.append((name, f"no {stem}.json with a 'prompt' and no {stem}.txt caption"))
        elif not prompt.strip() and not allow_empty:
            skipped.append((name, "empty prompt (an unconditional sample)"))
        else:
            found[name] = prompt
    if not found:
        raise ValueError(
            f"{folder}: none of its {len(names)} images has a prompt (KEY.json with a 'prompt', as `unclip generate` "
            f"writes, or a KEY.txt caption); e.g. {skipped[0][0]}: {skipped[0][1]}"
        )
    return Prompts(found, skipped)
