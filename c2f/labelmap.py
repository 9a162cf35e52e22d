"""The label map convention every package shares.

Label maps are uint8 HxW arrays: 0 is background, 1..254 are class indices, and 255 marks pixels
that are neither trained on nor scored (unlabelled VOC borders, ignore bands around pseudo-label
edges, pixels a label deliberately abstains on).
"""

BACKGROUND = 0
IGNORE = 255
