"""The try-it page (demo/app.py) started as a user starts it, on a free loopback port."""

import os
import socket
import subprocess
import sys
import urllib.request

from ..conftest import ROOT
from ..test_kill_and_lock import _start_logged, _wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class AppServer:
    """``demo/app.py ARGS --port P --output OUTPUT`` in the background; ``.url``; ``.stop()``."""

    def __init__(self, args, output: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.output = output
        self.log = os.path.join(output, "server.log")
        os.makedirs(output, exist_ok=True)
        cmd = [sys.executable, os.path.join(ROOT, "demo", "app.py"), *args]
        cmd += ["--port", str(self.port), "--output", output]
        self.process = _start_logged(cmd, self.log)
        _wait_for(lambda: _answers(self.url), 240, "the page to answer", self.process, self.log)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
