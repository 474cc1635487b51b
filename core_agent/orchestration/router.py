"""Answer directly or plan? Rules first (fast, predictable), the core model second.

Order: the request's explicit `mode`; attached images (they need the vision worker,
so always a plan); `direct_patterns`; `plan_patterns`; then, if `router.use_model`,
one short JSON-constrained call to the core model; otherwise direct.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Literal

from configs.schema import RouterConfig

log = logging.getLogger("appliance.router")

Route = Literal["direct", "plan"]
Mode = Literal["auto", "direct", "plan"]
# Given the question, ask the model; returns its raw JSON text.
ModelAsk = Callable[[str], Awaitable[str]]

ROUTE_SCHEMA = {"type": "object", "properties": {"route": {"type": "string", "enum": ["direct", "plan"]}},
                "required": ["route"]}
ROUTE_PROMPT = ("Decide how to handle the owner's request. Reply with JSON {\"route\": \"direct\"} when one "
                "answer from a chat model is enough, or {\"route\": \"plan\"} when it needs several steps such "
                "as writing code, searching memory or reading images.")


@dataclass
class RouteDecision:
    route: Route
    reason: str
    seconds: float


class Router:
    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self._direct = [re.compile(p, re.IGNORECASE) for p in config.direct_patterns]
        self._plan = [re.compile(p, re.IGNORECASE) for p in config.plan_patterns]

    def by_rules(self, question: str, mode: Mode = "auto", has_images: bool = False) -> RouteDecision | None:
        """The decision the rules make, or None when they do not decide."""
        started = time.perf_counter()

        def decided(route: Route, reason: str) -> RouteDecision:
            return RouteDecision(route, reason, time.perf_counter() - started)

        if mode != "auto":
            return decided(mode, f"request mode '{mode}'")
        if has_images:
            return decided("plan", "images attached")
        for pattern in self._direct:
            if pattern.search(question):
                return decided("direct", f"rule {pattern.pattern!r}")
        for pattern in self._plan:
            if pattern.search(question):
                return decided("plan", f"rule {pattern.pattern!r}")
        return None

    async def decide(self, question: str, mode: Mode, has_images: bool, ask_model: ModelAsk) -> RouteDecision:
        decision = self.by_rules(question, mode, has_images)
        if decision is None and self.config.use_model:
            decision = await self._by_model(question, ask_model)
        if decision is None:
            decision = RouteDecision("direct", "no rule matched", 0.0)
        log.info("route=%s reason=%s latency_ms=%.3f", decision.route, decision.reason, decision.seconds * 1000)
        return decision

    async def _by_model(self, question: str, ask_model: ModelAsk) -> RouteDecision:
        started = time.perf_counter()
        raw = ""
        try:
            raw = await ask_model(question)
            route = json.loads(raw).get("route")
        except Exception as exc:  # the model path must never fail a request
            log.warning("model router failed, answering directly: %s", exc)
            route = None
        seconds = time.perf_counter() - started
        if route in ("direct", "plan"):
            return RouteDecision(route, "core model", seconds)
        # What the model said is kept in the reason, so the task record shows why.
        return RouteDecision("direct", f"core model gave no usable route ({raw[:80]!r})", seconds)
