"""The web app's work: requests checked into jobs, run one at a time on the one pipeline, with step progress.

A request names a ``kind`` (generate, vary, inpaint, interpolate, textdiff, probe) and its parameters;
:func:`check_request` validates them before anything is queued, so a bad request is a 400 with a message and
never a failed job.
:class:`JobRunner` runs accepted jobs in order on a single worker thread (the pipeline is not thread-safe and a
CPU has no room for two), reporting every sampler step through :func:`unclip.diffusion.listen_to_steps`.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import itertools
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAX_IMAGES = 16  # per job: a CPU takes seconds per image
MAX_FRAMES = 16
KEEP_JOBS = 32  # finished jobs kept for their results; older ones are forgotten
KINDS = ("generate", "vary", "inpaint", "interpolate", "textdiff", "probe")
MAX_RESAMPLE = 20  # RePaint's resamplings: each one multiplies the decoder's work
SETTING_KEYS = (  # the sampling settings a request may change for its own job
    "prior_guidance", "prior_steps", "prior_best_of", "prior_sampler", "decoder_guidance_image",
    "decoder_guidance_text", "decoder_steps", "decoder_sampler", "decoder_eta", "upsampler_steps", "upsampler_sampler",
    "inversion_strength", "variation_structure", "decoder_embedding_guidance", "decoder_embedding_guidance_stop",
)  # fmt: skip


class BadRequest(ValueError):
    """A request the app refuses, with the message the page shows."""


def _int(params: dict, key: str, default: int, lo: int, hi: int) -> int:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise BadRequest(f"{key} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def _float(params: dict, key: str, default: float, lo: float, hi: float) -> float:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise BadRequest(f"{key} must be a number in [{lo}, {hi}], got {value!r}")
    return float(value)


def _text(params: dict, key: str, required: bool = True) -> str:
    value = params.get(key, "")
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise BadRequest(f"{key} must not be empty")
    return value


def image_from_data_url(value: Any, key: str, rgb: bool = True):
    """A ``data:image/...;base64,`` URL (what a browser's FileReader gives) or bare base64 -> RGB PIL image (with
    ``rgb=False``, in its own mode: a mask's transparency is its meaning)."""
    from PIL import Image

    if not isinstance(value, str) or not value:
        raise BadRequest(f"{key} must be an image (a data URL)")
    payload = value.split(",", 1)[1] if value.startswith("data:") else value
    try:
        raw = base64.b64decode(payload, validate=True)
        with Image.open(io.BytesIO(raw)) as im:
            im.load()
            return im.convert("RGB") if rgb else im.copy()
    except Exception as err:  # binascii.Error, PIL's many error types: all mean "not an image we can read"
        raise BadRequest(f"{key} is not an image this app can read ({type(err).__name__})") from err


def check_request(body: Any, settings) -> tuple[str, dict[str, Any]]:
    """(kind, checked parameters) of a request body, or :class:`BadRequest`."""
    from unclip.pipeline.probing import parse_dims
    from unclip.pipeline.settings import parse_overrides

    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    kind = body.get("kind")
    if kind not in KINDS:
        raise BadRequest(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    p: dict[str, Any] = {"seed": _int(body, "seed", 0, 0, 2**31 - 1)}
    raw = body.get("settings", {})
    if not isinstance(raw, dict) or any(k not in SETTING_KEYS for k in raw):
        raise BadRequest(f"settings may set {', '.join(SETTING_KEYS)}")
    try:
        p["settings"] = parse_overrides([f"{k}={v}" for k, v in raw.items()], settings, option="settings")
    except ValueError as err:
        raise BadRequest(str(err)) from err
    if kind == "generate":
        p["prompt"] = _text(body, "prompt", required=False)  # "" is the unconditional sample
        p["n"] = _int(body, "n", 4, 1, MAX_IMAGES)
    elif kind == "vary":
        p["image"] = image_from_data_url(body.get("image"), "image")
        p["n"] = _int(body, "n", 4, 1, MAX_IMAGES)
        p["eta"] = _float(body, "eta", 1.0, 0.0, 1.0)
    elif kind == "inpaint":
        p["image"] = image_from_data_url(body.get("image"), "image")
        p["prompt"] = _text(body, "prompt", required=False)  # "": the image's own z_i
        p["source"] = _text(body, "source", required=False).strip() or None  # a text-diff edit's "from" caption
        if p["source"] and not p["prompt"].strip():
            raise BadRequest("a text-diff edit (source) needs the caption wanted as the prompt")
        p["n"] = _int(body, "n", 4, 1, MAX_IMAGES)
        p["resample"] = _int(body, "resample", settings.inpaint_resample, 1, MAX_RESAMPLE)
        if body.get("zoom_out") is not None:  # outpainting: the image shrunk onto the canvas, the border filled
            from unclip.pipeline.inpainting import ANCHORS, outpaint_canvas

            scale = _float(body, "zoom_out", 0.5, 0.05, 0.95)
            anchor = body.get("anchor", "center")
            if anchor not in ANCHORS:
                raise BadRequest(f"anchor must be one of {', '.join(ANCHORS)}, got {anchor!r}")
            p["image"], p["mask"] = outpaint_canvas(p["image"], scale, anchor)
        else:
            p["mask"] = _inpaint_mask(body, p["image"].size)
    elif kind == "interpolate":
        p["image"], p["image2"] = (
            image_from_data_url(body.get("image"), "image"),
            image_from_data_url(body.get("image2"), "image2"),
        )
        p["frames"] = _int(body, "frames", 8, 2, MAX_FRAMES)
        p["latent"] = body.get("latent", "fixed")
        if p["latent"] not in ("fixed", "slerp"):
            raise BadRequest(f"latent must be 'fixed' or 'slerp', got {p['latent']!r}")
    elif kind == "textdiff":
        p["image"] = image_from_data_url(body.get("image"), "image")
        p["source"], p["target"] = _text(body, "source"), _text(body, "target")
        p["frames"] = _int(body, "frames", 5, 2, MAX_FRAMES)
        p["max_theta"] = _float(body, "max_theta", 0.5, 0.01, 1.0)
    else:
        p["image"] = image_from_data_url(body.get("image"), "image")
        try:
            p["dims"] = parse_dims(str(body.get("dims", "1,2,4,8,16,32,all")))
        except ValueError as err:
            raise BadRequest(str(err)) from err
        if len(p["dims"]) > MAX_IMAGES:
            raise BadRequest(f"at most {MAX_IMAGES} numbers of dimensions")
    return kind, p


def _inpaint_mask(body: dict, size: tuple[int, int]):
    """The mask of an inpaint request: an uploaded mask image, else ``box`` [x0, y0, x1, y1] in fractions."""
    import numpy as np

    from unclip.pipeline.inpainting import box_mask, mask_image

    if body.get("mask"):
        mask = mask_image(image_from_data_url(body["mask"], "mask", rgb=False))
        if mask.size != size:
            raise BadRequest(f"the mask is {mask.size[0]}x{mask.size[1]} but the image is {size[0]}x{size[1]}")
    else:
        box = body.get("box")
        if not isinstance(box, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box):
            raise BadRequest("give a mask image or a box [x0, y0, x1, y1] (fractions of the image)")
        try:
            mask = box_mask(size, box)
        except ValueError as err:
            raise BadRequest(str(err)) from err
    if not np.asarray(mask).any():
        raise BadRequest("the mask selects nothing to fill")
    return mask


def run_request(pipe, folder: str | None, kind: str, p: dict[str, Any]) -> tuple[list, list[str]]:
    """Run one checked request on ``pipe``: (PIL images, a label for each)."""
    from unclip.pipeline import interpolate, text_diff, to_pil, variations

    base = pipe.settings
    pipe.settings = dataclasses.replace(base, **p["settings"])
    try:
        seed = p["seed"]
        if kind == "generate":
            out = pipe(p["prompt"], num_images=p["n"], seed=seed)
            return out.images, [f"seed {s}" for s in out.seeds]
        if kind == "vary":
            images = variations(pipe, p["image"], n=p["n"], eta=p["eta"], seed=seed)
            return to_pil(images), [f"seed {seed + k}" for k in range(p["n"])]
        if kind == "inpaint":
            from unclip.pipeline.inpainting import inpaint

            pipe.settings = dataclasses.replace(pipe.settings, inpaint_resample=p["resample"])
            images = inpaint(pipe, p["image"], p["mask"], p["prompt"], n=p["n"], seed=seed, source=p["source"])
            return to_pil(images), [f"seed {seed + k}" for k in range(p["n"])]
        if kind == "interpolate":
            images = interpolate(pipe, p["image"], p["image2"], frames=p["frames"], latent=p["latent"], seed=seed)
            return to_pil(images), [f"θ={k / (p['frames'] - 1):.2f}" for k in range(p["frames"])]
        if kind == "textdiff":
            images = text_diff(pipe, p["image"], p["source"], p["target"], frames=p["frames"],
                               max_theta=p["max_theta"], seed=seed)  # fmt: skip
            return to_pil(images), [f"θ={p['max_theta'] * k / (p['frames'] - 1):.2f}" for k in range(p["frames"])]
        return _probe(pipe, folder, p)
    finally:
        pipe.settings = base


def _probe(pipe, folder: str | None, p: dict[str, Any]) -> tuple[list, list[str]]:
    from unclip.pipeline import to_pil
    from unclip.pipeline.probing import embedding_pca, probe

    pca = embedding_pca(pipe, folder)  # cached after the first fit
    images = to_pil(probe(pipe, p["image"], p["dims"], pca, seed=p["seed"]))
    labels = ["z_i" if k is None else f"{k} dims, {pca.cumulative(k):.0%}" for k in p["dims"]]
    return images, labels


def png_data_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


@dataclass
class Job:
    id: str
    kind: str
    params: dict[str, Any] = field(repr=False)
    status: str = "queued"  # queued, running, done, error
    stage: str = ""  # the sampler running now, e.g. "DDPM"
    step: int = 0
    steps: int = 0
    error: str | None = None
    result: dict[str, Any] | None = None
    submitted: float = field(default_factory=time.time)
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        keys = ("id", "kind", "status", "stage", "step", "steps", "error", "result", "seconds")
        return {k: getattr(self, k) for k in keys}


class JobRunner:
    """Jobs run in order on one worker thread; ``load`` builds the pipeline there on first use."""

    def __init__(self, load: Callable[[], tuple[Any, str | None]]) -> None:
        self._load, self._pipe, self._folder = load, None, None
        self._queue: queue.Queue[Job] = queue.Queue()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._worker = threading.Thread(target=self._work, name="unclip-jobs", daemon=True)
        self._worker.start()

    def submit(self, kind: str, params: dict[str, Any]) -> Job:
        with self._lock:
            job = Job(f"job{next(self._ids)}", kind, params)
            self._jobs[job.id] = job
            finished = [j for j in self._jobs.values() if j.status in ("done", "error")]
            for old in finished[: max(0, len(finished) - KEEP_JOBS)]:
                del self._jobs[old.id]
        self._queue.put(job)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def pipeline(self):
        if self._pipe is None:
            self._pipe, self._folder = self._load()
        return self._pipe, self._folder

    def _work(self) -> None:
        from unclip.diffusion import listen_to_steps

        while True:
            job = self._queue.get()
            start = time.perf_counter()
            job.status = "running"

            def heard(name: str, done: int, total: int, job: Job = job) -> None:
                job.stage, job.step, job.steps = name, done, total

            try:
                pipe, folder = self.pipeline()
                with listen_to_steps(heard):
                    images, labels = run_request(pipe, folder, job.kind, job.params)
                job.result = {"images": [png_data_url(im) for im in images], "labels": labels}
                job.status = "done"
            except BadRequest as err:
                job.error, job.status = str(err), "error"
            except Exception as err:  # the page shows what went wrong; the server keeps serving
                job.error, job.status = f"{type(err).__name__}: {err}", "error"
            finally:
                job.params = {}  # uploaded images are not kept once the job ends
                job.seconds = time.perf_counter() - start
