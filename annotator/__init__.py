"""Labeling logic and the Gradio UI (gradio, numpy, pillow, db; the model through model.api only)."""
