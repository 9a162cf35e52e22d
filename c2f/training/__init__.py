"""Recursive training (mask stage -> rounds of train/relabel), resume and DDP; scoring lives in c2f.evaluation."""

from .config import TrainConfig
from .recursive import RunResult, train_recursive

__all__ = ["RunResult", "TrainConfig", "train_recursive"]
