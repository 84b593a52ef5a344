"""``--workers N``: one supervisor process and N forked workers, each with its own event loop.

Workers share the TCP port with SO_REUSEPORT (see listeners.py); a Unix socket or sockets from
systemd are bound once here and inherited. The supervisor serves nothing itself. It restarts a
dead worker with exponential backoff, forwards SIGHUP and SIGTERM/SIGINT, and speaks for the
workers to systemd: each worker sends its sd_notify messages to the supervisor over a socket
pair, and the supervisor sends READY=1 once every worker is ready (again after a reload has
finished in every worker) and STOPPING=1 when it starts draining. It exits 0 once every worker
has drained, and 1 if a worker failed to start at all (a config the workers refuse, a port they
cannot bind): a crash loop belongs to the service manager, not to a silent restart loop here.

The supervisor is single-threaded (its log lines are written synchronously) and never runs an
event loop, so forking is safe; it loads the token encodings before forking, so workers share
those pages and start faster.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from .app import make_app
from .config import Config
from .heap import settle_heap
from .listeners import (
    Plan,
    UnixListener,
    bind_unix,
    describe,
    effective_backlog,
    reserve_tcp,
    somaxconn,
)
from .logs import make_logger
from .metrics import forget_process
from .plugins.usage import warm_token_encodings
from .reload import adopt
from .sdnotify import Notifier, parse
from .service import Service, Startup, log_startup, loop_factory, run, serve

BACKOFF_BASE_S = 0.1
BACKOFF_CAP_S = 10.0
STABLE_S = 10.0
"""A worker that lived this long before dying restarts after the base delay again."""
KILL_GRACE_S = 5.0
"""After SIGTERM, workers get ``drain_timeout_s`` plus this before they are killed."""
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
_CLEAN_EXITS = (0, -signal.SIGTERM, -signal.SIGINT)


@dataclass(slots=True)
class Launch:
    """What the entry point read from the process (arguments, environment), for every worker."""

    loader: Callable[[], Config]
    notifier: Notifier = field(default_factory=Notifier)
    inherited: Sequence[socket.socket] = ()
    """Listening sockets from systemd's socket activation."""
    loop: str = "auto"
    startup: Startup = field(default_factory=Startup)


@dataclass(slots=True)
class Slot:
    """One worker position; its process changes on every restart."""

    index: int
    pid: int | None = None
    channel: socket.socket | None = None
    started: float = 0.0
    ready: bool = False
    """Serving and idle: it may be sent a SIGHUP."""
    ever_ready: bool = False
    booting: bool = False
    """Started and not ready yet."""
    reload: str | None = None
    """None, ``queued`` (SIGHUP it once ready) or ``sent`` (waiting for its READY)."""
    failures: int = 0
    restart_at: float | None = None


def run_worker(
    index: int,
    config: Config,
    launch: Launch,
    plan: Plan,
    metrics_dir: str | None,
    channel: socket.socket,
) -> int:
    """The body of a worker process: the ordinary single-process server, told it is shared."""
    app = make_app(config, worker=index, metrics_dir=metrics_dir)
    service = Service(
        plan=plan,
        notifier=Notifier(sock=channel),
        loader=launch.loader,
        shared=True,
        parent=channel,
    )
    try:
        run(serve(app, config, service=service), launch.loop)
    except OSError as exc:
        print(f"llm-proxy: worker {index}: {exc}", file=sys.stderr)
        return 1
    return 0


class Supervisor:
    """Starts, watches and stops ``config.workers`` workers (see the module docstring)."""

    def __init__(self, config: Config, launch: Launch, logger: Any = None) -> None:
        self.config = config
        self.launch = launch
        # Written synchronously (an explicit stream): the supervisor forks, so it must never
        # have a thread, such as the queued log writer's, that could hold stdout's lock.
        self.log = logger if logger is not None else make_logger(config.logging, sys.stdout)
        self.slots = [Slot(i) for i in range(config.workers)]
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._reserved: list[socket.socket] = []
        self._plan = Plan()
        self._unix: UnixListener | None = None
        self._addresses: list[str] = []
        self._metrics_dir: str | None = None
        self._stopping = False
        self._stopping_now = False
        self._kill_at: float | None = None
        self._announced = False
        self._reloading = False
        self._failed = False

    def run(self) -> int:
        """Serve until stopped; the exit status for the process. OSError: cannot listen."""
        try:
            self._plan = self._listen()
            if self.config.metrics.enabled:
                self._metrics_dir = tempfile.mkdtemp(prefix="llm-proxy-metrics-")
            warm_token_encodings()
            settle_heap()  # before forking: the workers share these pages
            self._install_signals()
            for slot in self.slots:
                self._spawn(slot)
            while not self._stopping or self._alive():
                self._step()
            return 1 if self._failed else 0
        finally:
            self._cleanup()

    def _listen(self) -> Plan:
        if self.launch.inherited:
            self._addresses = [describe(s.getsockname()) for s in self.launch.inherited]
            return Plan(sockets=tuple(self.launch.inherited))
        listen = self.config.listen
        self._reserved, port = reserve_tcp(listen.host, listen.port)
        self._addresses = [describe(s.getsockname()) for s in self._reserved]
        unix: tuple[socket.socket, ...] = ()
        if listen.unix:
            gid = listen.unix_group if isinstance(listen.unix_group, int) else None
            backlog = effective_backlog(listen.backlog, somaxconn())
            self._unix = bind_unix(listen.unix, backlog, listen.unix_mode, gid)
            unix = (self._unix.sock,)
            self._addresses.append(f"unix:{listen.unix}")
        return Plan(sockets=unix, tcp=(listen.host, port))

    def _install_signals(self) -> None:
        for sock in (self._wake_r, self._wake_w):
            sock.setblocking(False)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for sig in _SIGNALS:
            signal.signal(sig, _record_only)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)

    def _alive(self) -> list[Slot]:
        return [s for s in self.slots if s.pid is not None]

    def _step(self) -> None:
        for key, _ in self._sel.select(self._timeout()):
            if key.data is None:
                with contextlib.suppress(BlockingIOError):
                    self._on_signals(self._wake_r.recv(256))
            else:
                self._on_message(key.data)
        self._reap()
        now = time.monotonic()
        for slot in self.slots:
            if slot.restart_at is not None and slot.restart_at <= now and not self._stopping:
                self._spawn(slot)
        if self._kill_at is not None and now >= self._kill_at:
            self._kill_at = None
            for slot in self._alive():
                self.log.error("worker did not drain in time, killing it", worker=slot.index)
                os.kill(slot.pid, signal.SIGKILL)  # type: ignore[arg-type]
                self._failed = True

    def _timeout(self) -> float | None:
        times = [s.restart_at for s in self.slots if s.restart_at is not None]
        if self._kill_at is not None:
            times.append(self._kill_at)
        return max(0.0, min(times) - time.monotonic()) if times else None

    def _on_signals(self, data: bytes) -> None:
        for signum in data:
            if signum in (signal.SIGTERM, signal.SIGINT):
                self._stop()
            elif signum == signal.SIGHUP:
                self._reload()

    # -- workers -----------------------------------------------------------------------------

    def _spawn(self, slot: Slot) -> None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            parent_end.close()
            self._become_worker(slot.index, child_end)
        child_end.close()
        slot.pid, slot.channel, slot.started = pid, parent_end, time.monotonic()
        slot.ready, slot.booting, slot.restart_at = False, True, None
        self._sel.register(parent_end, selectors.EVENT_READ, slot)
        self.log.info("worker started", worker=slot.index, pid=pid)

    def _become_worker(self, index: int, channel: socket.socket) -> NoReturn:
        code = 1
        try:
            self._forget_supervisor_state()
            code = run_worker(
                index, self.config, self.launch, self._plan, self._metrics_dir, channel
            )
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def _forget_supervisor_state(self) -> None:
        """In a new worker: default signal dispositions (SIGHUP ignored until the server
        installs its handler) and none of the supervisor's file descriptors."""
        signal.set_wakeup_fd(-1)
        for sig in _SIGNALS:
            signal.signal(sig, signal.SIG_IGN if sig == signal.SIGHUP else signal.SIG_DFL)
        signal.signal(signal.SIGQUIT, signal.SIG_IGN)  # until the server handles it
        self._sel.close()
        for sock in (self._wake_r, self._wake_w, *self._reserved):
            sock.close()
        for slot in self.slots:
            if slot.channel is not None:
                slot.channel.close()

    def _on_message(self, slot: Slot) -> None:
        assert slot.channel is not None
        try:
            data = slot.channel.recv(4096)
        except OSError:
            data = b""
        if not data:  # the worker is exiting; _reap() sees it
            self._close_channel(slot)
            return
        fields = parse(data)
        if fields.get("RELOADING") == "1":
            slot.ready = False
        elif fields.get("READY") == "1":
            self._on_ready(slot)

    def _on_ready(self, slot: Slot) -> None:
        if slot.booting:
            self.log.info("worker ready", worker=slot.index, pid=slot.pid)
        slot.ready = slot.ever_ready = True
        slot.booting = False
        if slot.reload == "queued":  # a reload was asked for while it was starting
            self._hup(slot)
        elif slot.reload == "sent":
            slot.reload = None
        self._announce()

    def _announce(self) -> None:
        """READY=1 to systemd once every worker is ready, and again when a reload is done."""
        if self._stopping:
            return
        serving = f"{len(self.slots)} workers serving"
        if not self._announced:
            if all(s.ready for s in self.slots):
                self._announced, self._reloading = True, False
                self.log.info("all workers ready", workers=len(self.slots))
                loop = "asyncio" if loop_factory(self.launch.loop) is None else "uvloop"
                log_startup(self.log, self.config, self.launch.startup, self._addresses, loop)
                self.launch.notifier.ready(status=serving)
            return
        if self._reloading and not any(s.reload for s in self.slots):
            self._reloading = False
            self.log.info("workers reloaded")
            self.launch.notifier.ready(status=serving)

    def _hup(self, slot: Slot) -> None:
        os.kill(slot.pid, signal.SIGHUP)  # type: ignore[arg-type]
        slot.reload, slot.ready = "sent", False

    def _close_channel(self, slot: Slot) -> None:
        if slot.channel is not None:
            self._sel.unregister(slot.channel)
            slot.channel.close()
            slot.channel = None

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is not None:
                self._on_exit(slot, os.waitstatus_to_exitcode(status))

    def _on_exit(self, slot: Slot, code: int) -> None:
        pid = slot.pid
        if self._metrics_dir is not None and pid is not None:
            forget_process(self._metrics_dir, pid)
        self._close_channel(slot)
        slot.pid, slot.ready, slot.reload = None, False, None
        if self._stopping:
            self.log.info("worker exited", worker=slot.index, pid=pid, exit_code=code)
            self._failed = self._failed or code not in _CLEAN_EXITS
            return
        if not slot.ever_ready and not self._announced:
            self.log.error("worker failed to start", worker=slot.index, pid=pid, exit_code=code)
            self._failed = True
            self._stop()
            return
        if time.monotonic() - slot.started >= STABLE_S:
            slot.failures = 0
        delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**slot.failures)
        slot.failures += 1
        slot.restart_at = time.monotonic() + delay
        self.log.warning(
            "worker died, restarting",
            worker=slot.index,
            pid=pid,
            exit_code=code,
            restart_in_s=delay,
        )
        self._announce()  # a reload no longer waits for it

    # -- signals -----------------------------------------------------------------------------

    def _reload(self) -> None:
        """Validate the file once here (one error line, not one per worker), keep the result
        for workers started later, then let each live worker reload it."""
        if self._stopping:
            return
        if self._announced:  # before that, READY=1 is still to come anyway
            self.launch.notifier.reloading()
        try:
            self.config, _ = adopt(self.config, self.launch.loader())
        except Exception as exc:
            self.log.error("config reload failed, keeping the running config", error=str(exc))
            if self._announced:
                self.launch.notifier.ready(status=f"{len(self.slots)} workers serving")
            return
        self._reloading = True
        for slot in self._alive():
            if slot.ready:
                self._hup(slot)
            else:
                slot.reload = "queued"
        self.log.info("reloading workers", workers=len(self._alive()))
        self._announce()

    def _stop(self) -> None:
        if self._stopping:
            self._stop_now()
            return
        self._stopping = True
        self.launch.notifier.stopping()
        self.log.info("stopping, workers drain", timeout_s=self.config.drain_timeout_s)
        for slot in self.slots:
            slot.restart_at = None
            if slot.pid is not None:
                os.kill(slot.pid, signal.SIGTERM)
        self._kill_at = time.monotonic() + self.config.drain_timeout_s + KILL_GRACE_S

    def _stop_now(self) -> None:
        """A second stop signal: the workers cut their drains (SIGQUIT, see service.py)."""
        alive = self._alive()
        if not alive or self._stopping_now:
            return
        self._stopping_now = True
        self.log.warning("second stop signal, workers stop now", workers=len(alive))
        for slot in alive:
            os.kill(slot.pid, signal.SIGQUIT)  # type: ignore[arg-type]
        self._kill_at = time.monotonic() + KILL_GRACE_S

    def _cleanup(self) -> None:
        for slot in self._alive():  # only after an unexpected error in the supervisor itself
            os.kill(slot.pid, signal.SIGKILL)  # type: ignore[arg-type]
            os.waitpid(slot.pid, 0)  # type: ignore[arg-type]
        signal.set_wakeup_fd(-1)
        for sig in _SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        self._sel.close()
        for sock in (self._wake_r, self._wake_w, *self._reserved, *self._plan.sockets):
            sock.close()
        if self._unix is not None:
            self._unix.remove()
        if self._metrics_dir is not None:
            shutil.rmtree(self._metrics_dir, ignore_errors=True)


def _record_only(signum: int, frame: Any) -> None:
    """The wakeup fd carries the signal number to the main loop; nothing to do here."""
