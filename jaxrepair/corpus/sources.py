"""Upstream sources: a project archive fetched from a package registry by exact version AND hash.

Why: a corpus task is only reproducible if every build starts from the same bytes; the manifest
pins the archive's digest, the registry's own digest must agree with it, and the downloaded
bytes must hash to it, or the fetch stops with one ``SourceError`` line.

Registries: ``pypi`` (the JSON API, sdist ``sha256``), ``npm`` (the registry document,
``dist.integrity``), ``debian`` (a ``.dsc`` pinned by sha256, whose ``Checksums-Sha256`` pin
the tarballs it lists). Registry base URLs may be ``file://`` directories laid out like the
registry (tests, offline mirrors). Archives are cached under
``<cache>/corpus/archives/<sha256>/<filename>``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from ..envs import deps

__all__ = [
    "REGISTRIES",
    "SourceError",
    "SourceSpec",
    "debian_pool",
    "dsc_name",
    "fetch",
    "pin",
]

PYPI_URL = os.environ.get("JAXREPAIR_PYPI_URL", "https://pypi.org/pypi")
NPM_URL = os.environ.get("JAXREPAIR_NPM_URL", "https://registry.npmjs.org")
DEBIAN_URL = os.environ.get("JAXREPAIR_DEBIAN_URL", "https://deb.debian.org/debian")
REGISTRIES = ("pypi", "npm", "debian")
_HASH_RE = re.compile(r"^(sha256|sha512):([0-9a-f]{64}|[0-9a-f]{128})$")
_TIMEOUT_S = 60.0


class SourceError(ValueError):
    """A source cannot be fetched as pinned (unknown version, hash mismatch, bad spec)."""


@dataclass(frozen=True)
class SourceSpec:
    """One upstream archive: registry, exact name and version, and the pinned digest
    (``sha256:<hex>``; npm pins ``sha512:<hex>``, its ``dist.integrity``)."""

    registry: str
    name: str
    version: str
    hash: str
    filename: str = ""  # the archive's file name (filled in by pin())
    index: str = ""  # registry base URL ("" = the public one); debian: the pool directory
    # ("" = the public archive's pool/main/<prefix>/<name>)

    def __post_init__(self) -> None:
        if self.registry not in REGISTRIES:
            raise SourceError(f"registry {self.registry!r} is not one of {', '.join(REGISTRIES)}")
        if not _HASH_RE.match(self.hash):
            raise SourceError(
                f"{self.name} {self.version}: hash {self.hash!r} is not 'sha256:<hex>' or "
                "'sha512:<hex>'"
            )

    @property
    def label(self) -> str:
        return f"{self.registry}:{self.name}=={self.version}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SourceSpec:
        known = {"registry", "name", "version", "hash", "filename", "index"}
        unknown = set(d) - known
        if unknown:
            raise SourceError(f"source: unknown keys {sorted(unknown)}")
        missing = [k for k in ("registry", "name", "version", "hash") if not d.get(k)]
        if missing:
            raise SourceError(f"source: missing {', '.join(missing)}")
        return cls(
            registry=str(d["registry"]),
            name=str(d["name"]),
            version=str(d["version"]),
            hash=str(d["hash"]),
            filename=str(d.get("filename", "")),
            index=str(d.get("index", "")),
        )


# -- transport ------------------------------------------------------------------------------
def _get(url: str) -> bytes:
    """GET a URL (http(s) or file://); a missing document is a SourceError."""
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as resp:  # noqa: S310 - pinned hash
            return resp.read()
    except urllib.error.HTTPError as e:
        raise SourceError(f"GET {url}: HTTP {e.code}") from e
    except (urllib.error.URLError, OSError) as e:
        raise SourceError(f"GET {url}: {e}") from e


def _get_json(url: str) -> dict:
    try:
        doc = json.loads(_get(url))
    except json.JSONDecodeError as e:
        raise SourceError(f"GET {url}: not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise SourceError(f"GET {url}: expected a JSON object")
    return doc


def _digest(data: bytes, algo: str) -> str:
    return f"{algo}:{hashlib.new(algo, data).hexdigest()}"


def _sri_to_hash(integrity: str) -> str:
    """npm ``sha512-<base64>`` -> ``sha512:<hex>``."""
    algo, _, b64 = integrity.partition("-")
    if algo not in ("sha256", "sha512") or not b64:
        raise SourceError(f"unsupported npm integrity {integrity!r}")
    return f"{algo}:{base64.b64decode(b64).hex()}"


# -- registries: the archive URL and the digest the registry states -------------------------
def _pypi(spec_name: str, version: str, index: str) -> tuple[str, str, str]:
    """(url, filename, sha256 hash) of the sdist of name==version, from the PyPI JSON API."""
    base = (index or PYPI_URL).rstrip("/")
    doc_url = f"{base}/{spec_name}/json"
    doc = _get_json(doc_url)
    files = doc.get("releases", {}).get(version)
    if not files:
        known = sorted(doc.get("releases", {}))[-8:]
        raise SourceError(
            f"pypi:{spec_name} has no version {version!r} (latest: {', '.join(known) or 'none'})"
        )
    sdists = [f for f in files if f.get("packagetype") == "sdist"]
    if not sdists:
        raise SourceError(f"pypi:{spec_name}=={version} publishes no sdist")
    f = sdists[0]
    return (
        urllib.parse.urljoin(doc_url, f["url"]),
        f["filename"],
        "sha256:" + f["digests"]["sha256"],
    )


def _npm(name: str, version: str, index: str) -> tuple[str, str, str]:
    base = (index or NPM_URL).rstrip("/")
    doc_url = f"{base}/{name}"
    doc = _get_json(doc_url)
    ver = doc.get("versions", {}).get(version)
    if not ver:
        raise SourceError(f"npm:{name} has no version {version!r}")
    dist = ver.get("dist", {})
    url = urllib.parse.urljoin(doc_url, dist.get("tarball", ""))
    if dist.get("integrity"):
        h = _sri_to_hash(dist["integrity"])
    elif dist.get("shasum"):
        raise SourceError(f"npm:{name}=={version} states only a sha1 shasum; refusing")
    else:
        raise SourceError(f"npm:{name}=={version} states no dist.integrity")
    return url, url.rsplit("/", 1)[-1], h


def debian_pool(name: str) -> str:
    """The public archive's pool directory of a source package (``lib*`` names are filed
    under their first four letters, every other name under its first letter)."""
    prefix = name[:4] if name.startswith("lib") and len(name) > 3 else name[0]
    return f"{DEBIAN_URL.rstrip('/')}/pool/main/{prefix}/{name}"


def dsc_name(name: str, version: str) -> str:
    """``<name>_<version>.dsc``; the epoch (``1:``) is not part of file names."""
    return f"{name}_{version.split(':', 1)[-1]}.dsc"


def _dsc_files(text: str) -> list[tuple[str, str]]:
    """(filename, sha256) from a .dsc's Checksums-Sha256 field."""
    out, inside = [], False
    for line in text.splitlines():
        if line.startswith("Checksums-Sha256:"):
            inside = True
            continue
        if inside:
            if not line.startswith(" "):
                break
            parts = line.split()
            if len(parts) == 3:
                out.append((parts[2], parts[0]))
    return out


# -- public ---------------------------------------------------------------------------------
def pin(registry: str, name: str, version: str, index: str = "", dsc_url: str = "") -> SourceSpec:
    """Ask the registry for name==version and return a spec pinning its stated digest (run
    once when a project is added; the spec then goes into the project list). A Debian source
    is pinned by the sha256 of its ``.dsc`` (from the public pool unless ``dsc_url`` or
    ``index`` names another)."""
    if registry == "pypi":
        _url, filename, h = _pypi(name, version, index)
    elif registry == "npm":
        _url, filename, h = _npm(name, version, index)
    elif registry == "debian":  # the public pool unless a .dsc URL (or index) says otherwise
        if not dsc_url:
            dsc_url = f"{(index or debian_pool(name)).rstrip('/')}/{dsc_name(name, version)}"
        elif not index:
            index = dsc_url.rsplit("/", 1)[0]
        data = _get(dsc_url)
        filename, h = dsc_url.rsplit("/", 1)[-1], _digest(data, "sha256")
        if index.rstrip("/") == debian_pool(name):
            index = ""
    else:
        raise SourceError(f"registry {registry!r} is not one of {', '.join(REGISTRIES)}")
    return SourceSpec(registry, name, version, h, filename=filename, index=index)


def _cache_path(h: str, filename: str) -> Path:
    return deps.cache_dir() / "corpus" / "archives" / h.replace(":", "-") / filename


def _download_verified(url: str, h: str, filename: str, label: str) -> Path:
    """Download url into the archive cache unless present; the bytes must hash to ``h``."""
    path = _cache_path(h, filename)
    algo = h.split(":", 1)[0]
    if path.is_file() and _digest(path.read_bytes(), algo) == h:
        return path
    data = _get(url)
    got = _digest(data, algo)
    if got != h:
        raise SourceError(f"{label}: {filename} hashes to {got}, the manifest pins {h}; refusing")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
    return path


def fetch(spec: SourceSpec) -> list[Path]:
    """The verified archive(s) of a pinned source, from the cache or the registry.

    PyPI and npm give one archive; Debian gives the tarballs its .dsc lists (orig first).
    The registry's stated digest must equal the pin, and the bytes must hash to it.
    """
    if spec.registry in ("pypi", "npm"):
        cached = _cache_path(spec.hash, spec.filename) if spec.filename else None
        if cached is not None and cached.is_file():
            if _digest(cached.read_bytes(), spec.hash.split(":")[0]) == spec.hash:
                return [cached]
        resolve = _pypi if spec.registry == "pypi" else _npm
        url, filename, stated = resolve(spec.name, spec.version, spec.index)
        if stated != spec.hash:
            raise SourceError(
                f"{spec.label}: the registry states {stated} for {filename}, the manifest pins "
                f"{spec.hash}; refusing"
            )
        return [_download_verified(url, spec.hash, filename, spec.label)]
    # debian: the .dsc is pinned; it pins its tarballs
    if not spec.filename:
        raise SourceError(f"{spec.label}: a debian source needs filename (its .dsc)")
    pool = (spec.index or debian_pool(spec.name)).rstrip("/")
    dsc = _download_verified(f"{pool}/{spec.filename}", spec.hash, spec.filename, spec.label)
    parts = _dsc_files(dsc.read_text(errors="replace"))
    if not parts:
        raise SourceError(f"{spec.label}: {spec.filename} lists no Checksums-Sha256 files")
    parts.sort(key=lambda p: (".orig." not in p[0], p[0]))
    return [
        _download_verified(f"{pool}/{fn}", f"sha256:{sha}", fn, f"{spec.label} ({fn})")
        for fn, sha in parts
        if fn.endswith((".tar.gz", ".tar.xz", ".tar.bz2"))
    ]
