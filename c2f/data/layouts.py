"""Find a dataset by pointing at its root: one loader per on-disk layout, plus auto-detection.

Every loader returns a :class:`~c2f.data.datasets.LabelledDataset` with samples in sorted,
deterministic order and unique keys (posix relative path without suffix), ignoring hidden entries
and non-image files. Class names follow one rule everywhere labels come from names: when every name
is a PASCAL VOC class, the 21-class VOC list and its indices are used (so a "horse" folder is class
13 and results compare with VOC models); otherwise ``["background", *sorted(names)]``. A caller may
fix the class space with ``class_names`` (e.g. to keep indices stable across subsets).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from c2f.data.datasets import VOC_CLASSES, LabelledDataset, MaskFormat, Sample
from c2f.data.io import IMAGE_EXTENSIONS, ImageReadError, read_mask
from c2f.labelmap import IGNORE

logger = logging.getLogger(__name__)


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not _is_hidden(path) and path.is_file()


def _image_files(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted; everything else is skipped (debug log)."""
    images = []
    for path in sorted(folder.iterdir()):
        if _is_image(path):
            images.append(path)
        elif path.is_file():
            logger.debug("ignoring non-image file %s", path)
    return images


def _subdirs(folder: Path) -> list[Path]:
    """Non-hidden sub-folders, sorted."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _is_hidden(p))


def _has_images(folder: Path) -> bool:
    return folder.is_dir() and any(_is_image(p) for p in folder.iterdir())


def _class_folders(parent: Path) -> tuple[list[Path], list[Path]]:
    """The sub-folders of ``parent`` that hold images (the classes) and those that hold none."""
    folders = _subdirs(parent)
    classes = [folder for folder in folders if _has_images(folder)]
    return classes, [folder for folder in folders if folder not in classes]


def _unread_images(root: Path, used: set[Path], skip: tuple[Path, ...]) -> list[Path]:
    """Image files under ``root`` that no sample uses, hidden entries and ``skip`` folders aside."""
    found = []
    for folder, subfolders, files in os.walk(root):  # symlinked folders are not entered
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and Path(folder, d) not in skip]
        found += [path for path in (Path(folder, name) for name in files)
                  if _is_image(path) and path not in used]
    return sorted(found)


def _with_notes(
    dataset: LabelledDataset, *, layout: str, reads: str, empty: list[Path], skip: tuple[Path, ...] = ()
) -> LabelledDataset:
    """The dataset with a note (also logged as a warning) on each thing the layout left out.

    An empty class folder loses its class, and images outside the places the layout ``reads`` are
    never labelled: both shrink the data without an error, so the user must hear of them.
    """
    notes = [f"class folder {folder} holds no images, so class {folder.name!r} is left out; "
             "add images to it or remove it" for folder in empty]
    used = {sample.image for sample in dataset.samples}
    unread = _unread_images(dataset.root, used, skip)
    if unread:
        examples = ", ".join(path.relative_to(dataset.root).as_posix() for path in unread[:3])
        notes.append(f"layout {layout} ignores {len(unread)} of {len(unread) + len(used)} images under "
                     f"{dataset.root} (e.g. {examples}): it reads only {reads}; move them there or choose "
                     "another layout (--layout)")
    for note in notes:
        logger.warning("%s", note)
    return dataclasses.replace(dataset, notes=notes)


def _optional_file(path: Path) -> Path | None:
    return path if path.is_file() else None


def _class_space(found: Iterable[str], given: Sequence[str] | None) -> list[str]:
    """Class names for labels ``found``: the caller's list, VOC's, or background + sorted names."""
    names_found = sorted(set(found))
    if "background" in names_found:
        raise ValueError(
            "'background' cannot be an image-level label: it is implicit in every image"
        )
    if given is None:
        if names_found and all(name in VOC_CLASSES[1:] for name in names_found):
            return list(VOC_CLASSES)
        return ["background", *names_found]
    names = list(given) if given and given[0] == "background" else ["background", *given]
    if len(set(names)) != len(names):
        raise ValueError(f"class_names contains duplicates: {names}")
    missing = [name for name in names_found if name not in names]
    if missing:
        raise ValueError(f"labels {missing} are not in the given class_names {names}")
    return names


def _unique_keys(samples: list[Sample]) -> list[Sample]:
    """Drop samples whose key repeats (``a.jpg`` beside ``a.png``), keeping the first; warn."""
    seen: dict[str, Path] = {}
    unique = []
    for sample in samples:
        if sample.key in seen:
            logger.warning(
                "skipping %s: key %r already used by %s", sample.image, sample.key, seen[sample.key]
            )
            continue
        seen[sample.key] = sample.image
        unique.append(sample)
    return unique


# --- images-masks ---


def load_images_masks(
    root: str | Path, *, class_names: Sequence[str] | None = None
) -> LabelledDataset:
    """``root/images/<class>/*``, optional ``root/masks/<class>/<stem>.png`` (0/255) and
    ``root/saliency/<class>/<stem>.png`` (coarse maps). The voc10-coseg and demo-set layout."""
    root = Path(root)
    folders, empty = _class_folders(root / "images")
    names = _class_space((folder.name for folder in folders), class_names)
    samples = [
        Sample(
            key=f"{folder.name}/{image.stem}",
            image=image,
            labels=(names.index(folder.name),),
            mask=_optional_file(root / "masks" / folder.name / f"{image.stem}.png"),
            saliency=_optional_file(root / "saliency" / folder.name / f"{image.stem}.png"),
        )
        for folder in folders
        for image in _image_files(folder)
    ]
    dataset = LabelledDataset(root, names, _unique_keys(samples), mask_format="binary")
    return _with_notes(dataset, layout="images-masks", reads=f"{root / 'images'}/<class>/", empty=empty,
                       skip=(root / "masks", root / "saliency"))


def _flat_class_name(root: Path, class_names: Sequence[str] | None) -> str:
    """The single class of a flat dataset: from ``class_names``, else a VOC name in the folder name
    (``weizmann-horse`` -> ``horse``), else ``foreground``."""
    if class_names is not None:
        named = [name for name in class_names if name != "background"]
        if len(named) != 1:
            raise ValueError(
                f"a flat images/masks dataset has one class, got class_names {list(class_names)}"
            )
        return named[0]
    tokens = set(re.split(r"[^a-z0-9]+", root.resolve().name.lower()))
    voc_names = [name for name in VOC_CLASSES[1:] if name in tokens]
    return voc_names[0] if len(voc_names) == 1 else "foreground"


def load_images_masks_flat(
    root: str | Path, *, class_names: Sequence[str] | None = None
) -> LabelledDataset:
    """``root/images/*`` with optional ``root/masks/<stem>.png``: one class, class-agnostic task
    (the Weizmann horse layout); every sample is labelled (1,)."""
    root = Path(root)
    samples = [
        Sample(
            key=image.stem,
            image=image,
            labels=(1,),
            mask=_optional_file(root / "masks" / f"{image.stem}.png"),
            saliency=_optional_file(root / "saliency" / f"{image.stem}.png"),
        )
        for image in _image_files(root / "images")
    ]
    names = ["background", _flat_class_name(root, class_names)]
    dataset = LabelledDataset(
        root, names, _unique_keys(samples), mask_format="binary", task="foreground"
    )
    return _with_notes(dataset, layout="images-masks-flat", reads=f"{root / 'images'}/", empty=[],
                       skip=(root / "masks", root / "saliency"))


def load_class_folder(
    root: str | Path, *, class_names: Sequence[str] | None = None
) -> LabelledDataset:
    """``root/<label>/*``: one image-level label per image from its folder, no ground truth
    (the paper's ImageNet-style setting)."""
    root = Path(root)
    folders, empty = _class_folders(root)
    names = _class_space((folder.name for folder in folders), class_names)
    samples = [
        Sample(key=f"{folder.name}/{image.stem}", image=image, labels=(names.index(folder.name),))
        for folder in folders
        for image in _image_files(folder)
    ]
    dataset = LabelledDataset(root, names, _unique_keys(samples))
    return _with_notes(dataset, layout="class-folder", reads=f"{root}/<class>/", empty=empty)


# --- list-file ---


def _parse_list_line(line: str, where: str, base: Path) -> tuple[Path, list[str], Path | None]:
    """One ``path<TAB>label[,label...][<TAB>mask]`` line; a path alone means an unlabelled image."""
    columns = [column.strip() for column in line.split("\t")]
    if len(columns) > 3 or not columns[0]:
        raise ValueError(f"{where}: expected 'path<TAB>label[,label...][<TAB>mask]', got {line!r}")
    image = base / columns[0]
    if image.suffix.lower() not in IMAGE_EXTENSIONS:
        raise ValueError(
            f"{where}: {columns[0]!r} has no image extension (columns must be separated by a TAB)"
        )
    labels = (
        [label.strip() for label in columns[1].split(",")]
        if len(columns) > 1 and columns[1]
        else []
    )
    if any(not label for label in labels):
        raise ValueError(f"{where}: empty label in {columns[1]!r}")
    mask = base / columns[2] if len(columns) == 3 and columns[2] else None
    return image, labels, mask


def _list_key(image: Path, base: Path) -> str:
    try:
        return image.relative_to(base).with_suffix("").as_posix()
    except ValueError:  # an absolute path outside the list's folder
        return image.with_suffix("").as_posix()


def load_list_file(
    path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    mask_format: MaskFormat = "binary",
) -> LabelledDataset:
    """A text file of ``path<TAB>label[,label...][<TAB>mask]`` lines (``#`` comments, blank lines
    skipped); relative paths resolve against the file's folder. Labels are class names, several for
    multi-label images. Order is the file's order (it is the user's choice, and deterministic)."""
    path = Path(path)
    base = path.parent
    entries = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            entries.append(_parse_list_line(line, f"{path}, line {number}", base))
    names = _class_space((label for _, labels, _ in entries for label in labels), class_names)
    samples = [
        Sample(
            key=_list_key(image, base),
            image=image,
            labels=tuple(names.index(label) for label in labels),
            mask=mask,
        )
        for image, labels, mask in entries
    ]
    return LabelledDataset(base, names, _unique_keys(samples), mask_format=mask_format)


# --- PASCAL VOC 2012 ---


def _voc2012_base(root: Path) -> Path | None:
    """The VOC2012 folder given itself, VOCdevkit, or the folder holding VOCdevkit."""
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if all(
            (candidate / sub).is_dir()
            for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation")
        ):
            return candidate
    return None


def load_voc2012(
    root: str | Path, split: str = "train", *, class_names: Sequence[str] | None = None
) -> LabelledDataset:
    """PASCAL VOC 2012 segmentation ``split`` (``train``/``val``/``trainval``).

    Image-level labels are the classes present in each SegmentationClass mask. Ids whose mask is
    missing or unreadable are skipped with a warning.
    """
    base = _voc2012_base(Path(root))
    if base is None:
        raise ValueError(
            f"{root} is not a VOC2012 folder "
            "(JPEGImages/, SegmentationClass/, ImageSets/Segmentation/)"
        )
    if class_names is not None and list(class_names) != list(VOC_CLASSES):
        raise ValueError("VOC2012 masks hold VOC class indices: class_names must be VOC_CLASSES")
    ids_file = base / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not ids_file.is_file():
        available = sorted(p.stem for p in ids_file.parent.glob("*.txt"))
        raise ValueError(f"no split {split!r} in {ids_file.parent}; available: {available}")
    samples = []
    for image_id in sorted(
        {line.strip() for line in ids_file.read_text().splitlines() if line.strip()}
    ):
        mask_path = base / "SegmentationClass" / f"{image_id}.png"
        try:
            values = np.unique(read_mask(mask_path))
        except ImageReadError as exc:
            logger.warning("skipping VOC image %s: %s", image_id, exc)
            continue
        labels = tuple(int(v) for v in values if v != 0 and v != IGNORE)
        if labels and labels[-1] >= len(VOC_CLASSES):
            raise ValueError(f"{mask_path} holds value {labels[-1]}, not a VOC class index")
        samples.append(
            Sample(
                key=image_id,
                image=base / "JPEGImages" / f"{image_id}.jpg",
                labels=labels,
                mask=mask_path,
            )
        )
    return LabelledDataset(base, list(VOC_CLASSES), samples, mask_format="semantic")


# --- Oxford-IIIT Pet ---


def _pet_entries(root: Path, split: str | None) -> list[tuple[str, str]]:
    """(image name, species) pairs from ``annotations/<split>.txt``, or from ``images/`` when
    ``split`` is ``"all"`` or when it is None and no trainval list exists. Species from the list's
    species column (1 cat, 2 dog) when present, else from the file name (capitalised = cat)."""
    list_file = root / "annotations" / f"{split or 'trainval'}.txt"
    if split == "all" or (split is None and not list_file.is_file()):
        names = [image.stem for image in _image_files(root / "images")]
        return [(name, "cat" if name[:1].isupper() else "dog") for name in names]
    if not list_file.is_file():
        raise ValueError(
            f"no Oxford-IIIT Pet list {list_file}; use split='all' to take every image"
        )
    entries = []
    for number, raw in enumerate(list_file.read_text().splitlines(), start=1):
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) >= 3 and fields[2] in ("1", "2"):
            species = "cat" if fields[2] == "1" else "dog"
        elif len(fields) == 1:
            species = "cat" if fields[0][:1].isupper() else "dog"
        else:
            raise ValueError(
                f"{list_file}, line {number}: expected 'Name_123 classid species breedid'"
            )
        entries.append((fields[0], species))
    return sorted(set(entries))


def load_oxford_pet(
    root: str | Path,
    labels: Literal["species", "breed"] = "species",
    split: Literal["trainval", "test", "all"] | None = None,
    *,
    class_names: Sequence[str] | None = None,
) -> LabelledDataset:
    """Oxford-IIIT Pet: ``images/*.jpg``, ``annotations/trimaps/*.png`` (mask_format ``"trimap"``).

    ``labels="species"`` gives classes cat/dog (deliberately not mapped to VOC indices: a 3-class
    problem); ``"breed"`` the 37 breeds named by the file-name prefix before the last ``_``, ordered
    case-insensitively like the official class ids. ``split=None`` takes trainval when listed.
    """
    root = Path(root)
    if labels not in ("species", "breed"):
        raise ValueError(f"labels must be 'species' or 'breed', got {labels!r}")
    entries = _pet_entries(root, split)
    label_of = {
        name: species if labels == "species" else name.rsplit("_", 1)[0]
        for name, species in entries
    }
    found = sorted(set(label_of.values()), key=lambda name: (name.lower(), name))
    names = ["background", *found] if class_names is None else _class_space(found, class_names)
    samples = [
        Sample(
            key=name,
            image=root / "images" / f"{name}.jpg",
            labels=(names.index(label_of[name]),),
            mask=_optional_file(root / "annotations" / "trimaps" / f"{name}.png"),
        )
        for name, _ in entries
    ]
    return LabelledDataset(root, names, _unique_keys(samples), mask_format="trimap")


# --- MIT Object Discovery ---


def _discovery_folders(root: Path) -> list[Path]:
    """Class folders (with a GroundTruth sub-folder) under ``root/Data`` or ``root`` itself."""
    data = root / "Data" if (root / "Data").is_dir() else root
    return [folder for folder in _subdirs(data) if (folder / "GroundTruth").is_dir()]


def load_object_discovery(
    root: str | Path,
    subset: str | None = None,
    *,
    class_names: Sequence[str] | None = None,
) -> LabelledDataset:
    """MIT Object Discovery: ``Data/<Class>/*.jpg`` with ``Data/<Class>/GroundTruth/<stem>.png``.

    A folder's class is its name without trailing digits, so ``Horse100`` (the 100-image subset)
    is class ``Horse``. The subsets repeat images of the full folders, so by default each class uses
    its full folder when present and its subset folder otherwise; ``subset="100"`` picks the
    ``<Class>100`` folders. The task is class-agnostic foreground (Jaccard), as in the benchmark.
    """
    chosen: dict[str, Path] = {}
    for folder in _discovery_folders(Path(root)):
        base = re.sub(r"\d+$", "", folder.name)
        suffix = folder.name[len(base) :]
        if subset is None:
            if not suffix:
                chosen[base] = folder
            else:
                chosen.setdefault(base, folder)
        elif suffix == subset:
            chosen[base] = folder
    names = _class_space(chosen, class_names)
    samples = [
        Sample(
            key=f"{folder.name}/{image.stem}",
            image=image,
            labels=(names.index(base),),
            mask=_optional_file(folder / "GroundTruth" / f"{image.stem}.png"),
        )
        for base, folder in sorted(chosen.items())
        for image in _image_files(folder)
    ]
    return LabelledDataset(
        Path(root), names, _unique_keys(samples), mask_format="binary", task="foreground"
    )


# --- registry and detection ---

LAYOUTS: dict[str, Callable[..., LabelledDataset]] = {
    "images-masks": load_images_masks,
    "images-masks-flat": load_images_masks_flat,
    "class-folder": load_class_folder,
    "list-file": load_list_file,
    "voc2012": load_voc2012,
    "oxford-pet": load_oxford_pet,
    "object-discovery": load_object_discovery,
}
"""Layout name -> loader ``(root, [layout options], *, class_names=None)``; a root suffices."""


def _looks_images_masks(root: Path) -> bool:
    return (root / "images").is_dir() and any(_has_images(d) for d in _subdirs(root / "images"))


# Most specific first: VOC and Pet roots also contain image folders a looser layout would accept.
_DETECTORS: tuple[tuple[str, Callable[[Path], bool]], ...] = (
    ("list-file", lambda p: p.is_file() and p.suffix.lower() not in IMAGE_EXTENSIONS),
    ("voc2012", lambda p: p.is_dir() and _voc2012_base(p) is not None),
    ("oxford-pet", lambda p: (p / "annotations" / "trimaps").is_dir() and (p / "images").is_dir()),
    ("object-discovery", lambda p: p.is_dir() and bool(_discovery_folders(p))),
    ("images-masks", lambda p: p.is_dir() and _looks_images_masks(p)),
    ("images-masks-flat", lambda p: _has_images(p / "images")),
    ("class-folder", lambda p: p.is_dir() and any(_has_images(d) for d in _subdirs(p))),
)


def detect_layout(path: str | Path) -> str:
    """The first layout whose signature matches, checked in the order of ``_DETECTORS``:
    list-file, voc2012, oxford-pet, object-discovery, images-masks, images-masks-flat,
    class-folder."""
    path = Path(path)
    for name, matches in _DETECTORS:
        if matches(path):
            return name
    looked_for = ", ".join(name for name, _ in _DETECTORS)
    raise ValueError(f"cannot recognise a dataset layout at {path}; looked for: {looked_for}")


def load_dataset(
    path: str | Path,
    layout: str = "auto",
    class_names: Sequence[str] | None = None,
    **options: object,
) -> LabelledDataset:
    """Load the dataset at ``path`` with a named layout or auto-detection.

    ``options`` go to the layout's loader (e.g. ``split="val"`` for voc2012, ``labels="breed"`` for
    oxford-pet). An empty result is an error: it always means a wrong path or layout.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset path {path} does not exist")
    if layout == "auto":
        layout = detect_layout(path)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid layouts: auto, {', '.join(LAYOUTS)}")
    dataset = LAYOUTS[layout](path, class_names=class_names, **options)
    if not dataset.samples:
        raise ValueError(f"no images found at {path} with layout {layout!r}")
    logger.info(
        "loaded %d images, %d classes from %s (layout %s)",
        len(dataset),
        dataset.num_classes,
        path,
        layout,
    )
    return dataset
