"""Free TCP ports for managed ComfyUI processes, and recognising a child that lost its port.

Picking a port by binding 127.0.0.1:0 and closing the socket leaves a window in which another
program can take it before the child binds. That race cannot be closed from outside the child, so
the supervisor detects it instead (the child exits and its log says the address is in use) and
tries again with another port.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable

#: Returns a port the child should listen on (injectable so tests can hand out a busy one).
PortPicker = Callable[[], int]

_IN_USE = re.compile(
    r"address already in use|errno 98\b|errno 48\b|eaddrinuse|errno 10048"
    r"|only one usage of each socket address",
    re.IGNORECASE,
)


def pick_free_port(host: str = "127.0.0.1") -> int:
    """A port on `host` that nothing was listening on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on host:port now (bound as servers bind, with
    SO_REUSEADDR, so a port left in TIME_WAIT by a stopped child counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def fixed_port_taken(name: str, port: int) -> str:
    """Why a backend with a fixed port was not started: something else listens there (and would
    answer the readiness probe in its place)."""
    return (
        f"backend {name!r}: its port {port} is already in use by another program (another "
        "ComfyUI?); stop that program, or give the backend another port, or none (comfyrun "
        "then picks a free one at each start)"
    )


def says_port_in_use(log_text: str) -> bool:
    """Whether a child's output says it could not bind because the port was taken."""
    return _IN_USE.search(log_text) is not None


__all__ = ["PortPicker", "fixed_port_taken", "pick_free_port", "port_is_free", "says_port_in_use"]
