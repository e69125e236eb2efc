"""Helpers for the sibling_module cheat (not a candidate itself)."""
