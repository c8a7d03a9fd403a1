"""Capacity planning: memory, performance, sizing, cost and energy (issue #3)."""
