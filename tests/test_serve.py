"""mnist-lit-serve: the draw-a-digit page and its JSON API, as a user and a program use them."""

import http.client
import io
import json
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from PIL import Image

from mnist_lit import fit, load
from mnist_lit.nn import digits
from tests.conftest import REAL_DATA, a_stroke, cli, free_port, needs_real_mnist, png, real_test_set

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from mnist_lit.web.app import MAX_BYTES, application  # noqa: E402

SERVE = (sys.executable, "-m", "mnist_lit.serve")
CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def client(tiny_run):
    return TestClient(application(load(tiny_run), workers=2))


def redrawn(image: torch.Tensor, format: str = "PNG") -> bytes:
    """An MNIST digit as a person would draw it: 280×280, dark ink on white paper."""
    buffer = io.BytesIO()
    Image.fromarray(255 - image.numpy()).resize((280, 280), Image.Resampling.BICUBIC).save(buffer, format)
    return buffer.getvalue()


def bomb() -> bytes:
    """A PNG of a few hundred bytes whose header claims 100,000 × 100,000 pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(10_000)))
        + chunk(b"IEND", b"")
    )


def test_the_page_has_a_drawing_pad_and_fetches_nothing_from_elsewhere(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<canvas id="pad"' in page.text
    # Offline: no script, style, font or picture from another address.
    assert "http:" not in page.text and "https:" not in page.text and "//" not in page.text.replace("// ", "")


def test_an_image_file_gets_the_class_and_probabilities_predict_gives(client, tiny_run, tiny_mnist):
    image = Image.new("L", (200, 150), "white")
    image.paste(Image.fromarray(255 - (torch.arange(28 * 28) % 255).reshape(28, 28).byte().numpy()), (40, 30))
    body = png(image)
    answer = client.post("/predict", content=body, headers={"content-type": "application/octet-stream"})
    assert answer.status_code == 200
    expected = load(tiny_run).predict(digits.prepare(digits.read(io.BytesIO(body))))[0]
    got = answer.json()
    assert list(got["probabilities"]) == [str(k) for k in range(10)]
    assert torch.allclose(torch.tensor(list(got["probabilities"].values())), expected, atol=1e-6)
    assert got["class"] == str(expected.argmax().item())
    assert "image" not in got
    seen = client.post("/predict?image=1", content=body).json()["image"]
    assert torch.equal(torch.tensor(seen, dtype=torch.uint8), digits.prepare(digits.read(io.BytesIO(body))))


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error"),
    [
        ("POST", "/predict", b"GIF89a, or so it says", 400, "the body is not an image Pillow can read"),
        ("POST", "/predict", b"", 400, "the body is empty; send an image file as the body (curl --data-binary"),
        ("POST", "/predict", png(Image.new("L", (64, 64), 230)), 422, "no ink: the image is blank"),
        ("POST", "/predict", bomb(), 413, "the image claims too many pixels to decode"),
        ("POST", "/predict", png(Image.new("L", (7000, 7000))), 413, "the image is 7000×7000 pixels"),
        ("POST", "/predict", bytes(MAX_BYTES + 1), 413, f"the body holds {MAX_BYTES + 1:,} bytes"),
        ("GET", "/predict", None, 405, "GET /predict: Method Not Allowed"),
        ("GET", "/nowhere", None, 404, "GET /nowhere: Not Found"),
    ],
    ids=["no image", "empty", "blank", "decompression bomb", "too many pixels", "too many bytes", "GET", "404"],
)
def test_a_bad_request_gets_a_4xx_with_one_line_and_the_server_keeps_serving(client, method, path, body, status, error):
    answer = client.request(method, path, content=body)
    assert answer.status_code == status
    assert answer.json()["error"].startswith(error) and "\n" not in answer.json()["error"]
    assert client.post("/predict", content=a_stroke()).status_code == 200


def test_an_image_comes_as_the_body_or_as_a_forms_file_of_any_name(client):
    body = a_stroke()
    as_body = client.post("/predict", content=body).json()
    # httpx's multipart, as requests' files= and HTML forms send it: the first file, whatever its field.
    for field in ("file", "image", "upload"):
        as_form = client.post("/predict", data={"note": "a stroke"}, files={field: ("digit.png", body, "image/png")})
        assert as_form.status_code == 200 and as_form.json() == as_body
    no_file = client.post("/predict", data={"note": "no file here"}, files={})
    answer = client.post("/predict", data={"note": "x"}, headers={"Content-Type": "multipart/form-data; boundary=b"})
    for refused in (answer, no_file):
        assert refused.status_code == 400
        assert "curl -F file=@digit.png" in refused.json()["error"], refused.json()


def test_health_and_the_openapi_description(client):
    health = client.get("/health")
    assert health.json() == {"status": "ok", "classes": [str(k) for k in range(10)]}, health.text
    schema = client.get("/openapi.json").json()
    assert schema["openapi"].startswith("3.") and set(schema["paths"]) == {"/predict", "/health"}
    predict = schema["paths"]["/predict"]["post"]
    assert set(predict["requestBody"]["content"]) == {"image/*", "multipart/form-data"}
    assert {"200", "400", "413", "422"} <= set(map(str, predict["responses"]))


class Server:
    """`python -m mnist_lit.serve` as a user starts it, on a free port, until the block ends."""

    def __init__(self, checkpoint: Path, cwd: Path) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [*SERVE, f"checkpoint={checkpoint}", f"port={self.port}"],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.url = f"http://127.0.0.1:{self.port}/"

    def __enter__(self) -> "Server":
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                probe = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                probe.request("GET", "/")
                probe.getresponse().read()  # answered: the checkpoint is loaded (the port is bound before)
                return self
            except OSError:
                time.sleep(0.2)
        self.process.kill()
        raise AssertionError(f"the server did not start: {self.process.communicate()[0]}")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.log = self.process.communicate(timeout=30)[0]

    def post(self, body: bytes, connection: http.client.HTTPConnection | None = None) -> tuple[int, dict]:
        connection = connection or http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        connection.request("POST", "/predict", body, {"Content-Type": "application/octet-stream"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())


@pytest.mark.slow
def test_the_server_answers_200_requests_from_8_threads_and_binds_this_machine_alone(tiny_run, tmp_path):
    body = a_stroke()

    (tmp_path / "digit.png").write_bytes(body)
    with Server(tiny_run, tmp_path) as server:
        assert server.post(b"not an image")[0] == 400
        # The usual upload from a shell: curl -F sends multipart/form-data.
        curl = ["curl", "-s", "-F", f"file=@{tmp_path / 'digit.png'}", f"{server.url}predict"]
        sent = json.loads(subprocess.run(curl, capture_output=True, text=True, timeout=60, check=True).stdout)
        assert sent == server.post(body)[1]

        def client(_: int) -> list[int]:
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            return [server.post(body, connection)[0] for _ in range(25)]

        with ThreadPoolExecutor(8) as pool:
            statuses = [status for answered in pool.map(client, range(8)) for status in answered]
    assert statuses == [200] * 200
    assert f"Serving {tiny_run} at http://127.0.0.1:{server.port}/" in server.log
    assert "Traceback" not in server.log


def test_serve_without_a_checkpoint_or_a_free_port_is_one_line(tmp_path):
    done = cli([], tmp_path, tmp_path, command=SERVE)
    assert done.returncode == 1 and "checkpoint=" in done.stderr.strip().splitlines()[-1]
    done = cli(["checkpoint=x", "port=70000"], tmp_path, tmp_path, command=SERVE)
    assert done.stderr.strip().splitlines()[-1] == (
        "port=70000 is not a port; choose one from 1 to 65535, such as port=8000"
    )
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = cli(["checkpoint=x", f"port={port}"], tmp_path, tmp_path, command=SERVE)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"cannot serve on 127.0.0.1:{port}: Address already in use; choose another port= (or host=)"
    )


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    """An MLP after one epoch of the real MNIST (test accuracy about 0.95)."""
    directory = tmp_path_factory.mktemp("serve-mnist") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MNIST_LIT_DATA", str(REAL_DATA))
        fit("model=mlp", "trainer.max_epochs=1", "trainer.enable_progress_bar=false", output_dir=directory)
    return directory


@needs_real_mnist
def test_ten_mnist_digits_redrawn_as_jpeg_files_are_read_right(mnist_run):
    images, labels = real_test_set()
    client = TestClient(application(load(mnist_run), workers=2))
    answers = [client.post("/predict", content=redrawn(image, "JPEG")).json()["class"] for image in images[:10]]
    assert sum(answer == str(label.item()) for answer, label in zip(answers, labels[:10], strict=True)) >= 9


# Strokes on the 280×280 pad, in its own pixels, as a person draws these digits.
STROKES = {
    "1": [(140, 50), (140, 230)],
    "7": [(80, 60), (200, 60), (120, 230)],
    "0": [(140, 50), (200, 90), (205, 180), (140, 230), (80, 190), (75, 100), (140, 50)],
    "4": [(170, 230), (170, 50), (70, 170), (210, 170)],
    "3": [(80, 60), (190, 70), (130, 135), (195, 185), (140, 230), (80, 215)],
}


@needs_real_mnist
@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_a_digit_drawn_on_the_page_in_chromium_is_read_right(mnist_run, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with Server(mnist_run, tmp_path) as server, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            # Root in a container, no GPU, and a closed network that Chromium's own services would knock on.
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        page = browser.new_page()
        page.goto(server.url)
        pad = page.locator("#pad").bounding_box()
        read = {}
        for digit, strokes in STROKES.items():
            page.click("#clear")
            (x, y), *rest = strokes
            page.mouse.move(pad["x"] + x, pad["y"] + y)
            page.mouse.down()  # pointerdown, pointermove and pointerup, as a mouse makes them
            for x, y in rest:
                page.mouse.move(pad["x"] + x, pad["y"] + y, steps=8)
            page.mouse.up()
            page.wait_for_selector('#top[aria-busy="false"] .name')
            read[digit] = page.locator("#top .name").first.inner_text()
            seen = page.evaluate(
                "Array.from(document.querySelector('#seen').getContext('2d')"
                ".getImageData(0, 0, 28, 28).data.filter((_, i) => i % 4 == 0))"
            )
            assert max(seen) == 255 and seen[0] == 0  # the 28×28 digit the network saw, ink bright on black
        page.screenshot(path=tmp_path / "serve.png")
        # An image file opened on the page is sent as it is, and read as predict reads it.
        images, labels = real_test_set()
        (tmp_path / "digit.jpg").write_bytes(redrawn(images[0], "JPEG"))
        page.click("#clear")  # no answer on the page until the file's comes
        page.set_input_files("#file", tmp_path / "digit.jpg")
        page.wait_for_selector('#top[aria-busy="false"] .name')
        opened = page.locator("#top .name").first.inner_text()
        browser.close()
    assert read == {digit: digit for digit in STROKES}
    assert opened == str(labels[0].item())
    assert "Traceback" not in server.log
