"""Recursive training (mask stage -> rounds of train/relabel), checkpoints, DDP and evaluation."""

from .config import TrainConfig
from .recursive import RunResult, train_recursive

__all__ = ["RunResult", "TrainConfig", "train_recursive"]
