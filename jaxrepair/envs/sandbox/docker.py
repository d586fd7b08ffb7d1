"""The Docker backend (Docker SDK): one short-lived container per command.

Each command runs in a fresh container of the task's image (``[sandbox] image`` or the
default image of its build system, see images.py) with ``network_mode="none"``, a memory
limit (swap included), a CPU share, a pids limit, every capability dropped,
``no-new-privileges``, a non-root user, a read-only root file system, a private tmpfs
``/tmp``, the workspace bind-mounted read-write at ``/workspace`` and the dependency
environment read-only at ``/opt/jaxrepair/deps`` (its ``site/`` on PYTHONPATH: the same
pure-Python directory the local backend uses). Output is streamed from the attach socket
into a capped tail; on timeout the container is killed, which kills every process in it.

SWE-bench tasks keep their repository inside their image: ``create_workspace`` copies it out
(``get_archive``) into the host workspace, so guards and tools see ordinary files.
"""

from __future__ import annotations

import io
import os
import tarfile
import threading
import time
from pathlib import Path

from .. import deps
from . import (
    DEPS_MOUNT,
    WORKSPACE_MOUNT,
    Limits,
    OutputTail,
    RunResult,
    SandboxUnavailable,
    copy_repo,
    remove_tree,
)
from .images import IMAGES, SANDBOX_UID, image_for


class DockerSandbox:
    """Runs each command in its own locked-down container over a host workspace."""

    name = "docker"

    def __init__(
        self,
        limits: Limits | None = None,
        image: str | None = None,
        workdir: str | None = None,
        base_url: str | None = None,
        timeout_api_s: float = 60.0,
    ) -> None:
        try:
            import docker
        except ImportError as e:  # pragma: no cover - docker is a base dependency
            raise SandboxUnavailable(
                "the Docker backend needs the 'docker' package (pip install docker)"
            ) from e
        self._docker = docker
        self.limits = limits or Limits()
        self.image_override = image
        self.workdir = workdir
        try:
            if base_url:
                self.client = docker.DockerClient(base_url=base_url, timeout=int(timeout_api_s))
            else:
                self.client = docker.from_env(timeout=int(timeout_api_s))
            self.client.ping()
            self.server_version = self.client.version().get("Version", "?")
        except Exception as e:  # noqa: BLE001
            raise SandboxUnavailable(
                f"no Docker daemon is reachable ({type(e).__name__}: {e}); start one, e.g. "
                "`bash .ci/docker_up.sh`, or use make_sandbox('local')"
            ) from e
        root = os.getuid() == 0
        self.uid, self.gid = (SANDBOX_UID, SANDBOX_UID) if root else (os.getuid(), os.getgid())
        self._chown = root
        self._ws_image: dict[str, str] = {}
        self._image_ids: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- images -----------------------------------------------------------------------------
    def image_for(self, task) -> str:  # noqa: ANN001
        """Which image a task runs in."""
        if self.image_override:
            return self.image_override
        if task.image:
            return task.image
        return image_for(task.build_system)

    def image_id(self, tag: str) -> str:
        with self._lock:
            if tag not in self._image_ids:
                try:
                    self._image_ids[tag] = self.client.images.get(tag).id
                except self._docker.errors.ImageNotFound:
                    return "missing"
            return self._image_ids[tag]

    # -- protocol ---------------------------------------------------------------------------
    def create_workspace(self, task) -> Path:  # noqa: ANN001
        """A fresh host copy of the task's repo (for SWE-bench tasks: copied out of its image)."""
        image = self.image_for(task)
        if task.swebench is not None:
            ws = self._workspace_from_image(image, task.swebench.repo_path)
        else:
            ws = copy_repo(task.repo_dir, parent=self.workdir)
        if self._chown:
            for dirpath, dirnames, filenames in os.walk(ws):
                os.chown(dirpath, self.uid, self.gid)
                for f in filenames + dirnames:
                    os.chown(os.path.join(dirpath, f), self.uid, self.gid, follow_symlinks=False)
        with self._lock:
            self._ws_image[str(Path(ws).resolve())] = image
        return ws

    def destroy_workspace(self, workspace: Path) -> None:
        with self._lock:
            self._ws_image.pop(str(Path(workspace).resolve()), None)
        remove_tree(Path(workspace))

    def fingerprint(self) -> dict:
        images = {bs: f"{tag}@{self.image_id(tag)}" for bs, (tag, _) in IMAGES.items()}
        if self.image_override:
            images = {"override": f"{self.image_override}@{self.image_id(self.image_override)}"}
        return {
            "backend": "docker",
            "image": ",".join(f"{k}={v}" for k, v in sorted(images.items())),
            "images": images,
            "server": self.server_version,
            "limits": {
                k: getattr(self.limits, k)
                for k in ("cpu_s", "memory_mb", "nproc", "fsize_mb", "cpus")
            },
        }

    def run(
        self, workspace: Path, command: str, timeout_s: float, pins: dict[str, str] | None = None
    ) -> RunResult:
        """Run ``sh -c command`` in a fresh container; never raises for what the command does
        (unknown pins raise deps.DepsError: the caller's problem, not an infra error)."""
        t0 = time.monotonic()
        ws = Path(workspace).resolve()
        if not ws.is_dir():
            return RunResult(-1, "", False, 0.0, False, f"workspace {ws} does not exist")
        with self._lock:
            image = self._ws_image.get(str(ws)) or self.image_override or image_for("make")
        env_dir = None
        if pins is not None:
            try:
                env_dir = deps.env_for_pins(pins)
            except deps.DepsError:
                raise
            except Exception as e:  # noqa: BLE001
                return RunResult(
                    -1, "", False, time.monotonic() - t0, False, f"dependency env: {e}"
                )
        lim = self.limits
        dt = self._docker.types
        environment = {
            "HOME": "/tmp",
            "TMPDIR": "/tmp",
            "USER": "sandbox",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONNOUSERSITE": "1",
            "PYTHONHASHSEED": "0",
            "PYTEST_ADDOPTS": "-p no:cacheprovider",
            "JAXREPAIR_SANDBOX": "docker",
            "JAXREPAIR_WORKSPACE": WORKSPACE_MOUNT,
        }
        volumes = {str(ws): {"bind": WORKSPACE_MOUNT, "mode": "rw"}}
        if env_dir is not None:
            environment["PYTHONPATH"] = f"{DEPS_MOUNT}/site"
            volumes[str(env_dir)] = {"bind": DEPS_MOUNT, "mode": "ro"}
        mem = lim.memory_mb * 1024 * 1024
        fsize = lim.fsize_mb * 1024 * 1024
        container = None
        try:
            container = self.client.containers.create(
                image,
                command=["/bin/sh", "-c", command],
                user=f"{self.uid}:{self.gid}",
                working_dir=WORKSPACE_MOUNT,
                environment=environment,
                volumes=volumes,
                network_mode="none",
                mem_limit=mem,
                memswap_limit=mem,
                nano_cpus=int(lim.cpus * 1e9),
                pids_limit=lim.nproc,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                read_only=True,
                tmpfs={"/tmp": "rw,exec,nosuid,nodev,size=256m"},
                ulimits=[
                    dt.Ulimit(name="cpu", soft=lim.cpu_s, hard=lim.cpu_s),
                    dt.Ulimit(name="fsize", soft=fsize, hard=fsize),
                    dt.Ulimit(name="core", soft=0, hard=0),
                ],
                log_config=dt.LogConfig(type="none"),
                hostname="sandbox",
                labels={"jaxrepair.sandbox": "1"},
                stdin_open=False,
                tty=False,
                detach=True,
            )
            stream = container.attach(stdout=True, stderr=True, stream=True, logs=False)
            tail = OutputTail(lim.output_bytes, lim.output_hard_bytes)

            def drain() -> None:
                try:
                    for chunk in stream:
                        tail.feed(chunk)
                except Exception:  # noqa: BLE001 - the stream ends when the container is killed
                    pass

            reader = threading.Thread(target=drain, daemon=True)
            reader.start()
            container.start()
            t_run = time.monotonic()
            deadline = t_run + max(0.0, timeout_s - (t_run - t0))
            timed_out = killed_for_output = False
            code: int | None = None
            while code is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                if tail.over_hard_cap.is_set():
                    killed_for_output = True
                    break
                try:
                    code = int(container.wait(timeout=max(0.05, min(left, 0.5)))["StatusCode"])
                except Exception as e:  # noqa: BLE001 - requests' ReadTimeout / ConnectionError
                    if (
                        "timed out" not in str(e).lower()
                        and "timeout" not in type(e).__name__.lower()
                    ):
                        raise
            if code is None:
                try:
                    container.kill()
                except self._docker.errors.APIError:
                    pass
                code = -9
            reader.join(timeout=5.0)
            try:
                stream.close()
            except Exception:  # noqa: BLE001
                pass
            out = tail.text()
            container.reload()
            if container.attrs.get("State", {}).get("OOMKilled"):
                out += f"\n[jaxrepair: killed: out of memory (limit {lim.memory_mb} MB)]"
            if timed_out:
                out += f"\n[jaxrepair: killed after the {timeout_s:g}s wall-time limit]"
            if killed_for_output:
                out += (
                    f"\n[jaxrepair: killed after writing more than {lim.output_hard_bytes} bytes]"
                )
            return RunResult(code, out, timed_out, time.monotonic() - t0, tail.truncated, None)
        except self._docker.errors.ImageNotFound as e:
            return RunResult(
                -1,
                "",
                False,
                time.monotonic() - t0,
                False,
                f"image {image!r} not found ({e}); build it with `bash .ci/docker_up.sh` "
                "or `python3 jaxrepair/envs/sandbox/images.py`",
            )
        except Exception as e:  # noqa: BLE001 - the daemon failed us: infra, not the build
            return RunResult(
                -1, "", False, time.monotonic() - t0, False, f"docker: {type(e).__name__}: {e}"
            )
        finally:
            if container is not None:
                try:
                    container.remove(force=True)
                except Exception:  # noqa: BLE001
                    pass

    # -- SWE-bench --------------------------------------------------------------------------
    def _workspace_from_image(self, image: str, repo_path: str) -> Path:
        ws = Path(copy_repo_empty(self.workdir))
        container = self.client.containers.create(image, command=["true"], network_mode="none")
        try:
            bits, _ = container.get_archive(repo_path)
            buf = io.BytesIO(b"".join(bits))
            with tarfile.open(fileobj=buf) as tar:
                top = Path(repo_path).name
                members = []
                for m in tar.getmembers():
                    rel = Path(m.name)
                    if rel.parts and rel.parts[0] == top:
                        m.name = str(Path(*rel.parts[1:])) if len(rel.parts) > 1 else "."
                        members.append(m)
                keep = [m for m in members if m.name != "." and not m.isdev()]
                try:
                    tar.extractall(ws, members=keep, filter="tar")
                except TypeError:  # Python without tarfile extraction filters
                    tar.extractall(ws, members=keep)  # noqa: S202 - members vetted above
        finally:
            container.remove(force=True)
        return ws


def copy_repo_empty(parent: str | None) -> str:
    import tempfile

    ws = tempfile.mkdtemp(prefix="jaxrepair-ws-", dir=parent)
    os.chmod(ws, 0o755)
    return ws
