"""The label map convention every package shares.

Label maps are uint8 HxW arrays: 0 is background, 1..254 are class indices, and 255 marks pixels
that are neither trained on nor scored (unlabelled VOC borders, ignore bands around pseudo-label
edges, pixels a label deliberately abstains on).
"""

BACKGROUND = 0
IGNORE = 255

# The paper's foreground-share band for training label maps: below MIN_FG a map teaches "all
# background", above MAX_FG "all object"; the mask stage and the relabelling drop such images.
MIN_FG = 0.01
MAX_FG = 0.80
