"""
Download a released ViLD checkpoint (a ``.tar.gz``) into a cache folder, resumably.

The file grows as ``NAME.part`` and is renamed to ``NAME`` once it holds as many bytes as
the server announced; an interrupted download resumes from the ``.part`` with an HTTP
``Range`` request (a server that ignores it sends the whole file again, which is taken).
"""

import http.client
import os
import re
import urllib.error
import urllib.request
from typing import Optional

from tqdm import tqdm

from ..errors import VildD2Error

__all__ = ["RELEASED", "RELEASE_URL", "DownloadError", "default_cache_dir", "download_release"]

# where the official release (tensorflow/tpu, projects/vild) keeps its checkpoints
RELEASE_URL = (
    "https://storage.googleapis.com/cloud-tpu-checkpoints/detection/projects/vild/pretrained_ckpts"
)
# --download name -> the release's file
RELEASED = {
    "r50_vild": "resnet50_vild.tar.gz",
    "r50_vild_ensemble": "resnet50_vild_ensemble.tar.gz",
    "r152_vild": "resnet152_vild.tar.gz",
    "r152_vild_ensemble": "resnet152_vild_ensemble.tar.gz",
}
CHUNK = 1 << 20  # bytes read per step, 1 MiB
TIMEOUT = 60  # seconds without a byte before the connection counts as broken


class DownloadError(VildD2Error, OSError):
    """A download that did not complete; names the URL and what happened."""


def default_cache_dir() -> str:
    """``$VILD_D2_CACHE/official`` or ``~/.cache/vild_d2/official``."""
    root = os.environ.get("VILD_D2_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "vild_d2"
    )
    return os.path.join(root, "official")


def download_release(
    name: str, cache_dir: Optional[str] = None, base_url: str = RELEASE_URL, progress: bool = True
) -> str:
    """
    The released checkpoint ``name`` (a key of :data:`RELEASED`) as a local file, downloaded
    from ``base_url`` unless the cache already holds it whole. Returns its path.
    """
    if name not in RELEASED:
        raise ValueError(f"--download {name}: not a released checkpoint ({', '.join(RELEASED)})")
    folder = cache_dir or default_cache_dir()
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, RELEASED[name])
    if not os.path.isfile(path):
        fetch(f"{base_url.rstrip('/')}/{RELEASED[name]}", path, progress)
    return path


def fetch(url: str, path: str, progress: bool = True) -> None:
    """``url`` into ``path`` through ``path.part`` (resumed if present); DownloadError."""
    part = path + ".part"
    have = os.path.getsize(part) if os.path.isfile(part) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing after what we have: the .part may be whole
            raise DownloadError(
                f"{url}: the server has nothing after byte {have} of {part}; delete it and run"
                " again"
            ) from None
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"{url}: cannot connect ({reason})") from None
    with response:
        if response.status != 206:
            have = 0  # the server sent the whole file: start over
        total = _announced_total(response, have)
        _copy(response, part, have, total, url, progress)
    size = os.path.getsize(part)
    if total is not None and size != total:
        raise DownloadError(
            f"{url}: got {size:,} of the {total:,} bytes announced; run the same command"
            f" again to resume ({part} is kept)"
        )
    os.replace(part, path)


def _announced_total(response, have: int) -> Optional[int]:
    """The whole file's size in bytes, from Content-Range (206) or Content-Length (200)."""
    if response.status == 206:
        match = re.match(r"bytes \d+-\d+/(\d+)", response.headers.get("Content-Range", ""))
        if match:
            return int(match.group(1))
    length = response.headers.get("Content-Length")
    return have + int(length) if length is not None else None


def _copy(response, part: str, have: int, total: Optional[int], url: str, progress: bool):
    """Append the response's bytes to ``part`` (truncated to ``have`` first)."""
    name = os.path.basename(part)[: -len(".part")]
    with (
        open(part, "r+b" if have else "wb") as f,
        tqdm(
            total=total, initial=have, unit="B", unit_scale=True, desc=name, disable=not progress
        ) as bar,
    ):
        f.truncate(have)
        f.seek(have)
        while True:
            try:
                chunk = response.read(CHUNK)
            except (OSError, http.client.HTTPException) as e:  # broken: .part keeps what came
                f.flush()
                raise DownloadError(
                    f"{url}: connection lost after {f.tell():,} bytes ({e}); run the same"
                    f" command again to resume ({part} is kept)"
                ) from None
            if not chunk:
                return
            f.write(chunk)
            bar.update(len(chunk))
