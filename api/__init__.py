"""The protection-desk API and dashboard."""
