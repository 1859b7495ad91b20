"""`flakehunter review`: the server listens on 127.0.0.1 only and writes only verdicts on the run's own
candidates, durably; verdicts become training labels (train --from-review) and calibration label images."""

from __future__ import annotations

import http.client
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from flakehunter.candidates import read_candidates
from flakehunter.cli import app
from flakehunter.errors import InputError
from flakehunter.report.labels import review_classification_dataset, review_label_images
from flakehunter.report.server import ReviewServer, check_host
from flakehunter.report.verdicts import Verdict, append_verdict, read_verdicts
from flakehunter.run.layout import RunDirectory
from tests.test_report_fixtures import copy_run, small_scan_run


@pytest.fixture(scope="module")
def scan_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_scan_run(tmp_path_factory)


def post(server: ReviewServer, body: Any, *, token: str | None = None, host: str | None = None,
         content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": content_type, "X-Review-Token": server.token if token is None else token,
               "Host": host or f"127.0.0.1:{server.port}"}
    conn.request("POST", "/api/verdict", data, headers)
    response = conn.getresponse()
    answer = json.loads(response.read() or b"{}")
    conn.close()
    return response.status, answer


def test_the_server_refuses_any_address_but_loopback(scan_run: Path) -> None:
    for host in ("0.0.0.0", "::", "192.168.1.20", "example.org", ""):
        with pytest.raises(InputError, match=r"127\.0\.0\.1 only"):
            check_host(host)
        result = CliRunner().invoke(app, ["review", str(scan_run), "--host", host])
        assert result.exit_code == 2 and "listens on 127.0.0.1 only" in result.output
    assert check_host("localhost") == "127.0.0.1"
    with ReviewServer(scan_run) as server:
        assert server.httpd.server_address[0] == "127.0.0.1"
        assert server.url.startswith("http://127.0.0.1:")


def test_writes_are_checked_and_only_known_candidates_are_recorded(scan_run: Path, tmp_path: Path) -> None:
    run = RunDirectory(copy_run(scan_run, tmp_path / "run"))
    known = read_candidates(run.candidates_jsonl)[0].id
    unknown = max(c.id for c in read_candidates(run.candidates_jsonl)) + 1000
    with ReviewServer(run.path) as server:
        assert post(server, {"id": unknown, "verdict": "good"}) == (
            404, {"error": f"no candidate {unknown} in {run.path}"})
        assert post(server, {"id": known, "verdict": "great"})[0] == 400
        assert post(server, {"id": str(known), "verdict": "good"})[0] == 400
        assert post(server, {"id": known, "verdict": "good", "colour": "red"})[0] == 400
        assert post(server, b"{not json")[0] == 400
        assert post(server, {"id": known, "verdict": "good"}, token="guess")[0] == 403
        assert post(server, {"id": known, "verdict": "good"}, host="evil.example:80")[0] == 403
        assert post(server, {"id": known, "verdict": "good"}, content_type="text/plain")[0] == 415
        assert not run.review.exists()  # nothing refused was written
        status, answer = post(server, {"id": known, "verdict": "good", "favourite": True, "note": "go to 100x"})
        assert status == 200 and answer["id"] == known and answer["time"]
        status, _ = post(server, {"id": known, "verdict": "bad"})
        assert status == 200
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        conn.request("GET", "/api/verdicts")
        latest = json.loads(conn.getresponse().read())
        conn.close()
    lines = [json.loads(line) for line in run.review.read_text().splitlines()]
    assert [line["verdict"] for line in lines] == ["good", "bad"]
    assert latest[str(known)]["verdict"] == "bad" and latest[str(known)]["favourite"] is False


def test_the_review_log_keeps_every_line_and_survives_a_torn_one(tmp_path: Path) -> None:
    path = tmp_path / "review.jsonl"
    append_verdict(path, Verdict(3, "good"))
    with open(path, "a") as fh:
        fh.write('{"id": 4, "verdict": "go')  # a crash in the middle of a line
    append_verdict(path, Verdict(4, "bad", note="dust"))
    append_verdict(path, Verdict(3, None, favourite=True))
    latest = read_verdicts(path)
    assert latest[3].verdict is None and latest[3].favourite
    assert latest[4].verdict == "bad" and latest[4].note == "dust"
    assert len(path.read_text().splitlines()) == 4
    assert os.stat(path).st_size == len(path.read_bytes())


def review(run: Path, verdicts: dict[int, str]) -> None:
    for cid, verdict in verdicts.items():
        append_verdict(RunDirectory(run).review, Verdict(cid, verdict))


def test_reviewed_candidates_become_a_training_dataset(scan_run: Path, tmp_path: Path) -> None:
    from flakehunter.training.datasets import open_dataset

    run = copy_run(scan_run, tmp_path / "run")
    candidates = read_candidates(run)
    good = [c for c in candidates[:6]]
    review(run, {c.id: "good" for c in good} | {candidates[6].id: "bad", candidates[7].id: "bad"})
    data = open_dataset(review_classification_dataset([run], tmp_path / "data"), "classify")
    assert data.format == "imagefolder" and len(data.samples) == 8
    expected: dict[str, int] = {"reject": 2}
    for c in good:
        expected[c.layer_class] = expected.get(c.layer_class, 0) + 1
    assert data.class_counts() == expected
    data = open_dataset(review_classification_dataset([run], tmp_path / "data2", labels="verdict"), "classify")
    assert data.class_counts() == {"bad": 2, "good": 6}
    with pytest.raises(InputError, match="no reviewed candidates"):
        review_classification_dataset([copy_run(scan_run, tmp_path / "unreviewed")], tmp_path / "none")


def test_train_from_review(scan_run: Path, tmp_path: Path) -> None:
    run = copy_run(scan_run, tmp_path / "run")
    candidates = read_candidates(run)
    review(run, {c.id: ("good" if n % 2 else "bad") for n, c in enumerate(candidates[:8])})
    out = tmp_path / "model"
    result = CliRunner().invoke(app, ["train", "--from-review", str(run), "--review-labels", "verdict", "--out",
                                      str(out), "--task", "classify", "--model", "small-cnn", "--width", "4",
                                      "--epochs", "1", "--val-fraction", "0", "--batch-size", "4", "--device", "cpu",
                                      "--threads", "1", "--no-tensorboard"])
    assert result.exit_code == 0, result.output
    assert (out / "best.pt").is_file() and (out / "review-data" / "good").is_dir()
    both = CliRunner().invoke(app, ["train", "--from-review", str(run), "--data", str(out), "--out", str(tmp_path)])
    assert both.exit_code == 2 and "instead of --data" in both.output


def test_good_candidates_become_calibration_label_images(scan_run: Path, tmp_path: Path) -> None:
    """Label images for `calibrate`: one per image with good candidates, its size; each flake's pixels carry
    its layer count and lie on the simulator's flake; bare substrate around it is 0; the rest 255."""
    from shapely.geometry import Point
    from shapely.ops import unary_union

    from flakehunter.analysis.evaluation import load_truth
    from flakehunter.geometry import PixelTransform
    from flakehunter.tiles import read_image

    run = copy_run(scan_run, tmp_path / "run")
    candidates = [c for c in read_candidates(run) if c.layers is not None][:6]
    review(run, {c.id: "good" for c in candidates})
    pairs = review_label_images([run], tmp_path / "labels")
    assert len(pairs) == len({c.image for c in candidates})
    truth = load_truth(run / "truth.json")
    transform = PixelTransform(1.15)
    for image_path, label_path in pairs:
        image, meta = read_image(image_path)
        label, _ = read_image(label_path)
        assert label.shape == image.shape[:2] and meta.x_um is not None  # the tile itself, metadata and all
        mine = [c for c in candidates if Path(c.image).name in image_path.name]
        assert set(np.unique(label)) <= {0, 255} | {c.layers for c in mine}
        for c in mine:
            rows, cols = np.nonzero(label == c.layers)
            near = (np.abs(rows - c.row) < 60) & (np.abs(cols - c.col) < 60)
            assert near.sum() > 10
            x, y = transform.pixel_to_stage(rows[near], cols[near], (meta.x_um, meta.y_um), label.shape)
            flakes = unary_union([f.polygon for f in truth if f.layers == c.layers]).buffer(2.5)
            inside = np.mean([flakes.contains(Point(a, b)) for a, b in zip(x, y, strict=True)])
            assert inside > 0.95, (c.id, inside)
        assert (label == 0).sum() > (label < 255).sum() / 2


def test_reviewed_label_images_calibrate_the_contrast_profile(scan_run: Path, tmp_path: Path) -> None:
    """The pairs go straight into `flakehunter calibrate`: the per-layer contrasts it fits agree with the
    ladder the scan's contrast detector calibrated itself to."""
    run = copy_run(scan_run, tmp_path / "run")
    review(run, {c.id: "good" for c in read_candidates(run) if c.layers in (1, 2, 3)})
    pairs = review_label_images([run], tmp_path / "labels")
    args = ["calibrate", "--material", "graphene", *(str(i) for i, _ in pairs)]
    for _, label in pairs:
        args += ["--labels", str(label)]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "profile.json")])
    assert result.exit_code == 0, result.output
    fitted = json.loads((tmp_path / "profile.json").read_text())["layers"]
    ladder = json.loads((run / "manifest.json").read_text())["calibration"]["detectors"][0]["ladder"]
    compared = 0
    for rung in ladder:
        if str(rung["layers"]) in fitted:
            assert np.allclose(fitted[str(rung["layers"])]["mean"], rung["contrast"], atol=0.01), rung
            compared += 1
    assert compared >= 2


def test_review_command_serves_until_sigterm_and_leaves_the_verdicts_in_the_report(
        scan_run: Path, tmp_path: Path) -> None:
    import re
    import signal
    import subprocess
    import sys

    run = RunDirectory(copy_run(scan_run, tmp_path / "run"))
    cid = read_candidates(run.candidates_jsonl)[0].id
    with subprocess.Popen([sys.executable, "-m", "flakehunter", "review", str(run.path)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        try:
            assert found, line
            conn = http.client.HTTPConnection("127.0.0.1", int(found.group(1)), timeout=10)
            conn.request("GET", "/")
            page = conn.getresponse().read().decode()
            token = re.search(r'name="fh-review-token" content="([^"]+)"', page)
            assert token
            conn.request("POST", "/api/verdict", json.dumps({"id": cid, "verdict": "good"}),
                         {"Content-Type": "application/json", "X-Review-Token": token.group(1)})
            assert conn.getresponse().status == 200
            conn.close()
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
            assert proc.returncode == 0 and "shows the verdicts" in out
        finally:
            proc.kill()
    assert read_verdicts(run.review)[cid].verdict == "good"
    assert '"verdict":"good"' in (run.report / "index.html").read_text(encoding="utf-8")
    assert 'content=""' in (run.report / "index.html").read_text(encoding="utf-8")  # no token on disk


def test_calibrate_takes_a_reviewed_run_directly(scan_run: Path, tmp_path: Path) -> None:
    """`calibrate --from-review RUN` turns the good verdicts into labels itself and fits the same layers."""
    run = copy_run(scan_run, tmp_path / "run")
    review(run, {c.id: "good" for c in read_candidates(run) if c.layers in (1, 2, 3)})
    result = CliRunner().invoke(app, ["calibrate", "--material", "graphene", "--from-review", str(run),
                                      "--out", str(tmp_path / "profile.json")])
    assert result.exit_code == 0, result.output
    fitted = json.loads((tmp_path / "profile.json").read_text())["layers"]
    assert {"1", "2", "3"} <= set(fitted)
    refused = CliRunner().invoke(app, ["calibrate", "--material", "graphene", "--from-review", str(run), "--from-gmm",
                                       str(tmp_path / "x.json"), "--out", str(tmp_path / "p2.json")])
    assert refused.exit_code == 2
