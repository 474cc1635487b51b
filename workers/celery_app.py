"""The Celery application: broker, result backend, queues and delivery guarantees.

Start a worker for one queue with:
    celery -A workers.celery_app worker -Q chat -c 1
(`appliance up` does this for every enabled queue.)
"""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_init, worker_process_init
from kombu import Queue

from configs.loader import get_settings
from configs.private_files import protect_data_dir
from configs.schema import QUEUE_NAMES, Settings
from configs.telemetry import setup_tracing

# Task name prefix -> queue. A task named "chat.generate" runs on the "chat" queue.
TASK_MODULES = ["workers.chat_worker", "workers.code_worker", "workers.vision_worker",
                "workers.embed_worker", "workers.rag_worker", "workers.memory_steps", "workers.noop"]


def create_celery_app(settings: Settings) -> Celery:
    celery = Celery("appliance", broker=settings.redis_url, backend=settings.redis_url,
                    include=TASK_MODULES)
    celery.conf.update(
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
        worker_hijack_root_logger=False,
        # Monitoring events (task-sent/received/started/succeeded) are one Redis PUBLISH
        # each, on the dispatch path. Off by default; Flower (compose.yaml) switches the
        # workers' events on at run time (its enable_events), so it still sees tasks.
        worker_send_task_events=False,
        task_send_sent_event=False,
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
