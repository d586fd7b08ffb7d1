"""Finding and killing what a dead farm worker left running, from the Linux process table.

Why: a worker killed mid-build (OOM killer, a hung build past its timeout, a lost Ray actor)
leaves builds behind that belong to no live parent. Everything a worker starts lives under its
private directory, so whatever still refers to that directory (command line or working
directory), and for the Docker backend any sandbox container mounting it, is the dead worker's.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "child_pids",
    "descendants",
    "kill_pids",
    "kill_process_tree",
    "pids_using",
    "proc_table",
    "remove_containers_using",
    "sweep_directory",
]


def proc_table() -> dict[int, int]:
    """pid -> parent pid for every process (Linux /proc; empty elsewhere)."""
    out: dict[int, int] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                data = fh.read()
            out[int(name)] = int(data[data.rindex(b")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return out


def descendants(pid: int, table: dict[int, int] | None = None) -> list[int]:
    table = proc_table() if table is None else table
    children: dict[int, list[int]] = {}
    for p, pp in table.items():
        children.setdefault(pp, []).append(p)
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def child_pids(pid: int) -> list[int]:
    return [p for p, pp in proc_table().items() if pp == pid]


def pids_using(directory: str) -> list[int]:
    """Processes whose command line mentions ``directory`` or whose cwd lies inside it."""
    needle = directory.encode()
    me = os.getpid()
    out = []
    for pid in proc_table():
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if needle in fh.read():
                    out.append(pid)
                    continue
            cwd = os.readlink(f"/proc/{pid}/cwd")
            if cwd == directory or cwd.startswith(directory + "/"):
                out.append(pid)
        except OSError:
            continue
    return out


def kill_pids(pids: Sequence[int]) -> None:
    own_group = os.getpgrp()
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            pgid = os.getpgid(pid)
            if pgid == pid and pgid != own_group:
                os.killpg(pgid, signal.SIGKILL)  # a session/group leader: take its group too
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue


def kill_process_tree(pid: int) -> None:
    """SIGKILL a worker that leads its own process group, its group and all its descendants."""
    tree = descendants(pid)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    kill_pids([pid, *tree])


def remove_containers_using(directory: str, base_url: str | None) -> None:
    """Docker sandbox containers belong to dockerd, not to the worker: remove those whose
    mounts lie in ``directory`` (a dead worker's workspaces)."""
    try:
        import docker

        client = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
    except Exception:  # noqa: BLE001 - no daemon: nothing of ours can run there
        return
    root = os.path.realpath(directory) + os.sep
    try:
        for c in client.containers.list(all=True, filters={"label": "jaxrepair.sandbox"}):
            mounts = c.attrs.get("Mounts") or []
            if any(str(m.get("Source", "")).startswith(root) for m in mounts):
                try:
                    c.remove(force=True)
                except Exception:  # noqa: BLE001 - already gone
                    pass
    except Exception as e:  # noqa: BLE001 - best effort, but say so
        print(f"farm: could not list sandbox containers: {e}", file=sys.stderr)
    finally:
        client.close()


def sweep_directory(directory: str, sandbox_kind: str, docker_base_url: str | None) -> None:
    """Kill every process (and, for Docker, every sandbox container) still using
    ``directory``, then remove it."""
    if not directory or not os.path.isdir(directory):
        return
    if sandbox_kind == "docker":
        remove_containers_using(directory, docker_base_url)
    for _ in range(3):  # processes may still be exiting or forking
        pids = pids_using(directory)
        if not pids:
            break
        table = proc_table()
        kill_pids([q for pid in pids for q in (pid, *descendants(pid, table))])
        time.sleep(0.05)
    from .sandbox import remove_tree

    remove_tree(Path(directory))
