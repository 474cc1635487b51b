"""Session fixtures: one real appliance stack shared by the whole test session.

`stack` starts, through the same launcher `appliance up` uses, a real redis-server on
a free port, one real Celery worker per queue, the API under uvicorn and the UI, all
in a temporary data directory. Tests talk to it over real HTTP.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from bench.harness.stack import (MISSING_MODEL, MISSING_MODEL_PATH, OWNER_TOKEN, Stack, free_port,  # noqa: F401
                                 running_stack, stack_env)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(stack_env(tmp_path_factory.mktemp("appliance-data")),
                       progress=lambda line: print(line, flush=True)) as running:
        yield running
