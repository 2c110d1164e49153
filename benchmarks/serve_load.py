"""Requests per second and latency of `python -m mnist_lit.serve`'s `POST /predict`: the server
in a process of its own, 1,000 requests from 8 client threads, each thread on one kept-alive
connection, each request a 280×280 JPEG of an MNIST test digit redrawn dark on white (the real
test images where MNIST_LIT_DATA holds them, else drawn circles, read as 0).

    python benchmarks/serve_load.py <run dir or .ckpt> [--requests 1000] [--threads 8]
"""

import argparse
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def bodies(count: int) -> tuple[list[bytes], list[str]]:
    raw = Path(os.environ.get("MNIST_LIT_DATA", "data")) / "MNIST" / "raw"
    if (raw / "t10k-images-idx3-ubyte").exists():
        images = np.fromfile(raw / "t10k-images-idx3-ubyte", dtype=np.uint8, offset=16).reshape(-1, 28, 28)
        labels = [str(k) for k in np.fromfile(raw / "t10k-labels-idx1-ubyte", dtype=np.uint8, offset=8)]
        pictures = [Image.fromarray(255 - image).resize((280, 280), Image.Resampling.BICUBIC) for image in images]
    else:
        pictures, labels = [], []
        for i in range(count):
            page = Image.new("L", (280, 280), "white")
            ImageDraw.Draw(page).ellipse((60 + i % 50, 50, 200, 230), outline="black", width=20)
            pictures.append(page)
            labels.append("0")
    encoded = []
    for picture in pictures[:count]:
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=90)
        encoded.append(buffer.getvalue())
    return encoded, labels[:count]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    payloads, labels = bodies(args.requests)
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        server = subprocess.Popen(
            [sys.executable, "-m", "mnist_lit.serve", f"checkpoint={args.checkpoint}", f"port={port}"],
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(600):
                try:
                    probe = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                    probe.request("GET", "/")
                    probe.getresponse().read()  # answered: the checkpoint is loaded
                    break
                except OSError:
                    time.sleep(0.1)
            latencies, right, failed = [], [], []
            turn = iter(range(args.requests))
            lock = threading.Lock()

            def client() -> None:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                connection.connect()
                # As urllib3 (requests) and browsers do: http.client sends the headers and the body in
                # two writes, and Nagle's algorithm would hold the body until the server's delayed
                # acknowledgement (40 ms a request here).
                connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                while True:
                    with lock:
                        i = next(turn, None)
                    if i is None:
                        return
                    started = time.perf_counter()
                    connection.request("POST", "/predict", payloads[i % len(payloads)])
                    response = connection.getresponse()
                    answer = json.loads(response.read())
                    latencies.append(time.perf_counter() - started)
                    if response.status != 200:
                        failed.append(i)
                    else:
                        right.append(answer["class"] == labels[i % len(labels)])

            started = time.perf_counter()
            clients = [threading.Thread(target=client) for _ in range(args.threads)]
            for thread in clients:
                thread.start()
            for thread in clients:
                thread.join()
            seconds = time.perf_counter() - started
        finally:
            server.terminate()
            server.wait()
    p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
    print(
        f"{args.requests} requests from {args.threads} threads in {seconds:.2f} s: "
        f"{args.requests / seconds:.0f} per second, p50 {p50:.1f} ms, p99 {p99:.1f} ms; "
        f"{len(failed)} not answered 200; {np.mean(right):.1%} read right"
    )


if __name__ == "__main__":
    main()
