"""Generation: the streaming engine, prompt layout, engine events and model loading (torch, transformers).

Imports the memory layer only.
"""
