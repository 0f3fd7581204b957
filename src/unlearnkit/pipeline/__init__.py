"""A run, end to end (`runner`): load → forget set → evaluate before → [screen] → unlearn → evaluate after →
[probe] → attacks → report; with its output folder (`outputs`), resuming (`resume`), checkpoint selection
(`selection`), the harmfulness probe (`safety_probe`) and several methods side by side (`compare`)."""

from unlearnkit.data.training import build_training_data, training_data
from unlearnkit.pipeline.runner import evaluate_recipe, peak_memory, run
from unlearnkit.pipeline.stages import unlearn_once

__all__ = ["build_training_data", "evaluate_recipe", "peak_memory", "run", "training_data", "unlearn_once"]
