"""OpenAI tool calling for llama.cpp models: prompt, grammar and parser.

A GGUF chat template (SmolLM2's, for one) usually knows nothing about tools, so the
backend does three things itself:

1. **Prompt.** The tools are described in the system prompt in the Hermes format that
   Qwen3 (the production model) is trained on: a `<tools>` block and the instruction to
   answer with `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`. Earlier calls
   in the history are rendered the same way; tool results become user turns wrapped in
   `<tool_response>` (templates that insist on user/assistant alternation accept that).
2. **Grammar (constrained decoding).** A GBNF grammar built from the tools' JSON schemas
   allows only well-formed calls: `<tool_call>` + a JSON object whose "name" is one of the
   tools and whose "arguments" match that tool's schema + `</tool_call>`.
   - "required": the answer must be a call. One call per answer, whatever
     parallel_tool_calls says (OpenAI lets the model make fewer calls than it may):
     small models asked for "one or more" repeat the same call until max_tokens, and
     a repeated-call grammar costs several times the decoding time. An agent loop
     gets its next call in the next round.
   - a named function: the same, with only that tool in the grammar.
   - "auto": the grammar is `calls | text`, where text is anything that does not start
     with "<". The model decides with its first token; no second generation is needed,
     and free text can still be streamed as it comes (a "<" start is buffered instead).
   - "none": no tools in the prompt, no grammar.
   To keep a small model from running out of tokens inside a call, the grammar's copy of
   each schema bounds strings (maxLength) and arrays (maxItems) that the tool left open;
   anything the grammar allows still validates against the tool's own schema.
3. **Parser.** Complete `<tool_call>` blocks are parsed and checked against the schema;
   a block cut off by max_tokens is never returned as a call.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from configs.contracts.errors import BadGenerationRequest
from configs.contracts.tasks import ChatMessage, FunctionCall, GenerationParams, ToolCall
from configs.contracts.tool_schemas import ToolSpec, tool_specs, validate_arguments

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
_CALL_RE = re.compile(re.escape(TOOL_CALL_OPEN) + r"\s*(.*?)\s*" + re.escape(TOOL_CALL_CLOSE), re.DOTALL)
# Generation bounds for open-ended schema parts (grammar only; see the module doc).
GRAMMAR_MAX_STRING = 100
GRAMMAR_MAX_ITEMS = 8

ToolMode = Literal["auto", "required"]


@dataclass
class ToolRequest:
    """The tools one request offers the model, and how it must use them."""

    mode: ToolMode
    tools: list[ToolSpec]          # the callable ones (only the named one for a named choice)
    all_tools: list[ToolSpec]      # all of them, for the prompt
    parallel: bool

    @classmethod
    def from_params(cls, params: GenerationParams) -> "ToolRequest | None":
        """None when the model must not call a tool (no tools, or tool_choice "none")."""
        specs = tool_specs(params.tools, params.tool_choice)
        if specs is None:
            return None
        mode, callable_ = specs
        return cls(mode=mode, tools=callable_, all_tools=tool_specs(params.tools, "auto")[1],  # type: ignore[index]
                   parallel=params.parallel_tool_calls is not False)


# --- prompt --------------------------------------------------------------------------

def _tools_block(request: ToolRequest) -> str:
    described = "\n".join(json.dumps({"type": "function", "function": t.wire()}, ensure_ascii=False)
                          for t in request.all_tools)
    must = ""
    if request.mode == "required":
        names = ", ".join(t.name for t in request.tools)
        must = f"\nYou must call one of these functions now: {names}."
    return ("You may call one or more functions to help with the user's request. The functions "
            f"(JSON Schema of their arguments):\n<tools>\n{described}\n</tools>\n"
            "To call a function, answer only with\n"
            f'{TOOL_CALL_OPEN}{{"name": <function-name>, "arguments": <arguments-json-object>}}{TOOL_CALL_CLOSE}\n'
            "Function results come back inside <tool_response></tool_response>; then answer the user."
            + must)


def _call_text(call: ToolCall) -> str:
    try:
        arguments: Any = json.loads(call.function.arguments or "{}")
    except json.JSONDecodeError:
        arguments = call.function.arguments
    return TOOL_CALL_OPEN + json.dumps({"name": call.function.name, "arguments": arguments},
                                       ensure_ascii=False) + TOOL_CALL_CLOSE


def render_messages(messages: list[ChatMessage], request: ToolRequest | None) -> list[dict[str, str]]:
    """Plain role/content messages any GGUF chat template can render."""
    rendered: list[dict[str, str]] = []
    for m in messages:
        if m.role == "assistant" and m.tool_calls:
            calls = "\n".join(_call_text(c) for c in m.tool_calls)
            rendered.append({"role": "assistant", "content": (m.text() + "\n" + calls).strip()})
        elif m.role == "tool":
            rendered.append({"role": "user", "content": f"<tool_response>\n{m.text()}\n</tool_response>"})
        else:
            rendered.append({"role": m.role, "content": m.text()})
    if request is not None:
        block = _tools_block(request)
        if rendered and rendered[0]["role"] == "system":
            rendered[0] = {"role": "system", "content": rendered[0]["content"] + "\n\n" + block}
        else:
            rendered.insert(0, {"role": "system", "content": block})
    return rendered


# --- grammar -------------------------------------------------------------------------

def _bounded(schema: Any) -> Any:
    """A copy of `schema` with open strings and arrays bounded (for generation only)."""
    if isinstance(schema, list):
        return [_bounded(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _bounded(v) for k, v in schema.items()}
    kinds = out.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "string" in kinds and "maxLength" not in out and "enum" not in out and "const" not in out \
            and "format" not in out and "pattern" not in out:
        out["maxLength"] = GRAMMAR_MAX_STRING
    if "array" in kinds and "maxItems" not in out:
        out["maxItems"] = max(GRAMMAR_MAX_ITEMS, out.get("minItems", 0))
    return out


def _call_schema(tools: list[ToolSpec]) -> dict[str, Any]:
    variants = []
    defs: dict[str, Any] = {}
    for tool in tools:
        params = copy.deepcopy(tool.parameters)
        # Local $refs ("#/$defs/X", pydantic's) must resolve from the grammar's root.
        defs.update(params.pop("$defs", {}))
        variants.append({"type": "object", "additionalProperties": False, "required": ["name", "arguments"],
                         "properties": {"name": {"const": tool.name}, "arguments": _bounded(params)}})
    schema: dict[str, Any] = variants[0] if len(variants) == 1 else {"anyOf": variants}
    if defs:
        schema = {**schema, "$defs": _bounded(defs)}
    return schema


def grammar_text(request: ToolRequest) -> str:
    """The GBNF grammar for this request (see the module doc)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        call_rules = json_schema_to_gbnf(json.dumps(_call_schema(request.tools)))
    except Exception as exc:  # the converter raises plain exceptions for schemas it cannot express
        names = ", ".join(t.name for t in request.tools)
        raise BadGenerationRequest(
            f"the parameters schema of tool(s) {names} cannot be turned into a grammar: {exc}. "
            "Fix: use plain JSON Schema (type, properties, required, enum, items, anyOf, $defs).") from exc
    # Rename the converter's root so the call object becomes one rule of ours.
    call_rules = re.sub(r"^root\s*::=", "tool-call-json ::=", call_rules, flags=re.MULTILINE)
    lines = [f'calls ::= "{TOOL_CALL_OPEN}" tool-call-json "{TOOL_CALL_CLOSE}"']
    if request.mode == "auto":
        lines.append('root ::= calls | free-text')
        lines.append('free-text ::= [^<] .*')
    else:
        lines.append("root ::= calls")
    return "\n".join(lines) + "\n" + call_rules


# --- parser --------------------------------------------------------------------------

def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def looks_like_call(text: str) -> bool:
    """Whether an answer that starts with `text` is a tool call (the grammar decides on "<")."""
    return text.lstrip().startswith("<")


def parse_calls(text: str, request: ToolRequest) -> list[ToolCall]:
    """The complete, schema-valid calls in `text` (a call cut off by max_tokens is dropped).

    The same call (name and arguments) twice in one answer is kept once: small models
    repeat a call they just made instead of ending the answer."""
    by_name = {t.name: t for t in request.tools}
    calls: list[ToolCall] = []
    seen: set[tuple[str, str]] = set()
    for match in _CALL_RE.finditer(text):
        try:
            obj = json.loads(match.group(1))
        except json.JSONDecodeError:
            continue
        if not isinstance(obj, dict) or obj.get("name") not in by_name:
            continue
        arguments = obj.get("arguments", {})
        if validate_arguments(by_name[obj["name"]], arguments) is not None:
            continue
        key = (obj["name"], json.dumps(arguments, ensure_ascii=False, sort_keys=True))
        if key in seen:
            continue
        seen.add(key)
        calls.append(ToolCall(id=new_call_id(), function=FunctionCall(
            name=obj["name"], arguments=json.dumps(arguments, ensure_ascii=False))))
    return calls
