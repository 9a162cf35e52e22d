"""`c2f segment --ray` and `c2f masks --ray` on a real two-node Ray cluster started on this machine.

The slow tests start two `ray start` nodes (one CPU each, a temp folder each, a session each), run the
commands against the cluster's address in a driver subprocess, kill the driver mid-run, rerun it, and
compare every output byte for byte with the local run. The cluster's processes are ended by the process
groups the test started, and the test checks that none is left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import c2f
from c2f.cli.main import cli

RUN_TIMEOUT_S = 600  # every command against the cluster; the machine may be busy
REPO = Path(c2f.__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from c2f.cli.main import cli; cli()"]


def _outputs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.png"))}


def _mtimes(out: Path, rels: list[str]) -> dict[str, int]:
    return {rel: (out / rel).stat().st_mtime_ns for rel in rels}


def _kill_after_first_record(command: list[str], env: dict[str, str], record_file: Path) -> int:
    """Start the driver, SIGKILL it once ``record_file`` holds a finished image; the records it kept."""
    log = record_file.parent.with_name(record_file.parent.name + "-killed.log")
    with log.open("w") as sink:
        driver = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while driver.poll() is None and time.monotonic() < deadline:
            files = list(record_file.parent.glob(record_file.name))
            if files and files[0].read_text().count("\n") >= 1:
                break
            time.sleep(0.01)
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.wait(timeout=60)
    assert driver.returncode == -signal.SIGKILL, f"the run ended before it was killed: {log.read_text()[-3000:]}"
    (kept,) = record_file.parent.glob(record_file.name)
    return kept.read_text().count("\n")


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


@pytest.fixture(scope="module")
def big_demo(tmp_path_factory) -> Path:
    """Demo images large enough (about 256 px) that a run lasts long enough to be killed part-way."""
    from c2f.data.synthetic import generate_demo_dataset

    return generate_demo_dataset(tmp_path_factory.mktemp("raydemo") / "data", n_per_class=5, size=256, seed=3)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two Ray nodes of one CPU each on this machine; afterwards, none of their processes is left."""
    pytest.importorskip("ray", reason='needs the extra: pip install "c2f[ray]"')
    from ray_cluster import LocalCluster

    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))  # workers import this c2f
    started = LocalCluster(tmp_path_factory.mktemp("ray"), nodes=2, cpus_per_node=1, env={"PYTHONPATH": path})
    try:
        yield started
    finally:
        started.stop()
        left = subprocess.run(["ps", "-o", "pid=,cmd=", "-p", ",".join(map(str, started.pids()))],
                              capture_output=True, text=True).stdout if started.pids() else ""
        assert not started.pids(), f"Ray processes left: {left}"


@pytest.mark.slow
def test_segment_on_a_two_node_cluster_matches_local_and_resumes(tmp_path, big_demo, semantic_onnx, cluster):
    src = tmp_path / "in"
    shutil.copytree(big_demo / "images", src)
    images = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.jpg"))
    (src / "disc" / "corrupt.jpg").write_bytes((src / images[0]).read_bytes()[:300])
    (src / "notes.txt").write_text("not an image")
    formats = ["--format", "label", "--format", "mask", "--format", "cutout", "--format", "overlay"]
    common = ["--model", str(semantic_onnx), "--no-progress", "--batch-size", "1", *formats]

    local = CliRunner().invoke(cli, ["segment", str(src), "-o", str(tmp_path / "local"), *common])
    assert local.exit_code == 1, local.output  # the two bad files
    out = tmp_path / "ray"
    command = [*CLI, "segment", str(src), "-o", str(out), *common, "--ray", cluster.address]

    kept = _kill_after_first_record(command, cluster.env, out / "results.jsonl")
    assert 1 <= kept < len(images) and not (out / "report.json").exists()
    finished = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()[:kept]]
    finished_files = [name for record in finished for name in record["outputs"].values()]
    before = _mtimes(out, finished_files)

    rerun = _run(command, cluster.env)
    assert rerun.returncode == 1, rerun.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    local_report = json.loads((tmp_path / "local" / "report.json").read_text())
    assert report["skipped_already_done"] == kept and report["done"] == len(images) - kept
    assert report["failed"] == local_report["failed"]  # same files, same reasons
    assert {f["path"] for f in report["failed"]} == {"disc/corrupt.jpg", "notes.txt"}
    assert _mtimes(out, finished_files) == before  # finished images were not redone
    assert _outputs(out) == _outputs(tmp_path / "local")
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["path"] for r in records) == images  # each image recorded once


@pytest.mark.slow
def test_masks_on_a_two_node_cluster_matches_local_and_resumes(tmp_path, big_demo, cluster):
    data = tmp_path / "data"
    shutil.copytree(big_demo, data)
    (data / "images" / "disc" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    common = ["--no-progress", "--grabcut-iterations", "8"]

    local = CliRunner().invoke(cli, ["masks", "--data", str(data), "--out", str(tmp_path / "local"), *common])
    assert local.exit_code == 0, local.output
    local_summary = json.loads((tmp_path / "local" / "summary.json").read_text())
    out = tmp_path / "ray"
    command = [*CLI, "masks", "--data", str(data), "--out", str(out), *common, "--ray", cluster.address]

    kept = _kill_after_first_record(command, cluster.env, out / "manifest-*.jsonl")
    (journal,) = out.glob("manifest-*.jsonl")
    records = [json.loads(line) for line in journal.read_text().splitlines()[:kept]]
    assert kept < local_summary["counts"]["total"]
    finished = [r for r in records if r["status"] != "failed"]
    finished_files = [name for r in finished for name in r["outputs"].values()]
    before = _mtimes(out, finished_files)

    rerun = _run(command, cluster.env)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["skipped_cached"] == len(finished)
    assert summary["failed"] == local_summary["failed"] and [f["key"] for f in summary["failed"]] == ["disc/broken"]
    assert _mtimes(out, finished_files) == before
    assert _outputs(out) == _outputs(tmp_path / "local")


def test_without_ray_the_error_is_one_line_naming_the_extra(tmp_path, demo_data, semantic_onnx):
    """Ray hidden from the import system, as when it is not installed."""
    hide = "import sys; sys.modules['ray'] = None; from c2f.cli.main import cli; cli()"
    for args in (["segment", str(demo_data / "images"), "-o", str(tmp_path / "o"), "--model", str(semantic_onnx),
                  "--ray"], ["masks", "--data", str(demo_data), "--out", str(tmp_path / "m"), "--ray"]):
        result = subprocess.run([sys.executable, "-c", hide, *args], capture_output=True, text=True, timeout=300)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == ['Error: Ray is not installed; install the extra: '
                                                      'pip install "c2f[ray]"']


def test_only_the_ray_entry_points_import_ray():
    code = ("import sys; import c2f.cli.main, c2f.cli.segment, c2f.cli.masks, c2f.inference.folder, "
            "c2f.masks.stage, c2f.distributed; "
            "print('ray' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.stdout.strip() == "False", result.stderr
