"""A bounded schemathesis run over the whole OpenAPI schema of the running stack
(issue 16): a client we did not write generates valid and invalid requests for every
route from /openapi.json, with the owner's token, a fixed seed and a fixed example
budget. Passing means: no 5xx anywhere, and every response (status, content type,
body) is one the schema documents.

Left out here, because the session stack is shared and these change state other tests
rely on: every DELETE and PATCH, POST /conversations, /documents, /memory/reindex,
/sandbox/run and the POSTs under /adapters. tests/test_api_fuzz_state.py fuzzes exactly
those, on a stack of its own, with real ids seeded; the GET routes of all of them are
fuzzed here. Chat and Responses bodies are capped to 2 tokens and
direct answers without memory by tests/support/fuzz_hooks.py (time budget).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED = 42
MAX_EXAMPLES = 12

EXCLUDED = ["POST /conversations", "POST /documents", "POST /memory/reindex", "POST /sandbox/run",
            "POST /adapters", "POST /adapters/train", "POST /adapters/train/{job_id}/resume",
            "POST /adapters/{name}/load", "POST /adapters/{name}/unload"]
CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance"]


def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(stack, tmp_path):
    st = Path(sys.executable).with_name("st")
    argv = [str(st), "run", f"{stack.url}/openapi.json",
            "--header", f"Authorization: Bearer {stack.token}",
            "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES), "--phases", "examples,fuzzing",
            "--checks", ",".join(CHECKS), "--exclude-method", "DELETE", "--exclude-method", "PATCH",
            "--request-timeout", "120", "--workers", "1", "--no-shrink", "--max-failures", "20",
            "--report", "junit", "--report-dir", str(tmp_path)]
    for name in EXCLUDED:
        argv += ["--exclude-name", name]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.support.fuzz_hooks",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    output = run.stdout + run.stderr
    print(output[-6000:])
    assert "Operations:" in output and "generated" in output, output[-3000:]
    assert run.returncode == 0, f"schemathesis found problems:\n{output[-8000:]}"
