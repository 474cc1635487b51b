"""Who may use which adapter (configs/adapters.yaml policy) and automatic selection."""

from __future__ import annotations

import pytest

from configs.schema import AdapterAutoRule, AdapterPolicy, AdaptersConfig, RouteConfig
from lora_manager.base_model import BaseModelSpec
from lora_manager.errors import AdapterForbidden, AdapterNotFound
from lora_manager.naming import split_model
from lora_manager.policy import OWNER, AdapterGate, webhook_source
from lora_manager.registry import AdapterRegistry
from lora_manager.validation import ValidationLimits
from bench.harness.tiny_lora import tiny_lora_dir
from bench.harness.tiny_model import tiny_gguf_path

LIMITS = ValidationLimits(max_rank=64, max_size_bytes=256 * 2**20,
                          supported_modules=frozenset({"q_proj", "k_proj", "v_proj", "o_proj"}))


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> AdapterRegistry:
    """Three real adapters (same trained weights, different registrations)."""
    reg = AdapterRegistry(tmp_path_factory.mktemp("gating") / "adapters")
    base = BaseModelSpec.from_gguf(tiny_gguf_path())
    source = tiny_lora_dir("quokka")
    reg.add("sport-worldview", source, base, LIMITS, tasks=["chat", "sport"])
    reg.add("owner-style", source, base, LIMITS, tasks=["chat", "code", "sport"], pinned=True)
    reg.add("code-style", source, base, LIMITS, tasks=["code"])
    return reg


@pytest.fixture(scope="module")
def gate(registry: AdapterRegistry) -> AdapterGate:
    config = AdaptersConfig(
        policy={
            # The sport worldview answers the owner's sport questions only.
            "sport-worldview": AdapterPolicy(tasks=["sport"], sources=[OWNER]),
            # The owner's style may also answer the n8n "digest" webhook.
            "owner-style": AdapterPolicy(sources=[OWNER, "webhook:digest"]),
        },
        default_sources=[OWNER, "webhook:*"],
        auto=[AdapterAutoRule(task="sport", adapter="sport-worldview"),
              AdapterAutoRule(task="sport", adapter="owner-style"),
              AdapterAutoRule(task="chat", profile="dialog", adapter="owner-style"),
              AdapterAutoRule(task="chat", adapter="removed-long-ago")])
    return AdapterGate(config, registry, routes={"code": RouteConfig(queue="code", adapter="code-style")})


def test_disallowed_adapter_is_refused_for_a_webhook_and_allowed_for_the_owner(gate: AdapterGate) -> None:
    assert gate.check("sport-worldview", "sport", OWNER).name == "sport-worldview"
    with pytest.raises(AdapterForbidden) as info:
        gate.check("sport-worldview", "sport", webhook_source("n8n-news"))
    assert info.value.status == 403
    assert "webhook:n8n-news" in str(info.value) and "allowed sources: owner" in str(info.value)
    assert "configs/adapters.yaml" in str(info.value)
    # The owner's style: the owner and the digest hook, not other hooks.
    gate.check("owner-style", "chat", webhook_source("digest"))
    with pytest.raises(AdapterForbidden):
        gate.check("owner-style", "chat", webhook_source("other"))


def test_sport_adapter_does_not_leak_into_other_task_kinds(gate: AdapterGate) -> None:
    for task in ("chat", "medical", "school"):
        with pytest.raises(AdapterForbidden, match=f"may not serve task kind '{task}'"):
            gate.check("sport-worldview", task, OWNER)


def test_unknown_adapter_is_a_404(gate: AdapterGate) -> None:
    with pytest.raises(AdapterNotFound) as info:
        gate.check("nope", "chat", OWNER)
    assert info.value.status == 404 and "add-adapter.sh" in str(info.value)


def test_automatic_selection_follows_rules_skips_forbidden_and_abstains(gate: AdapterGate) -> None:
    assert gate.select("sport", OWNER).adapter == "sport-worldview"
    # A webhook may not use the sport worldview: the next allowed rule wins.
    assert gate.select("sport", webhook_source("digest")).adapter == "owner-style"
    # ... and a hook allowed neither gets the base model.
    assert gate.select("sport", webhook_source("other")).adapter is None
    # Profile-specific rule; a rule naming a removed adapter is skipped, not an error.
    assert gate.select("chat", OWNER, profile="dialog").adapter == "owner-style"
    assert gate.select("chat", OWNER, profile="fast").adapter is None
    # routes.<kind>.adapter from routes.yaml counts as a rule.
    assert gate.select("code", OWNER).adapter == "code-style"
    # No rule: abstain (base model), for every source.
    for source in (OWNER, webhook_source("digest")):
        selection = gate.select("medical", source)
        assert selection.adapter is None and "base model" in selection.reason


def test_explicit_request_wins_over_rules_but_is_checked(gate: AdapterGate) -> None:
    assert gate.resolve("owner-style", "sport", OWNER).adapter == "owner-style"
    assert gate.resolve(None, "sport", OWNER).adapter == "sport-worldview"
    with pytest.raises(AdapterForbidden):
        gate.resolve("code-style", "chat", OWNER)


def test_model_name_may_carry_the_adapter() -> None:
    assert split_model("core:sport-worldview") == ("core", "sport-worldview")
    assert split_model("core") == ("core", None)


def test_adapter_listing_can_be_filtered_by_policy(stack) -> None:
    """The UI's picker asks GET /adapters?task=chat&source=owner: only allowed adapters."""
    from lora_manager.service import AdapterService
    from bench.harness.tiny_lora import tiny_lora_dir

    service = AdapterService(stack.settings)
    service.add("picker-test", tiny_lora_dir("quokka"), tasks=["chat"])
    try:
        with stack.http() as http:
            everything = {a["name"] for a in http.get("/adapters").json()}
            for_owner = {a["name"] for a in http.get("/adapters", params={"task": "chat", "source": "owner"}).json()}
            for_hook = {a["name"] for a in
                        http.get("/adapters", params={"task": "chat", "source": "webhook:n8n"}).json()}
            for_code = {a["name"] for a in http.get("/adapters", params={"task": "code", "source": "owner"}).json()}
    finally:
        service.remove("picker-test")
    # No policy entry: the owner may use it for its task kinds, a webhook may not.
    assert "picker-test" in everything and "picker-test" in for_owner
    assert "picker-test" not in for_hook and "picker-test" not in for_code
