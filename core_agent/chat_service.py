"""One chat turn: store the question, dispatch it, follow the answer, store the answer.

The HTTP layer only translates between this service and the OpenAI wire format.
The answer is consumed by a background task that stores it, so the turn is saved
even if the client disconnects halfway through a stream.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import uuid
from dataclasses import dataclass, field
from typing import AsyncIterator

from configs.schema import Settings
from core_agent.conversations import ConversationStore
from core_agent.dispatcher import DispatchError, Dispatcher
from workers.protocol import ChatMessage, ChatResult, ChatTask, ErrorInfo, GenerationParams

log = logging.getLogger("appliance.chat")

CONVERSATION_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
CHAT_TASK = "chat.generate"
CHAT_QUEUE = "chat"


class ChatFailed(Exception):
    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(info.message)
        self.info = info


class BadChatRequest(ChatFailed):
    def __init__(self, message: str) -> None:
        super().__init__(ErrorInfo(code="bad_request", message=message, status=400))


@dataclass
class ChatTurn:
    """A chat request as the core sees it, independent of the HTTP format."""

    model: str
    messages: list[ChatMessage]
    params: GenerationParams = field(default_factory=GenerationParams)
    conversation_id: str | None = None
    stream: bool = True


@dataclass
class ChatRun:
    """A dispatched turn. Read `pieces()` for streamed text, or await `result()`."""

    task_id: str
    conversation_id: str
    model: str
    _pieces: asyncio.Queue = field(default_factory=asyncio.Queue)
    _outcome: asyncio.Future | None = None

    async def pieces(self) -> AsyncIterator[str]:
        """New answer text as it arrives; raises ChatFailed if the task fails."""
        while True:
            item = await self._pieces.get()
            if item is None:
                break
            yield item
        await self.result()

    async def result(self) -> ChatResult:
        assert self._outcome is not None
        return await asyncio.shield(self._outcome)

    async def first_piece(self) -> str | None:
        """Wait for the first text (or the end); raises ChatFailed before any text is sent.

        The HTTP layer calls this before it commits to a status code, so a missing
        model is a 503, not an error buried inside a 200 stream.
        """
        item = await self._pieces.get()
        if item is None:
            await self.result()
        return item


class ChatService:
    def __init__(self, settings: Settings, store: ConversationStore, dispatcher: Dispatcher) -> None:
        self.settings = settings
        self.store = store
        self.dispatcher = dispatcher
        self._background: set[asyncio.Task] = set()

    def _conversation_for(self, turn: ChatTurn) -> tuple[str, bool]:
        """The conversation id to use, and whether it already had turns."""
        cid = turn.conversation_id
        if cid is None:
            title = next((m.text() for m in reversed(turn.messages) if m.role == "user"), "")[:60]
            return self.store.create(title=title or "New conversation").id, False
        if not CONVERSATION_ID_RE.match(cid):
            raise BadChatRequest(
                "conversation_id must be 1-128 characters of letters, digits and _.:- "
                f"(got {cid[:40]!r})")
        if self.store.exists(cid):
            return cid, True
        title = next((m.text() for m in reversed(turn.messages) if m.role == "user"), "")[:60]
        # An unknown id is created, so workflow tools can use their own thread ids.
        return self.store.create(title=title or "New conversation", conversation_id=cid).id, False

    def _prompt(self, turn: ChatTurn, cid: str, existing: bool) -> list[ChatMessage]:
        """Messages for the model. Stored history is prepended only when the client sent
        just the new turn (no assistant messages); clients that send the full history
        (the OpenAI convention) are taken as they are."""
        if not existing or any(m.role == "assistant" for m in turn.messages):
            return turn.messages
        history = [ChatMessage(role=m.role, content=m.content)  # type: ignore[arg-type]
                   for m in self.store.messages(cid, limit=self.settings.history_messages)
                   if m.role in ("user", "assistant")]
        system = [m for m in turn.messages if m.role == "system"]
        rest = [m for m in turn.messages if m.role != "system"]
        return system + history + rest

    async def start(self, turn: ChatTurn) -> ChatRun:
        if turn.model not in self.settings.models:
            raise ChatFailed(ErrorInfo(
                code="model_not_found", status=404,
                message=f"model '{turn.model}' does not exist. Available: {sorted(self.settings.models)}"))
        if not any(m.role == "user" for m in turn.messages):
            raise BadChatRequest("messages must contain at least one message with role 'user'")
        cid, existing = self._conversation_for(turn)
        prompt = self._prompt(turn, cid, existing)
        user_text = next(m.text() for m in reversed(turn.messages) if m.role == "user")
        params = turn.params.model_copy()
        if params.seed is None:
            # A fixed seed per task lets a redelivered task regenerate the same text.
            params.seed = random.randrange(2**31)
        task = ChatTask(model=turn.model, messages=prompt, params=params, stream=True)
        task_id = uuid.uuid4().hex
        self.store.append(cid, "user", user_text, task_id=task_id, model=turn.model)
        await self.dispatcher.submit(CHAT_TASK, task.model_dump(), task_id=task_id)
        run = ChatRun(task_id=task_id, conversation_id=cid, model=turn.model)
        run._outcome = asyncio.get_running_loop().create_future()
        bg = asyncio.create_task(self._follow(run))
        self._background.add(bg)
        bg.add_done_callback(self._background.discard)
        return run

    async def _follow(self, run: ChatRun) -> None:
        """Consume the task's events, forward text once, store the answer, settle the run."""
        assert run._outcome is not None
        forwarded = 0      # characters already handed to the client
        current = ""       # text of the attempt now running
        attempt = 1
        try:
            async for event in self.dispatcher.events(run.task_id, CHAT_QUEUE):
                if event.attempt > attempt:
                    # The worker died and the task was redelivered: the new attempt
                    # regenerates (same seed) and we forward only what is new.
                    log.warning("task %s redelivered (attempt %d)", run.task_id, event.attempt)
                    attempt, current = event.attempt, ""
                if event.type == "token":
                    current += event.text
                    if len(current) > forwarded:
                        run._pieces.put_nowait(current[forwarded:])
                        forwarded = len(current)
                elif event.type == "done" and event.result is not None:
                    result = event.result
                    self.store.append(run.conversation_id, "assistant", result.text, task_id=run.task_id,
                                      model=run.model, meta={"usage": result.usage.model_dump(),
                                                             "finish_reason": result.finish_reason,
                                                             "attempt": result.attempt})
                    run._outcome.set_result(result)
                    return
                elif event.type == "error" and event.error is not None:
                    run._outcome.set_exception(ChatFailed(event.error))
                    return
        except DispatchError as exc:
            run._outcome.set_exception(ChatFailed(exc.info))
        except Exception as exc:  # never leave a client waiting on a broken follower
            log.exception("following task %s failed", run.task_id)
            run._outcome.set_exception(ChatFailed(ErrorInfo(code="internal", status=500, message=str(exc))))
        finally:
            run._pieces.put_nowait(None)
            if not run._outcome.done():
                run._outcome.set_exception(ChatFailed(ErrorInfo(
                    code="internal", status=500, message="the task ended without a result")))
            # Retrieve the exception so asyncio does not log it as never retrieved.
            run._outcome.add_done_callback(lambda f: f.exception())
