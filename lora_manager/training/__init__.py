"""Training the owner's own LoRA adapters (see docs/lora.md, "Training an adapter").

spec.py      what to train (TrainingSpec) and the checks that need no model
dataset.py   documents -> deduplicated, length-filtered examples, split by document
jobs.py      a training job on disk: spec, prepared data, status, checkpoints, cancel flag
loop.py      the PEFT training loop (progress, checkpoints, resume, cancel)
evaluation.py eval loss base vs adapter on the held-out split, and the leakage probe
pipeline.py  train -> evaluate -> validate/convert/register, all or nothing

Gathering documents (files through rag's parsers, memory searches and question/answer
generation through the queues) lives in workers/training/, which may import rag.
"""
