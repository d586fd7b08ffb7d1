"""The local backend: bubblewrap around each command, rlimits inside, process group killed on
timeout.

Isolation (``bwrap``): every namespace unshared (no network: only a loopback-less net ns),
a tmpfs root holding read-only binds of ``/usr`` (and the ``/bin``, ``/lib*`` links), the few
``/etc`` files a toolchain needs plus a generated passwd/group, the Python interpreter and a
cached ``--without-pip`` venv (read-only), the dependency environment read-only at
``/opt/jaxrepair/deps``, a private ``/tmp``, and the workspace bound read-write at
``/workspace``: the only writable place that outlives the command. Commands run as uid 1000
in a new user and pid namespace; ``--die-with-parent`` plus the pid namespace mean killing
bwrap's process group kills everything the build started.

Limits: ``prlimit`` runs *inside* the sandbox, after the user namespace exists, so
RLIMIT_NPROC counts only the processes of this sandbox's user (rlimit counts are per user
namespace and uid; setting it before bwrap would count every process the host user owns).
CPU time, address space, file size and core size are per-process rlimits; wall time is
enforced here; output is drained continuously and only its tail kept, and a command that
writes more than ``Limits.output_hard_bytes`` is killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
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

SANDBOX_UID = 1000  # the uid inside the user namespace (unprivileged hosts)
# Root hosts: each concurrent run gets its own host uid from this pool (RLIMIT_NPROC is never
# enforced for uid 0, and is counted per uid, so a fork bomb must not share a uid with others).
UID_POOL_BASE = int(os.environ.get("JAXREPAIR_SANDBOX_UID_BASE", "1990000"))
UID_POOL_SIZE = 64
_PYTEST_WRAPPER = '#!/bin/sh\nexec python -m pytest "$@"\n'
_PASSWD = (
    "root:x:0:0:root:/root:/usr/sbin/nologin\n"
    f"sandbox:x:{SANDBOX_UID}:{SANDBOX_UID}:sandbox:/tmp:/bin/sh\n"
    + "".join(
        f"sandbox{i}:x:{UID_POOL_BASE + i}:{UID_POOL_BASE + i}:sandbox:/tmp:/bin/sh\n"
        for i in range(UID_POOL_SIZE)
    )
    + "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
)
_GROUP = (
    f"root:x:0:\nsandbox:x:{SANDBOX_UID}:\n"
    + "".join(f"sandbox{i}:x:{UID_POOL_BASE + i}:\n" for i in range(UID_POOL_SIZE))
    + "nogroup:x:65534:\n"
)
_HOSTS = "127.0.0.1 localhost sandbox\n::1 localhost\n"
_STARTED = "\x01jaxrepair-sandbox-started"
_ETC_RO = (
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
)


def _atomic_dir(final: Path, build) -> Path:  # noqa: ANN001
    """Create ``final`` by building into a temp sibling and renaming (first writer wins)."""
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with deps._file_lock(final.parent / (final.name + ".lock")):
        if final.is_dir():
            return final
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
        try:
            build(tmp)
            deps._make_readable(tmp)
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _chown_tree(root: Path, uid: int) -> None:
    """Give a workspace to the sandbox uid (root hosts), symlinks untouched and unfollowed."""
    os.chown(root, uid, uid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            try:
                os.chown(os.path.join(dirpath, name), uid, uid, follow_symlinks=False)
            except FileNotFoundError:
                pass


def _base_python() -> Path:
    exe = getattr(sys, "_base_executable", None) or sys.executable
    return Path(exe)


def sandbox_python_venv() -> Path:
    """A ``--without-pip`` venv of the host's base interpreter (no site-packages), with a
    ``pytest`` wrapper; cached. Commands see it first on PATH as ``python``/``python3``."""
    base = _base_python()
    key = (
        f"py{platform.python_version()}-"
        + deps.hashlib.sha256(str(base.resolve()).encode()).hexdigest()[:10]
    )

    def build(tmp: Path) -> None:
        subprocess.run(
            [str(base), "-m", "venv", "--without-pip", str(tmp)], check=True, capture_output=True
        )
        (tmp / "bin" / "pytest").write_text(_PYTEST_WRAPPER)
        os.chmod(tmp / "bin" / "pytest", 0o755)
        # pyvenv.cfg records the temp path nowhere, but activate scripts do: drop them
        for f in (tmp / "bin").glob("activate*"):
            f.unlink()
        (tmp / "bin" / "Activate.ps1").unlink(missing_ok=True)

    return _atomic_dir(deps.cache_dir() / "pyvenv" / key, build)


def _sandbox_etc() -> Path:
    def build(tmp: Path) -> None:
        (tmp / "passwd").write_text(_PASSWD)
        (tmp / "group").write_text(_GROUP)
        (tmp / "hosts").write_text(_HOSTS)

    key = deps.hashlib.sha256((_PASSWD + _GROUP + _HOSTS).encode()).hexdigest()[:12]
    return _atomic_dir(deps.cache_dir() / "sandbox-etc" / key, build)


class LocalSandbox:
    """Runs each command in a fresh bubblewrap sandbox over a host workspace directory."""

    name = "local"

    def __init__(
        self,
        limits: Limits | None = None,
        unisolated: bool = False,
        bwrap: str | None = None,
        workdir: str | None = None,
        extra_ro_binds: tuple[str, ...] = (),
    ) -> None:
        self.limits = limits or Limits()
        self.unisolated = unisolated
        self.workdir = workdir
        self.extra_ro_binds = tuple(extra_ro_binds)
        self.bwrap = bwrap if bwrap is not None else shutil.which("bwrap")
        self.prlimit = shutil.which("prlimit") or "/usr/bin/prlimit"
        self.setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
        # root: bwrap without a user namespace, then setpriv to a pool uid (see _host_uid)
        self.privileged = os.geteuid() == 0 and not unisolated
        self.bwrap_version = None
        if not unisolated:
            if not self.bwrap or not os.access(self.bwrap, os.X_OK):
                raise SandboxUnavailable(
                    "the local sandbox needs bubblewrap ('bwrap'), which was not found: install it "
                    "(Debian/Ubuntu: apt-get install bubblewrap), use make_sandbox('docker'), or "
                    "opt into running builds WITHOUT isolation with make_sandbox('local', unisolated=True)"
                )
            self.bwrap_version = subprocess.run(
                [self.bwrap, "--version"], capture_output=True, text=True
            ).stdout.strip()
        self._venv = sandbox_python_venv()
        self._etc = None if unisolated else _sandbox_etc()
        if not unisolated:
            probe = self._probe()
            if probe is not None:
                raise SandboxUnavailable(
                    f"bubblewrap is installed but cannot create a sandbox here ({probe}); user "
                    "namespaces may be disabled (sysctl kernel.unprivileged_userns_clone=1), or use "
                    "make_sandbox('docker') / make_sandbox('local', unisolated=True)"
                )

    # -- protocol ---------------------------------------------------------------------------
    def create_workspace(self, task) -> Path:  # noqa: ANN001
        """A fresh copy of ``task.repo_dir`` in a new temp dir."""
        return copy_repo(task.repo_dir, parent=self.workdir)

    def destroy_workspace(self, workspace: Path) -> None:
        remove_tree(Path(workspace))

    def fingerprint(self) -> dict:
        osname = "unknown"
        try:
            for line in Path("/etc/os-release").read_text().splitlines():
                if line.startswith("PRETTY_NAME="):
                    osname = line.split("=", 1)[1].strip('"')
        except OSError:
            pass
        return {
            "backend": "local",
            "isolation": "none" if self.unisolated else self.bwrap_version,
            "image": f"host:{osname}",
            "python": platform.python_version(),
            "limits": {
                k: getattr(self.limits, k) for k in ("cpu_s", "memory_mb", "nproc", "fsize_mb")
            },
        }

    def run(
        self, workspace: Path, command: str, timeout_s: float, pins: dict[str, str] | None = None
    ) -> RunResult:
        """Run ``sh -c command`` in the workspace; never raises for what the command does.

        ``pins`` (Python tasks) puts the dependency environment for those pins on PYTHONPATH;
        unknown pins raise deps.DepsError (the caller's problem, not an infra error).
        """
        t0 = time.monotonic()
        workspace = Path(workspace)
        if not workspace.is_dir():
            return RunResult(-1, "", False, 0.0, False, f"workspace {workspace} does not exist")
        env_dir = None
        if pins is not None:
            try:
                env_dir = deps.env_for_pins(pins)
            except deps.DepsError:
                raise
            except Exception as e:  # pip or disk trouble: not the agent's fault
                return RunResult(
                    -1, "", False, time.monotonic() - t0, False, f"dependency env: {e}"
                )
        try:
            if self.unisolated:
                return self._run_unisolated(workspace, command, timeout_s, env_dir, t0)
            return self._run_bwrap(workspace, command, timeout_s, env_dir, t0)
        except OSError as e:
            return RunResult(
                -1, "", False, time.monotonic() - t0, False, f"sandbox start failed: {e}"
            )

    # -- internals --------------------------------------------------------------------------
    def _env(self, ws_path: str, env_dir: str | None) -> dict[str, str]:
        env = {
            "PATH": f"{self._venv}/bin:/usr/local/bin:/usr/bin:/bin",
            "HOME": "/tmp",
            "TMPDIR": "/tmp",
            "USER": "sandbox",
            "LOGNAME": "sandbox",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONNOUSERSITE": "1",
            "PYTHONHASHSEED": "0",
            "PYTEST_ADDOPTS": "-p no:cacheprovider",
            "JAXREPAIR_SANDBOX": "local",
            "JAXREPAIR_WORKSPACE": ws_path,
        }
        if env_dir is not None:
            env["PYTHONPATH"] = f"{env_dir}/site"
        return env

    def _bwrap_args(self, workspace: Path, env_dir: Path | None, host_uid: int | None) -> list[str]:
        args = [
            self.bwrap,
            "--unshare-ipc",
            "--unshare-pid",
            "--unshare-net",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--die-with-parent",
            "--new-session",
            "--hostname",
            "sandbox",
        ]
        if host_uid is None:  # unprivileged host user: a user namespace maps it to SANDBOX_UID
            args += ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
        # /tmp first: later binds may live under the host's /tmp (e.g. a test's cache dir)
        args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp"]
        args += ["--ro-bind", "/usr", "/usr"]
        for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(d):
                args += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                args += ["--ro-bind", d, d]
        args += ["--perms", "0755", "--dir", "/etc"]
        for p in _ETC_RO:
            if os.path.exists(p):
                args += ["--ro-bind", p, p]
        assert self._etc is not None
        for name in ("passwd", "group", "hosts"):
            args += ["--ro-bind", str(self._etc / name), f"/etc/{name}"]
        binds = []
        prefix = Path(sys.base_prefix).resolve()
        if not str(prefix).startswith("/usr/") and str(prefix) != "/usr":
            binds.append(str(prefix))
        binds += [str(self._venv), *self.extra_ro_binds]
        made: set[str] = {"/", "/usr", "/tmp", "/etc", "/proc", "/dev"}
        for b in binds:
            for anc in reversed(Path(b).parents):  # world-readable parents (e.g. /root is 0700)
                if str(anc) not in made and not str(anc).startswith("/usr/"):
                    args += ["--perms", "0755", "--dir", str(anc)]
                    made.add(str(anc))
            args += ["--ro-bind", b, b]
        if env_dir is not None:
            for anc in reversed(Path(DEPS_MOUNT).parents):
                if str(anc) not in made:
                    args += ["--perms", "0755", "--dir", str(anc)]
            args += ["--ro-bind", str(env_dir), DEPS_MOUNT]
        args += ["--bind", str(workspace.resolve()), WORKSPACE_MOUNT, "--chdir", WORKSPACE_MOUNT]
        args += ["--remount-ro", "/", "--clearenv"]
        env = self._env(WORKSPACE_MOUNT, DEPS_MOUNT if env_dir is not None else None)
        if host_uid is not None:
            env["USER"] = env["LOGNAME"] = f"sandbox{host_uid - UID_POOL_BASE}"
        for k, v in env.items():
            args += ["--setenv", k, v]
        if host_uid is not None:  # root host: drop to the pool uid inside, all capabilities gone
            args += [
                "--",
                self.setpriv,
                f"--reuid={host_uid}",
                f"--regid={host_uid}",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
            ]
        return args

    def _limit_args(self) -> list[str]:
        lim = self.limits
        mem = lim.memory_mb * 1024 * 1024
        fsize = lim.fsize_mb * 1024 * 1024
        return [
            self.prlimit,
            f"--nproc={lim.nproc}:{lim.nproc}",
            f"--as={mem}:{mem}",
            f"--cpu={lim.cpu_s}:{lim.cpu_s}",
            f"--fsize={fsize}:{fsize}",
            "--core=0:0",
            "--",
        ]

    @contextlib.contextmanager
    def _host_uid(self, workspace: Path) -> Iterator[int | None]:
        """Root hosts: lease a pool uid (file lock) and hand the workspace to it."""
        if not self.privileged:
            yield None
            return
        slots = Path(os.environ.get("JAXREPAIR_UID_LOCK_DIR", "/tmp/.jaxrepair-uid-slots"))
        slots.mkdir(mode=0o700, parents=True, exist_ok=True)  # host-wide: every cache shares it
        start = random.randrange(UID_POOL_SIZE)
        while True:
            for k in range(UID_POOL_SIZE):
                i = (start + k) % UID_POOL_SIZE
                fh = open(slots / f"{i}.lock", "a+")  # noqa: SIM115
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    fh.close()
                    continue
                try:
                    uid = UID_POOL_BASE + i
                    _chown_tree(workspace, uid)
                    yield uid
                    return
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
                    fh.close()
            time.sleep(0.1)

    def _run_bwrap(
        self, workspace: Path, command: str, timeout_s: float, env_dir, t0: float
    ) -> RunResult:  # noqa: ANN001
        # The marker is printed after bwrap, setpriv and prlimit all succeeded: without it, the
        # sandbox itself failed to start (an infra error, not a build failure).
        wrapper = f'printf "%s\\n" {_STARTED}; exec /bin/sh -c "$0"'
        with self._host_uid(workspace) as uid:
            argv = self._bwrap_args(workspace, env_dir, uid)
            argv += (
                (["--"] if uid is None else [])
                + self._limit_args()
                + ["/bin/sh", "-c", wrapper, command]
            )
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            res, started = self._supervise(proc, timeout_s, t0, marker=_STARTED.encode() + b"\n")
        if not started and not res.timed_out:
            res.infra_error = f"bubblewrap could not start the sandbox: {res.output.strip()[-500:]}"
        return res

    def _run_unisolated(
        self, workspace: Path, command: str, timeout_s: float, env_dir, t0: float
    ) -> RunResult:  # noqa: ANN001
        import resource

        lim = self.limits

        def preexec() -> None:
            mem = lim.memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
            resource.setrlimit(resource.RLIMIT_CPU, (lim.cpu_s, lim.cpu_s))
            fs = lim.fsize_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_FSIZE, (fs, fs))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

        env = self._env(str(workspace), str(env_dir) if env_dir is not None else None)
        env["JAXREPAIR_SANDBOX"] = "unisolated"
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            cwd=workspace,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec,
        )
        return self._supervise(proc, timeout_s, t0)[0]

    def _supervise(
        self, proc: subprocess.Popen, timeout_s: float, t0: float, marker: bytes | None = None
    ) -> tuple[RunResult, bool]:
        """Wait with the wall-time limit, drain output; returns (result, saw the start marker)."""
        tail = OutputTail(self.limits.output_bytes, self.limits.output_hard_bytes, marker=marker)
        reader = threading.Thread(target=tail.drain, args=(proc.stdout,), daemon=True)
        reader.start()
        deadline = t0 + max(0.0, timeout_s)
        timed_out = killed_for_output = False
        while True:
            try:
                proc.wait(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    timed_out = True
                elif tail.over_hard_cap.is_set():
                    killed_for_output = True
                else:
                    continue
                self._kill(proc)
                break
        reader.join(timeout=5.0)
        if proc.stdout is not None:
            try:
                proc.stdout.close()
            except OSError:
                pass
        out = tail.text()
        if timed_out:
            out += f"\n[jaxrepair: killed after the {timeout_s:g}s wall-time limit]"
        if killed_for_output:
            out += f"\n[jaxrepair: killed after writing more than {self.limits.output_hard_bytes} bytes]"
        code = proc.returncode if proc.returncode is not None else -9
        res = RunResult(
            exit_code=code if not timed_out else -9,
            output=out,
            timed_out=timed_out,
            duration_s=time.monotonic() - t0,
            truncated=tail.truncated,
            infra_error=None,
        )
        return res, marker is None or tail.saw_marker

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()

    def _probe(self) -> str | None:
        ws = Path(tempfile.mkdtemp(prefix="jaxrepair-probe-"))
        try:
            res = self._run_bwrap(ws, "true", 30.0, None, time.monotonic())
            if res.infra_error or res.exit_code != 0:
                return (res.infra_error or res.output.strip() or f"exit {res.exit_code}")[-300:]
            return None
        finally:
            remove_tree(ws)


def describe_command(argv: list[str]) -> str:
    """For debugging: the bwrap command line as a shell string."""
    return " ".join(shlex.quote(a) for a in argv)
