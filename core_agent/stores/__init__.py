"""The core's durable state: conversations (+ memory outbox), tasks, webhook jobs, secrets."""
