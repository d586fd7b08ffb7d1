"""Sandbox images for the Docker backend, built without any registry.

Why: containers need an image per build system, and CI machines (and many clusters) cannot
pull from Docker Hub. ``debootstrap --variant=minbase`` makes a Debian root file system from
the distribution mirror (the same source apt uses), we add a non-root ``sandbox`` user and the
mount points, and ``docker import`` turns the tarball into an image. Stdlib only, so
``.ci/docker_up.sh`` can run it with the system python before any virtualenv exists::

    python3 jaxrepair/envs/sandbox/images.py [python|make|cmake|npm ...]
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SUITE = "bookworm"  # Debian 12: python3 is 3.11, gcc is 12, nodejs is 18
# build system -> (tag, packages debootstrap adds to minbase). The tags name what is inside;
# the corpus's task.toml files refer to them in [sandbox] image. The image id (content hash)
# goes into every result's fingerprint, so two builds of a tag are never mixed silently.
IMAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "python": ("jaxrepair/python:3.11", ("python3",)),
    "make": ("jaxrepair/make:gcc12", ("python3", "make", "gcc", "libc6-dev")),
    "cmake": (
        "jaxrepair/cmake:gcc12",
        ("python3", "make", "gcc", "g++", "cmake", "libc6-dev"),
    ),
    # node only: an npm task's test runner is in its repository's node_modules (corpus.npm),
    # so the image needs no npm client (and a build that tries to download fails anyway).
    # From trixie (Debian 13, nodejs 20): bookworm's node 18 lacks what the corpus's tests
    # use (process-warning's node:test tests call TestContext.plan, node >= 20.15)
    "npm": ("jaxrepair/node:20", ("python3", "nodejs")),
}
# build system -> Debian suite, where not SUITE
SUITES: dict[str, str] = {"npm": "trixie"}
SANDBOX_UID = 1000
_PYTEST = '#!/bin/sh\nexec python3 -m pytest "$@"\n'


def image_for(build_system: str) -> str:
    """The default image tag for a build system."""
    if build_system not in IMAGES:
        raise ValueError(
            f"no sandbox image for build system {build_system!r}; known: {', '.join(IMAGES)}"
        )
    return IMAGES[build_system][0]


def _mirror() -> str:
    srcs = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for src in srcs:
        try:
            text = src.read_text()
        except OSError:
            continue
        m = re.search(
            r"(?:URIs:\s*|^deb\s+(?:\[[^\]]*\]\s+)?)(https?://\S+/debian)/?\s", text, re.M
        )
        if m and "security" not in m.group(1):
            return m.group(1)
    return "http://deb.debian.org/debian"


def _docker(*args: str, **kw) -> subprocess.CompletedProcess:  # noqa: ANN003
    return subprocess.run(["docker", *args], capture_output=True, text=True, **kw)


def image_exists(tag: str) -> bool:
    return _docker("image", "inspect", tag).returncode == 0


def build_rootfs(packages: tuple[str, ...], dest: Path, suite: str = SUITE) -> None:
    """debootstrap a minimal Debian into dest, then add the sandbox user and mount points."""
    cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}"]
    keyring = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
    cmd += [f"--keyring={keyring}"] if keyring.is_file() else ["--no-check-gpg"]
    cmd += [suite, str(dest), _mirror()]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"debootstrap failed ({' '.join(cmd)}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    with open(dest / "etc/passwd", "a") as fh:
        fh.write(f"sandbox:x:{SANDBOX_UID}:{SANDBOX_UID}:sandbox:/tmp:/bin/sh\n")
    with open(dest / "etc/group", "a") as fh:
        fh.write(f"sandbox:x:{SANDBOX_UID}:\n")
    for d in ("workspace", "opt/jaxrepair/deps"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "workspace", 0o777)
    local_bin = dest / "usr/local/bin"
    local_bin.mkdir(parents=True, exist_ok=True)
    if not (local_bin / "python").exists():
        os.symlink("/usr/bin/python3", local_bin / "python")
    (local_bin / "pytest").write_text(_PYTEST)
    os.chmod(local_bin / "pytest", 0o755)
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for p in (dest / junk).glob("*"):
            if p.is_file():
                p.unlink()


def build_image(build_system: str, force: bool = False) -> str:
    """Build (once) the image for a build system; returns its tag."""
    tag, packages = IMAGES[build_system]
    if not force and image_exists(tag):
        return tag
    if not shutil.which("debootstrap"):
        raise RuntimeError(
            "building sandbox images needs debootstrap (apt-get install debootstrap)"
        )
    with tempfile.TemporaryDirectory(prefix="jaxrepair-rootfs-") as tmp:
        root = Path(tmp) / "rootfs"
        build_rootfs(packages, root, SUITES.get(build_system, SUITE))
        tar = subprocess.Popen(
            ["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE
        )
        imp = subprocess.run(
            [
                "docker",
                "import",
                "--change",
                'CMD ["/bin/sh"]',
                "--change",
                "WORKDIR /workspace",
                "--message",
                f"jaxrepair sandbox image ({build_system})",
                "-",
                tag,
            ],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
        )
        assert tar.stdout is not None
        tar.stdout.close()
        tar.wait()
        if imp.returncode != 0 or tar.returncode != 0:
            raise RuntimeError(f"docker import of {tag} failed: {imp.stderr[-2000:]}")
    return tag


def main(argv: list[str]) -> int:
    systems = argv or list(IMAGES)
    for bs in systems:
        print(f"image for {bs}: {build_image(bs)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
