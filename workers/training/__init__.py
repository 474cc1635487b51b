"""Training jobs' data gathering and the job runner process (see lora_manager/training/).

Here, not in lora_manager, because gathering needs rag's parsers (the same formats the
memory ingests) and the queues (memory searches on `rag`, question/answer generation on
`chat`): workers may import rag and lora_manager, lora_manager may import neither.
"""
