"""Function tools as OpenAI sends them, checked once, shared by the core and every backend.

`tool_specs` reads `tools` + `tool_choice` into the tools the model may call (and
refuses bad ones with a message that names the problem); `validate_arguments` checks a
call's arguments against the tool's JSON schema. The core checks every call a backend
returns with it, so a call whose arguments do not validate never reaches a client.
"""

from __future__ import annotations

from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, Field

from configs.contracts.errors import BadGenerationRequest

EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


class ToolSpec(BaseModel):
    """One function tool: name, description, JSON schema of its arguments."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: dict(EMPTY_PARAMETERS))
    strict: bool | None = None

    def wire(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


def _spec(index: int, tool: Any) -> ToolSpec:
    if not isinstance(tool, dict) or tool.get("type", "function") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else type(tool).__name__
        raise BadGenerationRequest(f"tools[{index}]: type '{kind}' is not supported; only function tools "
                                   "({\"type\": \"function\", \"function\": {...}}) are")
    fn = tool.get("function")
    if not isinstance(fn, dict):
        raise BadGenerationRequest(f"tools[{index}]: 'function' must be an object with name and parameters")
    try:
        spec = ToolSpec.model_validate({k: v for k, v in fn.items() if v is not None})
    except ValueError as exc:
        raise BadGenerationRequest(f"tools[{index}].function: name must be 1-64 letters, digits, _ . - "
                                   f"and parameters an object ({exc.__class__.__name__})") from None
    try:
        jsonschema.validators.validator_for(spec.parameters).check_schema(spec.parameters)
    except jsonschema.SchemaError as exc:
        raise BadGenerationRequest(f"tools[{index}] ({spec.name}): parameters is not a valid JSON Schema: "
                                   f"{exc.message}") from None
    return spec


def tool_specs(tools: list[dict[str, Any]] | None, tool_choice: str | dict[str, Any] | None
               ) -> tuple[Literal["auto", "required"], list[ToolSpec]] | None:
    """(mode, the tools the model may call) or None when it must not call any.

    OpenAI's defaults: "auto" when tools are given, "none" when not. A named function
    is mode "required" restricted to that one tool."""
    specs = [_spec(i, t) for i, t in enumerate(tools or [])]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise BadGenerationRequest(f"tools: function names must be unique (got {names})")
    choice = tool_choice if tool_choice is not None else ("auto" if specs else "none")
    if choice == "none":
        return None
    if not specs:
        raise BadGenerationRequest(f"tool_choice {choice!r} needs tools; send the functions in 'tools'")
    if choice in ("auto", "required"):
        return choice, specs  # type: ignore[return-value]
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name") or choice.get("name")
        chosen = [s for s in specs if s.name == name]
        if not chosen:
            raise BadGenerationRequest(f"tool_choice names function {name!r}, which is not in tools {names}")
        return "required", chosen
    raise BadGenerationRequest(f"tool_choice {choice!r} is not supported; use \"none\", \"auto\", \"required\" "
                               "or {\"type\": \"function\", \"function\": {\"name\": ...}}")


def validate_arguments(tool: ToolSpec, arguments: Any) -> str | None:
    """None if `arguments` (already parsed) match the tool's schema, else why not."""
    if not isinstance(arguments, dict):
        return f"arguments of {tool.name} must be a JSON object, got {type(arguments).__name__}"
    validator = jsonschema.validators.validator_for(tool.parameters)(tool.parameters)
    error = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"arguments of {tool.name} at {where}: {error.message}"
