"""Pinned dependencies: a wheel index built from the corpus's own package sources, and
isolated, cached dependency environments keyed by the hash of the resolved pins.

Why: a task's build must see exactly the pinned versions, every time, with no index access
and no automatic upgrades, so that a result is reproducible (the paper's cached states).

Layout of the cache (``$JAXREPAIR_CACHE`` or ``~/.cache/jaxrepair``)::

    wheels/<name>/<version>-<srchash>/*.whl   one wheel per package source tree (built once)
    index/<indexhash>/*.whl                   the find-links index (hard links of the wheels)
    tools/<toolshash>/                        pytest and its requirements, copied from the host
    envs/<pinshash>-<indexhash>/site/         one dependency environment per pin set

A dependency environment is a plain directory of pure-Python packages (``pip install
--target``) plus the test tools; a sandbox puts it on ``PYTHONPATH`` (read-only, at
``/opt/jaxrepair/deps/site``). A target directory, unlike a venv, carries no absolute
interpreter paths, so the same directory works on the host sandbox and inside a container
with another patch release of the same Python. Builds use a file lock and an atomic rename,
so concurrent workers never see a half-built environment.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "DepsError",
    "available_versions",
    "cache_dir",
    "env_for_pins",
    "package_index_dir",
    "packages_dir",
    "pins_hash",
    "read_pins",
    "write_pin",
]

REQUIREMENTS = "requirements.txt"
_PIN_RE = re.compile(
    r"^([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*==\s*([A-Za-z0-9][A-Za-z0-9.+!_-]*)$"
)
_TOOLS = ("pytest",)
_lock = threading.Lock()
_index_memo: dict[tuple[str, str], Path] = {}


class DepsError(ValueError):
    """A dependency problem the task or the agent caused (unknown version, bad pin line)."""


def cache_dir() -> Path:
    """Root of the jaxrepair cache (``$JAXREPAIR_CACHE`` or ``~/.cache/jaxrepair``)."""
    root = os.environ.get("JAXREPAIR_CACHE") or os.path.join(Path.home(), ".cache", "jaxrepair")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def packages_dir() -> Path:
    """Where the corpus package sources live: ``<name>/<version>/pyproject.toml``.

    ``$JAXREPAIR_PACKAGES_DIR`` overrides the bundled ``jaxrepair/data/tasks/packages``.
    """
    env = os.environ.get("JAXREPAIR_PACKAGES_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "data" / "tasks" / "packages"


def normalize(name: str) -> str:
    """PEP 503 name normalisation (``Foo_Bar`` and ``foo-bar`` are one package)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _version_key(v: str) -> tuple:
    parts = re.split(r"[.+-]", v)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def _sources(pkgdir: Path | None = None) -> dict[str, dict[str, Path]]:
    """normalized name -> version -> source tree."""
    root = Path(pkgdir) if pkgdir is not None else packages_dir()
    out: dict[str, dict[str, Path]] = {}
    if not root.is_dir():
        return out
    for name_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for ver_dir in sorted(p for p in name_dir.iterdir() if p.is_dir()):
            if (ver_dir / "pyproject.toml").is_file() or (ver_dir / "setup.py").is_file():
                out.setdefault(normalize(name_dir.name), {})[ver_dir.name] = ver_dir
    return out


def available_versions(name: str, pkgdir: Path | None = None) -> list[str]:
    """Versions of ``name`` in the corpus package index, oldest first ([] if unknown)."""
    versions = _sources(pkgdir).get(normalize(name), {})
    return sorted(versions, key=_version_key)


def pins_hash(pins: dict[str, str]) -> str:
    """Stable hash of a resolved pin set (names normalised, order-independent)."""
    canon = sorted((normalize(k), str(v)) for k, v in pins.items())
    return hashlib.sha256(json.dumps(canon).encode()).hexdigest()


def read_pins(workspace: Path) -> dict[str, str]:
    """Parse ``requirements.txt`` (only exact ``name==version`` pins); {} when absent."""
    path = Path(workspace) / REQUIREMENTS
    if not path.is_file():
        return {}
    pins: dict[str, str] = {}
    for lineno, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = _PIN_RE.match(line)
        if not m:
            raise DepsError(
                f"{REQUIREMENTS} line {lineno}: {raw.strip()!r} is not an exact pin "
                "'name==version' (ranges, URLs and options are not allowed)"
            )
        pins[m.group(1)] = m.group(2)
    return pins


def write_pin(workspace: Path, name: str, version: str) -> None:
    """Set one pin in the workspace's ``requirements.txt``; refuses unknown versions."""
    versions = available_versions(name)
    if not versions:
        raise DepsError(f"package {name!r} is not in the corpus package index")
    if version not in versions:
        raise DepsError(
            f"package {name!r} has no version {version!r}; available: {', '.join(versions)}"
        )
    path = Path(workspace) / REQUIREMENTS
    lines = path.read_text().splitlines() if path.is_file() else []
    out, done = [], False
    for raw in lines:
        m = _PIN_RE.match(raw.split("#", 1)[0].strip())
        if m and normalize(m.group(1)) == normalize(name):
            if not done:
                out.append(f"{m.group(1)}=={version}")
                done = True
            continue
        out.append(raw)
    if not done:
        out.append(f"{name}=={version}")
    path.write_text("\n".join(out) + "\n")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if (
            "__pycache__" in rel
            or rel.endswith(".pyc")
            or ".egg-info" in rel
            or rel.startswith("build/")
        ):
            continue
        if p.is_file() and not p.is_symlink():
            h.update(rel.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _pip_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(
        PIP_NO_INDEX="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        PIP_CONFIG_FILE=os.devnull,
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def _run_pip(args: list[str], what: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", *args],
        env=_pip_env(),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{what} failed (pip exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )


def build_wheel_simple(src: Path, out_dir: Path) -> Path:
    """Build a pure-Python wheel without setuptools (used when the running environment has no
    setuptools, e.g. a Python >= 3.12 venv): packages from ``[tool.setuptools] packages`` or
    every top-level directory holding an ``__init__.py``."""
    import base64
    import tomllib
    import zipfile

    meta = tomllib.loads((src / "pyproject.toml").read_text())
    project = meta.get("project", {})
    name, version = project.get("name"), project.get("version")
    if not name or not version:
        raise DepsError(f"{src}/pyproject.toml needs [project] name and version")
    pkgs = meta.get("tool", {}).get("setuptools", {}).get("packages")
    if not pkgs:
        pkgs = sorted(
            p.name for p in src.iterdir() if (p / "__init__.py").is_file() and p.name != "tests"
        )
    dist = re.sub(r"[-_.]+", "_", name)
    info = f"{dist}-{version}.dist-info"
    files: dict[str, bytes] = {}
    for pkg in pkgs:
        root = src / pkg.replace(".", "/")
        for f in sorted(root.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc":
                files[f.relative_to(src).as_posix()] = f.read_bytes()
    files[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    )
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: jaxrepair\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = []
    for rel, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{rel},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    out = Path(out_dir) / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel, data in files.items():
            zi = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
            zi.external_attr = 0o644 << 16
            zf.writestr(zi, data, zipfile.ZIP_DEFLATED)
    return out


def _build_wheel(src: Path, out_dir: Path) -> None:
    """Build one wheel from a package source tree, into out_dir (atomic)."""
    if out_dir.is_dir():
        return
    with _file_lock(out_dir.parent / (out_dir.name + ".lock")):
        if out_dir.is_dir():
            return
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out_dir.parent))
        try:
            import importlib.util

            if importlib.util.find_spec("setuptools") is None:
                build_wheel_simple(src, tmp)
            else:
                _pip_wheel(src, tmp)
            if not list(tmp.glob("*.whl")):
                raise RuntimeError(f"building a wheel from {src} produced no wheel")
            os.rename(tmp, out_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _pip_wheel(src: Path, tmp: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="jaxrepair-src-") as srccopy:
        # build from a copy so that build/ and *.egg-info never land in the corpus
        shutil.copytree(src, srccopy, dirs_exist_ok=True)
        _run_pip(
            ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp), srccopy],
            f"building a wheel from {src}",
        )


def package_index_dir(pkgdir: Path | None = None) -> Path:
    """The find-links directory holding one wheel per corpus package version (built once)."""
    root = (Path(pkgdir) if pkgdir is not None else packages_dir()).resolve()
    sources = _sources(root)
    sig = json.dumps(
        [
            (n, v, os.stat(p).st_mtime_ns)
            for n, vs in sorted(sources.items())
            for v, p in sorted(vs.items())
        ]
    )
    cache = cache_dir()
    memo_key = (str(root), str(cache), sig)  # another cache dir (JAXREPAIR_CACHE) builds anew
    with _lock:
        if memo_key in _index_memo and _index_memo[memo_key].is_dir():
            return _index_memo[memo_key]
    wheel_dirs = []
    for name, versions in sorted(sources.items()):
        for version, src in sorted(versions.items()):
            out = cache / "wheels" / name / f"{version}-{_tree_hash(src)[:16]}"
            out.parent.mkdir(parents=True, exist_ok=True)
            _build_wheel(src, out)
            wheel_dirs.append(out)
    index_hash = hashlib.sha256("\n".join(str(d) for d in wheel_dirs).encode()).hexdigest()[:16]
    index = cache / "index" / index_hash
    if not index.is_dir():
        index.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(index.parent / (index_hash + ".lock")):
            if not index.is_dir():
                tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=index.parent))
                for d in wheel_dirs:
                    for whl in d.glob("*.whl"):
                        try:
                            os.link(whl, tmp / whl.name)
                        except OSError:
                            shutil.copy2(whl, tmp / whl.name)
                os.rename(tmp, index)
    with _lock:
        _index_memo[memo_key] = index
    return index


def _host_tools_closure() -> list:
    """The installed distributions pytest needs (pytest and its requirements, recursively)."""
    from importlib import metadata

    try:
        from packaging.requirements import Requirement
    except ImportError as e:  # pragma: no cover - pytest depends on packaging
        raise DepsError("the host environment lacks 'packaging' (install jaxrepair[dev])") from e
    seen: dict[str, metadata.Distribution] = {}
    todo = list(_TOOLS)
    while todo:
        name = normalize(todo.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError as e:
            raise DepsError(
                f"the test tools need {name!r}, which is not installed on the host; "
                "install jaxrepair[dev] (pytest) into the environment that runs jaxrepair"
            ) from e
        seen[name] = dist
        for req in dist.requires or []:
            r = Requirement(req)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    return [seen[k] for k in sorted(seen)]


def _tools_dir() -> Path:
    """pytest and its requirements copied from the host env into a cache dir (once)."""
    dists = _host_tools_closure()
    key = hashlib.sha256(
        json.dumps(
            [(d.metadata["Name"], d.version) for d in dists] + [sys.version_info[:2]]
        ).encode()
    ).hexdigest()[:16]
    out = cache_dir() / "tools" / key
    if out.is_dir():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(out.parent / (key + ".lock")):
        if out.is_dir():
            return out
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out.parent))
        try:
            for dist in dists:
                base = Path(dist.locate_file(""))
                for f in dist.files or []:
                    rel = Path(str(f))
                    if rel.is_absolute() or ".." in rel.parts or "__pycache__" in rel.parts:
                        continue  # console scripts and byte code are not needed
                    src = base / rel
                    if src.is_file():
                        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(src, tmp / rel)
            os.rename(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _make_readable(root: Path) -> None:
    """a+rX on a tree, so that a container's non-root user can read the environment."""
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                os.chmod(p, os.stat(p).st_mode | 0o444)


def env_for_pins(pins: dict[str, str], pkgdir: Path | None = None) -> Path:
    """The dependency environment for a pin set (built once, cached by the pins hash).

    Returns a directory whose ``site/`` holds exactly the pinned packages (installed with pip
    from the corpus index, no index access, no dependency resolution, no upgrades) plus the
    test tools. Unknown packages or versions raise DepsError naming what is available.
    """
    for name, version in pins.items():
        versions = available_versions(name, pkgdir)
        if not versions:
            raise DepsError(f"pinned package {name!r} is not in the corpus package index")
        if version not in versions:
            raise DepsError(
                f"pinned {name}=={version} is not in the corpus package index; "
                f"available: {', '.join(versions)}"
            )
    index = package_index_dir(pkgdir)
    tools = _tools_dir()
    key = f"{pins_hash(pins)[:16]}-{index.name[:8]}-{tools.name[:8]}"
    out = cache_dir() / "envs" / key
    if (out / "manifest.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(out.parent / (key + ".lock")):
        if (out / "manifest.json").is_file():
            return out
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out.parent))
        try:
            site = tmp / "site"
            shutil.copytree(tools, site)
            if pins:
                reqs = [f"{n}=={v}" for n, v in sorted(pins.items())]
                _run_pip(
                    [
                        "install",
                        "--no-index",
                        "--find-links",
                        str(index),
                        "--no-deps",
                        "--no-compile",
                        "--no-warn-script-location",
                        "--target",
                        str(site),
                        *reqs,
                    ],
                    f"installing pins {', '.join(reqs)}",
                )
            shutil.rmtree(site / "bin", ignore_errors=True)
            (tmp / "manifest.json").write_text(
                json.dumps(
                    {
                        "pins": dict(sorted(pins.items())),
                        "pins_hash": pins_hash(pins),
                        "index": str(index),
                        "tools": str(tools),
                    },
                    indent=1,
                )
            )
            _make_readable(tmp)
            if out.exists():  # a stale partial directory from a crashed run
                shutil.rmtree(out)
            os.rename(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out
