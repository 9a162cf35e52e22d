"""Training configuration: the paper's defaults, overridable from a YAML/TOML file and the CLI."""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from c2f.labelmap import DEFAULT_DISAGREEMENT, DISAGREEMENT_RULES
from c2f.masks.config import MaskConfig
from c2f.models import TASK_DEFAULTS

from .losses import LOSSES

RECIPES_DIR = Path(__file__).resolve().parents[1] / "configs"  # bundled recipes, e.g. cpu.yaml

# The flat mask-stage keys of earlier TrainConfigs (config files, run folders' config.yaml, updated())
# -> the MaskConfig field of ``TrainConfig.masks`` they set now.
LEGACY_MASK_KEYS = {
    "generator": "generator",
    "generator_options": "generator_options",
    "mask_grabcut": "grabcut",
    "grabcut_iterations": "grabcut_iterations",
    "mask_crf": "crf",
    "ignore_band": "ignore_band",
    "mask_workers": "workers",
    "min_fg": "min_fg",
    "max_fg": "max_fg",
}


@dataclass
class TrainConfig:
    """One recursive training run. Defaults are the paper's (SGD, batch 12, lr 2.5e-4, 321/256)."""

    task: str = "semantic"
    arch: str | None = None  # None: DeepLab for semantic, FPN for foreground
    backbone: str = "efficientnet-lite0"
    weights: str | None = None  # backbone ImageNet weights file (ResNet); Lite0 ships its own
    output_stride: int | None = None
    rounds: int = 5
    epochs: int = 10  # per round
    batch_size: int = 12
    lr: float = 2.5e-4
    head_lr_mult: float = 10.0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    resize: int = 321
    crop: int = 256
    flip: bool = True
    # Keep the backbone's ImageNet BatchNorm statistics (DeepLab's practice at small batch sizes):
    # otherwise train-time batch statistics and eval-time running statistics disagree.
    freeze_bn: bool = True
    # The first this many epochs of a round that starts from ImageNet train the head only, with the
    # backbone frozen: a fresh head's large early gradients then cannot wreck the pretrained
    # features, and on a CPU such an epoch costs about a third of a fine-tuning one.
    head_only_epochs: int = 0
    # Round k > 1 starts from round k-1's weights instead of ImageNet: the rounds then add up to
    # one long training on ever better labels, which pays off when each round is short (CPU runs).
    warm_start: bool = False
    # > 0: each round's model is an exponential moving average of its weights (e.g. 0.99), so it
    # depends less on the round's last batches. 0 (the paper): the last step's weights.
    ema_decay: float = 0.0
    # > 1: between rounds, each image is relabelled by a model trained without it (that many folds,
    # each trained like the round on the other folds' images). 1 (the paper): the round's own model.
    relabel_folds: int = 1
    # The pixel loss (c2f.training.losses): "ce", the paper's cross-entropy, or "gce", the generalised
    # cross-entropy (1 - p ** gce_q) / gce_q, which lets a label the model confidently contradicts pull
    # less, so the model fits fewer of the weak labels' errors. For foreground (two classes): with 21
    # it learns background only, its object pixels starting at p ~ 1/21 (docs/cpu_recipe.md).
    loss: str = "ce"
    gce_q: float = 0.7
    seed: int = 0
    loader_workers: int = 0
    device: str = "auto"
    amp: bool = True  # mixed precision, used only on CUDA
    # Mask stage (coarse masks -> GrabCut -> label maps); its GrabCut size, foreground band, ignore
    # band and workers clean the relabelled maps between rounds too. A file's ``masks:`` mapping.
    masks: MaskConfig = field(default_factory=MaskConfig)
    # Between rounds: own classes only, GrabCut (this switch), drop images outside
    # [masks.min_fg, masks.max_fg] foreground.
    round_grabcut: bool = True
    # Next round's labels keep only the pixels where the relabelling agrees with this round's own
    # training labels (pixels they ignored stay ignored). The final OUT/masks are never thinned this way.
    round_consensus: bool = False
    # What a disagreeing pixel becomes: "ignore" (255, not trained on) or "background" where either
    # map says background, so the next round's foreground is what both maps call foreground.
    round_disagreement: str = DEFAULT_DISAGREEMENT
    # After the last round, relabel every training image with the last model into OUT/masks/.
    write_masks: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.masks, Mapping):  # TrainConfig(masks={"workers": 2}): over the defaults
            self.masks = MaskConfig().merged(self.masks)
        elif not isinstance(self.masks, MaskConfig):
            raise ValueError(f"masks must be a MaskConfig or a mapping of its fields, got {self.masks!r}")
        if self.task not in TASK_DEFAULTS:
            raise ValueError(f"task must be one of {sorted(TASK_DEFAULTS)}, got {self.task!r}")
        if self.crop > self.resize:
            raise ValueError(f"crop ({self.crop}) cannot exceed resize ({self.resize})")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.round_disagreement not in DISAGREEMENT_RULES:
            raise ValueError(f"round_disagreement must be one of {', '.join(DISAGREEMENT_RULES)}, "
                             f"got {self.round_disagreement!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not 0.0 < self.gce_q <= 1.0:
            raise ValueError(f"gce_q must be in (0, 1], got {self.gce_q}")
        if self.relabel_folds < 1:
            raise ValueError(f"relabel_folds must be at least 1, got {self.relabel_folds}")
        if self.head_only_epochs < 0:
            raise ValueError(f"head_only_epochs must be >= 0, got {self.head_only_epochs}")
        if self.rounds < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError("rounds, epochs and batch_size must be positive")

    @property
    def model_arch(self) -> str:
        return self.arch or TASK_DEFAULTS[self.task][0]

    @property
    def model_output_stride(self) -> int:
        return self.output_stride or TASK_DEFAULTS[self.task][1]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def updated(self, **overrides: Any) -> "TrainConfig":
        """A copy with the given fields replaced; ``None`` values mean "not given" and are skipped.

        ``masks`` takes a :class:`MaskConfig` (replaces this one) or a mapping of its fields (merged
        over this config's, ``None`` values included). The flat keys of earlier versions
        (``mask_workers``, ``generator``, ``min_fg``, ...: :data:`LEGACY_MASK_KEYS`) still work and
        set the same field of ``masks``; giving one together with ``masks`` setting that field is an error.
        """
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known - set(LEGACY_MASK_KEYS))
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; valid: {sorted(known)} "
                             f"(masks: {MaskConfig.field_names()})")
        legacy = {LEGACY_MASK_KEYS[k]: (k, overrides.pop(k)) for k in list(overrides) if k in LEGACY_MASK_KEYS}
        legacy = {name: given for name, given in legacy.items() if given[1] is not None}
        masks, nested = overrides.pop("masks", None), set()
        if isinstance(masks, MaskConfig):
            nested = set(MaskConfig.field_names())
        elif masks is not None:
            if not isinstance(masks, Mapping):
                raise ValueError(f"masks must be a MaskConfig or a mapping of its fields, got {masks!r}")
            nested = set(masks)
            masks = self.masks.merged(masks)
        clashes = sorted(name for name in legacy if name in nested)
        if clashes:
            both = ", ".join(f"{legacy[name][0]} and masks.{name}" for name in clashes)
            raise ValueError(f"mask settings given twice: {both}; give each once, under masks")
        flat = {name: value for name, (_, value) in legacy.items()}
        masks = (self.masks if masks is None else masks).updated(**flat)
        return dataclasses.replace(self, masks=masks, **{k: v for k, v in overrides.items() if v is not None})

    @classmethod
    def from_recipe(cls, name_or_path: str | Path) -> "TrainConfig":
        """A bundled recipe by name (``cpu``: see ``c2f/configs/``) or a YAML/TOML file by path."""
        path = Path(name_or_path)
        if path.is_file():
            return cls.from_file(path)
        bundled = RECIPES_DIR / f"{name_or_path}.yaml"
        if bundled.is_file():
            return cls.from_file(bundled)
        names = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
        raise ValueError(f"{name_or_path!r} is neither a config file nor a bundled recipe ({', '.join(names)})")

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        """Read a YAML (.yaml/.yml) or TOML (.toml) file of TrainConfig fields.

        Mask-stage settings go under ``masks:`` (merged over the default :class:`MaskConfig`); the
        flat keys of earlier files and run folders (``mask_workers: 2``, ...) are read too.
        """
        path = Path(path)
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of config keys")
        return cls().updated(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
