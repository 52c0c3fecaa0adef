"""Worked examples of controllers built on ``reconciler``; each one runs and is tested."""
