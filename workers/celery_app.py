"""The Celery application: broker, result backend, queues and delivery guarantees.

Start a worker for one queue with:
    celery -A workers.celery_app worker -Q chat -c 1
(`appliance up` does this for every enabled queue.)
"""

from __future__ import annotations

from celery import Celery
from celery.backends.redis import RedisBackend
from celery.signals import worker_init, worker_process_init
from kombu import Queue

from configs.loader import get_settings
from configs.private_files import protect_data_dir
from configs.schema import QUEUE_NAMES, Settings
from configs.telemetry import setup_tracing
from workers.broker_transport import TRANSPORT_PATH

# Task name prefix -> queue. A task named "chat.generate" runs on the "chat" queue.
TASK_MODULES = ["workers.chat_worker", "workers.code_worker", "workers.vision_worker",
                "workers.embed_worker", "workers.rag_worker", "workers.memory_steps", "workers.noop"]


class StreamFollowerBackend(RedisBackend):
    """The result backend of a process that sends tasks but follows them on their event
    streams (the API's Dispatcher), never through Celery results: it does not subscribe
    to a result channel for every task it sends. That subscription was the API's weak
    spot on a Redis restart: after its few reconnect tries it raises "The Celery
    application must be restarted" (RuntimeError, a 500) on every later send."""

    def on_task_call(self, producer: object, task_id: str) -> None:
        return None


def create_celery_app(settings: Settings, follows_streams: bool = False) -> Celery:
    """`follows_streams`: for the API (see StreamFollowerBackend); workers store results."""
    backend = (f"{__name__}:StreamFollowerBackend+{settings.redis_url}" if follows_streams
               else settings.redis_url)
    celery = Celery("appliance", broker=settings.redis_url, backend=backend,
                    include=TASK_MODULES)
    celery.conf.update(
        # kombu's Redis transport, with one client per channel instead of a new one for
        # each command, the per-task bookkeeping writes among them (workers/broker_transport.py).
        broker_transport=TRANSPORT_PATH,
        # chat_bg: the background lane of the chat queue (configs/traffic.yaml).
        task_queues=[Queue(name) for name in (*QUEUE_NAMES, "chat_bg")],
        task_default_queue="chat",
        task_routes={f"{name}.*": {"queue": name} for name in QUEUE_NAMES},
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # Delivery guarantees: a task is acknowledged only after it finished, and a
        # task whose worker process died is put back on the queue, not dropped.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": settings.celery.visibility_timeout_s},
        result_backend_transport_options={"visibility_timeout": settings.celery.visibility_timeout_s},
        task_time_limit=settings.celery.task_time_limit_s,
        result_expires=settings.celery.result_expires_s,
        # The core reads every outcome from the task's event stream (workers/events.py),
        # never from Celery's result backend: storing results there cost the worker two
        # Redis writes per task and the sender a SUBSCRIBE per task (never unsubscribed).
        task_ignore_result=True,
        task_track_started=True,
        result_extended=True,
        broker_connection_retry_on_startup=True,
        # Redis restarts (configs/redis_connect.py): the producer retries a publish a few
        # times with a short backoff (bridges a restart, fails within ~2 s while Redis
        # stays down, then the API answers 503); the result backend health-checks its
        # pooled connections like every other client.
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 3, "interval_start": 0.1, "interval_step": 0.3,
                                   "interval_max": 1.0},
        redis_backend_health_check_interval=10,
        worker_hijack_root_logger=False,
        # Monitoring events (task-sent/received/started/succeeded) are one Redis PUBLISH
        # each, on the dispatch path. Off by default; Flower (compose.yaml) switches the
        # workers' events on at run time (its enable_events), so it still sees tasks.
        worker_send_task_events=False,
        task_send_sent_event=False,
        # No task has a Celery rate limit (traffic.py shapes load in the core): the
        # consumer skips the per-message token-bucket lookup on the pickup path.
        worker_disable_rate_limits=True,
    )
    return celery


app = create_celery_app(get_settings())


@worker_process_init.connect
def _start_tracing(**_: object) -> None:
    """Each pool child exports its own spans (a no-op unless an OTLP endpoint is set)."""
    setup_tracing(get_settings(), "worker")


@worker_init.connect
def _private_files(**_: object) -> None:
    """Before the pool forks: files the workers create in the data dir are owner-only."""
    protect_data_dir(get_settings().data_dir)


# Connects the worker's presence keeper (worker_ready / worker_shutdown): the core tells
# "no worker on this queue" from "every worker busy" by it.
from workers import worker_presence  # noqa: E402,F401
