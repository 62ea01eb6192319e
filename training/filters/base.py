"""Compatibility name: the scorer interface and keep rules live in :mod:`training.scoring`."""

from training.scoring import KeepRule, Scorer, parse_keep

__all__ = ["KeepRule", "Scorer", "parse_keep"]
