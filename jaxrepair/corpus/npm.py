"""JavaScript projects from the npm registry: the pinned ``node_modules`` their tests run with.

Why a pre-populated ``node_modules`` inside the task's repository rather than ``npm ci``:
published tarballs ship no lockfile, and ``npm ci`` would install every devDependency the
project declares (linters, coverage tools, bundlers: hundreds of packages the tests never
load) and needs a writable npm cache. Instead each project pins the closure its tests need
(``npm_locks``: name -> exact version and ``dist.integrity``); every tarball is fetched by
that integrity (sources.fetch), unpacked (snapshots), and assembled once into a flat
``node_modules`` store under ``<cache>/corpus/node_modules/<lock hash>/`` (with ``.bin``
links and npm's hidden lockfile ``.package-lock.json``). A task's ``repo/node_modules`` is
hard-linked from the store; the sandbox's workspace copy then carries it into either backend
(bubblewrap or Docker) with no bind mount and no per-task sandbox configuration, and the
tests resolve ``require('tape')`` the way node always does. The build installs nothing, and
the sandbox has no network, so a build that tries to download fails. ``node_modules/**`` is
protected: a fix may not edit the test runner.

Test counts: ``tap_build`` wraps any runner that writes TAP so the build prints ``TESTS RAN:
N`` from TAP's ``# tests N`` for the reward's test-count guard: tape (its assertion count),
mocha with ``-R tap`` (the tests run), ``node --test --test-reporter=tap`` (tests and
subtests). One mechanism for every runner: each states its count in the same summary line.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ..envs import deps
from .snapshots import snapshot
from .sources import SourceSpec, fetch

__all__ = [
    "NODE_MODULES",
    "NpmError",
    "install_node_modules",
    "lock_entries",
    "lock_specs",
    "node_modules_store",
    "npm_spec",
    "tap_build",
]

NODE_MODULES = "node_modules"


class NpmError(ValueError):
    """A dependency closure cannot be installed as pinned (two versions of one name, ...)."""


def npm_spec(name: str, version: str, integrity: str) -> SourceSpec:
    """The pinned source of an npm tarball (``integrity``: npm's ``sha512-<base64>``)."""
    algo, _, b64 = integrity.partition("-")
    if algo != "sha512" or not b64:
        raise NpmError(f"{name}@{version}: integrity {integrity!r} is not sha512-<base64>")
    base = name.rsplit("/", 1)[-1]  # @scope/name -> name-<version>.tgz
    return SourceSpec(
        "npm",
        name,
        version,
        f"sha512:{base64.b64decode(b64).hex()}",
        filename=f"{base}-{version}.tgz",
    )


def lock_specs(*locks: dict[str, tuple[str, str]]) -> tuple[SourceSpec, ...]:
    """The sources of one or more lock tables (``npm_locks``), sorted by name; a name pinned
    at two versions is refused (the store is flat)."""
    merged: dict[str, tuple[str, str]] = {}
    for lock in locks:
        for name, pinned in lock.items():
            if merged.get(name, pinned) != pinned:
                raise NpmError(
                    f"{name} is pinned at {merged[name][0]} and {pinned[0]}; a flat "
                    "node_modules holds one version of each package"
                )
            merged[name] = pinned
    return tuple(npm_spec(n, v, i) for n, (v, i) in sorted(merged.items()))


def lock_entries(package_lock: dict) -> dict[str, tuple[str, str]]:
    """name -> (version, integrity) of an npm ``package-lock.json`` (lockfileVersion 2 or 3)
    whose packages all sit at the top of ``node_modules`` (how a closure is added)."""
    out = {}
    for key, entry in package_lock.get("packages", {}).items():
        if not key:
            continue  # the root project
        name = key.split("node_modules/", 1)[1]
        if "node_modules/" in name:
            raise NpmError(f"{key}: a nested package; the store is flat")
        if not entry.get("integrity"):
            raise NpmError(f"{key}: no integrity in the lockfile")
        out[name] = (entry["version"], entry["integrity"])
    return out


def _store_key(specs: tuple[SourceSpec, ...]) -> str:
    lines = sorted(f"{s.name}@{s.version} {s.hash}" for s in specs)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _bins(name: str, manifest: dict) -> dict[str, str]:
    """The package's executables: bin name -> path inside the package."""
    b = manifest.get("bin")
    if isinstance(b, str):
        return {name.rsplit("/", 1)[-1]: b}
    if isinstance(b, dict):
        return {str(k): str(v) for k, v in b.items()}
    return {}


def _sri(h: str) -> str:
    algo, hexd = h.split(":", 1)
    return f"{algo}-{base64.b64encode(bytes.fromhex(hexd)).decode()}"


def _assemble(specs: tuple[SourceSpec, ...], dest: Path) -> None:
    """A flat node_modules in ``dest``: each package copied from its snapshot, the ``.bin``
    links npm makes (targets made executable), and npm's hidden lockfile."""
    nm = dest / NODE_MODULES
    nm.mkdir(parents=True)
    hidden: dict[str, dict] = {}
    bins: dict[str, str] = {}
    for spec in specs:
        tree, _ = snapshot(fetch(spec))
        pkg = nm / spec.name
        pkg.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(tree, pkg, symlinks=True)  # a copy: the snapshot stays as hashed
        manifest = json.loads((pkg / "package.json").read_text())
        if manifest.get("name") != spec.name or manifest.get("version") != spec.version:
            raise NpmError(
                f"{spec.label}: the tarball's package.json says "
                f"{manifest.get('name')}@{manifest.get('version')}"
            )
        for b, rel in _bins(spec.name, manifest).items():
            target = pkg / rel
            if target.is_file():
                os.chmod(target, 0o755)
                bins[b] = os.path.relpath(target, nm / ".bin")
        hidden[f"{NODE_MODULES}/{spec.name}"] = {
            "version": spec.version,
            "integrity": _sri(spec.hash),
        }
    if bins:
        (nm / ".bin").mkdir()
        for b, rel in sorted(bins.items()):
            os.symlink(rel, nm / ".bin" / b)
    lock = {"name": "jaxrepair-node-modules", "lockfileVersion": 3, "packages": hidden}
    (nm / ".package-lock.json").write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")


def node_modules_store(specs: Iterable[SourceSpec]) -> Path:
    """The directory holding the closure's ``node_modules`` (assembled once, cached)."""
    specs = tuple(specs)
    bad = [s.label for s in specs if s.registry != "npm"]
    if bad:
        raise NpmError(f"{bad[0]}: not an npm source")
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise NpmError(f"{dup[0]} is pinned twice; a flat node_modules holds one version")
    final = deps.cache_dir() / "corpus" / "node_modules" / _store_key(specs)
    if (final / NODE_MODULES / ".package-lock.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with deps._file_lock(final.parent / f"{final.name}.lock"):
        if (final / NODE_MODULES / ".package-lock.json").is_file():
            return final
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
        try:
            _assemble(specs, tmp)
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def install_node_modules(repo: Path, specs: Iterable[SourceSpec], link: bool = True) -> None:
    """Put the closure's ``node_modules`` into ``repo``: hard links into the store (a task
    directory, never built in) or copies (``link=False``: a workspace a build runs in)."""
    src = node_modules_store(specs) / NODE_MODULES
    dest = Path(repo) / NODE_MODULES
    if dest.exists() or dest.is_symlink():
        raise NpmError(f"{repo.name} already has {NODE_MODULES}/")

    def copy(s: str, d: str) -> None:
        try:
            if not link:
                raise OSError
            os.link(s, d)
        except OSError:  # not linking, or another file system
            shutil.copy2(s, d)

    shutil.copytree(src, dest, symlinks=True, copy_function=copy)


def tap_build(runner: str) -> str:
    """A build command running a TAP test runner (tape, ``mocha -R tap``, ``node --test
    --test-reporter=tap``): its output, then ``TESTS RAN: N`` from the TAP summary's
    ``# tests N``; exits with the runner's status."""
    return (
        f"{runner} > /tmp/tap.out 2>&1; s=$?; cat /tmp/tap.out; "
        "sed -n 's/^# tests \\([0-9][0-9]*\\)$/TESTS RAN: \\1/p' /tmp/tap.out; exit $s"
    )
