"""Async webhook callbacks cannot be aimed at the appliance's own network (SSRF).

Real API processes (uvicorn, real HTTP) on the session stack's Redis and workers,
with a real HTTP receiver listening on loopback: the refused callbacks point at that
live listener, so a refusal cannot be faked by a closed port, and the allowlisted
one must really arrive there, signed.

Broken builds watched failing: removing the submit-time check in
WebhookService.submit fails the submit tests (202 instead of 400); giving the
AsyncClient no PinnedTransport fails the delivery-time and rebinding tests (the
listener receives the callback).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from configs.loader import load_settings
from configs.schema import Settings
from core_agent.stores.webhook_jobs import JobStore
from core_agent.webhooks.callback_guard import CallbackRefused, PinnedTransport, check_callback
from tests.conftest import Stack, free_port
from tests.test_webhooks import (  # noqa: F401 (receiver is a fixture)
    ASYNC_SECRET,
    HOOKS,
    QUESTION,
    HookApi,
    Receiver,
    _signature_ok,
    receiver,
)
from tests.support.api_server import api_process


def callback_settings(data_dir: Path, callback_hosts: list[str]) -> Settings:
    return load_settings(overrides={
        "data_dir": str(data_dir), "api_port": free_port(),
        "webhooks": {"callback_backoff_s": 0.2, "callback_attempts": 2, "hooks": HOOKS,
                     "callback_hosts": callback_hosts},
        "memory": {"enabled": False},
    })


@pytest.fixture(scope="module")
def default_api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HookApi]:
    """The shipped default: no allowlist, so public addresses only."""
    with api_process(callback_settings(tmp_path_factory.mktemp("callbacks-default"), [])) as url:
        yield HookApi(url=url, token=stack.token)


def _port(receiver: Receiver) -> int:
    return httpx.URL(receiver.url).port


@pytest.mark.parametrize("host, reason", [
    ("127.0.0.1", "loopback"), ("10.0.0.1", "private"), ("169.254.169.254", "link-local"),
    ("[::1]", "loopback"), ("localhost", "loopback"), ("[::ffff:127.0.0.1]", "loopback"),
    ("0.0.0.0", "unspecified"), ("224.0.0.1", "multicast"),
])
def test_internal_callback_addresses_are_refused_at_submit(
        default_api: HookApi, receiver: Receiver, host: str, reason: str) -> None:
    url = f"http://{host}:{_port(receiver)}/callback"
    resp = default_api.post("later", {**QUESTION, "callback_url": url}, secret=ASYNC_SECRET)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["code"] == "callback_refused" and reason in error["message"], error
    assert "callback_hosts" in error["message"]  # says how to allow a receiver on purpose
    assert receiver.received.empty()


def test_the_guard_names_each_kind_of_address() -> None:
    """The address classes by hand (RFC 1918, 3927, 4291, 6598): no DNS needed for literals."""
    cases = {"http://192.168.1.5/": "private", "http://172.16.0.1/": "private", "http://100.64.0.1/": "public",
             "http://[fe80::1]/": "link-local", "http://[fc00::1]/": "private", "http://[ff02::1]/": "multicast",
             "http://[2002:7f00:1::1]/": "loopback", "http://240.0.0.1/": "reserved"}
    for url, reason in cases.items():
        with pytest.raises(CallbackRefused, match=reason):
            check_callback(url, [])
    assert check_callback("https://93.184.215.14/hook", []).address == "93.184.215.14"
    with pytest.raises(CallbackRefused, match="not on the callback allowlist"):
        check_callback("https://93.184.215.14/hook", ["n8n"])


def test_a_callback_refused_at_delivery_reaches_nothing(
        stack: Stack, receiver: Receiver, tmp_path: Path) -> None:
    """A pending callback to loopback (stored before the allowlist changed): the API that
    resumes it checks again at delivery and the listener receives nothing."""
    gone = __import__("subprocess").Popen(["true"])
    gone.wait()
    store = JobStore(tmp_path / "webhooks.sqlite3")
    job, _ = store.create("later", "0" * 64, "stale-1", receiver.url)
    with store._connect() as db:  # as a stopped API process left it
        db.execute("UPDATE webhook_jobs SET status = 'running', owner_pid = ? WHERE id = ?", (gone.pid, job.id))
    with api_process(callback_settings(tmp_path, [])) as url:
        deadline = time.monotonic() + 30
        while True:
            seen = httpx.get(f"{url}/jobs/{job.id}", headers={"Authorization": f"Bearer {stack.token}"}).json()
            if seen["callback"]["status"] != "pending" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert seen["callback"]["status"] == "failed" and "loopback" in seen["callback"]["error"], seen
    assert seen["callback"]["attempts"] == 1  # a refusal is final, not retried
    assert receiver.received.empty()


def test_an_allowlisted_loopback_host_receives_the_signed_callback(
        stack: Stack, receiver: Receiver, tmp_path: Path) -> None:
    with api_process(callback_settings(tmp_path, ["localhost"])) as url:
        api = HookApi(url=url, token=stack.token)
        # Allowlisting one name does not open loopback by another name.
        refused = api.post("later", {**QUESTION, "callback_url": receiver.url}, secret=ASYNC_SECRET)
        assert refused.status_code == 400 and "allowlist" in refused.json()["error"]["message"]
        target = f"http://localhost:{_port(receiver)}/callback"
        resp = api.post("later", {**QUESTION, "callback_url": target}, secret=ASYNC_SECRET)
        assert resp.status_code == 202, resp.text
        headers, payload = receiver.received.get(timeout=180)
    assert _signature_ok(ASYNC_SECRET, headers, payload)
    assert json.loads(payload)["id"] == resp.json()["id"]
    assert headers["host"] == f"localhost:{_port(receiver)}"  # pinned to the IP, named as asked


class FakeRebindingDns:
    """A hostile DNS server cannot run offline, so this fake stands in for one: after
    `arm()` the name answers a public address once, then 127.0.0.1 (where the receiver
    listens): the classic DNS-rebinding trick."""

    def __init__(self) -> None:
        self.name = f"rebind-{uuid.uuid4().hex[:8]}.example"
        self._answers: list[str] = []
        self._lock = threading.Lock()

    def arm(self) -> None:
        with self._lock:
            self._answers = ["93.184.215.14"]

    def answer(self) -> str:
        with self._lock:
            return self._answers.pop(0) if self._answers else "127.0.0.1"


@pytest.fixture
def fake_rebinding_dns(monkeypatch: pytest.MonkeyPatch) -> FakeRebindingDns:
    dns = FakeRebindingDns()
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        asked = host.decode() if isinstance(host, bytes) else host  # anyio passes IDNA bytes
        return real(dns.answer() if asked == dns.name else host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return dns


async def _post(client: httpx.AsyncClient, url: str) -> str:
    try:
        return str((await client.post(url, content=b"{}")).status_code)
    except httpx.HTTPError as exc:
        return type(exc).__name__


def test_the_delivery_connects_to_the_address_it_checked(
        fake_rebinding_dns: FakeRebindingDns, receiver: Receiver) -> None:
    url = f"http://{fake_rebinding_dns.name}:{_port(receiver)}/callback"

    async def unpinned() -> str:  # check, then let the client resolve again
        check_callback(url, [])
        async with httpx.AsyncClient(timeout=3) as client:
            return await _post(client, url)

    async def pinned() -> str:
        async with httpx.AsyncClient(transport=PinnedTransport([]), timeout=3, follow_redirects=False) as client:
            return await _post(client, url)

    # The fake really rebinds: an unpinned client passes the check and lands on loopback.
    fake_rebinding_dns.arm()
    assert asyncio.run(unpinned()) == "200"
    receiver.received.get(timeout=5)
    # Pinned: the one answer that was checked (public, unreachable offline) is the one used.
    fake_rebinding_dns.arm()
    outcome = asyncio.run(pinned())
    assert outcome != "200" and receiver.received.empty(), outcome
