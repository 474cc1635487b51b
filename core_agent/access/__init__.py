"""Who is asking and what they may do: principals and their scopes (docs/security.md)."""
