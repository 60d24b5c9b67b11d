"""The COCO dataset store: schema, sessions, media files, mask codecs, COCO import and export.

Imports sqlalchemy, pycocotools, numpy and pillow only (never torch or gradio).
"""
