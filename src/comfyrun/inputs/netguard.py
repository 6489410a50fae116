"""Which addresses a URL input may reach (pure): the SSRF rules.

Only http and https. Every address a host resolves to must be public (not private, loopback,
link-local, multicast, reserved, unspecified or shared (CGNAT) space; IPv4-mapped and 6to4
IPv6 addresses are judged by the IPv4 address inside them; IPv4 spelled as the C resolver reads
it, `0x7f000001` or `2130706433`, is judged as that address; `localhost` and `*.localhost` are
loopback by name) unless an allow-list entry opens it:
a CIDR ("10.0.0.0/8", "127.0.0.1") or a host name ("minio.internal"). The fetcher applies these
rules to the addresses it actually connects to, on every redirect hop.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from comfyrun.errors import InputRejected

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOWED_SCHEMES = frozenset({"http", "https"})


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """The allow-list on top of "public addresses only"."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> AddressPolicy:
        """Entries are CIDRs, single IPs or host names (case-insensitive)."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for entry in entries:
            entry = entry.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(_normal_host(entry))
        return cls(tuple(networks), frozenset(hosts))

    def host_is_allowed(self, host: str) -> bool:
        """True when the host name itself is on the allow-list."""
        return _normal_host(host) in self.hosts

    def check_address(
        self, address: str, *, host: str, url: str | None = None, what: str = "input URL"
    ) -> None:
        """Raise InputRejected unless `address` (what `host` resolved to) may be reached
        (`what`: the URL's role, for the message)."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError as exc:
            raise _refused(url, host, address, "unparseable_address", what) from exc
        if self.host_is_allowed(host) or any(ip in net for net in self.networks):
            return
        if not is_public(ip):
            raise _refused(url, host, address, "private_address", what)

    def check_url(self, url: str, *, what: str = "input URL") -> SplitResult:
        """Check what can be checked without DNS: the scheme, the host, literal IP hosts.
        Returns the parsed URL. `what`: the URL's role ("input URL", "webhook URL"), for the
        messages."""
        if not url.isprintable():
            # urlsplit drops tabs and line breaks, but an HTTP client refuses them: a URL
            # that would pass here and fail at every call later (a space is quoted)
            raise InputRejected(
                f"{what} holds a control character", details={"url": url, "reason": "bad_url"}
            )
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise InputRejected(
                f"{what} is malformed: {exc}", details={"url": url, "reason": "bad_url"}
            ) from exc
        if parts.scheme.lower() not in ALLOWED_SCHEMES:
            raise InputRejected(
                f"{what} scheme {parts.scheme!r} is not allowed (only http and https)",
                details={"url": url, "reason": "bad_scheme"},
            )
        host = parts.hostname
        if not host:
            raise InputRejected(f"{what} has no host", details={"url": url, "reason": "bad_url"})
        if any(ch.isspace() for ch in host):
            raise InputRejected(
                f"{what}'s host {host!r} is not a host name",
                details={"url": url, "reason": "bad_url"},
            )
        if port == 0:
            raise InputRejected(f"{what} has port 0", details={"url": url, "reason": "bad_url"})
        literal = literal_ip(host)
        if literal is not None:
            self.check_address(str(literal), host=host, url=url, what=what)
        elif is_localhost_name(host) and not self.host_is_allowed(host):
            raise _refused(url, host, "127.0.0.1", "private_address", what)
        return parts


def is_public(ip: IPAddress) -> bool:
    """True for globally routable unicast addresses."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour
        if inner is not None:
            return is_public(inner)
        if ip.teredo is not None:
            return False
    return ip.is_global and not ip.is_multicast


def literal_ip(host: str) -> IPAddress | None:
    """The IP when `host` is an IP literal (brackets allowed), else None. IPv4 is read as the
    C resolver reads it (inet_aton), so `2130706433`, `0x7f000001`, `0177.0.0.1` and `127.1`
    are all 127.0.0.1, as they would be when connecting."""
    text = host.strip("[]").split("%", 1)[0].rstrip(".")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    packed = inet_aton(text)
    return None if packed is None else ipaddress.IPv4Address(packed)


def inet_aton(text: str) -> int | None:
    """The IPv4 address inet_aton(3) makes of `text` (1 to 4 dot-separated numbers, each
    decimal, 0x-hex or 0-octal; the last fills the remaining bytes), or None."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers: list[int] = []
    for part in parts:
        number = _c_number(part)
        if number is None:
            return None
        numbers.append(number)
    *head, last = numbers
    if any(n > 0xFF for n in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    value = last
    for i, n in enumerate(head):
        value |= n << (8 * (3 - i))
    return value


def _c_number(part: str) -> int | None:
    try:
        if part[:2].lower() == "0x":
            return int(part[2:], 16) if part[2:] else 0
        if len(part) > 1 and part.startswith("0"):
            return int(part[1:], 8)
        return int(part, 10) if part.isdigit() else None
    except ValueError:
        return None


def is_localhost_name(host: str) -> bool:
    """`localhost` and names under it (RFC 6761: they are loopback, whatever DNS says)."""
    name = _normal_host(host)
    return name == "localhost" or name.endswith(".localhost")


def _normal_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _refused(
    url: str | None, host: str, address: str, reason: str, what: str = "input URL"
) -> InputRejected:
    return InputRejected(
        f"{what} host {host!r} resolves to {address}, which is not a public address",
        details={"url": url, "host": host, "address": address, "reason": reason},
    )


__all__ = [
    "ALLOWED_SCHEMES",
    "AddressPolicy",
    "inet_aton",
    "is_localhost_name",
    "is_public",
    "literal_ip",
]
