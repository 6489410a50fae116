"""ComfyUI's origin check, the rule itself (api/origin.py applies it to comfyrun's routes, the
emulator to its own). Pure: no I/O (ComfyUI also asks the resolver whether a host name other
than `localhost` is loopback; that lookup is left out)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback(host: str | None) -> bool:
    """Whether `host` (a name or an address, without port) is this machine's loopback."""
    if not host:
        return False
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def cross_origin(host: str, origin: str) -> bool:
    """Whether a request for `host` (its Host header) from `origin` (its Origin header) is one
    ComfyUI refuses: the host is loopback and the origin names another host (or port)."""
    host_domain = host.lower()
    try:
        parsed = urlsplit(origin)
        host_parsed = urlsplit("//" + host_domain)
        origin_port, host_port = parsed.port, host_parsed.port
    except ValueError:  # a port that is no number, or out of range: no host it could match
        return is_loopback(_hostname(host_domain))
    origin_domain = parsed.netloc.lower()
    if not is_loopback(host_parsed.hostname):
        return False
    if origin_port is None:  # (as ComfyUI: a side that names no port is compared without)
        host_domain = host_parsed.hostname or ""
    if host_port is None:
        origin_domain = parsed.hostname or ""
    return bool(host_domain and origin_domain) and host_domain != origin_domain


def _hostname(host: str) -> str | None:
    try:
        return urlsplit("//" + host).hostname
    except ValueError:
        return None


__all__ = ["cross_origin", "is_loopback"]
