"""Webhooks for workflow tools: authentication, signing, sync/async jobs, callbacks."""
