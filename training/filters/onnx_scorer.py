"""Compatibility name: the ONNX scorer lives in :mod:`training.onnx_scorer`."""

from training.onnx_scorer import OnnxScorer

__all__ = ["OnnxScorer"]
