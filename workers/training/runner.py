"""The training job process: `python -m workers.training.runner --job-dir DIR [--json]`.

Started by `appliance adapters train` (in the foreground, its output is the CLI's) and by
POST /adapters/train (detached, output in DIR/job.log). It runs at lower CPU priority
(nice 10 unless the spec says otherwise) and in its own process, so training never holds up the chat worker; on a GPU
the model servers it would compete with are paused first (scripts/train-pause.sh).

Exit status: 0 registered, 1 refused or failed (the reason is printed), 3 cancelled.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from configs.contracts.errors import BackendError
from configs.loader import ConfigError, load_settings
from lora_manager.training import pipeline
from lora_manager.training.jobs import Job, JobStatus
from lora_manager.training.spec import TrainingRefused
from workers.training import knowledge
from workers.training.sources import prepare_data

EXIT_OK, EXIT_FAILED, EXIT_CANCELLED = 0, 1, 3


def _say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def summary(status: JobStatus) -> dict:
    evaluation = status.evaluation or {}
    probe = evaluation.get("leakage_probe") or {}
    return {"adapter": status.adapter, "job": status.job, "state": status.state,
            "train_examples": status.train_examples, "eval_examples": status.eval_examples,
            "eval_loss_base": evaluation.get("eval_loss_base"), "eval_loss_adapter": evaluation.get("eval_loss_adapter"),
            "perplexity_base": evaluation.get("perplexity_base"),
            "perplexity_adapter": evaluation.get("perplexity_adapter"),
            "leakage": probe.get("leakage"), "leakage_changed_share": probe.get("changed_share"),
            "steps": status.total_steps, "resumed_from": status.resumed_from,
            "seconds": round(status.seconds, 1), "error": (status.error or {}).get("message")}


def _prepare(job: Job, settings) -> None:
    spec = job.spec()
    if not job.has_data():
        job.update(state="preparing", message="reading the sources")
        job.write_data(prepare_data(spec, settings, _say))
    data = job.read_data()
    if spec.kind == "knowledge" and not data.report.qa_generated:
        job.update(state="generating", message="the core model writes question/answer pairs")
        generated = knowledge.generate(data, settings, spec.model or settings.default_model, _say)
        generated.report.qa_generated = True
        job.write_data(generated)


def run(job: Job) -> JobStatus:
    started = time.perf_counter()
    settings = load_settings()
    job.update(pid=os.getpid(), state="preparing", error=None, message="starting")
    try:
        _prepare(job, settings)
    except BackendError as exc:  # refusals of the data: nothing was trained
        _say(f"error: {exc}")
        return job.update(state="failed", message=str(exc), seconds=time.perf_counter() - started,
                          error={"message": str(exc), "type": exc.code, "code": exc.code, "status": exc.status})
    return pipeline.run(job, settings, _say)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job-dir", required=True)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    args = parser.parse_args(argv)
    job = Job(args.job_dir)
    # SIGTERM (DELETE /adapters/train/{job}, docker stop) = cancel: finish the step, checkpoint, stop.
    signal.signal(signal.SIGTERM, lambda *_: job.cancel_flag.touch())
    try:
        os.nice(job.spec().nice)
    except OSError:
        pass
    try:
        status = run(job)
    except (ConfigError, TrainingRefused) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    result = summary(status)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    elif status.state == "done":
        print(f"adapter '{status.adapter}' registered: eval loss base {result['eval_loss_base']:.4f} -> adapter "
              f"{result['eval_loss_adapter']:.4f} (perplexity {result['perplexity_base']:.2f} -> "
              f"{result['perplexity_adapter']:.2f}); leakage {result['leakage']:.2f} "
              f"({result['leakage_changed_share']:.0%} of general answers changed); {result['train_examples']} "
              f"training / {result['eval_examples']} held-out examples; {result['seconds']:.0f} s")
    if status.state == "done":
        return EXIT_OK
    if status.state != "cancelled":
        print(f"error: {status.message}", file=sys.stderr)
    return EXIT_CANCELLED if status.state == "cancelled" else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
