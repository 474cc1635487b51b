"""LoRA adapters: which exist (registry), whether they fit the served base
(validation), how they reach a model server (drivers, converter), which stay loaded
(residency), and which request may use which (policy). See docs/lora.md."""
