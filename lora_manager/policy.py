"""Which request may use which adapter, and which adapter a request gets automatically.

A request has a task kind ("chat", "code", "sport", ...) and a source ("owner",
"webhook:<name>"). An adapter serves a request only if
  - the task kind is one the adapter was registered for (`--tasks`), and, when
    configs/adapters.yaml has a policy entry for it, one of that entry's tasks;
  - the source matches the entry's sources (or adapters.default_sources without one).
An explicit request for a forbidden adapter is refused (403) with the reason.
Automatic selection walks adapters.auto, then routes.<kind>.adapter, skips every
rule whose adapter is forbidden or missing, and abstains (base model) when none fits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from configs.schema import AdapterAutoRule, AdaptersConfig, RouteConfig
from lora_manager.errors import AdapterForbidden, AdapterNotFound
from lora_manager.registry import AdapterRecord, AdapterRegistry

OWNER = "owner"


def webhook_source(name: str) -> str:
    return f"webhook:{name}"


def source_matches(pattern: str, source: str) -> bool:
    if pattern in ("*", source):
        return True
    return pattern.endswith(":*") and source.startswith(pattern[:-1])


@dataclass(frozen=True)
class Selection:
    adapter: str | None
    reason: str  # why: for logs and the task record


class AdapterGate:
    def __init__(self, config: AdaptersConfig, registry: AdapterRegistry,
                 routes: Mapping[str, RouteConfig] | None = None) -> None:
        self.config = config
        self.registry = registry
        self.routes = routes or {}

    def refusal(self, record: AdapterRecord, task: str, source: str) -> str | None:
        """Why `record` may not serve (task, source), or None if it may."""
        rule = self.config.policy.get(record.name)
        tasks = set(record.tasks) & set(rule.tasks) if rule and rule.tasks else set(record.tasks)
        sources = rule.sources if rule else self.config.default_sources
        if task not in tasks:
            return (f"adapter '{record.name}' may not serve task kind '{task}' (allowed: "
                    f"{', '.join(sorted(tasks)) or 'none'})")
        if not any(source_matches(p, source) for p in sources):
            return (f"adapter '{record.name}' may not be used by {source} (allowed sources: "
                    f"{', '.join(sources) or 'none'})")
        return None

    def check(self, adapter: str, task: str, source: str) -> AdapterRecord:
        """The adapter's record if the policy lets (task, source) use it; else AdapterForbidden."""
        record = self.registry.get(adapter)
        why = self.refusal(record, task, source)
        if why:
            raise AdapterForbidden(f"{why}. Fix: ask without this adapter, or change its policy in "
                                   f"configs/adapters.yaml (adapters.policy.{adapter}).")
        return record

    def _rules(self, task: str) -> list[AdapterAutoRule]:
        rules = [r for r in self.config.auto if r.task in (task, "*")]
        route = self.routes.get(task)
        if route is not None and route.adapter:
            rules.append(AdapterAutoRule(task=task, adapter=route.adapter))
        return rules

    def select(self, task: str, source: str, profile: str | None = None) -> Selection:
        """The adapter automatic selection picks, or none (base model)."""
        for rule in self._rules(task):
            if rule.profile is not None and rule.profile != profile:
                continue
            try:
                record = self.registry.get(rule.adapter)
            except AdapterNotFound:
                continue  # a rule naming a removed adapter must not break requests
            if self.refusal(record, task, source) is None:
                return Selection(rule.adapter, f"auto rule task={rule.task} profile={rule.profile}")
        return Selection(None, f"no adapter rule allows task '{task}' for {source}: base model")

    def resolve(self, requested: str | None, task: str, source: str, profile: str | None = None) -> Selection:
        """Explicit adapter (checked) or automatic selection."""
        if requested:
            self.check(requested, task, source)
            return Selection(requested, "requested explicitly")
        return self.select(task, source, profile)
