"""Streamlit chat. Talks to core_agent over HTTP only."""
