"""Offline algorithms: learning from a fixed dataset (supervised fine-tuning first)."""
