"""The UI's pages: chat, memory, adapters (each a `render(client)` function)."""
