"""Deterministic training procedures from the papers; each returns point estimates."""

from inference.training.sltt import SavedTensorMeter, bptt_step, sltt_loss, sltt_step

__all__ = ["SavedTensorMeter", "bptt_step", "sltt_loss", "sltt_step"]
