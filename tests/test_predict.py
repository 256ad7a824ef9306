"""`predict` streams texts through a saved model; `bench` measures models under one protocol."""

import json

import pandas as pd
import pytest

from distilbench.cli import main
from distilbench.compare import compare
from distilbench.config import ExperimentConfig
from distilbench.predict import iter_text_chunks


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert_dir):
    tmp = tmp_path_factory.mktemp("pred")
    frame = pd.DataFrame({"text": [f"sports match {i} won" if i % 2 else f"stock market {i} fell"
                                   for i in range(120)],
                          "label": ["sport" if i % 2 else "business" for i in range(120)]})
    frame.to_csv(tmp / "data.csv", index=False)
    config = ExperimentConfig(task="multiclass", data=str(tmp / "data.csv"), models=[f"student:{tiny_bert_dir}"],
                              epochs=1, max_length=16, backend="torch-fp32", out=str(tmp / "run")).validate()
    compare(config, progress=False)
    return tmp, next((tmp / "run" / "models").glob("*/best"))


def test_chunks_never_hold_more_than_asked(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("\n".join(f"line {i}" for i in range(10)) + "\n")
    assert [len(c) for c in iter_text_chunks(str(path), chunk_rows=4)] == [4, 4, 2]
    csv = tmp_path / "t.csv"
    pd.DataFrame({"id": range(5), "text": list("abcde")}).to_csv(csv, index=False)
    assert list(iter_text_chunks(str(csv), chunk_rows=2)) == [["a", "b"], ["c", "d"], ["e"]]


@pytest.mark.parametrize("backend", ["torch-fp32", "onnx-fp32"])
def test_predict_file_to_jsonl(trained, tmp_path, capsys, backend):
    tmp, best = trained
    out = tmp_path / "p.jsonl"
    with pytest.raises(SystemExit) as code:
        main(["predict", "--model", str(best), "--input", str(tmp / "data.csv"), "--output", str(out),
              "--backend", backend, "--no-progress"])
    assert code.value.code == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 120
    assert set(lines[0]) == {"label", "probabilities"}
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


def test_bench_on_a_run_directory(trained, tmp_path, capsys):
    tmp, _ = trained
    out = tmp_path / "bench.json"
    with pytest.raises(SystemExit) as code:
        main(["bench", str(tmp / "run"), "--backends", "torch-fp32,torch-int8", "--samples", "16", "--repeats", "2",
              "--latency-samples", "3", "--batch-size", "8", "--max-length", "16", "--out", str(out),
              "--no-progress"])
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
    assert report["machine"]["cpu_count"] >= 1 and report["peaks_flops"]["bf16"] > 0
    assert "samples_per_s" in capsys.readouterr().out


def test_bench_architecture_flops_match_the_formula():
    from transformers import BertConfig, DistilBertConfig

    from distilbench.speed import flops_per_sample

    # BERT-base, 128 tokens: 12 layers x 128 x (8*768^2 + 4*768*3072 + 4*128*768)
    assert flops_per_sample(BertConfig(), 128) == 12 * 128 * (8 * 768**2 + 4 * 768 * 3072 + 4 * 128 * 768)
    assert flops_per_sample(DistilBertConfig(), 128) == flops_per_sample(BertConfig(), 128) / 2


def test_bench_rejects_unknown_inputs(capsys):
    with pytest.raises(SystemExit) as code:
        main(["bench", "arch:gpt-17"])
    assert code.value.code == 2 and "arch:bert-base-uncased" in capsys.readouterr().err
    with pytest.raises(SystemExit) as code:
        main(["bench", "arch:distilbert-base-uncased", "--backends", "tensorrt"])
    assert code.value.code == 2 and "torch-fp32" in capsys.readouterr().err
