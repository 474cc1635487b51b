"""Settings: YAML + profile + environment, and errors that name the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from configs.loader import ConfigError, load_settings

REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_are_the_embedded_local_profile() -> None:
    s = load_settings(environ={})
    assert s.profile == "local"
    assert s.api_host == "127.0.0.1" and s.api_port == 8000 and s.ui_port == 8501
    assert s.data_dir == Path("./data").resolve()
    assert s.models["core"].backend == "llamacpp"
    assert s.manage_redis is True


def test_environment_overrides_files_including_nested_keys(tmp_path: Path) -> None:
    s = load_settings(environ={"APPLIANCE_API_PORT": "9100", "APPLIANCE_DATA_DIR": str(tmp_path),
                               "APPLIANCE_MODELS__CORE__N_CTX": "4096"})
    assert s.api_port == 9100
    assert s.data_dir == tmp_path
    assert s.models["core"].n_ctx == 4096
    assert s.token_file == tmp_path / "owner.token"


def test_gpu_profile_switches_to_the_openai_backend() -> None:
    s = load_settings(environ={"APPLIANCE_PROFILE": "gpu"})
    assert s.models["core"].backend == "openai"
    assert s.models["core"].base_url.startswith("http://vllm-core")
    assert s.manage_redis is False


def test_unknown_key_names_the_key_and_its_source(tmp_path: Path) -> None:
    (tmp_path / "appliance.yaml").write_text("api_prot: 8000\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"APPLIANCE_CONFIG_DIR": str(tmp_path)})
    message = str(caught.value)
    assert "api_prot" in message and "unknown key" in message
    assert str(tmp_path / "appliance.yaml") in message


def test_bad_value_from_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"APPLIANCE_API_PORT": "eighty"})
    message = str(caught.value)
    assert "api_port" in message and "environment APPLIANCE_API_PORT" in message


def test_openai_backend_without_base_url_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"APPLIANCE_MODELS__CORE__BACKEND": "openai"})
    assert "models.core" in str(caught.value) and "base_url" in str(caught.value)


def test_unknown_profile_is_refused() -> None:
    with pytest.raises(ConfigError, match="profile"):
        load_settings(environ={"APPLIANCE_PROFILE": "cloud"})


def test_shipped_config_files_are_valid() -> None:
    for profile in ("local", "gpu"):
        load_settings(environ={"APPLIANCE_CONFIG_DIR": str(REPO_CONFIGS), "APPLIANCE_PROFILE": profile})


def test_context_cap_keeps_the_newest_turns_and_the_question() -> None:
    from core_agent.orchestration.chat_service import fit_history
    from configs.contracts.tasks import ChatMessage

    history = [ChatMessage(role="system", content="be brief")]
    for i in range(10):
        history += [ChatMessage(role="user", content=f"question {i} " + "word " * 20),
                    ChatMessage(role="assistant", content=f"answer {i} " + "word " * 20)]
    history.append(ChatMessage(role="user", content="the new question"))
    kept = fit_history(history, cap_tokens=100)
    assert kept[0].content == "be brief" and kept[-1].content == "the new question"
    assert len(kept) < len(history) and kept[-2].content.startswith("answer 9")
    assert fit_history(history, cap_tokens=100_000) == history
    # The question survives even when it alone is over the cap.
    assert fit_history([ChatMessage(role="user", content="x " * 500)], cap_tokens=10)[-1].content.startswith("x")
