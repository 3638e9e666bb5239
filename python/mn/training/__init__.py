"""Training system: configuration (config.py), methods (methods.py), optimiser (optim.py), loops with
checkpoints and early stopping (loop.py, checkpoint.py), DDP (distributed.py), seeds x folds (run.py)."""
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import ConfigError, TrainConfig, make_config, read_config_file
from .loop import Run, evaluate
from .methods import build_model
from .run import evaluate_checkpoint, load_trained, train

__all__ = ["TrainConfig", "ConfigError", "make_config", "read_config_file", "build_model", "Run", "evaluate",
           "train", "evaluate_checkpoint", "load_trained", "CheckpointError", "load_checkpoint", "save_checkpoint"]
