"""The appliance is observable: Prometheus /metrics and OpenTelemetry traces of a task.

Metrics are read with prometheus_client's own text parser and compared with what an
independent party saw (the requests we made, the usage the official openai client
received). Traces are received by a real OTLP/HTTP endpoint on loopback and decoded
with OpenTelemetry's own protobuf classes.
"""

from __future__ import annotations

import http.server
import re
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import yaml
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from configs.schema import Settings
from configs.telemetry import setup_tracing, tracer
from core_agent.stores.conversations import ConversationStore
from tests.conftest import Stack, free_port, running_stack, stack_env
from tests.support.vllm_server import VllmServer, vllm_server  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]
CHAT_ROUTE = "/v1/chat/completions"

Samples = dict[tuple[str, frozenset], float]


def scrape(stack: Stack) -> Samples:
    with stack.http() as client:
        response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def series(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(ls) for (n, ls) in samples if n == name]


def quiet(stack: Stack, timeout_s: float = 180) -> Samples:
    """A scrape taken once the shared stack is idle: no task waiting or unacknowledged and
    no task outcome or request counted for two seconds, so work left over from earlier
    tests (a stream still ending, a background answer) cannot land in our window."""
    deadline = time.monotonic() + timeout_s
    last = scrape(stack)

    def busy(samples: Samples) -> float:
        return (total(samples, "appliance_task_outcomes_total") + total(samples, "appliance_tasks_unacked")
                + sum(v for (n, ls), v in samples.items() if n == "appliance_queue_depth")
                + sum(v for (n, ls), v in samples.items()
                      if n == "appliance_http_requests_total" and dict(ls).get("route") != "/metrics"))

    while time.monotonic() < deadline:
        time.sleep(2)
        now = scrape(stack)
        if busy(now) == busy(last) and total(now, "appliance_tasks_unacked") == 0:
            return now
        last = now
    return last


def test_metrics_need_the_owner_token(stack: Stack) -> None:
    response = httpx.get(f"{stack.url}/metrics", timeout=30)
    assert response.status_code == 401
    assert "error" in response.json()


def test_metrics_count_what_clients_saw(stack: Stack) -> None:
    """Two chats: the request counter, the latency histogram, the task outcomes and the
    token counters (API side and worker side) move by exactly what the client saw."""
    before = quiet(stack)
    client = stack.openai()
    completions = [client.chat.completions.create(
        model="core", messages=[{"role": "user", "content": f"Say the number {n}."}],
        max_tokens=12, temperature=0, extra_body={"mode": "direct"}) for n in (1, 2)]
    tokens = sum(c.usage.completion_tokens for c in completions)
    assert tokens > 0
    model = completions[0].model

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    deadline = time.monotonic() + 30   # the workers' counters land just after the answer
    while True:
        after = scrape(stack)
        if moved("appliance_worker_tasks_total", task="chat.generate", outcome="succeeded") >= 2 \
                or time.monotonic() > deadline:
            break
        time.sleep(0.5)

    assert moved("appliance_http_requests_total", method="POST", route=CHAT_ROUTE, status="200") == 2
    assert moved("appliance_http_request_seconds_count", method="POST", route=CHAT_ROUTE) == 2
    assert moved("appliance_task_outcomes_total", queue="chat", model=model, outcome="succeeded") == 2
    assert moved("appliance_tokens_total", kind="completion", model=model) == tokens
    # The workers' own view of the same two generations.
    assert moved("appliance_worker_tasks_total", task="chat.generate", queue="chat", outcome="succeeded") == 2
    assert moved("appliance_worker_tokens_total", kind="completion", model=model) == tokens
    hosts = {s["worker"] for s in series(after, "appliance_worker_tasks_total") if s["task"] == "chat.generate"}
    # chat.generate runs on the chat lanes only: interactive (chat@) and background (chat_bg@).
    assert hosts and all(h.split("@")[0] in ("chat", "chat_bg") for h in hosts), hosts
    # Read at scrape time: every queue's depth and the memory outbox.
    assert {s["queue"] for s in series(after, "appliance_queue_depth")} >= {"chat", "code", "embed", "vision", "rag"}
    assert series(after, "appliance_memory_outbox_size")
    # The outbox gauge is the store's count at scrape time: compare it with the SQLite
    # outbox read just before and just after a scrape, once both reads agree (the drainer
    # may be indexing the two turns above). Only as strong as the outbox is busy: an
    # empty outbox and a gauge stuck at 0 agree.
    store = ConversationStore(stack.settings.conversations_db)
    deadline = time.monotonic() + 60
    while True:
        pending_before = store.memory_outbox_count()
        gauge = total(scrape(stack), "appliance_memory_outbox_size")
        if pending_before == store.memory_outbox_count():
            break
        assert time.monotonic() < deadline, "the memory outbox never held still for one scrape"
    assert gauge == pending_before
    # A path with an id is counted under its route template, not one series per id.
    with stack.http() as http:
        http.get("/tasks/does-not-exist")
    routes = {s["route"] for s in series(scrape(stack), "appliance_http_requests_total")}
    assert "/tasks/{task_id}" in routes and "/tasks/does-not-exist" not in routes


def test_tracing_off_records_nothing() -> None:
    """Without an OTLP endpoint no provider is installed: spans are non-recording no-ops."""
    assert setup_tracing(Settings(), "test") is False
    span = tracer().start_span("anything")
    assert not span.is_recording()
    assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"


class OtlpReceiver(http.server.ThreadingHTTPServer):
    """A real OTLP/HTTP endpoint: accepts protobuf ExportTraceServiceRequests."""

    def __init__(self) -> None:
        self.spans: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.add(request)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", free_port()), Handler)

    def add(self, request: ExportTraceServiceRequest) -> None:
        with self.lock:
            for resource_spans in request.resource_spans:
                service = next((a.value.string_value for a in resource_spans.resource.attributes
                                if a.key == "service.name"), "")
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        attrs = {a.key: (a.value.string_value or a.value.int_value) for a in span.attributes}
                        self.spans.append({"name": span.name, "trace": span.trace_id.hex(),
                                           "id": span.span_id.hex(), "parent": span.parent_span_id.hex(),
                                           "service": service, "attrs": attrs})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture(scope="module")
def traced_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, OtlpReceiver]]:
    receiver = OtlpReceiver()
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    env = stack_env(tmp_path_factory.mktemp("traced-data"))
    env["APPLIANCE_OBSERVABILITY__OTLP_ENDPOINT"] = receiver.url
    env["APPLIANCE_MEMORY__ENABLED"] = "false"
    try:
        with running_stack(env) as stack:
            yield stack, receiver
    finally:
        receiver.shutdown()


def test_a_planned_task_is_one_trace_route_plan_steps_model_calls(traced_stack) -> None:
    stack, receiver = traced_stack
    plan = {"steps": [{"id": "s1", "worker": "chat", "instruction": "Name one colour."},
                      {"id": "s2", "worker": "chat", "instruction": "Name one fruit.", "depends_on": ["s1"]}]}
    with stack.http() as client:
        response = client.post("/v1/chat/completions", json={
            "model": "core", "messages": [{"role": "user", "content": "A colour and a fruit, please."}],
            "max_tokens": 8, "temperature": 0, "mode": "plan", "plan": plan})
    assert response.status_code == 200, response.text
    task_id = response.headers["x-task-id"]

    wanted = {"task", "route", "plan", "step s1", "step s2", "answer", "chat.step", "chat.generate"}
    deadline = time.monotonic() + 60
    while True:
        with receiver.lock:
            roots = [s for s in receiver.spans if s["name"] == "task" and s["attrs"].get("appliance.task_id") == task_id]
            trace_id = roots[0]["trace"] if roots else None
            spans = [s for s in receiver.spans if s["trace"] == trace_id]
        if roots and wanted <= {s["name"] for s in spans}:
            break
        assert time.monotonic() < deadline, f"spans of task {task_id} seen: {sorted({s['name'] for s in spans})}"
        time.sleep(0.5)

    by_name: dict[str, list[dict]] = {}
    for span in spans:
        by_name.setdefault(span["name"], []).append(span)
    root = roots[0]
    # One trace from the HTTP request down (FastAPI opens its own request spans above ours).
    top = [s for s in spans if s["parent"] == ""]
    assert len(top) == 1 and top[0]["service"] == "appliance-api", top
    assert root["service"] == "appliance-api"
    for name in ("route", "plan", "step s1", "step s2", "answer"):
        assert by_name[name][0]["parent"] == root["id"], name
    # The model calls run in worker processes and are children of what dispatched them.
    step_ids = {by_name["step s1"][0]["id"], by_name["step s2"][0]["id"]}
    assert {s["parent"] for s in by_name["chat.step"]} == step_ids
    assert by_name["answer"][0]["id"] in {s["parent"] for s in by_name["chat.generate"]}
    worker_spans = by_name["chat.step"] + by_name["chat.generate"]
    assert all(s["service"] == "appliance-worker" for s in worker_spans)
    assert all(s["attrs"].get("appliance.model") for s in worker_spans)


def test_compose_scrapes_the_api_and_every_vllm_server() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    prometheus = compose["services"]["prometheus"]
    assert prometheus["profiles"] == ["observability"]
    assert "./configs/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    config = yaml.safe_load((ROOT / "configs" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    api = jobs["appliance-api"]
    assert api["static_configs"][0]["targets"] == ["api:8000"]
    assert api["authorization"]["credentials_file"] in prometheus["entrypoint"][-1]
    targets = {t for job in jobs.values() for sc in job["static_configs"] for t in sc["targets"]}
    for name, service in compose["services"].items():
        if name.startswith("vllm-"):
            port = next(re.sub(r"^--port=", "", a) for a in service["command"] if str(a).startswith("--port="))
            assert f"{name}:{port}" in targets, name


@pytest.mark.vllm
def test_vllm_serves_the_metrics_prometheus_scrapes(vllm_server: VllmServer) -> None:  # noqa: F811
    response = httpx.get(f"{vllm_server.url}/metrics", timeout=30)
    assert response.status_code == 200
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {"vllm:num_requests_running", "vllm:prompt_tokens"} <= names, sorted(names)[:40]
