"""The mask stage's settings in one value: coarse generator, GrabCut, CRF, label-map rules, workers.

:func:`c2f.masks.stage.run_mask_stage` takes a :class:`MaskConfig`; a training run holds one as
``TrainConfig.masks`` (``masks:`` in a YAML/TOML config file), and its relabelling between rounds
uses the same GrabCut size and iterations, foreground band, ignore band and workers. The defaults are the
paper's rules; GrabCut's working size, iterations and core were measured (:mod:`c2f.refine.grabcut`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from c2f.labelmap import MAX_FG, MIN_FG
from c2f.refine.grabcut import COARSE_CORE_EROSION, GRABCUT_ITERATIONS, GRABCUT_MAX_SIDE

__all__ = ["MaskConfig"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class MaskConfig:
    """How coarse masks become first-round label maps (and how relabelled maps are cleaned).

    ``generator`` names a registered coarse generator (saliency, folder, box, ufs, cam) built with
    ``generator_options``; ``grabcut`` re-cuts the coarse mask with ``grabcut_iterations`` at most
    ``grabcut_max_side`` px on the longest side (None: full size), anchored on a sure-foreground core:
    the coarse mask eroded by ``grabcut_core_erosion`` x its equivalent radius (0: none; relabelling
    keeps GrabCut's default for predictions); ``crf`` adds a dense CRF;
    ``ignore_band`` marks that many pixels on each side of a mask edge 255 (ignore); images whose
    foreground share falls outside ``[min_fg, max_fg]`` get no label map; ``workers`` processes run
    the mask stage (threads for GrabCut when relabelling).
    """

    generator: str = "saliency"
    generator_options: dict[str, Any] = field(default_factory=dict)
    grabcut: bool = True  # False: label maps from the coarse masks as they are (ground truth via "folder")
    grabcut_iterations: int = GRABCUT_ITERATIONS
    grabcut_max_side: int | None = GRABCUT_MAX_SIDE
    grabcut_core_erosion: float = COARSE_CORE_EROSION
    crf: bool = False
    ignore_band: int = 0
    min_fg: float = MIN_FG
    max_fg: float = MAX_FG
    workers: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.generator, str) or not self.generator:
            raise ValueError(f"masks.generator must be a generator name, got {self.generator!r}")
        if not isinstance(self.generator_options, Mapping):
            raise ValueError(f"masks.generator_options must be a mapping, got {self.generator_options!r}")
        object.__setattr__(self, "generator_options", dict(self.generator_options))  # a copy of its own
        for name in ("grabcut", "crf"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"masks.{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("grabcut_iterations", "ignore_band"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise ValueError(f"masks.{name} must be an integer >= 0, got {value!r}")
        side = self.grabcut_max_side
        if side is not None and (not _is_int(side) or side < 1):
            raise ValueError(f"masks.grabcut_max_side must be a positive integer or None (full size), got {side!r}")
        core = self.grabcut_core_erosion
        if not _is_number(core) or not 0 <= core < 1:
            raise ValueError(f"masks.grabcut_core_erosion must be a number in [0, 1), got {core!r}")
        if not _is_int(self.workers) or self.workers < 1:
            raise ValueError(f"masks.workers must be an integer >= 1, got {self.workers!r}")
        if not (_is_number(self.min_fg) and _is_number(self.max_fg) and 0 <= self.min_fg <= self.max_fg <= 1):
            raise ValueError(f"masks.min_fg and masks.max_fg must satisfy 0 <= min_fg <= max_fg <= 1, "
                             f"got min_fg={self.min_fg!r}, max_fg={self.max_fg!r}")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def updated(self, **overrides: Any) -> "MaskConfig":
        """A copy with the given fields replaced; ``None`` values mean "not given" and are skipped.

        (To cut GrabCut at full size, ``grabcut_max_side=None``, use :meth:`merged` or the constructor.)
        """
        self._check_keys(overrides)
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def merged(self, values: Mapping[str, Any]) -> "MaskConfig":
        """A copy with every key of ``values`` replaced, ``None`` included: a config file's
        ``grabcut_max_side: null`` means full size, so a file's ``masks:`` mapping loads back exactly."""
        if not isinstance(values, Mapping):
            raise ValueError(f"masks must be a mapping of MaskConfig fields, got {values!r}")
        self._check_keys(values)
        return dataclasses.replace(self, **values)

    @classmethod
    def _check_keys(cls, values: Mapping[str, Any]) -> None:
        valid = cls.field_names()
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ValueError(f"unknown mask config keys {unknown}; valid: {sorted(valid)}")
