"""The web app end to end: a real server on a free port, the tiny stack behind it, requests as a browser sends them."""

import base64
import io
import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image
from tiny_stack import tiny_pipeline

from unclip.web.jobs import KEEP_JOBS, JobRunner
from unclip.web.server import App, make_server


@pytest.fixture(scope="module")
def url():
    pipe = tiny_pipeline()
    server = make_server(App(lambda: (pipe, "tiny")), port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _get(url):
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.status, r.headers.get("Content-Type"), r.read()


def _post(url, body):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(f"{url}/api/jobs", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _wait(url, job_id):
    job = {}

    def finished():
        job.update(json.loads(_get(f"{url}/api/jobs/{job_id}")[2]))
        return job["status"] in ("done", "error")

    _until(finished)
    return job


def _until(done, seconds=60.0):
    """Poll ``done`` until it holds; a deadline rather than a count of polls, so a loaded machine only waits longer."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _images(job):
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(s.split(",", 1)[1])))) for s in job["result"]["images"]]


def _data_url(colour):
    buf = io.BytesIO()
    Image.fromarray(np.full((20, 30, 3), colour, np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_page_and_info(url):
    status, kind, page = _get(url + "/")
    assert status == 200 and kind.startswith("text/html") and b"<title>unclip</title>" in page
    assert b"/api/jobs" in page and b"http" not in page.replace(b"http.server", b"")  # nothing fetched elsewhere
    _, kind, raw = _get(url + "/api/info")
    info = json.loads(raw)
    assert kind == "application/json" and info["model"] == "tiny" and info["resolution"] == 32
    assert info["has_prior"] and info["settings"]["decoder_steps"] == 4 and "probe" in info["kinds"]


def test_generate_is_seeded_and_reports_its_steps(url):
    request = {"kind": "generate", "prompt": "a red circle", "n": 2, "seed": 5, "settings": {"decoder_steps": 3}}
    status, answer = _post(url, request)
    assert status == 202
    job = _wait(url, answer["id"])
    assert job["status"] == "done" and job["result"]["labels"] == ["seed 5", "seed 6"]
    first = _images(job)
    assert [im.shape for im in first] == [(32, 32, 3)] * 2
    assert job["steps"] > 0 and job["step"] == job["steps"]  # the last sampler's last step was heard
    assert job["stage"].startswith("upsampler · ")  # the last stage to sample
    again = _images(_wait(url, _post(url, request)[1]["id"]))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    other = _images(_wait(url, _post(url, {**request, "seed": 6})[1]["id"]))
    assert np.array_equal(other[0], first[1])  # image k of a call uses seed + k


def test_manipulations_take_uploaded_images(url):
    red, blue = _data_url((200, 30, 30)), _data_url((30, 30, 200))
    jobs = {
        "vary": {"kind": "vary", "image": red, "n": 2, "eta": 0.5},
        "interpolate": {"kind": "interpolate", "image": red, "image2": blue, "frames": 3},
        "textdiff": {"kind": "textdiff", "image": red, "source": "a red", "target": "a blue", "frames": 2},
    }
    for kind, body in jobs.items():
        status, answer = _post(url, body)
        assert status == 202, (kind, answer)
        job = _wait(url, answer["id"])
        assert job["status"] == "done", job["error"]
        assert len(job["result"]["images"]) == {"vary": 2, "interpolate": 3, "textdiff": 2}[kind]
    assert _wait(url, _post(url, jobs["interpolate"])[1]["id"])["result"]["labels"] == ["θ=0.00", "θ=0.50", "θ=1.00"]


def test_inpaint_takes_a_box_or_an_uploaded_mask_and_keeps_the_rest(url):
    red = _data_url((200, 30, 30))
    erased = np.full((20, 30, 4), 255, np.uint8)
    erased[:10, :, 3] = 0  # the top half erased: filled
    buf = io.BytesIO()
    Image.fromarray(erased, "RGBA").save(buf, format="PNG")
    mask = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    for where in ({"box": [0, 0, 0.5, 0.5]}, {"mask": mask}):
        request = {"kind": "inpaint", "image": red, "prompt": "a blue star", "n": 2, "resample": 2, **where}
        status, answer = _post(url, request)
        assert status == 202, answer
        job = _wait(url, answer["id"])
        assert job["status"] == "done", job["error"]
        for image in _images(job):  # the uploaded image's bottom half comes back exactly
            assert (image[20:] == (200, 30, 30)).all() and not (image[:12] == (200, 30, 30)).all()
    request = {
        "kind": "inpaint",
        "image": red,
        "box": [0, 0, 0.5, 0.5],
        "prompt": "a blue square",
        "n": 1,
        "source": "a red square",
        "resample": 1,
    }  # a text-diff edit
    assert _wait(url, _post(url, request)[1]["id"])["status"] == "done"
    request = {"kind": "inpaint", "image": red, "zoom_out": 0.5, "anchor": "left", "n": 1, "resample": 1}
    job = _wait(url, _post(url, request)[1]["id"])
    assert job["status"] == "done", job["error"]
    (image,) = _images(job)  # the image shrunk to the left half's middle, the border filled around it
    assert (image[9:23, 1:15] == (200, 30, 30)).all() and not (image[:, 17:] == (200, 30, 30)).all()


def test_bad_requests_are_refused_with_a_message(url):
    cases = [
        ({"kind": "paint"}, "kind must be one of"),
        ({"kind": "generate", "n": 0}, r"n must be an integer in [1, 16]"),
        ({"kind": "generate", "settings": {"decoder_steps": 0}}, "decoder_steps"),
        ({"kind": "generate", "settings": {"clip": "x"}}, "settings may set"),
        ({"kind": "generate", "settings": {"prior_sampler": "mmse", "prior_best_of": 2}}, "set prior_best_of=1"),
        ({"kind": "vary", "image": _data_url((0, 0, 0)), "settings": {"variation_structure": 1}}, "2 to 1024"),
        ({"kind": "vary", "image": "data:image/png;base64,bm90IGFuIGltYWdl"}, "image is not an image"),
        ({"kind": "vary"}, "image must be an image"),
        ({"kind": "textdiff", "image": _data_url((0, 0, 0)), "source": " ", "target": "x"}, "source must not be empty"),
        ({"kind": "probe", "image": _data_url((0, 0, 0)), "dims": "1,two"}, "integers or 'all'"),
        ({"kind": "inpaint", "image": _data_url((0, 0, 0))}, "give a mask image or a box"),
        ({"kind": "inpaint", "image": _data_url((0, 0, 0)), "box": [0.5, 0, 0.2, 1]}, "a box needs"),
        ({"kind": "inpaint", "image": _data_url((0, 0, 0)), "mask": _data_url((0, 0, 0))}, "selects nothing"),
        ({"kind": "inpaint", "image": _data_url((0, 0, 0)), "box": [0, 0, 1, 1], "resample": 99}, "resample must"),
        ({"kind": "inpaint", "image": _data_url((0, 0, 0)), "zoom_out": 1.5}, "zoom_out must be a number"),
        ({"kind": "inpaint", "image": _data_url((0, 0, 0)), "zoom_out": 0.5, "anchor": "up"}, "anchor must be"),
        ({"kind": "inpaint", "image": _data_url((0, 0, 0)), "box": [0, 0, 1, 1], "source": "x"}, "needs the caption"),
        ([1, 2], "must be a JSON object"),
    ]
    for body, message in cases:
        status, answer = _post(url, body)
        assert status == 400 and message in answer["error"], (body, answer)
    status, answer = _post(url, b"{not json")
    assert status == 400 and "Expecting property name" in answer["error"]
    with pytest.raises(urllib.error.HTTPError) as err:
        _get(url + "/api/jobs/job999999")
    assert err.value.code == 404


def test_a_failing_job_reports_its_error_and_the_runner_goes_on():
    calls = []

    def load():
        calls.append(1)
        raise RuntimeError("no model here")

    runner = JobRunner(load)
    job = runner.submit("generate", {"seed": 0, "settings": {}, "prompt": "x", "n": 1})
    _until(lambda: job.status == "error")
    assert job.status == "error" and job.error == "RuntimeError: no model here" and job.params == {}
    later = [runner.submit("generate", {}) for _ in range(KEEP_JOBS + 3)]
    _until(lambda: all(j.status == "error" for j in later))
    newest = runner.submit("generate", {})  # submitting prunes the finished jobs beyond the newest KEEP_JOBS
    assert runner.get(job.id) is None and runner.get(later[-1].id) is later[-1] and runner.get(newest.id) is newest
    assert len(calls) >= KEEP_JOBS + 4  # a model that failed to load is tried again for the next job


def test_probe_jobs_label_each_row_and_refuse_more_components_than_the_fit(monkeypatch):
    import torch

    from unclip.pipeline import probing
    from unclip.web.jobs import check_request, run_request

    pipe = tiny_pipeline()
    z = torch.nn.functional.normalize(torch.randn(40, 32, generator=torch.Generator().manual_seed(0)), dim=1)
    fit = probing.fit_embedding_pca(z)
    monkeypatch.setattr(probing, "embedding_pca", lambda *a, **k: fit)  # no 5,000-image fit in a unit test
    kind, params = check_request({"kind": "probe", "image": _data_url((200, 30, 30)), "dims": "1,4,all"}, pipe.settings)
    images, labels = run_request(pipe, None, kind, params)
    assert len(images) == 3 and labels == [
        f"1 dims, {fit.cumulative(1):.0%}",
        f"4 dims, {fit.cumulative(4):.0%}",
        "z_i",
    ]
    params["dims"] = [99]
    with pytest.raises(ValueError, match="the PCA has 32 components"):
        run_request(pipe, None, kind, params)


def test_the_page_offers_only_settings_the_app_accepts(url):
    import re

    from unclip.web.jobs import SETTING_KEYS

    page = _get(url + "/")[2].decode()
    offered = set(re.findall(r'name="settings\.([a-z_]+)"', page))
    assert {
        "prior_sampler",
        "inversion_strength",
        "variation_structure",
        "decoder_embedding_guidance",
        "decoder_embedding_guidance_stop",
    } <= offered
    assert offered <= set(SETTING_KEYS)


def test_point_estimate_and_layout_settings_run(url):
    body = {"kind": "generate", "prompt": "a red circle", "n": 2, "seed": 1,
            "settings": {"prior_sampler": "mmse", "prior_best_of": 1, "prior_guidance": 1}}  # fmt: skip
    job = _wait(url, _post(url, body)[1]["id"])
    assert job["status"] == "done", job["error"]
    vary = {"kind": "vary", "image": _data_url((200, 30, 30)), "n": 1, "eta": 1.0}
    plain = _images(_wait(url, _post(url, vary)[1]["id"]))[0]
    held = _wait(url, _post(url, {**vary, "settings": {"variation_structure": 2, "inversion_strength": 0.7}})[1]["id"])
    assert held["status"] == "done", held["error"]
    assert not np.array_equal(_images(held)[0], plain)  # the settings reached the job
