"""Recursive training end to end on generated data: rounds, artifacts, resume after a kill, DDP."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from c2f.data.layouts import load_dataset
from c2f.training import TrainConfig, train_recursive
from c2f.checkpoint import load_checkpoint
from c2f.training.samples import LabelMapDataset

TINY = ["--rounds", "2", "--epochs", "2", "--batch-size", "4", "--lr", "0.01", "--resize", "64", "--crop", "48",
        "--no-progress", "--device", "cpu"]


def _train(data: Path, out: Path, *extra: str, launcher: list[str] | None = None) -> subprocess.Popen:
    cmd = (launcher or [sys.executable, "-m", "c2f.cli.main"]) + ["train", "--data", str(data), "--out", str(out), *TINY, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # A session of its own: a kill (or torchrun's own signalling) never reaches pytest.
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _finish(proc: subprocess.Popen) -> str:
    output, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, output
    return output


@pytest.fixture(scope="module")
def unbroken_run(tmp_path_factory, demo_data) -> Path:
    out = tmp_path_factory.mktemp("runs") / "unbroken"
    output = _finish(_train(demo_data, out, "--val-fraction", "0.25"))
    assert "round 2:" in output
    return out


def test_run_writes_every_round_artifact(unbroken_run) -> None:
    for round_index in (1, 2):
        round_dir = unbroken_run / f"round_{round_index}"
        metrics = json.loads((round_dir / "metrics.json").read_text())
        assert metrics["round"] == round_index and metrics["steps"] > 0
        assert 0.0 <= metrics["val"]["miou"] <= 1.0
        assert (round_dir / "label_stats.json").exists()
        assert list((round_dir / "overlays").glob("*.png"))
        checkpoint = load_checkpoint(round_dir / "checkpoint.pt")
        assert checkpoint["round"] == round_index and checkpoint["class_names"][0] == "background"
        assert {"model", "optimizer", "config", "train_config", "epoch"} <= set(checkpoint)
    assert list((unbroken_run / "round_2" / "labels").rglob("*.png")), "round 1 relabelled the training images"
    rescued = json.loads((unbroken_run / "round_2" / "objectness_fallback.json").read_text())
    next_labels = json.loads((unbroken_run / "round_1" / "metrics.json").read_text())["next_labels"]
    assert next_labels["objectness_fallback"] == len(rescued) <= next_labels["images"]
    summary = json.loads((unbroken_run / "metrics.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    assert {"coarse", "refined"} <= set(summary["mask_stage"])
    assert (unbroken_run / "rounds.png").stat().st_size > 0
    assert TrainConfig.from_file(unbroken_run / "config.yaml").rounds == 2


def _assert_same_final_weights(run: Path, reference_run: Path) -> None:
    resumed = load_checkpoint(run / "round_2" / "checkpoint.pt")["model"]
    reference = load_checkpoint(reference_run / "round_2" / "checkpoint.pt")["model"]
    for name, tensor in reference.items():
        assert torch.allclose(resumed[name].float(), tensor.float(), atol=1e-5), name


@pytest.mark.slow  # trains in a subprocess, kills and resumes it
def test_resume_after_kill_matches_unbroken_run(tmp_path, demo_data, unbroken_run) -> None:
    out = tmp_path / "killed"
    proc = _train(demo_data, out, "--val-fraction", "0.25")
    deadline = time.monotonic() + 600
    while not (out / "last.pt").exists():  # the first epoch of round 1 has been saved: kill mid-round
        assert proc.poll() is None and time.monotonic() < deadline, "run ended before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "round_1" / "checkpoint.pt").exists(), "killed too late to test a mid-round resume"
    output = _finish(_train(demo_data, out, "--val-fraction", "0.25", "--resume"))
    assert "round 2:" in output
    _assert_same_final_weights(out, unbroken_run)
    assert json.loads((out / "round_2" / "metrics.json").read_text())["val"]["miou"] == pytest.approx(
        json.loads((unbroken_run / "round_2" / "metrics.json").read_text())["val"]["miou"], abs=1e-4
    )


# `c2f train` that, once it has written three of round 2's labels, signals and blocks inside the
# relabelling: the test then kills it there, deterministically (relabelling is too quick to catch).
_STOP_IN_RELABEL = """
import sys, time
from pathlib import Path
import c2f.training.relabel as relabel
from c2f.cli.main import cli

marker, write = Path(sys.argv.pop(1)), relabel.write_label_png
def write_then_block(path, label_map):
    write(path, label_map)
    if len(list(Path(path).parent.glob("*.png"))) >= 3:
        marker.touch()
        time.sleep(3600)
relabel.write_label_png = write_then_block
cli(sys.argv[1:], prog_name="c2f")
"""


def _flat(metrics, prefix: str = "") -> dict:
    """A round's metrics as {"val/miou": 0.5, ...}, without wall-clock fields, for pytest.approx."""
    if isinstance(metrics, dict):
        items = [(k, v) for k, v in metrics.items() if "second" not in k and "time" not in k]
    elif isinstance(metrics, list):
        items = list(enumerate(metrics))
    else:
        return {prefix: metrics}
    return {key: value for k, v in items for key, value in _flat(v, f"{prefix}/{k}").items()}


@pytest.mark.slow  # trains in a subprocess, kills and resumes it
def test_resume_after_kill_during_relabelling_matches_unbroken_run(tmp_path, demo_data, unbroken_run) -> None:
    out, marker = tmp_path / "killed", tmp_path / "relabelling"
    proc = _train(demo_data, out, "--val-fraction", "0.25",
                  launcher=[sys.executable, "-c", _STOP_IN_RELABEL, str(marker)])
    deadline = time.monotonic() + 600
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "relabelling never started"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # Killed between rounds: round 1 trained and saved, its relabelling half done and not marked complete.
    assert (out / "round_1" / "checkpoint.pt").exists() and not (out / "round_1" / "metrics.json").exists()
    partial = list((out / "round_2" / "labels").rglob("*.png"))
    reference_labels = list((unbroken_run / "round_2" / "labels").rglob("*.png"))
    assert 3 <= len(partial) < len(reference_labels)
    output = _finish(_train(demo_data, out, "--val-fraction", "0.25", "--resume"))
    assert "round 2:" in output
    _assert_same_final_weights(out, unbroken_run)
    for round_index in (1, 2):
        got = _flat(json.loads((out / f"round_{round_index}" / "metrics.json").read_text()))
        want = _flat(json.loads((unbroken_run / f"round_{round_index}" / "metrics.json").read_text()))
        assert "/val/miou" in want and ("/next_labels/images" in want) == (round_index == 1)
        assert got == pytest.approx(want, abs=1e-4), round_index
    relabelled = {p.name: p.read_bytes() for p in (out / "round_2" / "labels").rglob("*.png")}
    assert relabelled == {p.name: p.read_bytes() for p in reference_labels}


def test_existing_run_is_not_overwritten(demo_data, unbroken_run) -> None:
    proc = _train(demo_data, unbroken_run)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0 and "--resume" in output


@pytest.mark.slow  # torchrun with two processes
def test_distributed_two_processes_take_the_same_steps(tmp_path, demo_data, unbroken_run) -> None:
    out = tmp_path / "ddp"
    with socket.socket() as probe:  # torchrun's --master-port 0 does not pick a port: it hangs
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
                "--master-port", str(port), "-m", "c2f.cli.main"]
    # The CPU recipe's decoder and head-only first epoch: DDP is rebuilt when the backbone thaws.
    _finish(_train(demo_data, out, "--val-fraction", "0.25", "--arch", "deeplab-lite", "--head-only-epochs", "1",
                   launcher=launcher))
    # The mask stage was sharded over the ranks: a journal each, outputs identical to one process's.
    journals = sorted(p.name.split(".", 1)[1] for p in (out / "mask_stage").glob("manifest-*.jsonl"))
    assert journals == ["rank0-of-2.jsonl", "rank1-of-2.jsonl"]
    for name in journals:
        (journal,) = (out / "mask_stage").glob(f"manifest-*.{name}")
        assert journal.read_text().strip(), f"{name} processed no image"
    for stage in ("coarse", "refined", "labels"):
        ddp_files = {p.relative_to(out / "mask_stage"): p.read_bytes() for p in (out / "mask_stage" / stage).rglob("*.png")}
        single_files = {p.relative_to(unbroken_run / "mask_stage"): p.read_bytes()
                        for p in (unbroken_run / "mask_stage" / stage).rglob("*.png")}
        assert ddp_files and ddp_files == single_files, stage
    ddp = json.loads((out / "round_1" / "metrics.json").read_text())
    single = json.loads((unbroken_run / "round_1" / "metrics.json").read_text())
    assert ddp["train_images"] == single["train_images"] and ddp["steps"] == single["steps"]
    # Later rounds train on what each run's own model relabelled, so compare with the step formula.
    ddp = json.loads((out / "round_2" / "metrics.json").read_text())
    assert ddp["steps"] == 2 * math.ceil(ddp["train_images"] / 4)


def test_config_file_and_overrides(tmp_path) -> None:
    (tmp_path / "c.yaml").write_text("rounds: 3\nlr: 0.001\ntask: foreground\n")
    (tmp_path / "c.toml").write_text("rounds = 4\nbatch_size = 6\n")
    cfg = TrainConfig.from_file(tmp_path / "c.yaml").updated(lr=None, epochs=7)
    assert (cfg.rounds, cfg.lr, cfg.task, cfg.epochs, cfg.model_arch) == (3, 0.001, "foreground", 7, "fpn")
    assert TrainConfig.from_file(tmp_path / "c.toml").batch_size == 6
    (tmp_path / "bad.yaml").write_text("rounds: 3\nlearning_rate: 1\n")
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig.from_file(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="crop"):
        TrainConfig(resize=100, crop=200)


def test_bundled_recipes_load_by_name_and_path(tmp_path) -> None:
    from c2f.training.config import RECIPES_DIR

    cpu = TrainConfig.from_recipe("cpu")
    assert cpu.model_arch == "deeplab-lite" and cpu.head_only_epochs > 0 and cpu.task == "semantic"
    assert TrainConfig.from_recipe("cpu-foreground").model_arch == "fpn"
    assert TrainConfig.from_recipe(RECIPES_DIR / "cpu.yaml") == cpu
    (tmp_path / "mine.yaml").write_text("rounds: 2\n")
    assert TrainConfig.from_recipe(tmp_path / "mine.yaml").rounds == 2
    with pytest.raises(ValueError, match="cpu, cpu-foreground"):
        TrainConfig.from_recipe("gpu")


def test_evaluate_command_on_a_run_and_a_model(tmp_path, demo_data, unbroken_run) -> None:
    from click.testing import CliRunner

    from c2f.cli.main import cli

    out = tmp_path / "eval"
    result = CliRunner().invoke(cli, ["evaluate", "--run", str(unbroken_run), "--data", str(demo_data),
                                      "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "mIoU" in result.output and "fg Jaccard" in result.output
    rounds = json.loads((out / "rounds.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    for name in ("round_1", "round_2"):
        metrics = json.loads((out / f"{name}.json").read_text())
        assert metrics["images"] == 18 and 0 <= metrics["miou"] <= 1
        assert (out / f"{name}_confusion.png").stat().st_size > 0
    assert (out / "rounds.png").stat().st_size > 0

    single = tmp_path / "single"
    result = CliRunner().invoke(cli, ["evaluate", "--model", str(unbroken_run / "round_2" / "checkpoint.pt"),
                                      "--data", str(demo_data), "--out", str(single), "--compare-crf", "--no-progress"])
    assert result.exit_code == 0, result.output
    plain = json.loads((single / "checkpoint.json").read_text())
    with_crf = json.loads((single / "checkpoint_crf.json").read_text())
    assert plain["crf"] is False and with_crf["crf"] is True
    assert plain["miou"] == pytest.approx(rounds[1]["val"]["miou"])



def test_foreground_task_trains_fpn(tmp_path, demo_data) -> None:
    out = tmp_path / "fg"
    output = _finish(_train(demo_data, out, "--task", "foreground", "--val-fraction", "0.25",
                            "--generator", "box", "--generator-option", "fraction=0.6"))
    assert "round 2:" in output
    # The generator option reached the mask stage (and the saved config, for --resume).
    summary = json.loads((out / "mask_stage" / "summary.json").read_text())
    assert summary["settings"]["generator_settings"] == {"fraction": 0.6}
    assert TrainConfig.from_file(out / "config.yaml").masks.generator_options == {"fraction": 0.6}
    checkpoint = load_checkpoint(out / "round_2" / "checkpoint.pt")
    assert checkpoint["task"] == "foreground" and checkpoint["config"]["arch"] == "fpn"
    assert checkpoint["class_names"] == ["background", "foreground"]
    labels = json.loads((out / "round_1" / "label_stats.json").read_text())["pixels_per_class"]
    assert set(labels) <= {"background", "foreground"}


def test_cross_fitted_relabelling_trains_a_model_per_fold_without_its_images(tmp_path, demo_data) -> None:
    from c2f.training.recursive import _existing_labels, _pairs, relabel_fold

    out = tmp_path / "folds"
    output = _finish(_train(demo_data, out, "--rounds", "3", "--epochs", "1", "--warm-start", "--relabel-folds", "2"))
    assert "round 3:" in output
    data = load_dataset(demo_data)
    labels = _existing_labels(data, out / "mask_stage" / "labels")
    for round_index in (1, 2):
        if round_index > 1:  # a round whose relabelling dropped every image hands its labels on
            labels = _existing_labels(data, out / f"round_{round_index}" / "labels") or labels
        folds = [_pairs(data, labels, fold, 2) for fold in (0, 1)]
        for fold, pairs in enumerate(folds):
            assert pairs and all(relabel_fold(pair.key, 2) != fold for pair in pairs)
        assert sum(len(pairs) for pairs in folds) == len(labels)  # each image is left out exactly once
        metrics = json.loads((out / f"round_{round_index}" / "metrics.json").read_text())
        assert metrics["relabel_fold_steps"] == [math.ceil(len(pairs) / 4) for pairs in folds]
        for fold in (0, 1):
            state = load_checkpoint(out / f"round_{round_index}" / f"fold_{fold}" / "last.pt")
            assert state["round"] == round_index and state["steps"] == metrics["relabel_fold_steps"][fold]
    assert not (out / "round_3" / "fold_0").exists(), "the last round relabels nothing"
    assert (out / "round_3" / "checkpoint.pt").exists()


@pytest.mark.slow  # trains in a subprocess, kills and resumes it
def test_resume_after_a_kill_while_training_a_fold_matches_unbroken_run(tmp_path, demo_data, monkeypatch) -> None:
    import c2f.training.recursive as recursive

    cfg = TrainConfig(rounds=2, epochs=2, batch_size=4, lr=0.01, resize=64, crop=48, relabel_folds=2,
                      warm_start=True, device="cpu")
    data = load_dataset(demo_data)
    recursive.train_recursive(cfg, data, tmp_path / "unbroken", progress=False)

    class Killed(Exception):
        pass

    def kill(_epoch: int) -> None:
        raise Killed

    fold_1_epochs: list[tuple[int, int]] = []  # (round, epoch) trained in fold 1, after the kill

    def train_round_watching_fold_1(dataset, cfg, num_classes, round_index, task, class_names, last_path, *args,
                                    **kwargs):
        if last_path.parent.name == "fold_1":
            kwargs["on_epoch_end"] = kill if killing else (lambda epoch: fold_1_epochs.append((round_index, epoch)))
        return train_round(dataset, cfg, num_classes, round_index, task, class_names, last_path, *args, **kwargs)

    train_round = recursive.train_round
    monkeypatch.setattr(recursive, "train_round", train_round_watching_fold_1)
    out, killing = tmp_path / "killed", True
    with pytest.raises(Killed):  # after fold 1's first epoch is saved
        recursive.train_recursive(cfg, data, out, progress=False)
    assert load_checkpoint(out / "round_1" / "fold_1" / "last.pt")["epoch"] == 0
    assert not (out / "round_1" / "metrics.json").exists()
    killing = False
    recursive.train_recursive(cfg, data, out, resume=True, progress=False)
    assert fold_1_epochs == [(1, 1)], "fold 1 continued from its checkpoint instead of starting over"
    _assert_same_final_weights(out, tmp_path / "unbroken")

    def round_2_labels(run: Path) -> dict[Path, bytes]:
        return {p.relative_to(run): p.read_bytes() for p in run.glob("round_2/labels/*/*.png")}

    assert round_2_labels(out) and round_2_labels(out) == round_2_labels(tmp_path / "unbroken")


def test_evaluate_with_known_labels_scores_only_the_images_own_classes(tmp_path, demo_data,
                                                                       semantic_checkpoint) -> None:
    """An untrained head scatters every class over every image; known labels leave only the image's own."""
    from click.testing import CliRunner

    from c2f.cli.main import cli

    def evaluate(*extra: str) -> dict:
        out = tmp_path / "-".join(("eval", *extra))
        result = CliRunner().invoke(cli, ["evaluate", "--model", str(semantic_checkpoint), "--data", str(demo_data),
                                          "--out", str(out), "--no-progress", *extra])
        assert result.exit_code == 0, result.output
        return json.loads((out / "semantic.json").read_text())

    def foreign(metrics: dict) -> int:
        """Object pixels of class c predicted as another object class (each demo image has one class)."""
        confusion = metrics["confusion"]
        return sum(confusion[c][k] for c in range(1, len(confusion)) for k in range(1, len(confusion)) if k != c)

    plain, restricted = evaluate(), evaluate("--known-labels")
    assert plain["known_labels"] is False and restricted["known_labels"] is True
    assert foreign(plain) > 0 and foreign(restricted) == 0


def _ground_truth_pairs(demo_data: Path, folder: Path, count: int = 4):
    """The demo data set and training pairs of its first images on their ground-truth label maps."""
    from c2f.data.io import read_mask, write_label_png
    from c2f.data.layouts import load_dataset
    from c2f.refine.labels import compose_label_map
    from c2f.training.samples import Pair

    data = load_dataset(demo_data)
    return data, [Pair(s.key, s.image, write_label_png(folder / f"{s.key}.png",
                                                        compose_label_map(read_mask(s.mask) > 127, s.labels)))
                  for s in data.samples[:count]]


def test_warm_start_begins_from_the_given_checkpoint(tmp_path, demo_data) -> None:
    """With lr 0 training moves no parameter, so the result shows where the round started."""
    from c2f.checkpoint import make_checkpoint, save_checkpoint
    from c2f.training.distributed import DistInfo
    from c2f.training.trainer import new_model, train_round

    data, pairs = _ground_truth_pairs(demo_data, tmp_path / "labels")
    cfg = TrainConfig(epochs=1, batch_size=2, lr=0.0, resize=64, crop=48)
    previous = new_model(cfg, data.num_classes, round_index=1)
    with torch.no_grad():
        for parameter in previous.parameters():
            parameter.add_(0.01)  # unlike any fresh model
    init = save_checkpoint(make_checkpoint(previous, "semantic", data.class_names, 64), tmp_path / "prev.pt")

    def trained(init_from):
        model = train_round(LabelMapDataset(pairs, 64, 48), cfg, data.num_classes, 2, "semantic", data.class_names,
                            tmp_path / f"last-{init_from is None}.pt", "cpu", dist_info=DistInfo(), progress=False,
                            init_from=init_from)
        return dict(model.named_parameters())

    warm, fresh = trained(init), trained(None)
    reference = dict(previous.named_parameters())
    assert all(torch.equal(warm[name], reference[name]) for name in reference)
    assert not torch.equal(fresh["head.classifier.weight"], reference["head.classifier.weight"])


def test_a_round_trains_with_the_configured_loss(tmp_path, demo_data) -> None:
    """From the same seed: gce's steps differ from cross-entropy's, and gce with q near 0 takes cross-entropy's."""
    from c2f.training.distributed import DistInfo
    from c2f.training.trainer import train_round

    data, pairs = _ground_truth_pairs(demo_data, tmp_path / "labels")

    def head(**loss) -> torch.Tensor:
        cfg = TrainConfig(epochs=1, batch_size=4, lr=0.01, resize=64, crop=48, **loss)
        model = train_round(LabelMapDataset(pairs, 64, 48), cfg, data.num_classes, 1, "semantic", data.class_names,
                            tmp_path / "last.pt", "cpu", dist_info=DistInfo(), progress=False)
        (tmp_path / "last.pt").unlink()
        return model.head.classifier.weight.detach().clone()

    ce, gce, gce_near_ce = head(), head(loss="gce"), head(loss="gce", gce_q=1e-4)
    assert not torch.allclose(gce, ce, atol=1e-4)
    assert torch.allclose(gce_near_ce, ce, atol=1e-4)


@pytest.mark.slow  # trains in a subprocess, kills and resumes it
def test_weight_average_follows_the_trained_weights_and_resumes_exactly(tmp_path, demo_data) -> None:
    """With one step per epoch the EMA can be recomputed from the per-epoch SGD weights.

    The average does not change the SGD trajectory, so a run without it gives the weights w1, w2, w3;
    with decay 0.5 (warmed up as min(0.5, (1+n)/(10+n))) the round's model must be
    0.25 * (2/11 * w1 + 9/11 * w2) + 0.75 * w3. A round interrupted after its first epoch and resumed
    must end with the same average.
    """
    from c2f.training.distributed import DistInfo
    from c2f.training.trainer import train_round

    data, pairs = _ground_truth_pairs(demo_data, tmp_path / "labels")

    def run(decay: float, last: Path, on_epoch_end=None):
        cfg = TrainConfig(epochs=3, batch_size=4, lr=0.01, resize=64, crop=48, ema_decay=decay)
        return train_round(LabelMapDataset(pairs, 64, 48), cfg, data.num_classes, 1, "semantic", data.class_names,
                           last, "cpu", dist_info=DistInfo(), progress=False, on_epoch_end=on_epoch_end)

    plain_last = tmp_path / "plain.pt"
    trajectory = []
    run(0.0, plain_last, on_epoch_end=lambda epoch: trajectory.append(load_checkpoint(plain_last)["model"]))
    w1, w2, w3 = trajectory
    averaged = dict(run(0.5, tmp_path / "ema.pt").named_parameters())
    saved = load_checkpoint(tmp_path / "ema.pt")
    assert saved["averaged_steps"] == 3
    for name, value in averaged.items():
        expected = 0.25 * (2 / 11 * w1[name] + 9 / 11 * w2[name]) + 0.75 * w3[name]
        assert torch.allclose(value, expected, atol=1e-6), name
        assert torch.equal(saved["model"][name], value.detach())
        assert torch.equal(saved["trained"][name], w3[name])
    assert not torch.allclose(averaged["head.classifier.weight"], w3["head.classifier.weight"])

    class Killed(Exception):
        pass

    def kill_after_first_epoch(epoch: int) -> None:
        if epoch == 0:
            raise Killed

    with pytest.raises(Killed):
        run(0.5, tmp_path / "resumed.pt", on_epoch_end=kill_after_first_epoch)
    resumed = dict(run(0.5, tmp_path / "resumed.pt").named_parameters())
    assert all(torch.allclose(resumed[name], averaged[name], atol=1e-6) for name in averaged)


def test_final_masks_are_the_last_models_relabelling(tmp_path, demo_data, unbroken_run) -> None:
    """OUT/masks of a one-round run is exactly what round 1 of the two-round run relabelled."""
    import numpy as np

    from c2f.data.io import read_mask

    out = tmp_path / "one-round"
    _finish(_train(demo_data, out, "--val-fraction", "0.25", "--rounds", "1"))
    delivered = {p.relative_to(out / "masks" / "labels"): p.read_bytes()
                 for p in (out / "masks" / "labels").rglob("*.png")}
    relabelled = {p.relative_to(unbroken_run / "round_2" / "labels"): p.read_bytes()
                  for p in (unbroken_run / "round_2" / "labels").rglob("*.png")}
    assert delivered and delivered == relabelled
    for rel in delivered:
        label_map = read_mask(out / "masks" / "labels" / rel)
        mask = read_mask(out / "masks" / "masks" / rel)
        assert set(np.unique(mask)) <= {0, 255}
        assert np.array_equal(mask == 255, (label_map != 0) & (label_map != 255))
    summary = json.loads((out / "masks" / "summary.json").read_text())
    dropped = json.loads((out / "masks" / "dropped.json").read_text())
    assert summary["masks"] == len(delivered) and summary["dropped"] == len(dropped)
    assert summary["checkpoint"] == "round_1/checkpoint.pt"
    quality = json.loads((out / "masks" / "quality.json").read_text())
    assert summary["quality"]["miou"] == quality["miou"] and 0.0 < quality["miou"] <= 1.0
    assert json.loads((out / "metrics.json").read_text())["masks"] == summary
    # The two-round run delivers its own last model's masks.
    assert json.loads((unbroken_run / "masks" / "summary.json").read_text())["checkpoint"] == "round_2/checkpoint.pt"
    # A finished masks folder made by another model is not taken for this run's: a resume redoes it.
    shutil.rmtree(out / "masks")
    shutil.copytree(unbroken_run / "masks", out / "masks")
    _finish(_train(demo_data, out, "--val-fraction", "0.25", "--rounds", "1", "--resume"))
    assert json.loads((out / "masks" / "summary.json").read_text())["checkpoint"] == "round_1/checkpoint.pt"
    assert {p.relative_to(out / "masks" / "labels"): p.read_bytes()
            for p in (out / "masks" / "labels").rglob("*.png")} == delivered


@pytest.mark.parametrize("head_only_epochs", [0, 1, 2])
def test_head_only_epochs_keep_the_imagenet_backbone(tmp_path, demo_data, head_only_epochs) -> None:
    """During head-only epochs the backbone (weights and BatchNorm statistics) stays ImageNet's."""
    from c2f.training.distributed import DistInfo
    from c2f.training.trainer import new_model, train_round

    data, pairs = _ground_truth_pairs(demo_data, tmp_path / "labels")
    cfg = TrainConfig(arch="deeplab-lite", epochs=2, batch_size=4, lr=0.01, resize=64, crop=48,
                      freeze_bn=False, head_only_epochs=head_only_epochs)
    imagenet = new_model(cfg, data.num_classes, 1).state_dict()
    per_epoch = []
    last = tmp_path / "last.pt"
    model = train_round(LabelMapDataset(pairs, 64, 48), cfg, data.num_classes, 1, "semantic", data.class_names,
                        last, "cpu", dist_info=DistInfo(), progress=False,
                        on_epoch_end=lambda epoch: per_epoch.append(load_checkpoint(last)["model"]))
    for epoch, state in enumerate(per_epoch):
        frozen = epoch < head_only_epochs
        backbone = [name for name in imagenet if name.startswith("backbone.")]
        assert all(torch.equal(state[name], imagenet[name]) for name in backbone) == frozen, epoch
        assert not torch.equal(state["head.classifier.weight"], imagenet["head.classifier.weight"])
    assert all(p.requires_grad for p in model.parameters())


def test_lite_model_trained_head_first_exports_with_parity(tmp_path, demo_data) -> None:
    """The CPU recipe's model (deeplab-lite, a head-only epoch, then fine-tuning) exports like any other."""
    from c2f.data.io import read_image
    from c2f.export import export_onnx
    from c2f.checkpoint import make_checkpoint, save_checkpoint
    from c2f.training.distributed import DistInfo
    from c2f.training.trainer import train_round

    data, pairs = _ground_truth_pairs(demo_data, tmp_path / "labels", count=8)
    cfg = TrainConfig(arch="deeplab-lite", epochs=3, batch_size=4, lr=0.01, resize=96, crop=80, head_only_epochs=1)
    model = train_round(LabelMapDataset(pairs, 96, 80), cfg, data.num_classes, 1, "semantic", data.class_names,
                        tmp_path / "last.pt", "cpu", dist_info=DistInfo(), progress=False)
    checkpoint = save_checkpoint(make_checkpoint(model, "semantic", data.class_names, 96), tmp_path / "m.pt")
    images = [read_image(s.image) for s in data.samples[:6]]
    parity = export_onnx(checkpoint, tmp_path / "m.onnx", images)
    assert parity.argmax_agreement >= 0.999


def test_a_resumed_run_keeps_the_settings_it_was_started_with(tmp_path, demo_data) -> None:
    """Finished rounds cannot be retrained: resume reads config.yaml and refuses other training settings."""
    from c2f.training.recursive import resumed_config

    out = tmp_path / "run"
    out.mkdir()
    started = TrainConfig(rounds=2, epochs=1, lr=0.01, masks={"workers": 2})
    started.save(out / "config.yaml")
    data = load_dataset(demo_data)
    with pytest.raises(ValueError, match=r"lr 0\.01 -> 0\.02.*masks\.ignore_band 0 -> 3"):
        train_recursive(started.updated(lr=0.02, masks={"ignore_band": 3}), data, out, resume=True, progress=False)
    assert TrainConfig.from_file(out / "config.yaml") == started, "a refused resume leaves config.yaml alone"
    assert resumed_config(None, out / "config.yaml") == started
    moved = started.updated(device="cpu", loader_workers=1, masks={"workers": 1})  # where it runs, not what it trains
    assert resumed_config(moved, out / "config.yaml") == moved
    with pytest.raises(ValueError, match="no config.yaml"):
        train_recursive(None, data, tmp_path / "empty", resume=True, progress=False)
