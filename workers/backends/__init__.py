"""Model backends behind one interface per kind (chat, embeddings, vision)."""
