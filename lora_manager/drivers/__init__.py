"""How adapters reach a model server: one interface (base.py), one module per server kind."""
