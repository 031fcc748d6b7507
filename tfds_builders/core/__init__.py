"""Shared pieces every builder may use; nothing here imports a builder."""
