"""What keeps a long run safe: a lock on its output folder, a graceful stop on SIGINT
or SIGTERM, and checks of configuration values before any work."""

from __future__ import annotations

import os
import signal
import socket
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import ConfigError


class RunLock:
    """An exclusive lock on a run's ``output_dir`` (the file ``.lock``: pid and host).

    A second run on the same folder while the first lives raises; a lock left by a
    dead process (same host, pid gone) is taken over with a warning.

    Raises (on enter):
        ConfigError: if the folder cannot be created or written, or a live run holds it.
    """

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.dir = Path(output_dir)
        self.path = self.dir / ".lock"
        self.me = f"{os.getpid()} {socket.gethostname()}"

    def __enter__(self) -> RunLock:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"output_dir {self.dir} cannot be created: {e}") from None
        if not os.access(self.dir, os.W_OK):
            raise ConfigError(f"output_dir {self.dir} is not writable")
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(self.me)
            return self

    def _take_over_if_stale(self) -> None:
        try:
            pid, host = self.path.read_text().split()
        except (OSError, ValueError):
            pid, host = "0", socket.gethostname()  # unreadable: treat as stale
        if host == socket.gethostname() and _alive(int(pid)):
            raise ConfigError(f"output_dir {self.dir} is in use by a live run (pid {pid}); "
                              "choose another output_dir or stop that run")  # fmt: skip
        if host != socket.gethostname():
            raise ConfigError(f"output_dir {self.dir} is locked by a run on host {host} "
                              f"(pid {pid}); remove {self.path} if it is dead")  # fmt: skip
        warnings.warn(f"taking over the stale lock {self.path} of a dead run (pid {pid})",
                      stacklevel=3)  # fmt: skip
        self.path.unlink(missing_ok=True)

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.path.read_text() == self.me:
                self.path.unlink()
        except OSError:
            pass


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StopSignals:
    """Within the block, SIGINT and SIGTERM do not kill the process but set
    ``requested`` (the signal number), so a training loop can finish its step,
    save and exit; a second SIGINT interrupts at once. Handlers are restored on exit.
    Only the main thread can install them; elsewhere the block changes nothing."""

    def __init__(self) -> None:
        self.requested: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signum

    def __enter__(self) -> StopSignals:
        try:
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        except ValueError:  # not the main thread
            self._old.clear()
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


def get_key(cfg: dict, key: str) -> Any:
    """The value of a dotted ``section.key`` in a config."""
    node: Any = cfg
    for part in key.split("."):
        node = node[part]
    return node


def integer(low: int) -> tuple[Callable[[Any], bool], str]:
    """A rule: an integer >= ``low``."""
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low,
            f"an integer >= {low}")  # fmt: skip


def number(low: float, high: float = float("inf"), low_open: bool = False,
           high_open: bool = False) -> tuple[Callable[[Any], bool], str]:  # fmt: skip
    """A rule: a number in the interval from ``low`` to ``high`` (open ends if asked)."""

    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return False
        return (v > low if low_open else v >= low) and (v < high if high_open else v <= high)

    left, right = "(" if low_open else "[", ")" if high_open else "]"
    return ok, f"a number in {left}{low}, {high}{right}"


def check_values(cfg: dict, rules: dict[str, tuple[Callable[[Any], bool], str]]) -> None:
    """Check config values against rules (``section.key`` → (predicate, description)).

    Raises:
        ConfigError: for the first value that breaks its rule, naming the key.
    """
    for key, (ok, want) in rules.items():
        value = get_key(cfg, key)
        if not ok(value):
            raise ConfigError(f"{key} must be {want}, got {value!r}")


def _flatten(cfg: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def check_resume_config(saved: dict, cfg: dict, may_change: tuple[str, ...]) -> list[str]:
    """Compare the config of a run being resumed with the one it was saved with.

    A resumed run keeps its training settings: changing one (the rate, the schedule's
    length, a loss weight) would make the result belong to neither config. Keys in
    ``may_change`` (``section.key``, or ``section.`` for a whole section: evaluation,
    devices, workers) may differ.

    Returns:
        ``"key: old -> new"`` for each allowed change (to print).
    Raises:
        ConfigError: naming the first other key whose value differs, before anything
            of the run is overwritten.
    """
    old, new = _flatten(saved), _flatten(cfg)
    allowed = []
    for key in sorted(old.keys() | new.keys()):
        if old.get(key) == new.get(key):
            continue
        if any(key == m or (m.endswith(".") and key.startswith(m)) for m in may_change):
            allowed.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
            continue
        raise ConfigError(f"--resume: {key} is {new.get(key)!r} but the checkpoint was trained "
                          f"with {old.get(key)!r}; a resumed run keeps its training settings "
                          "(start a new run in another output_dir to change it)")  # fmt: skip
    return allowed
