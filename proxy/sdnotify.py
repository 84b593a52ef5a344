"""The systemd notify protocol (sd_notify(3)) without a dependency: one datagram per message.

``READY=1`` once listening, ``RELOADING=1`` (with ``MONOTONIC_USEC``) when a SIGHUP reload starts
and ``READY=1`` when it ended, ``STOPPING=1`` when draining begins. The same messages go from a
worker to its supervisor over a connected socket, so one protocol covers both hops.
Failures are swallowed: a service manager that cannot be told must never stop the proxy.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping


def notify_address(value: str | None) -> str | None:
    """``$NOTIFY_SOCKET`` as a socket address: ``@name`` is Linux's abstract namespace (a leading
    NUL byte); a path is used as is; anything else (e.g. ``vsock:``) is not supported."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    return value if value.startswith("/") else None


class Notifier:
    """Sends notify messages to ``address`` (a datagram socket) or on a connected ``sock``."""

    def __init__(self, address: str | None = None, sock: socket.socket | None = None) -> None:
        self._address = address
        self._sock = sock

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Notifier:
        """The notifier systemd asked for (``NOTIFY_SOCKET``), or one that sends nothing."""
        return cls(notify_address(env.get("NOTIFY_SOCKET")))

    @property
    def enabled(self) -> bool:
        return self._address is not None or self._sock is not None

    def send(self, *fields: str) -> bool:
        """One message of ``KEY=value`` fields; True when it was handed to the socket."""
        if not self.enabled:
            return False
        data = "\n".join(fields).encode()
        try:
            if self._sock is not None:
                self._sock.send(data)
            else:
                with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                    s.sendto(data, self._address)  # type: ignore[arg-type]
        except OSError:
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        """``MONOTONIC_USEC`` lets systemd (Type=notify-reload) tell this reload from older ones."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")


def parse(message: bytes) -> dict[str, str]:
    """The fields of one notify message (for a supervisor reading its workers, and for tests)."""
    fields: dict[str, str] = {}
    for line in message.decode(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key] = value
    return fields
