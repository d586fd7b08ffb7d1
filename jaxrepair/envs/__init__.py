"""Code-repair environments: tasks, sandboxes, pinned dependencies, rewards, episodes.

This package never imports JAX.
"""

from __future__ import annotations

from typing import Any

from .protocol import EnvService, EpisodeTally, Outcome, StepResult
from .reward import ValidationResult, apply_patch, validate, validate_workspace
from .sandbox import RunResult, Sandbox, make_sandbox
from .task import Task, TaskError, load_tasks

__all__ = [
    "EnvService",
    "EpisodeTally",
    "Outcome",
    "RunResult",
    "Sandbox",
    "StepResult",
    "Task",
    "TaskError",
    "ValidationResult",
    "apply_patch",
    "load_tasks",
    "make_episode",
    "make_sandbox",
    "validate",
    "validate_workspace",
]


def make_episode(task: Any, pipeline: str = "full", sandbox: Any = None, **caps: Any) -> Any:
    """Build an episode (implemented in .pipelines; imported lazily so this package imports
    even while pipelines.py is absent)."""
    try:
        from .pipelines import make_episode as _make_episode
    except ImportError as e:
        raise NotImplementedError(f"jaxrepair.envs.pipelines is not available: {e}") from e
    return _make_episode(task, pipeline=pipeline, sandbox=sandbox, **caps)
