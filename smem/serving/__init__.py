"""Serving: the HTTP API, sessions, the shared generation queue and the runtime that owns the model.

Imports the generation and memory layers only.
"""
