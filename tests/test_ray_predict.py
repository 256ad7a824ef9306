"""`predict --engine ray` on a real Ray cluster of two nodes on this machine: the same records as local
predict, each row once even when an actor is killed mid-run; and the errors that need no cluster."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import missing
from distilbench.cli.commands import main
from distilbench.runtime.auto import candidate_backends
from distilbench.runtime.options import InferenceOptions
from distilbench.runtime.predict import predict

WORDS = (
    "stocks rally as inflation cools central bank rates striker scores late winner league title chip maker "
    "unveils faster phone battery election polls minister resigns film festival award actor"
).split()


def have_ray() -> None:
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        missing("ray is not installed (pip install -e '.[dev]' installs it)")


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_bert_dir):
    """A multiclass and a multilabel classifier on the tiny BERT (random heads, scaled so that probabilities
    are far from ties: the comparisons test records, not rounding at 0.5); multilabel with stored thresholds."""
    import torch

    from distilbench.experiments.compare import store_thresholds
    from distilbench.models.registry import load_classifier

    root = tmp_path_factory.mktemp("ray-models")
    paths = {}
    for task, labels in (("multiclass", ["business", "sport", "tech"]), ("multilabel", ["ads", "news", "spam"])):
        torch.manual_seed(1)
        model, tokenizer = load_classifier(str(tiny_bert_dir), task, labels)
        with torch.no_grad():
            model.classifier.weight.mul_(40)
        path = root / task
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        if task == "multilabel":
            store_thresholds(path, labels, np.array([0.3, 0.5, 0.7]), "f1")
        paths[task] = path
    return paths


def headlines(n: int, seed: int) -> list[str]:
    """Short texts of varied length, with the cells CSV must quote, a blank one and non-ASCII letters."""
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, rng.integers(2, 14))) for _ in range(n)]
    texts[3], texts[7], texts[11], texts[13] = "", 'he said "rates", then left', "two\nlines, one text", "Zürich ünd"
    return texts


@pytest.fixture(scope="module")
def ray_cluster():
    """A head node and one worker node (1 CPU each) on this machine, stopped with their processes at the end."""
    have_ray()
    from ray.cluster_utils import Cluster

    cluster = Cluster()
    session = None
    try:
        cluster.add_node(num_cpus=1, include_dashboard=False)  # the head
        session = cluster.head_node.get_session_dir_path()
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()  # also after a node that failed to start
        if session:
            shutil.rmtree(session, ignore_errors=True)  # its logs


def run_ray(address: str, *args: str) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "distilbench",
        "predict",
        "--engine",
        "ray",
        "--address",
        address,
        "--no-progress",
        *args,
    ]
    return subprocess.Popen(
        command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def local_records(model: Path, source: Path, tmp_path: Path, backend: str = "torch-fp32") -> pd.DataFrame:
    out = tmp_path / f"local-{source.stem}.jsonl"
    predict(str(model), str(source), str(out), inference=InferenceOptions(backend=backend), progress=False)
    return pd.read_json(out, lines=True, dtype=False)


def assert_same_records(ray_rows: pd.DataFrame, local: pd.DataFrame, label: str, backend: str = "torch-fp32") -> None:
    """Every input row once, with local predict's label(s) and probabilities: within rounding for fp32 and bf16;
    for the int8 backends within 0.02 and the same labels on 99 % of rows, because dynamic quantization scales
    each batch's activations by that batch's range, and Ray's batches are not local predict's."""
    ray_rows = ray_rows.sort_values("row").reset_index(drop=True)
    assert ray_rows["row"].is_unique
    assert ray_rows["row"].tolist() == list(range(len(local)))
    ours_labels = [list(v) if label == "labels" else v for v in ray_rows[label]]
    same = np.mean([a == b for a, b in zip(ours_labels, local[label].tolist())])
    names = sorted(local["probabilities"][0])
    ours = np.array([[p[n] for n in names] for p in ray_rows["probabilities"]])
    theirs = np.array([[p[n] for n in names] for p in local["probabilities"]])
    if "int8" in backend:
        assert same >= 0.99, same
        np.testing.assert_allclose(ours, theirs, atol=2e-2)
    else:
        assert same == 1.0, same
        np.testing.assert_allclose(ours, theirs, atol=2e-6)


def test_ray_equals_local_predict_on_two_nodes(ray_cluster, models, tmp_path):
    """A directory of CSV, Parquet and JSON lines files, 3,000 rows, on two nodes, backend auto: every row of
    every file once, numbered as local predict numbers it, with the label(s) (stored multilabel thresholds) and
    probabilities local predict gives in the backend the actors chose on their node."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    pd.DataFrame({"id": range(1200), "text": headlines(1200, 0)}).to_csv(inputs / "a.csv", index=False)
    pd.DataFrame({"text": headlines(1000, 1)}).to_parquet(inputs / "b.parquet", row_group_size=300)
    pd.DataFrame({"text": headlines(800, 2)}).to_json(inputs / "c.jsonl", orient="records", lines=True)
    out = tmp_path / "out"
    process = run_ray(
        ray_cluster.address,
        "--model",
        str(models["multilabel"]),
        "--input",
        str(inputs),
        "--out",
        str(out),
        "--chunk-rows",
        "256",
        "--actors",
        "2",
    )
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    # both actors normally; on a loaded machine the second may still be loading when the input runs out
    chosen = re.search(
        r"^3000 predictions \((\S+), 2 actors( \(1 started before the input ran out\))? on a "
        r"cluster of 2 nodes, ",
        stdout,
        re.MULTILINE,
    )
    assert "died" not in stdout, stdout
    assert chosen and chosen.group(1) in candidate_backends("cpu", with_texts=True), stdout
    assert not (tmp_path / "out.partial").exists()
    written = pd.read_parquet(out)
    assert list(written.columns) == ["row", "file", "labels", "probabilities"]
    assert len(written) == 3000
    for name in ("a.csv", "b.parquet", "c.jsonl"):
        mine = written[written["file"] == str(inputs / name)]
        local = local_records(models["multilabel"], inputs / name, tmp_path, backend=chosen.group(1))
        assert_same_records(mine, local, "labels", chosen.group(1))


def actor_processes(earlier: frozenset[int] = frozenset()) -> list:
    """This test's predicting actors that have loaded their model (Ray titles an actor's process with the
    method it runs: `...(RayPredictor)).__init__` while it loads), among the processes under this one (the
    cluster's nodes are its children), leaving out the processes in `earlier`."""
    import psutil

    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            title = " ".join(process.cmdline())
        except psutil.Error:
            continue
        if "RayPredictor" in title and "__init__" not in title and process.pid not in earlier:
            found.append(process)
    return found


def test_a_killed_actor_is_restarted_and_every_row_is_written_once(ray_cluster, models, tmp_path):
    """SIGKILL an actor (of two) once the first predictions are written: Ray restarts it and runs its batches
    again; the output holds every row exactly once, equal to local predict's, and the summary says so."""
    source = tmp_path / "texts.csv"
    pd.DataFrame({"text": headlines(3000, 3)}).to_csv(source, index=False)
    out = tmp_path / "out"
    # an earlier run's actors that are still exiting (a loaded machine tears a finished job down slowly) keep
    # the title of their last method: killing one of them would change nothing in this run
    earlier = frozenset(p.pid for p in actor_processes())
    # one text per forward pass and 100 rows per batch: 30 batches, long enough to kill an actor in the middle
    process = run_ray(
        ray_cluster.address,
        "--model",
        str(models["multiclass"]),
        "--input",
        str(source),
        "--out",
        str(out),
        "--output-format",
        "jsonl",
        "--backend",
        "torch-fp32",
        "--batch-size",
        "1",
        "--chunk-rows",
        "100",
        "--actors",
        "2",
    )
    partial = tmp_path / "out.partial"
    killed = None
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        if partial.is_dir() and any(p.suffix == ".json" for p in partial.iterdir()):
            actors = actor_processes(earlier)  # one that predicts: an actor killed while loading would change nothing
            if actors:
                killed = actors[0].pid
                os.kill(killed, signal.SIGKILL)
                written = sum(len(p.read_text().splitlines()) for p in partial.glob("*.json"))
                break
        time.sleep(0.05)
    stdout, stderr = process.communicate(timeout=600)
    assert killed is not None, f"no actor was killed before the run ended: {stdout} {stderr[-2000:]}"
    assert process.returncode == 0, stderr[-3000:]
    assert "3000 predictions" in stdout
    assert "1 actor died during the run: Ray restarted it" in stdout, f"killed after {written} rows: {stdout}"
    assert "each of the 3000 rows read is written once" in stdout
    lines = [json.loads(line) for path in sorted(out.glob("*.json")) for line in path.read_text().splitlines()]
    assert_same_records(pd.DataFrame(lines), local_records(models["multiclass"], source, tmp_path), "label")
    assert set(lines[0]) == {"row", "label", "probabilities"}


def test_a_file_the_reader_refuses_ends_the_run_in_one_line_with_nothing_written(ray_cluster, models, tmp_path):
    """The second file of a directory lacks the text column: the read task's error is the command's last line,
    exit 2, and no output directory (the first file passed the check before Ray started)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    pd.DataFrame({"text": headlines(50, 4)}).to_csv(inputs / "a.csv", index=False)
    pd.DataFrame({"title": headlines(50, 5)}).to_csv(inputs / "b.csv", index=False)
    process = run_ray(
        ray_cluster.address,
        "--model",
        str(models["multiclass"]),
        "--input",
        str(inputs),
        "--out",
        str(tmp_path / "out"),
        "--backend",
        "torch-fp32",
    )
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 2, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == (
        "distilbench: error: text column 'text' not found in b.csv; "
        "available columns: title. Use --text-column to pick one."
    )
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_inputs_are_listed_as_ray_lists_them(tmp_path):
    """A directory: every readable file below it, sorted, skipping names that start with '.' or '_' (Ray's
    rule); a glob: its matches; one file: itself, without a `file` column; a URI is left to Ray."""
    have_ray()
    from distilbench.runtime.ray_predict import input_paths

    for name in ("b.csv", "a/c.jsonl", "a/d.parquet", "_SUCCESS", ".hidden.csv", "_tmp/e.csv", "notes.md"):
        path = tmp_path / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".parquet"):
            pd.DataFrame({"text": ["x"]}).to_parquet(path)
        else:
            path.write_text('{"text": "x"}\n' if name.endswith(".jsonl") else "text\nx\n")
    root = (tmp_path / "in").resolve()
    assert input_paths(str(tmp_path / "in"), "text") == (
        [str(root / "a" / "c.jsonl"), str(root / "a" / "d.parquet"), str(root / "b.csv")],
        True,
    )
    assert input_paths(str(tmp_path / "in" / "*.csv"), "text") == ([str(root / "b.csv")], True)
    assert input_paths(str(tmp_path / "in" / "b.csv"), "text") == (str(root / "b.csv"), False)
    assert input_paths((tmp_path / "in").as_uri(), "text") == ((tmp_path / "in").as_uri(), True)


def test_without_ray_installed_the_error_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(SystemExit) as code:
        main(
            [
                "predict",
                "--engine",
                "ray",
                "--model",
                str(tmp_path),
                "--input",
                str(tmp_path),
                "--out",
                str(tmp_path / "out"),
            ]
        )
    assert code.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "distilbench: error: --engine ray needs Ray Data, which is not installed: pip install 'distilbench[ray]'"
    ]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--input", "-"], "reads files, not stdin"),
        (["--input", "{dir}/nothing-*.csv"], "no input files"),
        (["--input", "{dir}/texts.xlsx"], "unsupported file type '.xlsx'"),
        (["--input", "{dir}/missing.csv"], "input not found"),
        (["--input", "{dir}/empty"], "no input files"),
        (["--text-column", "title"], "text column 'title' not found in texts.csv"),
        (["--out", "{dir}/taken"], "already exists"),
        (["--workers", "2"], "--workers and --resume are for --engine local"),
        (["--cpus-per-actor", "0"], "--cpus-per-actor must be more than 0"),
        (["--device", "cuda:1"], "auto, cpu or cuda"),
        (["--address", "127.0.0.1:9"], "cannot reach the Ray cluster at 127.0.0.1:9"),
    ],
)
def test_ray_flags_and_inputs_are_checked_before_work(models, tmp_path, capsys, flags, message):
    """Each mistake ends in one line, before Ray starts, with nothing written."""
    have_ray()
    (tmp_path / "texts.csv").write_text("text\nhello\n")
    (tmp_path / "texts.xlsx").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("x")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "part.parquet").write_text("x")
    args = {
        "--model": str(models["multiclass"]),
        "--input": str(tmp_path / "texts.csv"),
        "--out": str(tmp_path / "out"),
        "--backend": "torch-fp32",
    }
    extra = []
    for flag, value in zip(flags[::2], flags[1::2]):
        if flag in args:
            args[flag] = value.format(dir=tmp_path)
        else:
            extra += [flag, value]
    with pytest.raises(SystemExit) as code:
        main(["predict", "--engine", "ray", *[x for pair in args.items() for x in pair], *extra])
    assert code.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("distilbench: error: ") and message in err[0], err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_ray_only_flags_are_refused_by_the_local_engine(models, tmp_path, capsys):
    with pytest.raises(SystemExit) as code:
        main(["predict", "--model", str(models["multiclass"]), "--actors", "2"])
    assert code.value.code == 2
    assert "are for --engine ray" in capsys.readouterr().err


def test_a_restart_counts_as_soon_as_the_new_actor_process_begins():
    """An actor killed between batches leaves no batch cut short; its restart must count even when the run ends
    while the new process still loads its model (the race a cluster test met)."""
    from distilbench.runtime.ray_predict import actor_deaths
    from distilbench.runtime.ray_workers import RunTally

    tally = RunTally()
    for pid in (11, 12):
        tally.actor_starting(pid)
        tally.actor_started({"pid": pid, "backend": "torch-fp32"})
        tally.batch_started(pid)
        tally.batch_finished(pid, 100)
    assert actor_deaths(tally.summary(), pool=2) == (0, 0)
    tally.actor_starting(13)  # Ray restarts a killed actor; the run ends before it has loaded its model
    assert actor_deaths(tally.summary(), pool=2) == (1, 1)
    tally.batch_started(12)  # an actor killed in a batch, not yet restarted
    assert actor_deaths(tally.summary(), pool=2) == (1, 1)
    short = RunTally()
    short.actor_starting(11)  # a short run: one actor of a pool of two started, none died
    assert actor_deaths(short.summary(), pool=2) == (0, 0)


def test_an_actor_killed_while_idle_counts_by_rays_own_restart_count():
    """An actor killed between batches, whose restart Ray had not begun when the run ended, leaves no trace in
    the tally (the flaky cluster test's case): Ray's count of restarts shows it; unknown (None) changes nothing."""
    from distilbench.runtime.ray_predict import actor_deaths
    from distilbench.runtime.ray_workers import RunTally

    tally = RunTally()
    for pid in (11, 12):
        tally.actor_starting(pid)
        tally.batch_started(pid)
        tally.batch_finished(pid, 100)
    summary = tally.summary()
    assert actor_deaths({**summary, "restarts_counted_by_ray": 1}, pool=2) == (1, 1)
    assert actor_deaths({**summary, "restarts_counted_by_ray": 0}, pool=2) == (0, 0)
    assert actor_deaths({**summary, "restarts_counted_by_ray": None}, pool=2) == (0, 0)


IDLE_KILL = """
import os, signal, sys, time
import ray
from distilbench.runtime.ray_workers import restarts_counted_by_ray

ray.init(address=sys.argv[1], include_dashboard=False, log_to_driver=False)

@ray.remote(max_restarts=-1, num_cpus=0)
class Worker:
    def pid(self):
        return os.getpid()

worker = Worker.remote()
pid = ray.get(worker.pid.remote())
before = restarts_counted_by_ray()
os.kill(pid, signal.SIGKILL)  # idle: no call in flight
deadline = time.monotonic() + 30
while restarts_counted_by_ray() == before and time.monotonic() < deadline:
    time.sleep(0.05)
print("restarts", before, restarts_counted_by_ray())
"""


def test_rays_restart_count_sees_an_actor_killed_while_idle(ray_cluster):
    """On a real cluster: an idle actor of this job is SIGKILLed; Ray's count of this job's restarts goes from
    0 to 1 (read without the dashboard, which distilbench's Ray runs without), and is never None."""
    result = subprocess.run(
        [sys.executable, "-c", IDLE_KILL, ray_cluster.address], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.findall(r"^restarts (\S+) (\S+)$", result.stdout, re.MULTILINE) == [("0", "1")], (
        result.stdout + result.stderr[-2000:]
    )


def test_ray_predicts_a_bundle_where_torch_is_not_installed(models, tmp_path):
    """`predict --engine ray` on an exported bundle, in a process (and Ray instance, whose actors inherit its
    environment) where torch and transformers cannot be imported, as in the runtime install with the [ray]
    extra: every row once, with local predict's labels and probabilities."""
    have_ray()
    from distilbench.runtime.export import export_model
    from test_bench_runtime import BLOCKER

    bundle = tmp_path / "bundle"
    export_model(models["multiclass"], bundle)
    source = tmp_path / "texts.csv"
    pd.DataFrame({"text": headlines(300, seed=5)}).to_csv(source, index=False)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {
        **os.environ,
        "BLOCK_MODULES": "torch,transformers",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
    }
    env.pop("RAY_ADDRESS", None)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "distilbench", "predict", "--engine", "ray", "--model", str(bundle)]
    command += ["--input", str(source), "--out", str(out), "--actors", "1", "--no-progress"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ray_rows = pd.concat(pd.read_parquet(part) for part in sorted(out.glob("*.parquet")))
    assert_same_records(ray_rows, local_records(bundle, source, tmp_path, backend="auto"), "label")
