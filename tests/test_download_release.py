"""
tools/convert_official_checkpoint.py --download: a loopback HTTP server serves a tar.gz of
the oracle checkpoint whole, cut off mid-way (then resumed), or not at all (404).
"""

import http.server
import os
import tarfile
import threading

import pytest

from .conftest import ORACLE, needs_shared
from .helpers.scripts import load_script

pytestmark = needs_shared
NAME = "r50_vild_ensemble"
FILE = "resnet50_vild_ensemble.tar.gz"


class ReleaseServer(http.server.ThreadingHTTPServer):
    """Serves ``files`` (name -> bytes) with Range support; ``cut_after`` bytes, then hangs up."""

    def __init__(self, files):
        super().__init__(("127.0.0.1", 0), ReleaseHandler)
        self.files, self.cut_after, self.ranges = files, None, []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/release"


class ReleaseHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        data = self.server.files.get(os.path.basename(self.path))
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        wanted = self.headers.get("Range")
        self.server.ranges.append(wanted)
        if wanted:
            start = int(wanted.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if self.server.cut_after is not None:
            body, self.server.cut_after = body[: self.server.cut_after], None
            self.close_connection = True
        self.wfile.write(body)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    folder = tmp_path_factory.mktemp("release")
    archive = folder / FILE
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("model.ckpt.index", "model.ckpt.data-00000-of-00001"):
            tar.add(os.path.join(ORACLE, name), arcname=f"resnet50_vild_ensemble/{name}")
    server = ReleaseServer({FILE: archive.read_bytes()})
    yield server
    server.shutdown()


def _convert(server, tmp_path, capsys, *extra):
    tool = load_script("tools/convert_official_checkpoint.py")
    args = ["--download", NAME, "--mirror", server.url, "--cache-dir", str(tmp_path / "cache")]
    code = tool.main([*args, "--output", str(tmp_path / "converted"), "--no-progress", *extra])
    return code, capsys.readouterr()


def test_whole_download_then_cached(release, tmp_path, capsys):
    release.ranges.clear()
    code, out = _convert(release, tmp_path, capsys)
    assert code == 0, out.err
    cached = tmp_path / "cache" / FILE
    assert cached.read_bytes() == release.files[FILE] and release.ranges == [None]
    assert (tmp_path / "converted" / "model_final.pth").is_file()
    # a second conversion takes the cached file: no request
    code, out = _convert(release, tmp_path, capsys, "--overwrite")
    assert code == 0, out.err
    assert release.ranges == [None]


def test_cut_off_then_resumed(release, tmp_path, capsys):
    release.ranges.clear()
    size = len(release.files[FILE])
    release.cut_after = size // 3
    code, out = _convert(release, tmp_path, capsys)
    part = tmp_path / "cache" / (FILE + ".part")
    assert code == 2 and out.err.count("\n") == 1, out.err
    assert "run the same command again to resume" in out.err and release.url in out.err
    assert part.stat().st_size == size // 3 and not (tmp_path / "converted").exists()
    code, out = _convert(release, tmp_path, capsys)
    assert code == 0, out.err
    assert release.ranges == [None, f"bytes={size // 3}-"]
    assert (tmp_path / "cache" / FILE).read_bytes() == release.files[FILE] and not part.exists()


def test_missing_file_is_one_line(release, tmp_path, capsys):
    tool = load_script("tools/convert_official_checkpoint.py")
    args = ["--download", "r152_vild", "--mirror", release.url, "--no-progress"]
    code = tool.main([*args, "--cache-dir", str(tmp_path), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "HTTP 404" in err and "resnet152_vild" in err
    assert os.listdir(tmp_path) == []
