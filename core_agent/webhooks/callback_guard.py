"""Where async webhook callbacks may go: no SSRF into the appliance's own network.

A callback URL comes from the webhook caller, so without a check it could point the
appliance at 127.0.0.1:6379 (Redis), 169.254.169.254 (cloud metadata) or the LAN, and
GET /jobs/{id} would report what answered. The rule (docs/security.md, "Callbacks"):
- `webhooks.callback_hosts` empty (the default): any host whose every address is
  public; loopback, private, link-local, multicast, unspecified, reserved and other
  non-global addresses are refused, IPv4 and IPv6 alike, IPv4-mapped IPv6 (and 6to4)
  judged by the IPv4 address inside;
- `callback_hosts` set: only those hosts (exact name or IP literal), whatever address
  they have (that is how a receiver on the owner's LAN or in the compose network is
  allowed), except multicast and unspecified addresses, which are never a receiver.
The check runs after DNS resolution, at submit time and again at each delivery, and
the delivery connects to the very address that was checked (PinnedTransport): a name
that resolves to something else a moment later (DNS rebinding) changes nothing.
Redirects are not followed (the client is made with follow_redirects=False).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Sequence

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class CallbackRefused(Exception):
    """The callback URL may not be called; the message names the reason and the fix."""


class CallbackUnresolvable(CallbackRefused):
    """The host does not resolve (now): refused at submit time, retried at delivery."""


@dataclass(frozen=True)
class CallbackTarget:
    host: str      # as written in the URL (lowercase, no brackets)
    address: str   # the checked IP the connection goes to


def address_problem(ip: IPAddress) -> str | None:
    """Why this address may not receive callbacks from a non-allowlisted host, or None."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is not None:
            inner = address_problem(embedded)
            return f"an IPv6 address carrying {embedded}, which is {inner}" if inner else None
    for attribute, name in (("is_unspecified", "an unspecified"), ("is_loopback", "a loopback"),
                            ("is_link_local", "a link-local"), ("is_multicast", "a multicast"),
                            ("is_reserved", "a reserved"), ("is_private", "a private")):
        if getattr(ip, attribute):
            return f"{name} address"
    if not ip.is_global:
        return "not a public address"
    return None


def _never_a_receiver(ip: IPAddress) -> str | None:
    ip4 = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip
    if ip4.is_multicast:
        return "a multicast address"
    if ip4.is_unspecified:
        return "an unspecified address"
    return None


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise CallbackUnresolvable(f"callback host '{host}' does not resolve ({exc.strerror})") from None
    seen: list[IPAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%")[0])
        if ip not in seen:
            seen.append(ip)
    return seen


def check_callback(url: str, allowed_hosts: Sequence[str]) -> CallbackTarget:
    """Resolve the URL's host and decide; raise CallbackRefused naming the reason."""
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise CallbackRefused(f"callback_url must be an http(s) URL with a host, got {url[:100]!r}")
    host = parsed.host.lower().rstrip(".")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    allowlisted = host in {h.lower() for h in allowed_hosts}
    if allowed_hosts and not allowlisted:
        raise CallbackRefused(f"callback host '{host}' is not on the callback allowlist "
                              f"(webhooks.callback_hosts in configs/webhooks.yaml: {', '.join(allowed_hosts)})")
    addresses = _resolve(host, port)
    for ip in addresses:
        problem = _never_a_receiver(ip) if allowlisted else address_problem(ip)
        if problem:
            fix = "" if allowlisted else (" Callbacks go only to public addresses unless the host is listed in "
                                          "webhooks.callback_hosts (configs/webhooks.yaml)")
            raise CallbackRefused(f"callback host '{host}' resolves to {ip}, {problem}.{fix}")
    return CallbackTarget(host=host, address=str(addresses[0]))


class PinnedTransport(httpx.AsyncBaseTransport):
    """Checks every request's host when it is sent and connects to the checked address,
    keeping the original Host header and TLS server name (SNI and certificate check)."""

    def __init__(self, allowed_hosts: Sequence[str], inner: httpx.AsyncBaseTransport | None = None) -> None:
        self.allowed_hosts = list(allowed_hosts)
        self.inner = inner or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        target = await asyncio.to_thread(check_callback, str(request.url), self.allowed_hosts)
        request.url = request.url.copy_with(host=target.address)
        # httpx wrote the Host header from the original URL when the request was built.
        if request.url.scheme == "https":
            request.extensions = {**request.extensions, "sni_hostname": target.host}
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()
