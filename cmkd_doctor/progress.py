"""Progress reporting: library code reports ``progress(task, done, total)``, the CLI draws."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, int, int], None]


def no_progress(task: str, completed: int, total: int) -> None:
    """The default :data:`Progress`: report nothing."""
