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
from core_agent.orchestration.piece_batching import take_queued
from core_agent.orchestration.plan_runner import PlanRunner, StepContext
from core_agent.orchestration.planner import Planner
from core_agent.orchestration.plans import InvalidPlan, Plan, turn_call_id, validate_plan
from core_agent.orchestration.prompt_layout import history_window, with_recalled
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
from configs.redis_connect import BROKER_DOWN, broker_down_info

log = logging.getLogger("appliance.chat")

CONVERSATION_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
CHAT_QUEUE = "chat"
# The turn's own model calls beside its steps (plans.turn_call_id); cancel revokes them all.
TURN_CALLS = ("route", "plan", "plan-repair", "answer")


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
    plan_origin: str | None = None  # planned turns: model | repaired | template | direct | caller
    _pieces: asyncio.Queue = field(default_factory=asyncio.Queue)
    _outcome: asyncio.Future | None = None
    _planning: asyncio.Event = field(default_factory=asyncio.Event)
    # Set while the answer waits behind busy workers (no worker has started it yet): the
    # stream opens and says so (core_agent/api/sse_keepalive.py).
    queued: asyncio.Event = field(default_factory=asyncio.Event)
    # Set once the task record holds the turn's end: a client that has the answer (or
    # the error) then finds the same outcome at /tasks/{id}, never a stale 'running'.
    _recorded: asyncio.Event = field(default_factory=asyncio.Event)
    # The stored question, undone if the turn is refused (see ChatService._undo_refused).
    _question_id: int | None = None
    _new_conversation: bool = False

    async def pieces(self) -> AsyncIterator[str | Thought]:
        """New answer text (str) and reasoning (Thought) as they arrive; raises ChatFailed
        if the turn fails."""
        held: list = []
        while True:
            item = held.pop() if held else await self._pieces.get()
            if item is None:
                break
            item, held = take_queued(self._pieces, item)  # send what arrived, as one piece
            yield item
        await self.result()

    async def result(self) -> TaskResult:
        assert self._outcome is not None
        try:
            return await asyncio.shield(self._outcome)
        finally:
            await self._recorded.wait()

    async def first_piece(self) -> str | Thought | None:
        """Wait for the first text (or the end); raises ChatFailed before any text is sent,
        so the HTTP layer can still choose the status code (a missing model is a 503).

        A planned turn returns "" as soon as its plan is decided (before its steps run), so a
        streaming client gets the task id and the plan's origin (and can follow
        /tasks/{id}/events) while the steps run."""
        getter = asyncio.ensure_future(self._pieces.get())
        planning = asyncio.ensure_future(self._planning.wait())
        queued = asyncio.ensure_future(self.queued.wait())  # behind busy workers: open the stream too
        await asyncio.wait({getter, planning, queued}, return_when=asyncio.FIRST_COMPLETED)
        queued.cancel()
        if not getter.done():
            getter.cancel()
            planning.cancel()
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

    def _open_turn(self, turn: ChatTurn, policy: traffic.TurnPolicy, question: str,
                   task_id: str) -> tuple[str, bool, list[ChatMessage], int | None]:
        """The turn's conversation (created if new), its prompt, and the stored question's
        id (None when the turn is not stored). Runs in a thread: it reads and writes SQLite."""
        if policy.stores_turn:
            cid, existing = self._conversation_for(turn, question)
        else:
            cid, existing = self._unstored_conversation(turn)
        prompt = self._capped(turn, self._prompt(turn, cid, existing and policy.reads_memory))
        question_id = None
        if policy.stores_turn and not (existing and tool_calls.continues_tool_calls(turn.messages)):
            question_id = self.store.append(cid, "user", question, task_id=task_id, model=turn.model,
                                            meta={"images": len(turn.attachments)} if turn.attachments else None).id
        return cid, existing, prompt, question_id

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
        stored = [m for m in self.store.messages(cid) if m.role in ("user", "assistant")]
        history = [ChatMessage(role=m.role, content=m.content)  # type: ignore[arg-type]
                   for m in history_window(stored, self.settings.history_messages)]
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
            # A seed per task (recorded with the request); a redelivered answer continues
            # the sent text instead of regenerating it (workers/continuation.py).
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

    def _check_caller_plan(self, turn: ChatTurn) -> None:
        """A plan the request brings is checked before anything is stored: a step for a worker
        the caller's scope lacks is a 403 naming the scope, a plan that breaks a rule a 400."""
        if turn.plan is None:
            return
        try:
            for step in turn.plan.steps:
                turn.who.require_worker(step.worker, f"run plan step '{step.id}'")
        except ScopeDenied as exc:
            raise ChatFailed(exc.info()) from None
        try:
            validate_plan(turn.plan, self.settings.planner, turn.allowed_workers)
        except InvalidPlan as exc:
            raise ChatFailed(ErrorInfo(code="invalid_plan", status=400, message=(
                f"the request's plan cannot be run: {exc}. Fix the plan, or leave out 'plan' "
                f"so the planner writes one"))) from None

    async def start(self, turn: ChatTurn) -> ChatRun:
        self._check(turn)
        self._authorize(turn)
        cls = traffic.classify(turn.source, turn.client, turn.priority, turn.messages, self.settings.traffic)
        policy = turn.policy = traffic.policy_for(cls, turn.memory, self.settings.traffic)
        turn.explicit_adapter = turn.params.adapter
        self._gate_adapter(turn)
        self._check_caller_plan(turn)
        question = next(m.text() for m in reversed(turn.messages) if m.role == "user")
        task_id = uuid.uuid4().hex
        # SQLite runs in a thread (the event loop never waits on the disk), all of it in
        # one hop: each hop costs the loop a thread hand-off and a wake-up.
        opened = await asyncio.to_thread(self._open_turn, turn, policy, question, task_id)
        cid, existing, prompt, question_id = opened
        run = ChatRun(task_id=task_id, conversation_id=cid, model=turn.model, _question_id=question_id,
                      _new_conversation=policy.stores_turn and not existing)
        run._outcome = asyncio.get_running_loop().create_future()
        self.track(task_id, asyncio.create_task(self._turn(run, turn, question, prompt)))
        return run

    def track(self, task_id: str, job: asyncio.Task) -> None:
        """Make a running task cancellable by id (DELETE /tasks/{id}) while `job` runs."""
        self._turns[task_id] = job
        job.add_done_callback(lambda _: self._turns.pop(task_id, None))

    async def cancel(self, task_id: str) -> bool:
        """Cancel a running turn: revoke its pending steps. False if it is not running."""
        job = self._turns.get(task_id)
        if job is None:
            return False
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
        for celery_id in (task_id, *(turn_call_id(task_id, call) for call in TURN_CALLS)):
            await self.dispatcher.revoke(celery_id)
        return True

    # --- running a turn ------------------------------------------------------------

    async def _ask_route(self, question: str, task_id: str | None = None) -> str:
        task = ChatTask(model=self.settings.planner.model, stream=False,
                        messages=[ChatMessage(role="system", content=ROUTE_PROMPT),
                                  ChatMessage(role="user", content=question)],
                        params=GenerationParams(max_tokens=self.settings.router.model_max_tokens, temperature=0.0,
                                                thinking=False, seed=0, response_format={
                                                    "type": "json_schema",
                                                    "json_schema": {"name": "route", "schema": ROUTE_SCHEMA}}))
        # Its own id under the turn's, so the model's raw answer can be read on its event stream.
        return (await self.dispatcher.call("chat.generate", task.model_dump(), queue=CHAT_QUEUE,
                                           task_id=turn_call_id(task_id, "route") if task_id else None)).text

    async def _plan_steps(self, run: ChatRun, turn: ChatTurn, question: str,
                          prompt: list[ChatMessage]) -> tuple[list[ChatMessage], str | None]:
        """Plan and run the steps; return the messages for the final answer and, if
        steps failed, what failed."""
        with tracer().start_as_current_span("plan"):
            decision = await self.planner.plan(question, run.task_id, turn.plan, bool(turn.attachments),
                                               turn.allowed_workers)
        run.plan_origin = decision.origin
        queues = {kind: route.queue for kind, route in self.settings.routes.items()}
        await self.tasks.set_plan(run.task_id, decision.record(), queues,
                                  mode="plan" if decision.plan is not None else "direct")
        run._planning.set()  # the headers (task id, plan origin) can go out now, before the steps run
        plan = decision.plan
        if plan is None:  # the last resort, said in the task record and the X-Appliance-Plan header
            return prompt, None
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
        recorded: asyncio.Future[None] | None = None
        try:
            mode = "plan" if turn.plan is not None else turn.mode  # an explicit plan is run as given
            if tool_calls.calls_tools(turn.params):
                mode = "direct"  # the client's agent plans; the model must see its tools
            with tracer().start_as_current_span("route") as span:
                decision = await self.router.decide(question, mode, bool(turn.attachments),
                                                    lambda q: self._ask_route(q, run.task_id))
                span.set_attributes({"appliance.route": decision.route, "appliance.route_reason": decision.reason})
            # The task's record is written while the answer is queued (a direct answer
            # waits for neither); it is complete before anything reads or updates it.
            recorded = asyncio.ensure_future(self.tasks.create(run.task_id, run.conversation_id, decision.route,
                                                               turn.source, decision.reason))
            messages, failed = prompt, None
            answer_id = run.task_id
            if decision.route == "plan":
                await asyncio.shield(recorded)  # the plan is written into it; shielded: a cancel must not cut it
                messages, failed = await self._plan_steps(run, turn, question, prompt)
                answer_id = turn_call_id(run.task_id, "answer")
            policy = turn.policy or traffic.policy_for("owner", turn.memory, self.settings.traffic)
            if self.memory is not None and policy.reads_memory and turn.who.reads_memory():
                recalled = await self.memory.retrieve_context(question, run.conversation_id,
                                                              scope=turn.who.memory_filter())
                run.sources = [s.model_dump() for s in recalled.sources]
                messages = with_recalled(messages, recalled.messages, self.settings.memory.recall_position)
            task = ChatTask(model=turn.model, messages=messages, params=self._params(turn), stream=True)
            with tracer().start_as_current_span("answer"):
                await self.dispatcher.submit("chat.generate", task.model_dump(), task_id=answer_id,
                                             queue=policy.queue)
                await asyncio.shield(recorded)
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
            await self._undo_refused(run, exc.info)
            run._outcome.set_exception(exc)
        except DispatchError as exc:
            error = exc.info.message
            await self._undo_refused(run, exc.info)
            run._outcome.set_exception(ChatFailed(exc.info))
        except BROKER_DOWN as exc:  # Redis is down: a 503 with the reason, not a 500
            info = broker_down_info(self.settings.redis_url, exc)
            error = info.message
            await self._undo_refused(run, info)
            run._outcome.set_exception(ChatFailed(info))
        except Exception as exc:  # never leave a client waiting on a broken turn
            log.exception("task %s failed", run.task_id)
            error = f"{exc.__class__.__name__}: {exc}"
            run._outcome.set_exception(ChatFailed(ErrorInfo(code="internal", status=500, message=error)))
        finally:
            run._pieces.put_nowait(None)
            # Retrieve the exception so asyncio does not log it as never retrieved.
            run._outcome.add_done_callback(lambda f: f.cancelled() or f.exception())
            try:
                if recorded is not None:  # its end is written after its start, whatever failed
                    await asyncio.shield(asyncio.gather(recorded, return_exceptions=True))
                await asyncio.shield(self.tasks.finish(run.task_id, status, error=error, sources=run.sources))
            except Exception:
                log.exception("could not record the end of task %s", run.task_id)
            finally:
                run._recorded.set()  # even when cancelled while recording: no client waits forever

    async def _undo_refused(self, run: ChatRun, info: ErrorInfo) -> None:
        """A refused turn leaves nothing behind: a request the model refused (4xx, e.g.
        longer than the context window) or one that could not be queued (Redis down)
        takes its stored question back, and the conversation too if this turn created it.
        Otherwise every later turn of the thread would carry the refused text along."""
        refused = 400 <= info.status < 500 or info.code == "redis_unavailable"
        if not refused or run._question_id is None:
            return
        try:
            if run._new_conversation:
                await asyncio.to_thread(self.store.delete, run.conversation_id)
            else:
                await asyncio.to_thread(self.store.delete_message, run._question_id)
            run._question_id = None
        except Exception:
            log.exception("task %s: could not take back the refused question", run.task_id)

    async def _follow(self, run: ChatRun, answer_id: str, queue: str = CHAT_QUEUE) -> TaskResult:
        """Forward the answer's text once, across redeliveries, and return its result.

        The dispatcher passes on only events of the newest attempt, and a redelivered
        attempt continues from the text already sent (workers/continuation.py), so every
        token is new text and the result's text is exactly what the client received."""
        attempt = 1
        async for event in self.dispatcher.events(answer_id, queue):
            if event.attempt > attempt:
                log.warning("task %s redelivered (attempt %d): continuing the answer", answer_id, event.attempt)
                attempt = event.attempt
            if event.type == "queued":
                run.queued.set()
            elif event.type == "attempt":
                run.queued.clear()
            if event.type == "reasoning" and event.text:
                run._pieces.put_nowait(Thought(event.text))
            elif event.type == "token" and event.text:
                run._pieces.put_nowait(event.text)
            elif event.type == "done" and event.result is not None:
                return event.result
            elif event.type == "error" and event.error is not None:
                raise ChatFailed(event.error)
        raise ChatFailed(ErrorInfo(code="internal", status=500, message="the answer ended without a result"))
