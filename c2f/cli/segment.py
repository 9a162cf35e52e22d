"""``c2f segment``: segment a folder tree of images with an ONNX model or a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .options import model_options, open_engine, progress_option, ray_option, ray_or_exit, refine_options, workers_type

if TYPE_CHECKING:
    from c2f.inference import Engine

_LABELS_HINT = "'--labels-from'"
EXIT_FAILED = 1
"""Exit status when at least one input failed (0: every input done or already done)."""


@click.command("segment")
@click.argument("input_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True, help=".onnx export or .pt checkpoint.")
@click.option(
    "--format", "formats", multiple=True, default=("label",), show_default=True,
    type=click.Choice(["label", "mask", "cutout", "overlay"]), help="Outputs per image (repeatable).",
)
@click.option("--include", multiple=True, default=("*",), show_default=True, help="Glob of files to take (repeatable).")
@click.option("--exclude", multiple=True, default=(), help="Glob of files to leave out (repeatable).")
@click.option("--workers", type=workers_type, default=2, show_default=True, help="Threads decoding and writing images.")
@click.option(
    "--labels-from", "labels_from", metavar="folders|FILE", default=None,
    help="Known classes per image: each mask then holds only background and those classes. 'folders': "
         "the class folder directly under INPUT_DIR that holds the image (INPUT_DIR/cat/**/*.jpg is cat); "
         "FILE: lines 'relative/path.jpg<TAB>class[,class...]', paths relative to INPUT_DIR (# comments "
         "allowed). Images without labels are reported as failed; an unknown class stops before any work.",
)
@refine_options
@model_options
@progress_option
@ray_option
def command(
    input_dir: Path, out_dir: Path, model: Path, formats: tuple[str, ...], include: tuple[str, ...],
    exclude: tuple[str, ...], workers: int, labels_from: str | None, crf: bool, grabcut: bool, batch_size: int,
    keep_aspect: bool, device: str, threads: int | None, progress: bool, ray_address: str | None,
) -> None:
    """Segment every image under INPUT_DIR, mirroring the tree into --out.

    Images already segmented the same way (same model file, --crf, --grabcut and labels; image file
    unchanged, by content when only its mtime changed) are skipped, so an interrupted run continues
    where it stopped; a rerun with another model or option replaces the masks made before. Unreadable
    files are listed in OUT/report.json and skipped. OUT/results.jsonl records each image's output files
    (and with --labels-from, the labels it was segmented with). Images whose outputs would share a name
    (x.jpg beside x.png in one folder) are named after their full file names: x.jpg.png, x.png.png.
    --out may lie inside INPUT_DIR; it is never read as input.

    Prints the counts done, skipped (already done) and failed. Exit status: 0 when every image is done
    or already done, 1 when any file failed (listed on stderr and in OUT/report.json), 2 for a usage
    error.

    \b
    Example:
      c2f segment photos/ -o masks/ --model model.onnx --format label --format overlay --crf
      c2f segment sorted_photos/ -o masks/ --model model.onnx --labels-from folders --format cutout
      c2f segment photos/ -o masks/ --model model.onnx --labels-from labels.txt
      c2f segment /shared/photos -o /shared/masks --model /shared/model.onnx --ray auto
    """
    from c2f.inference.folder import check_folders, find_files, segment_folder

    try:
        check_folders(input_dir, out_dir)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="'-o' / '--out'") from None
    if ray_address is not None:
        ray_or_exit()
    names = None
    if labels_from is not None:
        files = find_files(input_dir, include, exclude, skip=out_dir)
        names = _label_names(labels_from, [path.relative_to(input_dir).as_posix() for path in files])
    engine = open_engine(model, device=device, threads=threads, batch_size=batch_size, keep_aspect=keep_aspect)
    labels = _resolve(engine, names, labels_from) if names is not None else None
    if ray_address is not None:
        from c2f.distributed.ray_segment import segment_folder_on_ray
        from c2f.inference.folder import plan_folder

        plan = plan_folder(engine, input_dir, out_dir, formats=formats, include=include, exclude=exclude, labels=labels,
                           crf=crf, grabcut=grabcut)
        report = segment_folder_on_ray(engine, plan, address=ray_address, model=model, crf=crf, grabcut=grabcut,
                                       progress=progress, device=device, threads=threads)
    else:
        report = segment_folder(engine, input_dir, out_dir, formats, include=include, exclude=exclude, crf=crf,
                                grabcut=grabcut, progress=progress, workers=workers, labels=labels)
    click.echo(json.dumps(report.to_dict() | {"failed": len(report.failed)}))
    if report.removed_temporaries:
        click.echo(f"removed {len(report.removed_temporaries)} temporary files left by an interrupted run", err=True)
    for path, reason in report.failed:
        click.echo(f"failed {path}: {reason}", err=True)
    if report.failed:
        click.echo(f"{len(report.failed)} files failed (see {out_dir / 'report.json'}); exit status {EXIT_FAILED}",
                   err=True)
        click.get_current_context().exit(EXIT_FAILED)


def _label_names(labels_from: str, rels: list[str]) -> dict[str, tuple[str, ...]]:
    """Class names per relative image path from ``folders`` or a label file (format errors here)."""
    from c2f.inference.image_labels import label_names

    try:
        names = label_names(labels_from, rels)
    except ValueError as error:  # UnicodeDecodeError included
        raise click.BadParameter(str(error), param_hint=_LABELS_HINT) from None
    missing = sorted(set(names) - set(rels)) if labels_from != "folders" else []
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        click.echo(f"warning: {len(missing)} images in {Path(labels_from)} are not under INPUT_DIR or are excluded: "
                   f"{shown}", err=True)
    return names


def _resolve(engine: "Engine", names: dict[str, tuple[str, ...]], labels_from: str) -> dict[str, tuple[int, ...]]:
    """Class names -> the model's indices, so an unknown class stops the run before any image is read."""
    if engine.info.task == "foreground":
        raise click.BadParameter(
            "labels do not apply to a foreground model (it segments the object of any class); leave out "
            "--labels-from", param_hint=_LABELS_HINT,
        )
    resolved = {}
    for rel, classes in names.items():
        try:
            resolved[rel] = engine.class_indices(classes)
        except ValueError as error:
            where = f"folder {rel.split('/', 1)[0]}/" if labels_from == "folders" else f"{rel} in {labels_from}"
            raise click.BadParameter(f"{error} ({where})", param_hint=_LABELS_HINT) from None
    return resolved
