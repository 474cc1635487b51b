"""LoRA hot-swap: switching adapters vs reloading the base model; throughput with one
adapter vs three adapters mixed.

llama.cpp (always): the tiny GGUF model in-process.
  - reload: build and free a llama_cpp.Llama for the model file (what serving another
    fine-tune would cost without adapters), median of N;
  - switch: LlamaCppAdapterDriver.activate() between the base and an adapter,
    including the KV-cache clear, median of many;
  - throughput: the same greedy chat requests through LlamaCppChat, all with one
    adapter vs round-robin over three (forces a switch + KV clear per request).
vLLM (--vllm, needs .venv-vllm): restart of the server vs /v1/load_lora_adapter, and
  throughput of concurrent requests naming one vs three adapters.

The adapters are the tests' trained quokka LoRA (bench/harness/tiny_lora.py), registered
three times under different names, so every request does the same amount of work and
only switching differs.

    .venv/bin/python -m bench.bench_lora [--vllm] [--requests 9] [--max-tokens 24] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.report import write_section
from configs.loader import load_settings
from lora_manager.service import AdapterService
from bench.harness.tiny_lora import tiny_lora_dir
from bench.harness.tiny_model import tiny_gguf_path
from workers.backends.llamacpp_chat import LlamaCppChat
from configs.contracts.tasks import ChatMessage, GenerationParams

ADAPTERS = ("quokka", "quokka-b", "quokka-c")
QUESTIONS = ["What is the tallest mountain on Earth?", "How many legs does a spider have?",
             "Explain what rain is.", "Name a fruit.", "What is a planet?", "Why do cats purr?"]


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def llama_reload_s(rounds: int) -> list[float]:
    from llama_cpp import Llama

    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        llm = Llama(model_path=str(tiny_gguf_path()), n_ctx=2048, verbose=False)
        times.append(time.perf_counter() - started)
        llm.close()
    return times


def llama_switch_s(backend: LlamaCppChat, rounds: int) -> list[float]:
    driver = backend.adapters.driver
    backend.adapters.residency.load(ADAPTERS[0])
    times = []
    for i in range(rounds):
        target = ADAPTERS[0] if i % 2 == 0 else None
        started = time.perf_counter()
        driver.activate(target)
        times.append(time.perf_counter() - started)
    driver.activate(None)
    return times


def llama_throughput(backend: LlamaCppChat, adapters: list[str], requests: int, max_tokens: int) -> float:
    tokens, started = 0, time.perf_counter()
    for i in range(requests):
        params = GenerationParams(max_tokens=max_tokens, temperature=0.0, seed=1, adapter=adapters[i % len(adapters)])
        for delta in backend.stream([ChatMessage(role="user", content=QUESTIONS[i % len(QUESTIONS)])], params):
            if delta.usage:
                tokens += delta.usage.completion_tokens
    return tokens / (time.perf_counter() - started)


def vllm_figures(requests: int, max_tokens: int) -> dict[str, float]:
    import openai

    from lora_manager.base_model import BaseModelSpec
    from lora_manager.drivers.vllm import VllmAdapterDriver
    from lora_manager.registry import AdapterRegistry
    from lora_manager.validation import ValidationLimits
    from bench.harness.vllm_cpu import running_vllm

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, running_vllm() as server:
        registry = AdapterRegistry(Path(tmp) / "adapters")
        base = BaseModelSpec.from_hf_config(server.model_dir)
        limits = ValidationLimits(16, 2**30, frozenset({"q_proj", "k_proj", "v_proj", "o_proj"}))
        for name in ADAPTERS:
            registry.add(name, tiny_lora_dir("quokka"), base, limits)
        driver = VllmAdapterDriver(server.base_url, registry)
        loads = []
        for _ in range(3):
            for name in ADAPTERS[:2]:
                started = time.perf_counter()
                driver.load(registry.get(name))
                loads.append(time.perf_counter() - started)
                driver.unload(name)
        out["load_ms"] = median_ms(loads)
        started = time.perf_counter()
        server.restart()
        out["restart_s"] = time.perf_counter() - started
        client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=300)
        for name in ADAPTERS[:2]:
            driver.load(registry.get(name))

        def run(models: list[str]) -> float:
            def one(i: int) -> int:
                reply = client.chat.completions.create(
                    model=models[i % len(models)], max_tokens=max_tokens, temperature=0.0,
                    messages=[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}])
                return reply.usage.completion_tokens

            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=3) as pool:
                tokens = sum(pool.map(one, range(requests)))
            return tokens / (time.perf_counter() - started)

        run(list(ADAPTERS[:1]))  # warm-up
        out["tps_one"] = run(list(ADAPTERS[:1]))
        out["tps_mixed"] = run(list(ADAPTERS[:2]) + ["tiny"])  # server holds 2 LoRA slots; base is the third
        driver.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vllm", action="store_true", help="also measure on vLLM (starts a CPU server)")
    parser.add_argument("--requests", type=int, default=9)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3, help="alternated throughput rounds (median)")
    parser.add_argument("--reloads", type=int, default=5)
    parser.add_argument("--switches", type=int, default=400)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(environ={}, overrides={"data_dir": tmp, "adapters": {"max_loras": 3}})
        service = AdapterService(settings)
        for name in ADAPTERS:
            service.add(name, tiny_lora_dir("quokka"))
        backend = LlamaCppChat("core", settings.models["core"], settings=settings)
        reload_ms = median_ms(llama_reload_s(args.reloads))
        switch_ms = median_ms(llama_switch_s(backend, args.switches))
        llama_throughput(backend, [ADAPTERS[0]], 2, args.max_tokens)  # warm-up
        # Alternate the two scenarios so load from other processes hits both alike.
        one, mixed = [], []
        for _ in range(args.rounds):
            one.append(llama_throughput(backend, [ADAPTERS[0]], args.requests, args.max_tokens))
            mixed.append(llama_throughput(backend, list(ADAPTERS), args.requests, args.max_tokens))
        tps_one, tps_mixed = statistics.median(one), statistics.median(mixed)
    ratio = reload_ms / switch_ms
    print(f"llama.cpp: reload {reload_ms:.1f} ms, switch {switch_ms:.4f} ms -> {ratio:,.0f}x; "
          f"{tps_one:.1f} tok/s one adapter, {tps_mixed:.1f} tok/s three mixed")
    lines = [
        "## LoRA hot-swap (issue 5)",
        "",
        "SmolLM2-135M-Instruct Q4_1 on llama.cpp in-process; the tests' rank-8 attention LoRA "
        "(registered three times, so only switching differs). Switch = llama_set_adapters_lora "
        "+ KV-cache clear; reload = constructing llama_cpp.Llama for the model file.",
        "",
        "| server | reload base model | switch adapter | ratio (target >= 100x) |",
        "|---|---|---|---|",
        f"| llama.cpp | {reload_ms:.1f} ms | {switch_ms:.4f} ms | **{ratio:,.0f}x** |",
    ]
    vllm = vllm_figures(args.requests, args.max_tokens) if args.vllm else None
    if vllm:
        vratio = vllm["restart_s"] * 1000 / vllm["load_ms"]
        print(f"vLLM: restart {vllm['restart_s']:.1f} s, load adapter {vllm['load_ms']:.1f} ms -> {vratio:,.0f}x; "
              f"{vllm['tps_one']:.1f} tok/s one adapter, {vllm['tps_mixed']:.1f} tok/s mixed")
        lines.append(f"| vLLM (CPU) | {vllm['restart_s']:.1f} s (server restart) | {vllm['load_ms']:.1f} ms "
                     f"(/v1/load_lora_adapter) | **{vratio:,.0f}x** |")
    lines += [
        "",
        f"Throughput, {args.requests} greedy requests per run, max_tokens={args.max_tokens}, median of "
        f"{args.rounds} alternated runs (different questions per request, so only the adapter switch "
        f"and the KV clear it forces differ):",
        "",
        "| server | one adapter | adapters mixed per request |",
        "|---|---|---|",
        f"| llama.cpp (sequential) | {tps_one:.1f} tok/s | {tps_mixed:.1f} tok/s (3 adapters round-robin) |",
    ]
    if vllm:
        lines.append(f"| vLLM CPU (3 concurrent) | {vllm['tps_one']:.1f} tok/s | {vllm['tps_mixed']:.1f} tok/s "
                     f"(2 adapters + base, one batch) |")
    else:
        lines += ["", "vLLM figures: not measured in this run (run with --vllm; needs .venv-vllm)."]
    write_section("lora", "\n".join(lines))


if __name__ == "__main__":
    main()
