"""c2f.relabel: the cleaned relabelling, and the agreement with earlier labels that rounds can ask for."""

from __future__ import annotations

import numpy as np
import pytest

from c2f.data.io import read_mask, write_label_png
from c2f.data.layouts import load_dataset
from c2f.labelmap import BACKGROUND, IGNORE, agreement
from c2f.training import TrainConfig
from c2f.training.relabel import relabel


def test_agreement_rules_on_known_maps():
    now = np.array([[0, 1, 1, 2, 0, 3]], np.uint8)
    earlier = np.array([[1, 1, 0, 3, 0, IGNORE]], np.uint8)
    # The last pixel was ignored before and stays ignored.
    assert agreement(now, earlier).tolist() == [[IGNORE, 1, IGNORE, IGNORE, 0, IGNORE]]
    # Background wherever either map says background; two different classes stay undecided.
    assert agreement(now, earlier, "background").tolist() == [[BACKGROUND, 1, BACKGROUND, IGNORE, 0, IGNORE]]
    with pytest.raises(ValueError, match="rule must be one of ignore, background"):
        agreement(now, earlier, "union")
    with pytest.raises(ValueError, match="round_disagreement must be one of ignore, background"):
        TrainConfig(round_disagreement="union")


def test_agree_with_ignores_exactly_the_pixels_where_the_earlier_labels_differ(tmp_path, demo_data, semantic_onnx):
    dataset = load_dataset(demo_data)
    options = dict(grabcut=False, min_fg=0.0, max_fg=1.0, progress=False)
    plain = relabel(semantic_onnx, dataset, tmp_path / "plain", **options)
    assert len(plain.labels) == len(dataset.samples)
    keys = sorted(plain.labels)
    earlier = {}
    for key in keys[1:]:  # the first image has no earlier map: it stays as cleaned
        label = read_mask(plain.labels[key])
        changed = label.copy()
        changed[:, label.shape[1] // 2:] = np.where(label[:, label.shape[1] // 2:] == 0, 1, 0)  # right half differs
        earlier[key] = write_label_png(tmp_path / "earlier" / f"{key}.png", changed)
    agreed = relabel(semantic_onnx, dataset, tmp_path / "agreed", agree_with=earlier, write_masks=True, **options)
    assert sorted(agreed.labels) == keys
    first = keys[0]
    assert np.array_equal(read_mask(agreed.labels[first]), read_mask(plain.labels[first]))
    for key in keys[1:]:
        label, cleaned = read_mask(agreed.labels[key]), read_mask(plain.labels[key])
        half = label.shape[1] // 2
        assert np.array_equal(label[:, :half], cleaned[:, :half])
        assert (label[:, half:] == IGNORE).all()
        mask = read_mask(tmp_path / "agreed" / "masks" / f"{key}.png")
        assert not mask[:, half:].any(), "ignored pixels are not foreground in the 0/255 mask"
        assert np.array_equal(mask[:, :half] > 0, (cleaned[:, :half] != 0))
    # Every right-half pixel disagrees with one map saying background: background, not ignore.
    background = relabel(semantic_onnx, dataset, tmp_path / "bg", agree_with=earlier, disagreement="background",
                         **options)
    for key in keys[1:]:
        label, cleaned = read_mask(background.labels[key]), read_mask(plain.labels[key])
        half = label.shape[1] // 2
        assert np.array_equal(label[:, :half], cleaned[:, :half])
        assert (label[:, half:] == BACKGROUND).all()


@pytest.mark.slow  # three short training rounds with the mask stage and GrabCut
def test_round_consensus_thins_the_next_rounds_labels_but_not_the_final_masks(tmp_path, demo_data):
    from c2f.training import TrainConfig, train_recursive

    cfg = TrainConfig(rounds=3, epochs=1, batch_size=4, lr=0.01, resize=64, crop=48, device="cpu",
                      round_consensus=True, masks={"min_fg": 0.0, "max_fg": 1.0})
    out = tmp_path / "run"
    train_recursive(cfg, load_dataset(demo_data), out, progress=False)
    compared = ignored = 0
    for path in (out / "round_2" / "labels").rglob("*.png"):
        key = path.relative_to(out / "round_2" / "labels")
        label, earlier = read_mask(path), read_mask(out / "mask_stage" / "labels" / key)
        kept = label != IGNORE
        assert np.array_equal(label[kept], earlier[kept]), "a kept pixel agrees with round 1's label"
        compared += 1
        ignored += int((~kept).sum())
        final = read_mask(out / "masks" / "labels" / key) if (out / "masks" / "labels" / key).exists() else None
        if final is not None:
            assert not (final == IGNORE).any(), "OUT/masks is the plain relabelling"
    assert compared and ignored, "the round-1 model disagreed with its labels somewhere"
    # Round 3 trains on what every relabelling so far agreed on: what round 2 ignored stays ignored.
    carried = 0
    for path in (out / "round_3" / "labels").rglob("*.png"):
        earlier_path = out / "round_2" / "labels" / path.relative_to(out / "round_3" / "labels")
        if earlier_path.exists():
            label, earlier = read_mask(path), read_mask(earlier_path)
            assert (label[earlier == IGNORE] == IGNORE).all()
            kept = label != IGNORE
            assert np.array_equal(label[kept], earlier[kept])
            carried += int((earlier == IGNORE).sum())
    assert carried, "round 2's labels ignored some pixels of the images round 3 relabelled"
