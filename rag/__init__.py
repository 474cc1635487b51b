"""The appliance's memory: Qdrant collections for conversation turns and documents.

Plain Python, no Celery: `rag.service.MemoryService` is the whole memory; the rag
worker (workers/rag_worker.py) is the only process that runs it. `configs.contracts.memory`
holds the task payloads and is the only module the API process imports from here.
See docs/memory.md.
"""
