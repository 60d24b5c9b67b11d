"""Mask R-CNN proposals, fine-tuning, evaluation and model versions (torch, torchvision, pycocotools, db)."""
