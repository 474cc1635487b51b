"""Celery workers, one queue per kind of work. Workers know nothing about HTTP."""
