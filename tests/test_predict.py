"""`predict` streams texts through a saved model (in chunks, resumable, in worker processes);
`bench` measures models under one protocol."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import distilbench.runtime.predict as predict_module
from distilbench.cli.commands import main
from distilbench.config import ExperimentConfig
from distilbench.experiments.compare import compare
from distilbench.runtime.predict import iter_text_chunks


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert_dir):
    tmp = tmp_path_factory.mktemp("pred")
    frame = pd.DataFrame(
        {
            "text": [f"sports match {i} won" if i % 2 else f"stock market {i} fell" for i in range(120)],
            "label": ["sport" if i % 2 else "business" for i in range(120)],
        }
    )
    frame.to_csv(tmp / "data.csv", index=False)
    config = ExperimentConfig(
        task="multiclass",
        data=str(tmp / "data.csv"),
        models=[f"student:{tiny_bert_dir}"],
        epochs=1,
        max_length=16,
        backend="torch-fp32",
        out=str(tmp / "run"),
    ).validate()
    compare(config, progress=False)
    return tmp, next((tmp / "run" / "models").glob("*/best"))


def test_chunks_never_hold_more_than_asked(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("\n".join(f"line {i}" for i in range(10)) + "\n")
    assert [len(c) for c in iter_text_chunks(str(path), chunk_rows=4)] == [4, 4, 2]
    csv = tmp_path / "t.csv"
    pd.DataFrame({"id": range(5), "text": list("abcde")}).to_csv(csv, index=False)
    assert list(iter_text_chunks(str(csv), chunk_rows=2)) == [["a", "b"], ["c", "d"], ["e"]]
    # parquet batches stop at row groups (here every 3 rows); chunks are still cut at exact multiples
    parquet = tmp_path / "t.parquet"
    pd.DataFrame({"text": [str(i) for i in range(10)]}).to_parquet(parquet, row_group_size=3)
    assert [len(c) for c in iter_text_chunks(str(parquet), chunk_rows=4)] == [4, 4, 2]
    assert sum(iter_text_chunks(str(parquet), chunk_rows=4), []) == [str(i) for i in range(10)]


@pytest.mark.parametrize("backend", ["torch-fp32", "onnx-fp32"])
def test_predict_file_to_jsonl(trained, tmp_path, capsys, backend):
    tmp, best = trained
    out = tmp_path / "p.jsonl"
    with pytest.raises(SystemExit) as code:
        main(
            [
                "predict",
                "--model",
                str(best),
                "--input",
                str(tmp / "data.csv"),
                "--output",
                str(out),
                "--backend",
                backend,
                "--no-progress",
            ]
        )
    assert code.value.code == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 120
    assert set(lines[0]) == {"row", "label", "probabilities"}
    assert [line["row"] for line in lines] == list(range(120))
    assert set(lines[0]["probabilities"]) == {"business", "sport"}
    assert lines[0]["label"] == max(lines[0]["probabilities"], key=lines[0]["probabilities"].get)
    assert not (tmp_path / "p.jsonl.partial").exists()


def test_predict_stdin_to_stdout(trained, monkeypatch, capsys):
    import io

    _, best = trained
    monkeypatch.setattr("sys.stdin", io.StringIO("stock market fell\nsports match won\n"))
    with pytest.raises(SystemExit):
        main(["predict", "--model", str(best), "--no-progress", "--backend", "torch-fp32"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all("probabilities" in json.loads(line) for line in lines)


def test_predict_missing_column_is_one_clear_error(trained, tmp_path, capsys):
    _, best = trained
    path = tmp_path / "x.csv"
    pd.DataFrame({"body": ["a"]}).to_csv(path, index=False)
    with pytest.raises(SystemExit) as code:
        main(["predict", "--model", str(best), "--input", str(path), "--output", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err
    assert code.value.code == 2 and "text column 'text'" in err and "Traceback" not in err
    assert not (tmp_path / "o.jsonl").exists()


def test_predict_keeps_rows_aligned_when_a_cell_holds_a_bare_cr(trained, tmp_path, capsys):
    """pandas' to_csv leaves a CR inside a cell unquoted: predict reads it like training does (one reader), so
    the row stays whole and every record's `row` is its input row: the same records as the unambiguous JSON
    lines copy of the same texts."""
    _, best = trained
    texts = [
        "stock market fell",
        "sports match\rwon again",
        "stock\rmarket\rfell",
        "sports match won",
        "stock market 7 fell",
    ]
    frame = pd.DataFrame({"id": range(5), "text": texts})
    frame.to_csv(tmp_path / "cr.csv", index=False)
    assert b"match\rwon" in (tmp_path / "cr.csv").read_bytes()  # unquoted: a naive reader splits the row here
    frame.to_json(tmp_path / "cr.jsonl", orient="records", lines=True)
    assert _predict(best, tmp_path / "cr.csv", tmp_path / "from-csv.jsonl", "--chunk-rows", "2") == 0
    assert _predict(best, tmp_path / "cr.jsonl", tmp_path / "from-jsonl.jsonl", "--chunk-rows", "2") == 0
    from_csv = _jsonl(tmp_path / "from-csv.jsonl")
    assert [r["row"] for r in from_csv] == list(range(5))
    assert from_csv == _jsonl(tmp_path / "from-jsonl.jsonl")
    assert list(iter_text_chunks(str(tmp_path / "cr.csv"), chunk_rows=10)) == [texts]


def test_predict_reads_json_arrays_and_keeps_texts_as_written(trained, tmp_path):
    """A .json array of objects (the README's promise), and CSV texts that look like numbers stay as written."""
    source = tmp_path / "a.json"
    source.write_text(json.dumps([{"text": "stock market fell"}, {"text": "sports match won"}, {"other": 1}]))
    assert list(iter_text_chunks(str(source), chunk_rows=2)) == [["stock market fell", "sports match won"], [""]]
    numbers = tmp_path / "n.csv"
    numbers.write_text('text\n007\n1e5\nNA\n""\n')
    assert list(iter_text_chunks(str(numbers), chunk_rows=10)) == [["007", "1e5", "NA", ""]]
    _, best = trained
    assert _predict(best, source, tmp_path / "p.jsonl") == 0
    assert [r["row"] for r in _jsonl(tmp_path / "p.jsonl")] == [0, 1, 2]


def test_predict_refuses_a_duplicate_text_column(trained, tmp_path, capsys):
    _, best = trained
    source = tmp_path / "dupes.csv"
    source.write_text("text,text\nstock market fell,sports match won\n")
    assert _predict(best, source, tmp_path / "p.jsonl") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 columns named 'text'" in err
    assert not (tmp_path / "p.jsonl").exists() and not (tmp_path / "p.jsonl.parts").exists()


def _predict(best, source, out, *extra) -> int:
    with pytest.raises(SystemExit) as code:
        main(
            [
                "predict",
                "--model",
                str(best),
                "--input",
                str(source),
                "--output",
                str(out),
                "--backend",
                "torch-fp32",
                "--no-progress",
                "--chunk-rows",
                "16",
                *extra,
            ]
        )
    return code.value.code


def _jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(trained, tmp_path_factory):
    """An uninterrupted one-worker run over 120 rows in chunks of 16: what every other way must equal."""
    tmp, best = trained
    out = tmp_path_factory.mktemp("reference") / "p.jsonl"
    assert _predict(best, tmp / "data.csv", out) == 0
    return _jsonl(out)


def test_predict_parquet_output_equals_jsonl(trained, reference, tmp_path):
    import pyarrow.parquet as pq

    tmp, best = trained
    assert _predict(best, tmp / "data.csv", tmp_path / "p.parquet") == 0
    assert pd.read_parquet(tmp_path / "p.parquet").to_dict("records") == reference
    assert pq.ParquetFile(tmp_path / "p.parquet").metadata.num_row_groups == 8  # one per chunk
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.parquet"]  # no parts or partial file left


def test_predict_parquet_chunks_share_one_schema(tmp_path):
    """A multilabel chunk whose predictions are all empty still writes list<string> labels."""
    import numpy as np
    import pyarrow.parquet as pq

    schema = predict_module.records_schema("multilabel", ["a", "b"])
    for name, probs in (("empty", [[0.1, 0.2]]), ("full", [[0.9, 0.8]])):
        records = predict_module.prediction_records("multilabel", ["a", "b"], np.array(probs), np.full(2, 0.5))
        predict_module.write_chunk(tmp_path / f"{name}.parquet", [{"row": 0, **r} for r in records], "parquet", schema)
    assert pq.read_schema(tmp_path / "empty.parquet") == pq.read_schema(tmp_path / "full.parquet") == schema
    assert pd.read_parquet(tmp_path / "full.parquet")["labels"].tolist()[0].tolist() == ["a", "b"]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_predict_output_is_on_disk_before_its_rename(tmp_path, monkeypatch, fmt):
    """Finished chunks and the joined output are flushed (file, then its folder) at each commit point."""
    import numpy as np

    from test_runs import record_disk, synced_before_rename

    parts, out = tmp_path / f"p.{fmt}.parts", tmp_path / f"p.{fmt}"
    parts.mkdir()
    schema = predict_module.records_schema("multiclass", ["a", "b"])
    events = record_disk(monkeypatch)
    for index in range(2):
        records = predict_module.prediction_records("multiclass", ["a", "b"], np.array([[0.2, 0.8]]), np.full(2, 0.5))
        predict_module.write_chunk(
            predict_module.chunk_path(parts, index, fmt), [{"row": index, **records[0]}], fmt, schema
        )
        before, after = synced_before_rename(events, predict_module.chunk_path(parts, index, fmt))
        assert Path(before[-1]).name.startswith(f".chunk-00000{index}") and after == [str(parts.resolve())]
    predict_module.assemble_output(parts, 2, fmt, out, schema)
    before, after = synced_before_rename(events, out)
    assert before[-1] == str(tmp_path.resolve() / f"p.{fmt}.partial") and after[0] == str(tmp_path.resolve())
    rows = _jsonl(out) if fmt == "jsonl" else pd.read_parquet(out).to_dict("records")
    assert [r["row"] for r in rows] == [0, 1] and not parts.exists()


def test_predict_two_workers_equal_one(trained, reference, tmp_path, capsys):
    tmp, best = trained
    source = tmp_path / "data.parquet"  # parquet input too; same rows as the reference's csv
    pd.read_csv(tmp / "data.csv").to_parquet(source, row_group_size=50)
    assert _predict(best, source, tmp_path / "p.jsonl", "--workers", "2") == 0
    assert _jsonl(tmp_path / "p.jsonl") == reference
    assert "2 workers" in capsys.readouterr().out


def test_predict_worker_failure_is_one_clear_error(trained, tmp_path, capsys):
    tmp, best = trained
    broken = tmp_path / "broken"
    shutil.copytree(best, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    assert _predict(broken, tmp / "data.csv", tmp_path / "p.jsonl", "--workers", "2") == 2
    err = capsys.readouterr().err
    assert "prediction worker failed" in err and "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "p.jsonl").exists() and not (tmp_path / "p.jsonl.parts").exists()


def test_predict_resume_after_interruption(trained, reference, tmp_path, monkeypatch, capsys):
    tmp, best = trained
    out, parts = tmp_path / "p.jsonl", tmp_path / "p.jsonl.parts"
    real_predict_chunk = predict_module.predict_chunk
    predicted = []

    def stop_after_three(predictor, first_row, texts):
        if len(predicted) == 3:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C during the fourth chunk
        predicted.append(first_row)
        return real_predict_chunk(predictor, first_row, texts)

    monkeypatch.setattr(predict_module, "predict_chunk", stop_after_three)
    assert _predict(best, tmp / "data.csv", out) == 130
    assert not out.exists()
    assert sorted(p.name for p in parts.glob("chunk-*")) == [f"chunk-00000{i}.jsonl" for i in range(3)]
    assert "--resume" in capsys.readouterr().err

    # without --resume the kept chunks are neither overwritten nor silently reused
    assert _predict(best, tmp / "data.csv", out) == 2
    assert "pass --resume" in capsys.readouterr().err
    # different settings than the chunks were made with
    assert _predict(best, tmp / "data.csv", out, "--resume", "--chunk-rows", "32") == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "chunk_rows" in err and "Traceback" not in err

    def count(predictor, first_row, texts):
        predicted.append(first_row)
        return real_predict_chunk(predictor, first_row, texts)

    predicted.clear()
    monkeypatch.setattr(predict_module, "predict_chunk", count)
    assert _predict(best, tmp / "data.csv", out, "--resume") == 0
    assert predicted == [48, 64, 80, 96, 112]  # chunks 0-2 were not predicted again
    assert _jsonl(out) == reference
    assert not parts.exists() and "48 from an earlier run" in capsys.readouterr().out


def test_predict_resume_refuses_a_changed_input(trained, tmp_path, monkeypatch, capsys):
    tmp, best = trained
    source, out = tmp_path / "data.csv", tmp_path / "p.jsonl"
    shutil.copy(tmp / "data.csv", source)

    def interrupt(predictor, first_row, texts):
        raise KeyboardInterrupt

    monkeypatch.setattr(predict_module, "predict_chunk", interrupt)
    (tmp_path / "p.jsonl.parts").mkdir()
    assert _predict(best, source, out) == 2  # parts of some other run: refused without --resume
    shutil.rmtree(tmp_path / "p.jsonl.parts")
    assert _predict(best, source, out) == 130
    assert not (tmp_path / "p.jsonl.parts").exists()  # nothing finished: nothing kept
    monkeypatch.undo()
    predict_module.write_json_atomic(
        tmp_path / "p.jsonl.parts" / "manifest.json",
        predict_module.run_manifest(
            str(best), str(source), predict_module.ChunkOptions(chunk_rows=16), "torch-fp32", None, "jsonl"
        ),
    )
    source.write_text(source.read_text() + "one more headline,sport\n")
    assert _predict(best, source, out, "--resume") == 2
    assert "input_bytes" in capsys.readouterr().err


def test_predict_refuses_an_output_another_run_is_writing(trained, tmp_path, capsys):
    tmp, best = trained
    parts = tmp_path / "p.jsonl.parts"
    parts.mkdir()
    with predict_module.lock_parts_dir(parts):  # as a running predict holds it
        assert _predict(best, tmp / "data.csv", tmp_path / "p.jsonl", "--resume") == 2
    assert "in use by another distilbench predict" in capsys.readouterr().err
    assert parts.exists() and not (tmp_path / "p.jsonl").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--workers", "0"], "--workers must be 1 or more"),
        (["--chunk-rows", "0"], "--chunk-rows must be 1 or more"),
        (["--output", "p.csv"], "name it .jsonl"),
        (["--input", "missing.csv"], "file not found: missing.csv"),
        (["--input", "x.xlsx"], "unsupported file type"),
        (["--output", "/proc/no/such/dir/p.jsonl"], "cannot write the output"),
        (["--input", "-", "--resume"], "--resume needs an --input file and an --output file"),
    ],
)
def test_predict_flags_are_checked_before_work(trained, tmp_path, monkeypatch, capsys, flags, message):
    tmp, best = trained
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.xlsx").write_text("x")
    args = {"--input": str(tmp / "data.csv"), "--output": "p.jsonl"}
    for flag, value in zip(flags[::2], flags[1::2]):
        args[flag] = value
    extra = [f for f in flags if f == "--resume"]
    with pytest.raises(SystemExit) as code:
        main(["predict", "--model", str(best), "--no-progress", *[x for kv in args.items() for x in kv], *extra])
    err = capsys.readouterr().err
    assert code.value.code == 2 and message in err and "Traceback" not in err


def test_bench_on_a_run_directory(trained, tmp_path, capsys):
    tmp, _ = trained
    out = tmp_path / "bench.json"
    with pytest.raises(SystemExit) as code:
        main(
            [
                "bench",
                "--models",
                str(tmp / "run"),
                "--backends",
                "torch-fp32,torch-int8",
                "--samples",
                "16",
                "--repeats",
                "2",
                "--latency-samples",
                "3",
                "--batch-size",
                "8",
                "--max-length",
                "16",
                "--output",
                str(out),
                "--no-progress",
            ]
        )
    assert code.value.code == 0
    report = json.loads(out.read_text())
    assert [r["backend"] for r in report["results"]] == ["torch-fp32", "torch-int8"]
    for row in report["results"]:
        assert row["samples_per_s"]["min"] <= row["samples_per_s"]["median"] <= row["samples_per_s"]["max"]
        assert row["latency_ms"]["p50"] <= row["latency_ms"]["p99"]
        assert row["flops_per_sample"] > 0 and row["params"]["total"] > 0 and row["size_mb"] > 0
        assert row["peak_rss_mb"] > 50
        assert 0 <= row["test"]["accuracy"] <= 1  # the run's own test split
    assert report["results"][0]["test"]["agreement_with_fp32"] == 1.0
    assert report["results"][0]["mfu"] > 0 and report["results"][1]["mfu"] is None
    # only the precisions measured get a peak: no bf16 product without a bf16 backend
    assert report["machine"]["cpu_count"] >= 1 and list(report["peaks_flops"]) == ["fp32"]
    # the peak is measured in every round, and each round's MFU uses its own round's peak
    assert [len(v) for v in report["peaks_flops_rounds"].values()] == [2] and report["device"] == "cpu"
    # what --backend auto picks for the checkpoint, marked in its row when measured, compared with the fastest
    (choice,) = report["auto_choice"].values()
    assert choice["guard"]["source"] == "validation split" and choice["candidates"]["torch-fp32"]["valid"]
    marked = [r["backend"] for r in report["results"] if r.get("auto")]
    assert marked == ([choice["chosen"]] if choice["chosen"] in ("torch-fp32", "torch-int8") else [])
    if marked:
        assert choice["measured_here"]["ratio_to_fastest_valid"] > 0
    fp32 = report["results"][0]
    # a share of the measured peak: 1 or more means the FLOPs or the peak are wrong (the FLOPs are checked
    # against torch's own count of real forward passes in test_flops.py)
    assert 0 < fp32["mfu_range"][0] <= fp32["mfu"] <= fp32["mfu_range"][1] < 1
    assert "samples_per_s" in capsys.readouterr().out


def test_bench_rejects_unknown_inputs(capsys):
    with pytest.raises(SystemExit) as code:
        main(["bench", "--models", "arch:gpt-17"])
    assert code.value.code == 2 and "arch:bert-base-uncased" in capsys.readouterr().err
    with pytest.raises(SystemExit) as code:
        main(["bench", "--models", "arch:distilbert-base-uncased", "--backends", "tensorrt"])
    assert code.value.code == 2 and "torch-fp32" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as code:
            main(["bench", "--models", "arch:distilbert-base-uncased", "--device", "cuda"])
        assert code.value.code == 2 and "no CUDA device here" in capsys.readouterr().err


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid` (Linux /proc)."""
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = {int(c) for c in (task / "children").read_text().split()}
            except OSError:
                continue
            todo.extend(children - found)
            found |= children
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc")
def test_sigterm_stops_the_workers_and_keeps_finished_chunks(trained, tmp_path):
    """`kill` of a `predict --workers 2` ends it like Ctrl-C: workers stopped, no output file, chunks kept."""
    _, best = trained
    source = tmp_path / "many.txt"
    source.write_text("".join(f"stock market {i} fell\n" for i in range(200_000)))
    out = tmp_path / "p.jsonl"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distilbench",
            "predict",
            "--model",
            str(best),
            "--input",
            str(source),
            "--output",
            str(out),
            "--backend",
            "torch-fp32",
            "--no-progress",
            "--chunk-rows",
            "64",
            "--workers",
            "2",
        ],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    parts = tmp_path / "p.jsonl.parts"
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while not list(parts.glob("chunk-*")) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = _descendants(process.pid)
        assert process.poll() is None and len(workers) >= 2
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
        assert process.returncode == 128 + signal.SIGTERM and "terminated (SIGTERM)" in err
        assert "Traceback" not in err
        deadline = time.monotonic() + 15
        while [pid for pid in workers if _running(pid)] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if _running(pid)]
    finally:  # never leave a process behind, whatever failed
        for pid in [process.pid, *workers]:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
    assert not out.exists() and list(parts.glob("chunk-*")) and "--resume" in err
