"""Prepare a training corpus in a process of its own and report it as JSON.

`python -m workers.training.prepare SPEC_JSON OUT_DIR` gathers, deduplicates, filters and
splits the sources of a TrainingSpec (workers/training/sources.py). On success it writes
OUT_DIR/prepared.json (PreparedData) and exits 0; on a refusal it prints
`{"error": {"message", "code", "status"}}` and exits 1, having written nothing.

The API runs this instead of importing workers code: parsing an owner's PDFs and
.docx files stays out of the API process, and the import direction core_agent ->
workers stays limited to the Celery app (tests/test_architecture.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from configs.contracts.errors import BackendError
from configs.loader import load_settings
from lora_manager.training.spec import TrainingSpec
from workers.training.sources import prepare_data


def main(argv: list[str] | None = None) -> int:
    spec_json, out_dir = (argv if argv is not None else sys.argv[1:])[:2]
    spec = TrainingSpec.model_validate_json(spec_json)
    try:
        data = prepare_data(spec, load_settings(), say=lambda line: print(line, file=sys.stderr))
    except BackendError as exc:
        print(json.dumps({"error": {"message": str(exc), "code": exc.code, "status": exc.status}}))
        return 1
    target = Path(out_dir) / "prepared.json"
    tmp = target.with_suffix(".tmp")
    tmp.write_text(data.model_dump_json(), encoding="utf-8")
    tmp.replace(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
