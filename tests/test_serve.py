"""mnist-lit-serve: the draw-a-digit page and its JSON API, as a user and a program use them."""

import http.client
import io
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_lit import fit, load
from mnist_lit.nn import digits
from tests.conftest import REAL_DATA, a_stroke, bomb, cli, free_port, needs_real_mnist, png, real_test_set

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from mnist_lit.serve import hosts  # noqa: E402
from mnist_lit.web.app import application  # noqa: E402
from mnist_lit.web.limits import CONNECTIONS, MAX_BYTES, SHUTDOWN_SECONDS, BodyDeadline  # noqa: E402

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
    if status == 405:
        assert answer.headers["allow"] == "POST"
    assert client.post("/predict", content=a_stroke()).status_code == 200


def the_stroke_in(mode: str) -> Image.Image:
    """a_stroke() in `mode`: 16 bits as 16-bit files hold them, floats from 0 to 1, LAB by its lightness."""
    grey = Image.open(io.BytesIO(a_stroke()))
    pixels = np.asarray(grey)
    if mode.startswith("I;16"):
        return Image.frombytes(
            mode, grey.size, (pixels.astype(np.uint16) * 257).astype(f"{'>' if mode == 'I;16B' else '<'}u2").tobytes()
        )
    made = {
        "I": lambda: Image.fromarray(pixels.astype(np.int32) * 257),  # 16 bits, as some TIFFs open
        "F": lambda: Image.fromarray(pixels.astype(np.float32) / 255),
        "LAB": lambda: Image.merge("LAB", (grey, Image.new("L", grey.size, 128), Image.new("L", grey.size, 128))),
        "La": lambda: grey.convert("LA").convert("La"),
        "RGBa": lambda: grey.convert("RGBA").convert("RGBa"),
        "HSV": lambda: grey.convert("RGB").convert("HSV"),
    }
    return made[mode]() if mode in made else grey.convert(mode)


@pytest.mark.parametrize("mode", Image.MODES)
def test_every_mode_pillow_has_reads_as_its_8_bit_twin(client, mode):
    """Sent as a TIFF where TIFF holds the mode; a mode that no file Pillow writes holds (but for
    its deprecated IM format) is prepared as it is."""
    image = the_stroke_in(mode)
    twin = client.post("/predict?image=1", content=a_stroke()).json()
    body = io.BytesIO()
    try:
        image.save(body, "TIFF")
    except (OSError, ValueError, KeyError):
        seen = digits.prepare(image)
    else:
        answer = client.post("/predict?image=1", content=body.getvalue())
        assert answer.status_code == 200, answer.text
        seen = torch.tensor(answer.json()["image"], dtype=torch.uint8)
        assert answer.json()["class"] == twin["class"]
        assert answer.json()["probabilities"] == pytest.approx(twin["probabilities"], abs=0.01)
    assert (seen.int() - torch.tensor(twin["image"])).abs().max() <= 2, mode


@pytest.mark.filterwarnings("ignore:IM image format is deprecated:DeprecationWarning")
def test_every_format_pillow_writes_gets_an_answer_or_a_4xx(client):
    """An image file of each format, in the first of L, RGB, 1 and P that the format takes: read
    as the PNG is where Pillow decodes it, else (a format Pillow writes alone, or reads with a
    program that is not here, such as EPS with Ghostscript) refused with a 400."""
    twin = client.post("/predict", content=a_stroke()).json()["class"]
    grey = Image.open(io.BytesIO(a_stroke()))
    answered = {}
    for format in sorted(Image.SAVE):
        for mode in ("L", "RGB", "1", "P"):
            body = io.BytesIO()
            try:
                grey.convert(mode).save(body, format)
                break
            except Exception:  # a mode the format does not take, or a format that needs another program
                body = None
        if body is None:
            continue
        answer = client.post("/predict", content=body.getvalue())
        answered[format] = answer.status_code
        try:
            Image.open(io.BytesIO(body.getvalue())).load()
            decodes = True
        except Exception:
            decodes = False
        if decodes:
            assert answer.status_code == 200 and answer.json()["class"] == twin, (format, answer.text)
        else:
            assert answer.status_code == 400, (format, answer.text)
    assert {"PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"} <= set(answered)


def test_a_16_bit_png_reads_as_its_8_bit_twin(client):
    twin = client.post("/predict", content=a_stroke()).json()
    pixels = np.asarray(Image.open(io.BytesIO(a_stroke()))).astype(np.uint16) * 257
    sixteen = png(Image.fromarray(pixels))
    assert Image.open(io.BytesIO(sixteen)).mode == "I;16"
    answer = client.post("/predict", content=sixteen).json()
    assert answer["class"] == twin["class"]
    assert answer["probabilities"] == pytest.approx(twin["probabilities"], abs=0.01)


def a_photo(size: tuple[int, int] = (4000, 3000)) -> bytes:
    """A 12-megapixel JPEG, as a phone takes them, of a dark stroke on light paper."""
    photo = Image.new("RGB", size, (235, 230, 220))
    photo.paste((30, 30, 40), (1900, 700, 2100, 2300))
    body = io.BytesIO()
    photo.save(body, "JPEG", quality=90)
    return body.getvalue()


def test_a_12_megapixel_photo_is_read_as_at_its_full_size(client):
    photo = a_photo()
    answer = client.post("/predict?image=1", content=photo)
    assert answer.status_code == 200, answer.text
    full = digits.prepare(Image.open(io.BytesIO(photo)).convert("L"))  # decoded whole, prepared at 4000×3000
    assert (torch.tensor(answer.json()["image"]) - full.int()).abs().max() <= 8


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
    assert set(map(str, predict["responses"])) == {"200", "400", "405", "408", "413", "422", "503"}
    assert set(map(str, schema["paths"]["/health"]["get"]["responses"])) == {"200", "400", "405", "503"}


def test_the_page_allows_its_own_script_and_style_alone_and_no_frame(client):
    page = client.get("/")
    policy = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
    assert policy["script-src"].startswith("'sha256-") and policy["style-src"].startswith("'sha256-")
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["x-frame-options"] == "DENY"


def test_a_server_on_a_loopback_address_answers_its_own_names_alone(tiny_run):
    with socket.create_server(("127.0.0.1", 0)) as loopback, socket.create_server(("0.0.0.0", 0)) as everywhere:
        assert hosts("127.0.0.1", loopback) == ["127.0.0.1", "[::1]", "localhost"]
        assert hosts("0.0.0.0", everywhere) == ["*"]
        names = hosts("127.0.0.1", loopback)
    local = TestClient(application(load(tiny_run), workers=1, hosts=names), base_url="http://127.0.0.1:8000")
    assert local.get("/health").status_code == 200
    assert local.get("/health", headers={"host": "localhost:8000"}).status_code == 200
    assert local.get("/health", headers={"host": "[::1]:8000"}).status_code == 200
    # A name of the attacker's that resolves to 127.0.0.1 (DNS rebinding).
    assert local.get("/health", headers={"host": "rebound.example:8000"}).status_code == 400


def test_a_body_still_arriving_after_the_time_limit_gets_408_and_is_read_no_further():
    import anyio

    received = []

    async def reader(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"read"})

    async def request(app, trickle: float) -> list[dict]:
        async def receive():
            await anyio.sleep(trickle)
            received.append(trickle)
            return {"type": "http.request", "body": b"x", "more_body": len(received) < 3}

        sent = []

        async def send(message):
            sent.append(message)

        await app({"type": "http", "method": "POST", "path": "/", "headers": []}, receive, send)
        return sent

    answered = anyio.run(request, BodyDeadline(reader, seconds=0.2), 0.15)
    assert answered[0]["status"] == 408 and len(received) == 1
    assert json.loads(answered[1]["body"])["error"] == "the body took over 0.2 s to arrive; send it at once"
    received.clear()
    answered = anyio.run(request, BodyDeadline(reader, seconds=0.2), 0.01)
    assert answered[0]["status"] == 200 and len(received) == 3


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
        statuses += the_connections_beyond_the_limit_get_503(server)
        failures = what_schemathesis_finds(server.url, tmp_path)
        # A client that never finishes its upload: Ctrl-C waits for it SHUTDOWN_SECONDS at most.
        with socket.create_connection(("127.0.0.1", server.port)) as slow:
            slow.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\nabc")
            time.sleep(0.5)
            stopping = time.monotonic()
            server.process.send_signal(signal.SIGINT)
            server.process.wait(timeout=30)
            stopped_in = time.monotonic() - stopping
    assert server.process.returncode == 130
    assert statuses == [200] * 200 + [503, 200]
    assert failures == ""
    assert stopped_in < SHUTDOWN_SECONDS + 2
    assert f"Serving {tiny_run} at http://127.0.0.1:{server.port}/" in server.log
    assert "Traceback" not in server.log


def the_connections_beyond_the_limit_get_503(server: "Server") -> list[int]:
    """With CONNECTIONS open and idle, the next client's answer is a 503, and once they close, a 200."""
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(CONNECTIONS)]
    time.sleep(0.5)  # each accepted by the server
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    connection.request("POST", "/predict", a_stroke())
    beyond = connection.getresponse().status
    connection.close()
    for connection in idle:
        connection.close()
    time.sleep(0.5)
    return [beyond, server.post(a_stroke())[0]]


def what_schemathesis_finds(url: str, directory: Path) -> str:
    """Schemathesis's every check against the served API, each error status the OpenAPI document
    declares counted as an answer to a valid request (a valid image may hold no digit: 422). Its
    failures, or "" if none."""
    with urllib.request.urlopen(f"{url}openapi.json") as answer:
        document = json.load(answer)
    declared = sorted(
        {str(status) for path in document["paths"].values() for op in path.values() for status in op["responses"]}
    )
    config = directory / "schemathesis.toml"
    config.write_text(f"[checks.positive_data_acceptance]\nexpected-statuses = {json.dumps(declared)}\n")
    done = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color", "run",
         f"{url}openapi.json", "--checks", "all", "--seed", "1"],
        capture_output=True, text=True, timeout=300, cwd=directory,
    )  # fmt: skip
    return "" if done.returncode == 0 else done.stdout[-4000:]


@pytest.mark.slow
def test_an_upload_costs_at_most_200_mib_and_an_error_keeps_none(tiny_run):
    """benchmarks/serve_memory.py, in a process of its own: a 12-megapixel photo and a PNG bomb,
    then two rounds of 100 uploads that decode and fail."""
    benchmark = Path(__file__).parents[1] / "benchmarks" / "serve_memory.py"
    done = subprocess.run([sys.executable, benchmark, tiny_run], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["photo"]["status"] == 200 and figures["photo"]["peak_mib"] <= 200
    assert figures["bomb"]["status"] == 413 and figures["bomb"]["peak_mib"] <= 200
    assert figures["failing_uploads"]["statuses"] == [400, 422]
    assert figures["failing_uploads"]["second_round_growth_mib"] < 300


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
