"""Datasets for c2f: robust image IO, the dataset model, on-disk layouts, the synthetic demo set."""

from c2f.data.datasets import (
    BACKGROUND,
    IGNORE,
    VOC_CLASSES,
    LabelledDataset,
    Sample,
    check_images,
    class_index,
    ground_truth,
    split,
)
from c2f.data.io import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    decode_image,
    image_shape,
    read_image,
    read_mask,
    voc_palette,
    write_label_png,
    write_mask_png,
    write_rgb,
    write_rgba,
)
from c2f.data.layouts import LAYOUTS, detect_layout, load_dataset, load_voc2012
from c2f.data.synthetic import DEMO_CLASSES, generate_demo_dataset

__all__ = [
    "BACKGROUND",
    "DEMO_CLASSES",
    "IGNORE",
    "IMAGE_EXTENSIONS",
    "LAYOUTS",
    "VOC_CLASSES",
    "ImageReadError",
    "LabelledDataset",
    "Sample",
    "check_images",
    "class_index",
    "decode_image",
    "detect_layout",
    "generate_demo_dataset",
    "ground_truth",
    "image_shape",
    "load_dataset",
    "load_voc2012",
    "read_image",
    "read_mask",
    "split",
    "voc_palette",
    "write_label_png",
    "write_mask_png",
    "write_rgb",
    "write_rgba",
]
