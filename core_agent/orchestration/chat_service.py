"""One chat turn, end to end: store the question, route it, plan and run steps if
needed, recall memory, stream the final answer, store it, record the task.

The HTTP layer only translates between this service and the wire formats. The whole
turn runs as a background asyncio task, so it is stored and recorded even if the
client disconnects halfway through a stream, and can be cancelled by id.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import sqlite3
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Protocol

from configs.schema import Settings
from configs.telemetry import TASK_ID_ATTRIBUTE, tracer
from core_agent.access.principal import Principal, ScopeDenied, authorize_chat
from core_agent.orchestration.composer import answer_messages, failure_summary
from core_agent.stores.conversations import ConversationStore
from core_agent.orchestration.dispatcher import DispatchError, Dispatcher
from core_agent.orchestration.plan_runner import PlanRunner, StepContext
from core_agent.orchestration.planner import Planner
from core_agent.orchestration.plans import InvalidPlan, Plan
from core_agent.orchestration.router import ROUTE_PROMPT, ROUTE_SCHEMA, Mode, Router
from core_agent.orchestration import traffic
from configs.traffic_schema import MemoryMode
from core_agent.orchestration import tool_calls
from core_agent.stores.task_store import TaskStore
from lora_manager.errors import AdapterError
from lora_manager.policy import AdapterGate
from lora_manager.settings_glue import registry as adapter_registry
from rag.chunking import count_tokens
from configs.contracts.tasks import Attachment, ChatMessage, ChatTask, GenerationParams, TaskResult
from configs.contracts.errors import ErrorInfo

log = logging.getLogger("appliance.chat")

CONVERSATION_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
CHAT_QUEUE = "chat"


class ChatFailed(Exception):
    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(info.message)
        self.info = info


class BadChatRequest(ChatFailed):
    def __init__(self, message: str) -> None:
        super().__init__(ErrorInfo(code="bad_request", message=message, status=400))


class MemoryContextLike(Protocol):
    messages: list[ChatMessage]
    sources: list[Any]


class Memory(Protocol):
    """What the chat path needs from the memory (core_agent/orchestration/memory_client.py's MemoryClient)."""

    async def retrieve_context(self, query: str, conversation_id: str | None = None,
                               exclude_recent: int | None = None, scope: Any = None) -> MemoryContextLike: ...

    def kick(self) -> None: ...


def fit_history(messages: list[ChatMessage], cap_tokens: int) -> list[ChatMessage]:
    """Keep system messages and the newest turns within `cap_tokens` (word-level estimate);
    the last message (the question) is always kept."""
    system = [m for m in messages if m.role == "system"]
    rest = [m for m in messages if m.role != "system"]
    budget = cap_tokens - sum(count_tokens(m.text()) for m in system)
    kept: list[ChatMessage] = []
    for message in reversed(rest):
        cost = count_tokens(message.text())
        if kept and cost > budget:
            break
        kept.append(message)
        budget -= cost
    return system + list(reversed(kept))


@dataclass
class ChatTurn:
    """A chat request as the core sees it, independent of the HTTP format."""

    model: str
    messages: list[ChatMessage]
    params: GenerationParams = field(default_factory=GenerationParams)
    conversation_id: str | None = None
    stream: bool = True
    mode: Mode = "auto"
    profile: str | None = None
    source: str = "owner"                  # "owner" or "webhook:<name>"
    allow_code_execution: bool = False
    allowed_workers: set[str] | None = None  # None = all
    attachments: list[Attachment] = field(default_factory=list)
    plan: Plan | None = None               # an explicit plan from the request
    explicit_adapter: str | None = None    # the adapter the request named, before policy
    # What the request asked for (None = the request class's default, configs/traffic.yaml).
    memory: MemoryMode | None = None
    priority: traffic.Priority | None = None
    client: str | None = None              # X-Appliance-Client ("ui" for the Streamlit UI)
    policy: traffic.TurnPolicy | None = None  # resolved by ChatService.start
    # Who asks; its scope limits all of the above. No default on purpose: a turn built
    # without one is refused (fail closed), never run with the owner's rights.
    principal: Principal | None = None

    @property
    def who(self) -> Principal:
        assert self.principal is not None, "ChatService._authorize refuses turns without a principal"
        return self.principal


@dataclass(frozen=True)
class Thought:
    """A piece of the model's reasoning in a ChatRun's stream (answer text pieces are
    plain str). The HTTP layer sends it as `reasoning_content`, never as content."""

    text: str


@dataclass
class ChatRun:
    """A turn in progress. Read `pieces()` for streamed text, or await `result()`."""

    task_id: str
    conversation_id: str
    model: str
    sources: list[dict[str, Any]] = field(default_factory=list)
    _pieces: asyncio.Queue = field(default_factory=asyncio.Queue)
    _outcome: asyncio.Future | None = None
    _planning: asyncio.Event = field(default_factory=asyncio.Event)

    async def pieces(self) -> AsyncIterator[str | Thought]:
        """New answer text (str) and reasoning (Thought) as they arrive; raises ChatFailed
        if the turn fails."""
        while True:
            item = await self._pieces.get()
            if item is None:
                break
            yield item
        await self.result()

    async def result(self) -> TaskResult:
        assert self._outcome is not None
        return await asyncio.shield(self._outcome)

    async def first_piece(self) -> str | Thought | None:
        """Wait for the first text (or the end); raises ChatFailed before any text is sent,
        so the HTTP layer can still choose the status code (a missing model is a 503).

        A planned turn returns "" as soon as its plan starts, so a streaming client gets
        the task id (and can follow /tasks/{id}/events) while the steps run."""
        getter = asyncio.ensure_future(self._pieces.get())
        planning = asyncio.ensure_future(self._planning.wait())
        await asyncio.wait({getter, planning}, return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():
            getter.cancel()
            return ""
        planning.cancel()
        item = getter.result()
        if item is None:
            await self.result()
        return item


class ChatService:
    def __init__(self, settings: Settings, store: ConversationStore, dispatcher: Dispatcher,
                 tasks: TaskStore, memory: Memory | None = None) -> None:
        self.settings = settings
        self.store = store
        self.dispatcher = dispatcher
        self.tasks = tasks
        self.memory = memory
        self.router = Router(settings.router)
        self.planner = Planner(settings, dispatcher)
        self.adapters = AdapterGate(settings.adapters, adapter_registry(settings), settings.routes)
        self.runner = PlanRunner(settings, dispatcher, tasks, self.adapters)
        self._turns: dict[str, asyncio.Task] = {}

    # --- starting a turn ---------------------------------------------------------

    def _check(self, turn: ChatTurn) -> None:
        if turn.model not in self.settings.models:
            raise ChatFailed(ErrorInfo(
                code="model_not_found", status=404,
                message=f"model '{turn.model}' does not exist. Available: {sorted(self.settings.models)}"))
        if turn.profile is not None and turn.profile not in self.settings.profiles:
            raise BadChatRequest(f"profile '{turn.profile}' does not exist. Available: {sorted(self.settings.profiles)}")
        if not any(m.role == "user" for m in turn.messages):
            raise BadChatRequest("messages must contain at least one message with role 'user'")

    def _conversation_for(self, turn: ChatTurn, title: str) -> tuple[str, bool]:
        """The conversation id to use, and whether it already existed."""
        cid = turn.conversation_id
        namespace = turn.who.namespace
        if cid is None:
            return self.store.create(title=title[:60] or "New conversation", namespace=namespace).id, False
        if not CONVERSATION_ID_RE.match(cid):
            raise BadChatRequest("conversation_id must be 1-128 characters of letters, digits and _.:- "
                                 f"(got {cid[:40]!r})")
        owner_of = self.store.namespace_of(cid)
        if owner_of is not None:
            if not turn.who.may_address(owner_of):
                # Someone else's thread: refused like an unknown id, never joined or taken over.
                raise ChatFailed(ErrorInfo(code="not_found", status=404, message=f"conversation '{cid}' does not exist"))
            return cid, True
        # An unknown id is created, so workflow tools can use their own thread ids.
        try:
            return self.store.create(title=title[:60] or "New conversation", conversation_id=cid,
                                     namespace=namespace).id, False
        except sqlite3.IntegrityError:  # another request created it a moment ago
            return cid, True

    def _prompt(self, turn: ChatTurn, cid: str, existing: bool) -> list[ChatMessage]:
        """Messages for the model. Stored history is prepended only when the client sent
        just the new turn (no assistant messages); clients that send the full history
        (the OpenAI convention) are taken as they are."""
        if not existing or any(m.role == "assistant" for m in turn.messages):
            return turn.messages
        if not turn.who.may_read(turn.who.namespace):
            return turn.messages  # its scope reads no threads, not even its own
        stored = self.store.messages(cid, limit=self.settings.history_messages)
        history = [ChatMessage(role=m.role, content=m.content)  # type: ignore[arg-type]
                   for m in stored if m.role in ("user", "assistant")]
        system = [m for m in turn.messages if m.role == "system"]
        rest = [m for m in turn.messages if m.role != "system"]
        return system + history + rest

    def _capped(self, turn: ChatTurn, prompt: list[ChatMessage]) -> list[ChatMessage]:
        """Drop the oldest history turns until the prompt fits the profile's context_cap."""
        cap = self.settings.profiles[turn.profile or self.settings.default_profile].context_cap
        if cap is None:
            return prompt
        return fit_history(prompt, cap)

    def _params(self, turn: ChatTurn) -> GenerationParams:
        """Request parameters over the chosen profile's defaults."""
        profile = self.settings.profiles[turn.profile or self.settings.default_profile]
        params = turn.params.model_copy()
        params.max_tokens = params.max_tokens or profile.max_tokens
        params.temperature = profile.temperature if params.temperature is None else params.temperature
        params.thinking = profile.thinking if params.thinking is None else params.thinking
        if params.seed is None:
            # A fixed seed per task lets a redelivered task regenerate the same text.
            params.seed = random.randrange(2**31)
        return params

    def _gate_adapter(self, turn: ChatTurn) -> None:
        """Apply the adapter policy to the answer: an explicit adapter must be allowed for
        chat from this source (else 403/404); otherwise the rules may pick one, or none."""
        try:
            chosen = self.adapters.resolve(turn.params.adapter, "chat", turn.source, turn.profile)
        except AdapterError as exc:
            raise ChatFailed(exc.info()) from None
        adapter = chosen.adapter
        if adapter and not turn.params.adapter and not turn.who.may_use_adapter(adapter):
            adapter = None  # a rule picked one its scope does not grant: the base model answers
        turn.params = turn.params.model_copy(update={"adapter": adapter})

    def _authorize(self, turn: ChatTurn) -> None:
        """The principal's scope (403 naming the missing scope); its id is the request source."""
        if turn.principal is None:
            raise ChatFailed(ErrorInfo(code="internal", status=500, message=(
                "this request path built a chat turn without a principal; refusing it rather than "
                "answering with the owner's rights (pass principal= to ChatTurn)")))
        try:
            turn.allowed_workers = authorize_chat(
                turn.who, turn.profile or self.settings.default_profile, turn.params.adapter,
                turn.allow_code_execution, turn.allowed_workers)
        except ScopeDenied as exc:
            raise ChatFailed(exc.info()) from None
        if not turn.who.is_owner:
            turn.source = turn.who.id

    def _unstored_conversation(self, turn: ChatTurn) -> tuple[str, bool]:
        """A turn that is not stored creates no conversation: the client's id (if any) is
        echoed, otherwise a fresh one that exists nowhere."""
        cid = turn.conversation_id
        if cid is None:
            return uuid.uuid4().hex, False
        if not CONVERSATION_ID_RE.match(cid):
            raise BadChatRequest("conversation_id must be 1-128 characters of letters, digits and _.:- "
                                 f"(got {cid[:40]!r})")
        owner_of = self.store.namespace_of(cid)
        if owner_of is not None and not turn.who.may_address(owner_of):
            # Someone else's thread: as unknown, and its history is never read.
            raise ChatFailed(ErrorInfo(code="not_found", status=404, message=f"conversation '{cid}' does not exist"))
        return cid, owner_of is not None

    async def start(self, turn: ChatTurn) -> ChatRun:
        self._check(turn)
        self._authorize(turn)
        cls = traffic.classify(turn.source, turn.client, turn.priority, turn.messages, self.settings.traffic)
        policy = turn.policy = traffic.policy_for(cls, turn.memory, self.settings.traffic)
        turn.explicit_adapter = turn.params.adapter
        self._gate_adapter(turn)
        question = next(m.text() for m in reversed(turn.messages) if m.role == "user")
        # SQLite runs in a thread: the event loop never waits on the disk.
        if policy.stores_turn:
            cid, existing = await asyncio.to_thread(self._conversation_for, turn, question)
        else:
            cid, existing = await asyncio.to_thread(self._unstored_conversation, turn)
        prompt = self._capped(turn, await asyncio.to_thread(self._prompt, turn, cid,
                                                            existing and policy.reads_memory))
        task_id = uuid.uuid4().hex
        if policy.stores_turn and not (existing and tool_calls.continues_tool_calls(turn.messages)):
            await asyncio.to_thread(self.store.append, cid, "user", question, task_id=task_id, model=turn.model,
                                    meta={"images": len(turn.attachments)} if turn.attachments else None)
        run = ChatRun(task_id=task_id, conversation_id=cid, model=turn.model)
        run._outcome = asyncio.get_running_loop().create_future()
        job = asyncio.create_task(self._turn(run, turn, question, prompt))
        self._turns[task_id] = job
        job.add_done_callback(lambda _: self._turns.pop(task_id, None))
        return run

    async def cancel(self, task_id: str) -> bool:
        """Cancel a running turn: revoke its pending steps. False if it is not running."""
        job = self._turns.get(task_id)
        if job is None:
            return False
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
        for celery_id in (task_id, f"{task_id}:plan", f"{task_id}:answer"):
            await self.dispatcher.revoke(celery_id)
        return True

    # --- running a turn ------------------------------------------------------------

    async def _ask_route(self, question: str) -> str:
        task = ChatTask(model=self.settings.planner.model, stream=False,
                        messages=[ChatMessage(role="system", content=ROUTE_PROMPT),
                                  ChatMessage(role="user", content=question)],
                        params=GenerationParams(max_tokens=self.settings.router.model_max_tokens, temperature=0.0,
                                                thinking=False, seed=0, response_format={
                                                    "type": "json_schema",
                                                    "json_schema": {"name": "route", "schema": ROUTE_SCHEMA}}))
        return (await self.dispatcher.call("chat.generate", task.model_dump(), queue=CHAT_QUEUE)).text

    async def _plan_steps(self, run: ChatRun, turn: ChatTurn, question: str,
                          prompt: list[ChatMessage]) -> tuple[list[ChatMessage], str | None]:
        """Plan and run the steps; return the messages for the final answer and, if
        steps failed, what failed."""
        try:
            with tracer().start_as_current_span("plan"):
                plan = await self.planner.plan(question, run.task_id, turn.plan, bool(turn.attachments),
                                               turn.allowed_workers)
        except (InvalidPlan, DispatchError) as exc:
            # Never a 500: a request we cannot plan is answered directly.
            log.warning("task %s: no usable plan, answering directly: %s", run.task_id, exc)
            await self.tasks.set_plan(run.task_id, {"steps": [], "fallback": str(exc)}, {}, mode="direct")
            return prompt, None
        queues = {kind: route.queue for kind, route in self.settings.routes.items()}
        await self.tasks.set_plan(run.task_id, plan.model_dump(), queues)
        ctx = StepContext(attachments=turn.attachments, allow_code_execution=turn.allow_code_execution,
                          profile=turn.profile, adapter=turn.explicit_adapter, source=turn.source,
                          memory_scope=turn.who.memory_filter(), principal=turn.who)
        outcomes = await self.runner.run(run.task_id, plan, ctx)
        failed = failure_summary(outcomes)
        if failed:
            log.warning("task %s: steps failed: %s", run.task_id, failed)
        return answer_messages(prompt, question, plan, outcomes), failed

    async def _turn(self, run: ChatRun, turn: ChatTurn, question: str, prompt: list[ChatMessage]) -> None:
        # One trace per task: route -> plan -> each step -> model calls (docs/observability.md).
        with tracer().start_as_current_span("task", attributes={TASK_ID_ATTRIBUTE: run.task_id,
                                                                "appliance.source": turn.source}):
            await self._traced_turn(run, turn, question, prompt)

    async def _traced_turn(self, run: ChatRun, turn: ChatTurn, question: str, prompt: list[ChatMessage]) -> None:
        assert run._outcome is not None
        status, error = "failed", None
        try:
            mode = "plan" if turn.plan is not None else turn.mode  # an explicit plan is run as given
            if tool_calls.calls_tools(turn.params):
                mode = "direct"  # the client's agent plans; the model must see its tools
            with tracer().start_as_current_span("route") as span:
                decision = await self.router.decide(question, mode, bool(turn.attachments), self._ask_route)
                span.set_attributes({"appliance.route": decision.route, "appliance.route_reason": decision.reason})
            await self.tasks.create(run.task_id, run.conversation_id, decision.route, turn.source, decision.reason)
            messages, failed = prompt, None
            answer_id = run.task_id
            if decision.route == "plan":
                run._planning.set()
                messages, failed = await self._plan_steps(run, turn, question, prompt)
                # ':' cannot occur in a step id (plans.STEP_ID), so the final answer never
                # shares a Celery id and event stream with a step named "answer" (image_plan's).
                answer_id = f"{run.task_id}:answer"
            policy = turn.policy or traffic.policy_for("owner", turn.memory, self.settings.traffic)
            if self.memory is not None and policy.reads_memory and turn.who.reads_memory():
                recalled = await self.memory.retrieve_context(question, run.conversation_id,
                                                              scope=turn.who.memory_filter())
                run.sources = [s.model_dump() for s in recalled.sources]
                messages = list(recalled.messages) + messages
            task = ChatTask(model=turn.model, messages=messages, params=self._params(turn), stream=True)
            with tracer().start_as_current_span("answer"):
                await self.dispatcher.submit("chat.generate", task.model_dump(), task_id=answer_id,
                                             queue=policy.queue)
                result = await self._follow(run, answer_id, policy.queue)
            checked = tool_calls.checked(result, turn.params)
            if isinstance(checked, ErrorInfo):
                raise ChatFailed(checked)
            result = checked
            if failed:
                # The owner must learn what failed even if the model glosses over it.
                note = f"\n\n[Not everything worked: {failed}]"
                run._pieces.put_nowait(note)
                result = result.model_copy(update={"text": result.text + note})
            if policy.stores_turn and tool_calls.stores_answer(result):
                meta = {"usage": result.usage.model_dump(), "finish_reason": result.finish_reason,
                        "attempt": result.attempt, "sources": run.sources}
                await asyncio.to_thread(self.store.append, run.conversation_id, "assistant", result.text,
                                        task_id=run.task_id, model=run.model, meta=meta)
            run._outcome.set_result(result)
            status, error = ("failed", failed) if failed else ("succeeded", None)
            if self.memory is not None and policy.stores_turn:
                self.memory.kick()  # index the new turns now rather than at the next poll
        except asyncio.CancelledError:
            status, error = "cancelled", "cancelled by the owner"
            run._outcome.set_exception(ChatFailed(ErrorInfo(code="cancelled", status=409, message=error)))
        except ChatFailed as exc:
            error = exc.info.message
            run._outcome.set_exception(exc)
        except DispatchError as exc:
            error = exc.info.message
            run._outcome.set_exception(ChatFailed(exc.info))
        except Exception as exc:  # never leave a client waiting on a broken turn
            log.exception("task %s failed", run.task_id)
            error = f"{exc.__class__.__name__}: {exc}"
            run._outcome.set_exception(ChatFailed(ErrorInfo(code="internal", status=500, message=error)))
        finally:
            run._pieces.put_nowait(None)
            # Retrieve the exception so asyncio does not log it as never retrieved.
            run._outcome.add_done_callback(lambda f: f.cancelled() or f.exception())
            try:
                await asyncio.shield(self.tasks.finish(run.task_id, status, error=error, sources=run.sources))
            except Exception:
                log.exception("could not record the end of task %s", run.task_id)

    async def _follow(self, run: ChatRun, answer_id: str, queue: str = CHAT_QUEUE) -> TaskResult:
        """Forward the answer's text once, across redeliveries, and return its result."""
        forwarded = 0      # characters already handed to the client
        current = ""       # text of the attempt now running
        attempt = 1
        thought, thought_sent = "", 0  # the same, for the reasoning
        async for event in self.dispatcher.events(answer_id, queue):
            if event.attempt > attempt:
                # The worker died and the task was redelivered: the new attempt
                # regenerates (same seed) and only text beyond what was sent goes out.
                log.warning("task %s redelivered (attempt %d)", answer_id, event.attempt)
                attempt, current, thought = event.attempt, "", ""
            if event.type == "reasoning":
                thought += event.text
                if len(thought) > thought_sent:
                    run._pieces.put_nowait(Thought(thought[thought_sent:]))
                    thought_sent = len(thought)
            elif event.type == "token":
                current += event.text
                if len(current) > forwarded:
                    run._pieces.put_nowait(current[forwarded:])
                    forwarded = len(current)
            elif event.type == "done" and event.result is not None:
                return event.result
            elif event.type == "error" and event.error is not None:
                raise ChatFailed(event.error)
        raise ChatFailed(ErrorInfo(code="internal", status=500, message="the answer ended without a result"))
