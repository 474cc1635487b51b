"""Tool-call validity on the embedded default: of N "required" tool calls (varied prompts,
several tool schemas) made with the official `openai` client through the whole stack
(API -> Celery -> llama.cpp, tiny SmolLM2-135M), the share whose arguments validate
against the tool's JSON schema. Target: 100%, by construction (grammar-constrained
decoding, workers/backends/llamacpp_tools.py).

    python -m bench.bench_tool_calls [--calls 50]

Prints the figures and writes them to docs/benchmarks.md (section tool_calls).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import jsonschema
import openai

from bench.report import percentile, write_section

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "add", "description": "Add two integers",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                       "required": ["a", "b"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "create_event", "description": "Put an event in the calendar",
        "parameters": {"type": "object", "properties": {
            "title": {"type": "string", "minLength": 1},
            "day": {"type": "string", "enum": ["monday", "tuesday", "wednesday", "thursday", "friday"]},
            "attendees": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
            "all_day": {"type": "boolean"}},
            "required": ["title", "day"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "search_orders", "description": "Find customer orders",
        "parameters": {"type": "object", "properties": {
            "customer": {"type": "object", "properties": {"name": {"type": "string"}, "id": {"type": "integer",
                                                                                         "minimum": 1}},
                         "required": ["name"]},
            "status": {"type": "string", "enum": ["open", "shipped", "cancelled"]},
            "limit": {"type": "integer", "minimum": 1, "maximum": 50}},
            "required": ["customer"], "additionalProperties": False}}},
]
PROMPTS = {
    "get_weather": ["What's the weather in {x}?", "Is it raining in {x} today?", "Temperature in {x} in fahrenheit?",
                    "Should I take a coat in {x}?", "Погода в городе {x}?"],
    "add": ["What is {n} plus {m}?", "Add {n} and {m}.", "Sum of {n} and {m}?", "Сложи {n} и {m}.",
            "I have {n} apples and get {m} more. How many?"],
    "create_event": ["Book a meeting with {x} on friday.", "Schedule lunch on monday.",
                     "Add 'dentist' to tuesday, all day.", "Plan a review with {x} and Bob on wednesday.",
                     "Поставь встречу на четверг."],
    "search_orders": ["Find open orders of {x}.", "Show shipped orders for customer {x}, at most 3.",
                      "Any cancelled orders for {x}?", "List orders of customer id {n}.",
                      "Найди заказы клиента {x}."],
}
CITIES = ["Paris", "Oslo", "Lima", "Tokyo", "Kazan", "Rome", "Cairo", "Quito", "Perth", "Minsk"]


def requests(n: int) -> list[tuple[str, str, list[dict]]]:
    """(tool name, prompt, offered tools): round-robin over tools and prompt templates;
    half of them offer all tools with "required", half name the function."""
    out = []
    names = list(PROMPTS)
    for i in range(n):
        name = names[i % len(names)]
        template = PROMPTS[name][(i // len(names)) % len(PROMPTS[name])]
        prompt = template.format(x=CITIES[i % len(CITIES)], n=i + 2, m=3 * i + 1)
        out.append((name, prompt, TOOLS))
    return out


def run(client: openai.OpenAI, n: int, max_tokens: int, progress=print) -> dict:
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    valid = calls = errors = named_right = 0
    seconds: list[float] = []
    failures: list[str] = []
    for i, (name, prompt, tools) in enumerate(requests(n)):
        named = i % 2 == 1
        choice = {"type": "function", "function": {"name": name}} if named else "required"
        started = time.perf_counter()
        try:
            completion = client.chat.completions.create(
                model="core", messages=[{"role": "user", "content": prompt}], tools=tools, tool_choice=choice,
                max_tokens=max_tokens, temperature=0.7, seed=i)
        except openai.APIError as exc:
            errors += 1
            failures.append(f"{prompt!r}: {exc.__class__.__name__}: {getattr(exc, 'message', exc)}")
            continue
        seconds.append(time.perf_counter() - started)
        tool_calls = completion.choices[0].message.tool_calls or []
        calls += 1 if tool_calls else 0
        ok = bool(tool_calls)
        for call in tool_calls:
            try:
                jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])
            except (json.JSONDecodeError, jsonschema.ValidationError, KeyError) as exc:
                ok = False
                failures.append(f"{prompt!r}: {call.function.name} {call.function.arguments}: {exc}")
        valid += ok
        if named:
            named_right += bool(tool_calls) and all(c.function.name == name for c in tool_calls)
        progress(f"  [{i + 1}/{n}] {'ok ' if ok else 'BAD'} {seconds[-1]:5.1f}s {prompt[:40]!r} -> "
                 + ", ".join(f"{c.function.name}{c.function.arguments}" for c in tool_calls)[:110])
    return {"n": n, "valid": valid, "with_call": calls, "errors": errors, "named_right": named_right,
            "named": n // 2, "p50": percentile(seconds, 0.5), "p95": percentile(seconds, 0.95), "failures": failures}


def report(figures: dict, max_tokens: int) -> str:
    share = 100.0 * figures["valid"] / figures["n"]
    lines = [
        "## Tool-call validity (llama.cpp, tiny model, `bench/bench_tool_calls.py`)",
        "",
        f"{figures['n']} chat completions with tools ({len(TOOLS)} schemas: strings, enums, integers with "
        f"bounds, arrays, a nested object), half with `tool_choice: \"required\"` and all tools offered, half "
        f"naming the function; varied English and Russian prompts; temperature 0.7, max_tokens {max_tokens}; "
        "through the API with the official `openai` client. Arguments checked with `jsonschema`.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| answers whose tool calls all validate | **{figures['valid']}/{figures['n']} ({share:.0f}%)** |",
        f"| answers with a tool call | {figures['with_call']}/{figures['n']} |",
        f"| named-function requests that called that function | {figures['named_right']}/{figures['named']} |",
        f"| request errors | {figures['errors']} |",
        f"| latency per call p50 / p95 | {figures['p50']:.1f} s / {figures['p95']:.1f} s |",
    ]
    if figures["failures"]:
        lines += ["", "Failures:", *[f"- {f}" for f in figures["failures"][:10]]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    from bench.harness.stack import running_stack, stack_env  # the same isolated stack the tests use

    data_dir = Path(tempfile.mkdtemp(prefix="bench-tools-"))
    overrides = {**stack_env(data_dir), "APPLIANCE_MEMORY__ENABLED": "false"}
    print(f"starting a stack in {data_dir} ...", flush=True)
    with running_stack(overrides, progress=lambda line: print(f"  {line}", flush=True)) as stack:
        figures = run(stack.openai(), args.calls, args.max_tokens, progress=lambda line: print(line, flush=True))
    text = report(figures, args.max_tokens)
    print("\n" + text)
    if not args.no_write:
        write_section("tool_calls", text)
        print("\nwritten to docs/benchmarks.md (section tool_calls)")


if __name__ == "__main__":
    main()
