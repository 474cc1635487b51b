"""Prefix-cache reuse over a 10-turn conversation on vLLM's CPU build (issue 17): the
share of prompt tokens served from vLLM's prefix cache, read from vLLM's own Prometheus
counters (`vllm:prefix_cache_queries` / `vllm:prefix_cache_hits`, tokens), per turn.

One vLLM server (prefix caching on, as is vLLM 0.32's default; the flag is passed so
the figure never depends on a default) and two appliance stacks in turn, memory recall
on, which differ only in `memory.recall_position`:
- `first`: recalled memory before everything (the layout before issue 17),
- `before_question`: system prompt, history, recalled memory, question (the default).

The conversation: the owner pastes a long report into turn 1 and asks about it, then
nine short follow-ups, each sent alone (the appliance adds the stored history, as for
the Streamlit chat); every question touches another topic of the owner's seeded notes,
so the recalled text changes every turn. The share a layout can reach is
stable part / whole prompt, where the per-turn part is the recalled notes (up to
memory.context_budget_tokens), the last exchange and the new question; the report
stands in for the long history the owner keeps (~90k tokens on the GPU) within the
tiny model's 8k window.

Requests go in `mode: direct` (no router call), non-streaming, temperature 0, one at a
time, so the counters' change during a turn is that turn's. vLLM's CPU build caches in
blocks of 128 tokens, so up to 127 reusable tokens per turn are not counted as hits.

Run: .venv/bin/python -m bench.bench_prefix_cache   (~10 min on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.harness.stack import Stack, running_stack, stack_env
from bench.harness.tiny_model import tiny_hf_model_dir
from bench.harness.vllm_cpu import SERVED_NAME, VllmServer, vllm_unavailable_reason
from bench.report import write_section

LAYOUTS = ("first", "before_question")
TURNS = 10
MEASURED = range(5, TURNS + 1)      # turns 5..10
MAX_TOKENS = 64
REPORT_SECTIONS = 48                # ~5k tokens of pasted report
SYSTEM_PROMPT = ("You are the owner's assistant on their own workstation. Answer briefly and plainly, "
                 "in the language of the question. When notes from memory are given, use them only if they "
                 "help and name the source in brackets.")

TOPICS = {
    "garden": ("The tomato beds are on the south side of the garden. Tomatoes get water every second "
               "morning. The compost heap is turned on Sundays. Basil grows next to the tomatoes to keep "
               "pests away. Seeds for next spring are stored in the blue tin in the shed."),
    "car": ("The car needs an oil change every 15,000 kilometres. The last oil change was at 82,400 "
            "kilometres. Winter tyres go on in November and come off in April. The spare key hangs in "
            "the kitchen drawer. The car insurance renews every March."),
    "bakery": ("The sourdough starter is fed with rye flour twice a day. The bread proofs overnight in "
               "the fridge. The oven is preheated to 250 degrees with the Dutch oven inside. A loaf "
               "bakes 20 minutes covered and 25 minutes uncovered."),
    "cycling": ("The road bike is called Swallow. Its chain is waxed every 400 kilometres. The Sunday "
                "ride goes along the river to the old mill and back, 62 kilometres. Tyre pressure is "
                "5.5 bar in front and 6 bar at the back."),
    "server": ("The home server runs the backups every night at 02:00. Disks are checked with SMART "
               "tests on the first of each month. The UPS gives the server twelve minutes on battery. "
               "The router's admin page is at 192.168.1.1."),
    "piano": ("Piano practice is thirty minutes after dinner. The current piece is a Chopin nocturne in "
              "E flat. The piano tuner comes twice a year, in May and October. Scales first, then the "
              "hard bars slowly with the metronome at 60."),
    "travel": ("The summer trip goes to the lakes in July. The tent sleeps three and weighs 2.8 kilograms. "
               "The ferry to the island leaves at 9:15 and at 14:40. Passports expire in 2029. The camping "
               "stove uses butane cartridges."),
    "health": ("Blood pressure is measured every morning before coffee. The dentist appointment is every "
               "six months. Running three times a week, 5 kilometres each. Vitamin D in winter, one tablet "
               "a day."),
    "books": ("The reading list this year has twelve novels. Currently reading a history of the Baltic "
              "trade. The library card renews in September. Borrowed books go back within three weeks."),
    "kitchen": ("The dishwasher filter is cleaned every Saturday. The fridge is set to 4 degrees. The "
                "knife set is sharpened once a month on the whetstone. The pantry list lives on the "
                "fridge door."),
}
FOLLOW_UPS = [
    "Which section of the report mentions the pump at site 7, and how do I water my tomatoes?",
    "Summarise the readings of sites 3 to 5. Also, when is my next car oil change due?",
    "What does the report say about the crew on day 12? And how long does my sourdough bake?",
    "Which site had the highest reading? How often do I wax the chain of my road bike?",
    "What is due next at site 20? When does my home server run its backups?",
    "Is any site overdue for a check? What am I practising on the piano?",
    "Which valves were replaced? When does the ferry to the island leave?",
    "What should the crew check first next week? How often do I measure my blood pressure?",
    "List three sites that need attention. When does my library card renew?",
]


def report_text(sections: int) -> str:
    """A long, plain field report (what the owner pastes in turn 1)."""
    verbs = ["inspected", "cleaned", "repaired", "measured", "replaced a valve at", "painted", "tested"]
    things = ["the pump", "the filter housing", "the pressure gauge", "the inlet pipe", "the control cabinet"]
    lines = ["Field report of the water works, spring season."]
    for i in range(1, sections + 1):
        lines.append(
            f"Section {i}. On day {i % 28 + 1} the crew {verbs[i % len(verbs)]} {things[i % len(things)]} at site "
            f"{i}. The reading was {40 + (i * 37) % 60} units against a limit of 90 units, and the water was "
            f"{'clear' if i % 3 else 'slightly cloudy'}. The next check at site {i} is due in {7 + i % 21} days; "
            f"the crew noted that the access road to site {i} is {'dry' if i % 2 else 'muddy after rain'} "
            f"and that spare parts for site {i} are kept in store room {i % 4 + 1}.")
    return "\n\n".join(lines)


def metric(text: str, name: str) -> float:
    """Sum of a Prometheus counter over its label sets (one engine here)."""
    pattern = re.compile(rf"^{re.escape(name)}(?:_total)?(?:{{[^}}]*}})? ([0-9.eE+-]+)$", re.MULTILINE)
    return sum(float(v) for v in pattern.findall(text))


def counters(server: VllmServer) -> tuple[float, float]:
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    return metric(text, "vllm:prefix_cache_queries"), metric(text, "vllm:prefix_cache_hits")


@dataclass
class Turn:
    n: int
    prompt_tokens: int
    queries: float
    hits: float
    sources: list[str]

    @property
    def share(self) -> float:
        return self.hits / self.queries if self.queries else 0.0


def seed_notes(stack: Stack) -> None:
    files = [("files", (f"{name}.md", f"# {name.title()} notes\n\n{text}\n".encode(), "text/markdown"))
             for name, text in TOPICS.items()]
    with stack.http(timeout=600) as http:
        resp = http.post("/documents", files=files)
        resp.raise_for_status()


def ask(stack: Stack, cid: str, content: str) -> dict:
    # The conversation id opens the system prompt, so one layout's run can never reuse
    # blocks cached by the other's.
    body = {"model": "core", "mode": "direct", "conversation_id": cid, "max_tokens": MAX_TOKENS,
            "temperature": 0, "stream": False,
            "messages": [{"role": "system", "content": f"[{cid}] {SYSTEM_PROMPT}"},
                         {"role": "user", "content": content}]}
    with stack.http(timeout=600) as http:
        resp = http.post("/v1/chat/completions", json=body)
    resp.raise_for_status()
    return resp.json()


def conversation(stack: Stack, server: VllmServer, say=print) -> list[Turn]:
    cid = f"prefix-{uuid.uuid4().hex[:12]}"
    questions = [report_text(REPORT_SECTIONS) + "\n\nThis is my field report. Which sites had cloudy water?"]
    questions += FOLLOW_UPS[: TURNS - 1]
    turns: list[Turn] = []
    for n, question in enumerate(questions, start=1):
        q0, h0 = counters(server)
        answer = ask(stack, cid, question)
        q1, h1 = counters(server)
        turn = Turn(n=n, prompt_tokens=answer["usage"]["prompt_tokens"], queries=q1 - q0, hits=h1 - h0,
                    sources=[s["source"] for s in answer.get("sources", [])])
        turns.append(turn)
        say(f"  turn {n}: {turn.prompt_tokens} prompt tokens, {turn.hits:.0f}/{turn.queries:.0f} from the "
            f"prefix cache ({turn.share:.2f}); recalled {turn.sources}")
    return turns


def stack_for(server: VllmServer, layout: str) -> dict[str, str]:
    env = stack_env(Path(tempfile.mkdtemp(prefix=f"bench-prefix-{layout}-")))
    env.update({"APPLIANCE_MODELS__CORE__BACKEND": "openai", "APPLIANCE_MODELS__CORE__BASE_URL": server.base_url,
                "APPLIANCE_MODELS__CORE__SERVED_MODEL": SERVED_NAME,
                "APPLIANCE_MEMORY__ENABLED": "true", "APPLIANCE_MEMORY__RECALL_POSITION": layout})
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object per layout")
    args = parser.parse_args()
    reason = vllm_unavailable_reason()
    if reason:
        raise SystemExit(reason)
    # 1 GiB of KV cache (~23k tokens of this model) holds a turn and its predecessor's blocks.
    server = VllmServer(model_dir=tiny_hf_model_dir(), extra_args=("--enable-prefix-caching",),
                        extra_env={"VLLM_CPU_KVCACHE_SPACE": "1"}, progress=print)
    results: dict[str, list[Turn]] = {}
    with server:
        for layout in LAYOUTS:
            print(f"layout {layout!r}: starting a stack", flush=True)
            with running_stack(stack_for(server, layout), progress=print) as stack:
                seed_notes(stack)
                results[layout] = conversation(stack, server)
    write_report(results, as_json=args.json)


def write_report(results: dict[str, list[Turn]], as_json: bool = False) -> None:
    rows = ["| turn | prompt tokens | from cache, old layout (memory first) | from cache, stable prefix (memory "
            "before the question) |", "|---|---|---|---|"]
    old, new = results["first"], results["before_question"]
    for a, b in zip(old, new):
        rows.append(f"| {a.n} | {b.prompt_tokens} | {a.share:.2f} ({a.hits:.0f}/{a.queries:.0f}) | "
                    f"{b.share:.2f} ({b.hits:.0f}/{b.queries:.0f}) |")
    lines = []
    for layout, turns in results.items():
        measured = [t for t in turns if t.n in MEASURED]
        hits, queries = sum(t.hits for t in measured), sum(t.queries for t in measured)
        share = hits / queries if queries else 0.0
        changed = sum(t.sources != turns[t.n - 2].sources for t in measured)
        lines.append(f"- `{layout}`: turns {MEASURED.start}-{MEASURED.stop - 1}: **{share:.2f}** of prompt tokens "
                     f"from the prefix cache ({hits:.0f} of {queries:.0f}); the recalled sources differed from "
                     f"the previous turn's in {changed} of {len(measured)} turns")
        if as_json:
            print(json.dumps({"layout": layout, "share_turns_5_10": round(share, 4), "hits": hits,
                              "queries": queries, "turns": [t.__dict__ | {"share": t.share} for t in turns]}))
    markdown = ("## Prefix cache over a 10-turn conversation, vLLM CPU (issue 17)\n\n"
                "Share of each turn's prompt tokens served from vLLM's prefix cache (its own counters "
                "`vllm:prefix_cache_hits` / `vllm:prefix_cache_queries`), memory recall on, tiny SmolLM2-135M "
                f"on vLLM 0.32 CPU (prefix caching on, 128-token blocks), {MAX_TOKENS} max tokens per answer. "
                "Turn 1 pastes a ~5k-token report, turns 2-10 are short follow-ups recalling other notes each "
                "time. Same server, same conversation, two stacks differing only in `memory.recall_position`. "
                "Target: >= 0.8 at turns 5-10.\n\n" + "\n".join(lines) + "\n\n" + "\n".join(rows))
    print(markdown)
    write_section("prefix-cache", markdown)


if __name__ == "__main__":
    main()
