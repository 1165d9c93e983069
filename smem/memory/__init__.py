"""The memory library: records, the pool, scoring, selection, Hebbian learning and persistence.

Depends on numpy, faiss, bm25s and sentence-transformers only: no torch model code, Gradio,
FastAPI or Plotly, so it can be embedded in any retrieval pipeline.
"""
