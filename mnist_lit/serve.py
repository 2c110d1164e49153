"""`python -m mnist_lit.serve checkpoint=<run dir or .ckpt> [port=8000] [host=127.0.0.1]`, or
`mnist-lit-serve`: a page where you draw a digit and watch the network read it, and its JSON API,
`POST /predict` with an image file's bytes as the body (web/app.py). Served by uvicorn
(pip install "mnist_lit[serve]") on this machine alone unless host= says otherwise; Ctrl-C stops it."""

import asyncio
import ipaddress
import logging
import os
import socket

import hydra
from omegaconf import DictConfig

from mnist_lit.command_line import command_line, ends_in_one_line
from mnist_lit.common.errors import STOPS, ConfigError, stop_signal
from mnist_lit.config.checks import require, require_installed
from mnist_lit.startup import heavy_imports

log = logging.getLogger(__name__)

SERVER_LIBRARIES = ("starlette", "uvicorn", "python_multipart")


@hydra.main(version_base="1.3", config_path="pkg://mnist_lit.conf", config_name="serve")
@ends_in_one_line
def run(cfg: DictConfig) -> None:
    require(cfg, checkpoint="run directory or .ckpt file")
    require_installed("serving", SERVER_LIBRARIES, "serve")
    if not 0 < cfg.port < 65536:
        raise ConfigError(f"port={cfg.port} is not a port; choose one from 1 to 65535, such as port=8000")
    listener = listen(cfg.host, cfg.port)
    import uvicorn

    with heavy_imports():
        from mnist_lit.runs.machine import cores
        from mnist_lit.runs.trained_network import load
        from mnist_lit.web.app import application
        from mnist_lit.web.limits import CONNECTIONS, SHUTDOWN_SECONDS

    app = application(load(cfg.checkpoint), workers=cores(), hosts=hosts(cfg.host, listener))
    log.info("Serving %s at http://%s:%d/ (Ctrl-C stops)", cfg.checkpoint, cfg.host, cfg.port)
    # log_config=None: uvicorn logs through the handlers Hydra set up, into this command's log too.
    # Beyond CONNECTIONS open at once, uvicorn answers 503; Ctrl-C waits SHUTDOWN_SECONDS at most.
    server = uvicorn.Config(
        app, log_config=None, limit_concurrency=CONNECTIONS, timeout_graceful_shutdown=SHUTDOWN_SECONDS
    )
    logging.getLogger("uvicorn.error").addFilter(_cancelled_in_one_line)
    try:
        uvicorn.Server(server).run(sockets=[listener])
    except STOPS as stop:
        # uvicorn raises the signal that stopped it again once it has shut down: the process ends
        # as the shell's convention has it (130 for Ctrl-C, 143 for SIGTERM), after uvicorn's lines.
        raise SystemExit(128 + stop_signal(stop)) from None


def _cancelled_in_one_line(record: logging.LogRecord) -> bool:
    """uvicorn logs each request it cancels at the shutdown's time limit (an upload that never
    ends, say) as an error with its traceback: it was stopped, as asked, and one line says so."""
    if record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError):
        record.msg, record.args, record.exc_info = "A request still running at shutdown was stopped", (), None
    return True


def hosts(host: str, listener: socket.socket) -> list[str]:
    """The Host headers the server takes: on a loopback address, the names of this machine alone
    (a page elsewhere could reach it through a name of its own that resolves here, DNS rebinding);
    elsewhere, any."""
    if not ipaddress.ip_address(listener.getsockname()[0]).is_loopback:
        return ["*"]
    # As a Host header names them: an IPv6 address in brackets.
    return sorted({f"[{name}]" if ":" in name else name for name in (host, "localhost", "127.0.0.1", "::1")})


def listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound before the checkpoint loads: a port in use is one line, at once."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        # protocol: IPPROTO_TCP, not 0, so that asyncio sets TCP_NODELAY on each connection, as on
        # the sockets uvicorn binds itself; without it every answer on a kept-alive connection
        # waited 40 ms for the client's delayed acknowledgement.
        listener = socket.socket(family, kind, protocol)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(address)
            listener.listen()
        except OSError:
            listener.close()
            raise
        return listener
    except OSError as error:
        # os.strerror: socket's own message names the address a second time; a host name that does
        # not resolve (socket.gaierror) has a negative errno and its reason in strerror.
        reason = os.strerror(error.errno) if error.errno and error.errno > 0 else error.strerror or error
        raise ConfigError(f"cannot serve on {host}:{port}: {reason}; choose another port= (or host=)") from None
    except UnicodeError:  # a name that IDNA cannot encode, such as "." or ""
        raise ConfigError(f"host={host} is not a host name; give one such as host=127.0.0.1 or host=0.0.0.0") from None


main = command_line(run)

if __name__ == "__main__":
    main()
