"""The label map convention every package shares.

Label maps are uint8 HxW arrays: 0 is background, 1..254 are class indices, and 255 marks pixels
that are neither trained on nor scored (unlabelled VOC borders, ignore bands around pseudo-label
edges, pixels a label deliberately abstains on).
"""

import numpy as np

BACKGROUND = 0
IGNORE = 255

# The paper's foreground-share band for training label maps: below MIN_FG a map teaches "all
# background", above MAX_FG "all object"; the mask stage and the relabelling drop such images.
MIN_FG = 0.01
MAX_FG = 0.80

# What a pixel becomes where a relabelling disagrees with the labels a round trained on
# (TrainConfig.round_disagreement): "ignore" abstains; "background" keeps as foreground only what
# both maps call foreground (and ignores pixels the two give different classes).
DISAGREEMENT_RULES = ("ignore", "background")
DEFAULT_DISAGREEMENT = "ignore"  # the recipes' rule: measured in docs/cpu_recipe.md


def agreement(label_map: np.ndarray, earlier: np.ndarray, rule: str = DEFAULT_DISAGREEMENT) -> np.ndarray:
    """``label_map`` where it equals ``earlier``; elsewhere IGNORE, or with ``rule="background"``
    BACKGROUND wherever either map says background (IGNORE where they name different classes).

    A pixel ``earlier`` ignores stays ignored, so over several rounds a pixel is trained on only while
    every relabelling so far has agreed on it. Letting the new label stand there instead scored
    lower on VOC in round 3 (33.4 against 34.8 val mIoU; docs/cpu_recipe.md).
    """
    if rule not in DISAGREEMENT_RULES:
        raise ValueError(f"rule must be one of {', '.join(DISAGREEMENT_RULES)}, got {rule!r}")
    if label_map.shape != earlier.shape:
        raise ValueError(f"label maps differ in size: {label_map.shape} and {earlier.shape}")
    differ = label_map != earlier
    agreed = label_map.copy()
    agreed[differ] = IGNORE
    if rule == "background":
        agreed[differ & ((label_map == BACKGROUND) | (earlier == BACKGROUND))] = BACKGROUND
    return agreed
