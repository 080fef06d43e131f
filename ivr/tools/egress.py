"""Where a webhook request may go: never to a link-local or cloud metadata address unless
that address is listed explicitly.

The host allow-list (`IVR_WEBHOOK_HOSTS`) is checked by name when the tools are built, but
a listed name can still resolve to the cloud's metadata service (169.254.169.254 serves
instance credentials), by mistake or by a DNS answer changed later. So every request
resolves its host, checks each address, and connects to a checked address (never
resolving again between the check and the connection). A link-local or metadata address
is used only when the operator named it: the URL's host is that address or a metadata
host name (and so is on the allow-list), or the address itself is on the allow-list.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from typing import Final

from ivr.tools.base import ToolError

__all__ = [
    "METADATA_ADDRESSES",
    "METADATA_HOSTS",
    "IPAddress",
    "Resolver",
    "checked_addresses",
    "listed_addresses",
    "resolve",
    "sensitive",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Instance metadata services beyond the link-local block: AWS over IPv6, Alibaba, Oracle.
METADATA_ADDRESSES: Final = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "192.0.0.192",
))
METADATA_HOSTS: Final = frozenset({
    "metadata", "metadata.google.internal", "metadata.goog", "instance-data",
    "instance-data.ec2.internal",
})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

# host, port -> the addresses it resolves to, in the order to try them.
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (the system resolver, off the event loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def _embedded_v4(addr: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), else `addr` itself."""
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
        if addr.sixtofour is not None:
            return addr.sixtofour
        if addr in _NAT64:
            return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return addr


def sensitive(addr: IPAddress) -> bool:
    """Link-local (169.254.0.0/16, fe80::/10) or a cloud metadata address."""
    v4 = _embedded_v4(addr)
    return any(a.is_link_local or a in METADATA_ADDRESSES for a in (addr, v4))


def listed_addresses(allowed: frozenset[str]) -> frozenset[IPAddress]:
    """The IP addresses the allow-list names (entries `addr`, `addr:port`, `[v6]:port`)."""
    out: set[IPAddress] = set()
    for entry in allowed:
        addr = _ip(entry)
        if addr is None and entry.count(":") == 1:  # v4:port or name:port
            addr = _ip(entry.rpartition(":")[0])
        if addr is None and entry.startswith("[") and "]:" in entry:
            addr = _ip(entry[1:entry.index("]")])
        if addr is not None:
            out.add(addr)
    return frozenset(out)


async def checked_addresses(
    host: str, port: int, *, listed: frozenset[IPAddress], resolver: Resolver, what: str,
) -> list[str]:
    """The addresses to connect to for `host`, every one checked; ToolError when `host`
    resolves to nothing or to a link-local or metadata address nobody listed."""
    literal = _ip(host)
    if literal is not None:
        return [str(literal)]  # named in the URL, so on the allow-list by that very name
    try:
        addresses = await resolver(host, port)
    except OSError as exc:
        raise ToolError(f"{what}: cannot resolve {host!r}: {exc}") from None
    if not addresses:
        raise ToolError(f"{what}: {host!r} resolves to no address")
    if host.rstrip(".").lower() in METADATA_HOSTS:
        return addresses  # a metadata service by name: the operator listed it as such
    for text in addresses:
        addr = _ip(text)
        if addr is None or (sensitive(addr) and addr not in listed):
            raise ToolError(
                f"{what}: {host!r} resolves to {text}, a link-local or cloud metadata "
                f"address; requests there are refused unless IVR_WEBHOOK_HOSTS lists {text}"
            )
    return addresses
