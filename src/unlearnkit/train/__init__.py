"""THE training loop (`loop`), its checkpoints (`checkpoint`) and the frozen reference (`reference`).

Every method, the world builder and the attacks train through `train(model, method, data, TrainConfig)`.
"""

from unlearnkit.train.loop import TrainConfig, TrainResult, freeze_except, train

__all__ = ["TrainConfig", "TrainResult", "freeze_except", "train"]
