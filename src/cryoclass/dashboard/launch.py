"""Run the dashboard server (uvicorn) for a job folder: in the foreground (``cryoclass serve``) or
in a background thread beside a running job (``--dashboard``).

Bound to 127.0.0.1 by default. Bound to any other address, a token is required (one is made up
when none is given) and is part of the printed URL.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import uvicorn

from cryoclass.dashboard.service import Dashboard
from cryoclass.job_options import JOB

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = JOB.dashboard_port
LOOPBACK_NAMES = ["127.0.0.1", "localhost"]


@dataclass
class Server:
    """A bound, not yet running server: url to open (with the token), the uvicorn server and its
    socket; ``token`` None when none is required."""

    url: str
    token: str | None
    server: "uvicorn.Server"
    sock: socket.socket
    thread: threading.Thread | None = None

    def run(self) -> None:
        """Serve in this thread until Ctrl-C."""
        self.server.run(sockets=[self.sock])

    def start(self) -> "Server":
        """Serve in a background (daemon) thread."""
        self.thread = threading.Thread(
            target=self.server.run,
            kwargs={"sockets": [self.sock]},
            name="cryoclass-dashboard",
            daemon=True,
        )
        self.thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout_s)
        self.sock.close()


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(
    job_dir: str | Path,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    token: str | None = None,
    watch_dir: str | Path | None = None,
    pattern: str = JOB.pattern,
) -> Server:
    """Bind host:port (port 0: any free one) and build the server for job_dir. ``watch_dir``: the
    folder a stream watches (to count particles found)."""
    if not is_loopback(host) and not token:
        token = secrets.token_urlsafe(18)
    dash = Dashboard(job_dir, watch_dir=watch_dir, pattern=pattern)
    allowed = LOOPBACK_NAMES + [host] if is_loopback(host) and not token else None
    # Imported here: the web stack costs about 2 s of start-up, and most jobs never serve.
    import uvicorn

    from cryoclass.dashboard.app import create_app

    app = create_app(dash, token=token, allowed_hosts=allowed)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise OSError(f"cannot serve on {host}:{port} ({err.strerror or err})") from None
    sock.listen(128)
    sock.set_inheritable(True)
    real_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown = socket.gethostname()
    url = f"http://{shown}:{real_port}/" + (f"?token={token}" if token else "")
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
    return Server(url=url, token=token, server=uvicorn.Server(config), sock=sock)


def start_dashboard(
    job_dir: str | Path,
    port: int = DEFAULT_PORT,
    watch_dir: str | Path | None = None,
    pattern: str = JOB.pattern,
    say: Callable[[str], object] = print,
) -> Server | None:
    """For ``--dashboard`` on a job command: serve the job's folder on 127.0.0.1 in a daemon
    thread (it ends with the process) and say where. If the port is taken, say so and return
    None: the job runs all the same."""
    try:
        server = make_server(job_dir, port=port, watch_dir=watch_dir, pattern=pattern).start()
    except OSError as err:
        say(f"dashboard not started: {err}; run `cryoclass serve {job_dir}` beside the job")
        return None
    say(f"dashboard: {server.url}")
    return server


def linger(server: Server | None, say: Callable[[str], object] = print) -> None:
    """After the job: keep serving until Ctrl-C (classes are selected after the job ends)."""
    if server is None:
        return
    say(f"dashboard still at {server.url} (Ctrl-C to stop)")
    try:
        while server.thread is not None and server.thread.is_alive():
            server.thread.join(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
