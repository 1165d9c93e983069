"""UI helpers: Gradio-facing view state, figures and per-visitor state. Imported by app.py only."""
