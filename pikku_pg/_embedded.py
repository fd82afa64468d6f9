"""An embedded, throw-away PostgreSQL server for the demo and the tests.

Built on the optional ``pgserver`` package (``pip install 'pikku-pg[embedded]'``), which bundles
PostgreSQL 16 binaries. Each :class:`EmbeddedPostgres` runs its own server on a Unix socket in a
fresh data directory directly under the system temp dir; :meth:`EmbeddedPostgres.stop` stops the
server and deletes the directory.

The server must not outlive the Python process, even when that process is killed:

* normal exit: ``atexit`` (ours and pgserver's);
* ``SIGTERM``: a chained signal handler stops the servers, then exits with ``128 + signum``;
* ``SIGKILL`` (or anything else): a tiny watchdog subprocess notices that its parent is gone,
  stops the server with ``pg_ctl -m immediate stop`` and removes the data directory.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

__all__ = ["EmbeddedPostgres"]

_MISSING_EXTRA = "the embedded server needs the 'embedded' extra: pip install 'pikku-pg[embedded]'"

# When run as root, pgserver runs initdb/pg_ctl/postgres as this system user (it creates it).
_PGSERVER_SYSTEM_USER = "pgserver"

# Run by the watchdog process: argv = parent pid, pgdata, pg_ctl, system user ("" = same user),
# then extra directories to delete. It is a direct child of the parent, so once the parent dies
# it is re-parented and getppid() changes; unlike a pid probe this also works while the dead
# parent is still an unreaped zombie, and it cannot be fooled by pid reuse.
_WATCHDOG_SCRIPT = """
import os, shutil, signal, subprocess, sys, time
parent, pgdata, pg_ctl, user = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] or None
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
while os.getppid() == parent:
    time.sleep(0.5)
pidfile = os.path.join(pgdata, "postmaster.pid")
if os.path.exists(pidfile):
    try:
        subprocess.run([pg_ctl, "-D", pgdata, "-m", "immediate", "-w", "-t", "20", "stop"],
                       user=user, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30, check=False)
    except Exception:
        pass
    try:  # pg_ctl failed: SIGQUIT is postgres' own "immediate shutdown"
        with open(pidfile) as f:
            os.kill(int(f.readline()), signal.SIGQUIT)
        time.sleep(1)
    except Exception:
        pass
for path in sys.argv[2:3] + sys.argv[5:]:
    shutil.rmtree(path, ignore_errors=True)
"""

# Servers started by this process and not stopped yet, for the SIGTERM handler.
_live_servers: set[EmbeddedPostgres] = set()
_sigterm_installed = False
_previous_sigterm: Any = None

# The private XDG_RUNTIME_DIR we created (if any) and the pid that owns it (not forked children).
_runtime_dir: str | None = None
_runtime_dir_owner = 0


def _prepare_runtime_dir() -> None:
    """Give pgserver a private XDG_RUNTIME_DIR before it is imported.

    pgserver computes its lock/socket dir with platformdirs at import time, which warns (and falls
    back to a shared /tmp/runtime-<uid>) when XDG_RUNTIME_DIR is unset. mkdtemp makes it 0700;
    when run as root pgserver itself widens it to 0755 if it has to put the socket there (pgdata
    path too long for a Unix socket), so the ``pgserver`` user can reach the socket.
    """
    global _runtime_dir, _runtime_dir_owner
    if os.environ.get("XDG_RUNTIME_DIR") or "pgserver" in sys.modules:
        return
    _runtime_dir = tempfile.mkdtemp(prefix="pikku-pg-xdg-")
    _runtime_dir_owner = os.getpid()
    os.environ["XDG_RUNTIME_DIR"] = _runtime_dir
    # Registered before any pgserver atexit hook, so it runs after them (atexit is LIFO): they
    # still need the lock file that lives in this directory.
    atexit.register(_remove_runtime_dir)


def _remove_runtime_dir() -> None:
    if _runtime_dir is not None and os.getpid() == _runtime_dir_owner:
        shutil.rmtree(_runtime_dir, ignore_errors=True)


def _install_sigterm_handler() -> None:
    """Install (once) a SIGTERM handler that stops every live server, chaining to the old one."""
    global _sigterm_installed, _previous_sigterm
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return  # signal.signal only works in the main thread; the watchdog still covers us
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_IGN:
        return  # someone asked to ignore SIGTERM: respect that
    _previous_sigterm = previous
    signal.signal(signal.SIGTERM, _on_sigterm)
    _sigterm_installed = True


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    for server in list(_live_servers):
        with contextlib.suppress(Exception):
            server.stop()
    if callable(_previous_sigterm):
        _previous_sigterm(signum, frame)
    _remove_runtime_dir()  # its atexit hook will not run
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    # Not sys.exit(): pytest (and any ``except BaseException``) would swallow the SystemExit
    # and keep running against a stopped server. This mirrors the default action of SIGTERM.
    os._exit(128 + signum)


class EmbeddedPostgres:
    """A private PostgreSQL server (bundled by ``pgserver``) living in a temporary directory.

    Use as a context manager::

        with EmbeddedPostgres() as pg:
            conn = psycopg.connect(pg.dsn)

    or call :meth:`start` / :meth:`stop` yourself. The DSN is a ``postgresql://`` URI for the
    superuser ``postgres`` and the ``postgres`` database over a Unix socket (no TCP port).
    """

    def __init__(self) -> None:
        """Create a handle; nothing runs until :meth:`start`."""
        self._server: Any = None
        self._dsn: str | None = None
        self._pgdata: Path | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._pg_ctl_path: str = ""
        self._system_user: str | None = None

    @property
    def dsn(self) -> str:
        """The conninfo URI of the ``postgres`` database; raises if the server is not running."""
        if self._dsn is None:
            raise RuntimeError("the embedded PostgreSQL server is not running: call start() first")
        return self._dsn

    @property
    def pgdata(self) -> Path | None:
        """The data directory of the running server (``None`` before start / after stop)."""
        return self._pgdata

    @property
    def pid(self) -> int | None:
        """The postmaster pid of the running server (``None`` when not running)."""
        if self._server is None or self._pgdata is None:
            return None
        try:  # the postmaster's own record: still right after a restart
            return int((self._pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    @property
    def running(self) -> bool:
        """Whether :meth:`start` succeeded and :meth:`stop` has not been called since."""
        return self._server is not None

    def start(self) -> str:
        """Start the server (idempotent) and return the DSN of its ``postgres`` database."""
        if self._dsn is not None:
            return self._dsn
        _prepare_runtime_dir()
        try:
            from pgserver._commands import POSTGRES_BIN_PATH
            from pgserver.postgres_server import get_server
        except ImportError as exc:
            raise RuntimeError(_MISSING_EXTRA) from exc

        # Directly under the temp dir: as root pgserver chmods every parent of pgdata up to / to
        # be world-readable, which is harmless for /tmp but not for a project or home folder.
        pgdata = Path(tempfile.mkdtemp(prefix="pikku-pg-")).resolve()
        self._pgdata = pgdata
        self._pg_ctl_path = str(Path(POSTGRES_BIN_PATH) / "pg_ctl")
        # Mirrors pgserver: as root it runs postgres as a dedicated unprivileged user.
        self._system_user = _PGSERVER_SYSTEM_USER if os.geteuid() == 0 else None
        # Watchdog and SIGTERM handler go first, so a kill during start-up is covered too.
        self._start_watchdog(pgdata)
        _live_servers.add(self)
        _install_sigterm_handler()
        try:
            server = get_server(pgdata, cleanup_mode="delete")
            dsn = str(server.get_uri())
        except BaseException:
            # pgserver registers no handle when start-up fails, so its atexit hook would not
            # delete pgdata: clean up ourselves.
            self._force_stop()
            self._stop_watchdog()
            _live_servers.discard(self)
            self._pgdata = None
            raise
        self._server = server
        self._dsn = dsn
        atexit.register(self.stop)  # runs before pgserver's own hook (LIFO), same effect
        return dsn

    def stop(self) -> None:
        """Stop the server and delete its data directory; safe to call more than once."""
        server, self._server = self._server, None  # swap first: re-entrant calls are no-ops
        self._dsn = None
        if server is not None:
            # pg_ctl stop (fast mode) and rmtree(pgdata); on failure the forced stop below
            with contextlib.suppress(Exception):
                server.cleanup()
            if self._pgdata is not None and self._pgdata.exists():
                self._force_stop()
        self._stop_watchdog()
        _live_servers.discard(self)
        atexit.unregister(self.stop)
        self._pgdata = None

    def restart(self, mode: str = "fast") -> None:
        """Restart the server in place; the data directory, the socket and so the DSN
        stay the same.

        ``mode`` is pg_ctl's shutdown mode: ``"fast"`` ends every connection cleanly,
        ``"immediate"`` kills the server like a crash (it recovers from its WAL).
        """
        if mode not in ("fast", "immediate"):
            raise ValueError(f"mode must be 'fast' or 'immediate', not {mode!r}")
        self._run_pg_ctl("-m", mode, "restart")

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """Keep the server stopped (after a fast shutdown) for the block, then start it again.

        For tests of what clients do while the server is gone; the DSN stays the same.
        """
        self._run_pg_ctl("-m", "fast", "stop")
        try:
            yield
        finally:
            self._run_pg_ctl("restart")  # a stopped server starts with its previous options

    def _run_pg_ctl(self, *args: str) -> None:
        if self._server is None or self._pgdata is None:
            raise RuntimeError("the embedded PostgreSQL server is not running: call start() first")
        subprocess.run(
            [self._pg_ctl_path, "-D", str(self._pgdata), "-w", "-t", "30", *args],
            user=self._system_user,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def __enter__(self) -> EmbeddedPostgres:
        """Start the server and return this handle."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server and delete its data directory."""
        self.stop()

    def _start_watchdog(self, pgdata: Path) -> None:
        args = [str(os.getpid()), str(pgdata), self._pg_ctl_path, self._system_user or ""]
        if _runtime_dir is not None and os.getpid() == _runtime_dir_owner:
            args.append(_runtime_dir)
        self._watchdog = subprocess.Popen(
            [sys.executable, "-I", "-c", _WATCHDOG_SCRIPT, *args],
            # DEVNULL: an inherited stdout pipe would keep e.g. a parent's communicate() waiting.
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
            # Own session: a Ctrl-C on the terminal must not kill the watchdog before the parent.
            start_new_session=True,
        )

    def _stop_watchdog(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is None:
            return
        watchdog.terminate()
        try:
            watchdog.wait(timeout=5)
        except subprocess.TimeoutExpired:
            watchdog.kill()
            watchdog.wait()

    def _force_stop(self) -> None:
        """Immediate shutdown and removal of pgdata, when pgserver's own cleanup did not do it."""
        pgdata = self._pgdata
        if pgdata is None:
            return
        if (pgdata / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                subprocess.run(
                    [self._pg_ctl_path, "-D", str(pgdata), "-m", "immediate", "-w", "stop"],
                    user=self._system_user,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=30,
                    check=False,
                )
        shutil.rmtree(pgdata, ignore_errors=True)
