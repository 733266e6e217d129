"""Experiment tracking behind a small interface; MLflow is imported only inside tracking/mlflow.py."""

from autodl.tracking.base import NullTracker, Tracker

__all__ = ["NullTracker", "Tracker"]
