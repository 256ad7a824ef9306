"""The base install is the runtime of a bundle; training comes with `[train]` (issue 39 §1). A verb or an API call
that needs a library of a missing extra ends with one line naming the extra, never a traceback; the runtime path
(a bundle's predict from stdin) does not load pandas; Parquet without pyarrow names `[parquet]`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from distilbench.core import extras
from distilbench.core.errors import DistilbenchError
from distilbench.core.extras import MissingExtraError

ROOT = Path(__file__).resolve().parents[1]
# torch and transformers made unimportable, as where only the base install is there; then the CLI
NOT_INSTALLED = textwrap.dedent(
    """
    import sys
    class NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "transformers"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, NotInstalled())
    from distilbench.cli import main
    main(sys.argv[1:])
    """
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_bert_dir):
    from test_onnx_export import save_checkpoint

    return save_checkpoint(tiny_bert_dir, tmp_path_factory.mktemp("ckpt"), "multiclass", ["a", "b", "c"])


@pytest.fixture(scope="module")
def bundle(checkpoint, tmp_path_factory):
    from distilbench.runtime.export import export_model

    out = tmp_path_factory.mktemp("bundles") / "bert"
    export_model(checkpoint, out)
    return out


def without_torch(tmp_path: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    script = tmp_path / "cli_without_torch.py"
    script.write_text(NOT_INSTALLED)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(script), *args], input=stdin, capture_output=True, text=True, env=env, timeout=300
    )


def test_compare_without_torch_names_the_train_extra(tmp_path) -> None:
    done = without_torch(tmp_path, "compare", "--data", "builtin:bbc-news", "--models", "minilm-l6", "--out", "r")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("distilbench: error: distilbench compare needs PyTorch and transformers")
    assert "pip install 'distilbench[train]'" in lines[0]
    assert not (tmp_path / "r").exists()


def test_predict_on_a_checkpoint_without_torch_says_to_export(tmp_path, checkpoint) -> None:
    done = without_torch(tmp_path, "predict", "--model", str(checkpoint), "--input", "-", stdin="hello\n")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "distilbench[train]" in done.stderr and "distilbench export" in done.stderr


def test_predict_on_a_bundle_works_without_torch(tmp_path, bundle) -> None:
    texts = "stock market fell sharply today\nthe home team won the match\n"
    done = without_torch(tmp_path, "predict", "--model", str(bundle), "--input", "-", "--no-progress", stdin=texts)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["row"] for r in records] == [0, 1]
    assert all(r["label"] in ("a", "b", "c") and sum(r["probabilities"].values()) == pytest.approx(1, abs=1e-3)
               for r in records)  # fmt: skip


def test_the_bundle_path_leaves_pandas_unloaded(tmp_path) -> None:
    """Reading texts from stdin or a .txt file, and the run-directory helpers, import no pandas (0.2-0.4 s of a
    bundle's cold start); a CSV still reads, through pandas."""
    source = tmp_path / "texts.txt"
    source.write_text("one\ntwo\n")
    table = tmp_path / "texts.csv"
    table.write_text('text,label\n"a, quoted text",x\nplain,y\n')
    code = textwrap.dedent(
        f"""
        import sys
        from distilbench import runs
        from distilbench.data.readers import iter_texts
        assert [t for chunk in iter_texts({str(source)!r}) for t in chunk] == ["one", "two"]
        before = "pandas" in sys.modules
        texts = [t for chunk in iter_texts({str(table)!r}) for t in chunk]
        print(before, "pandas" in sys.modules, texts)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False True ['a, quoted text', 'plain']"


def test_parquet_without_pyarrow_names_the_parquet_extra(tmp_path, monkeypatch) -> None:
    from distilbench.data.readers import read_source

    path = tmp_path / "data.parquet"
    path.write_bytes(b"PAR1" + b"\0" * 16 + b"PAR1")
    monkeypatch.setattr(extras, "is_installed", lambda module: module != "pyarrow")
    with pytest.raises(MissingExtraError, match=r"pip install 'distilbench\[parquet\]'") as caught:
        read_source(str(path))
    assert caught.value.extra == "parquet" and isinstance(caught.value, DistilbenchError)


@pytest.mark.parametrize(
    ("module", "verb", "extra"),
    [
        ("torch", "predict", "train"),
        ("transformers.models.bert", "compare", "train"),
        ("pyarrow.parquet", "predict", "parquet"),
        ("pyarrow", "compare", "train"),  # a training verb: [train] brings pyarrow too
        ("sklearn.metrics", "evaluate", "evaluate"),
        ("nncf", "export", "train"),  # quantizing for openvino-int8 is training-side: [train] brings NNCF
        ("openvino", "export", "openvino"),  # not brought by [train]: its own extra, even for a training verb
        ("datasets", "evaluate", "hf"),
        ("ray", "predict", "ray"),
        ("numpy_financial", "predict", None),  # no extra brings it: not ours to explain
    ],
)
def test_a_missing_module_maps_to_its_extra(module, verb, extra) -> None:
    assert extras.extra_for(module, verb) == extra
    error = extras.missing_extra_error(ModuleNotFoundError(f"No module named {module!r}", name=module), "x", verb)
    assert (error is None) == (extra is None)
    if error is not None:
        assert f"distilbench[{extra}]" in str(error) and error.extra == extra


def test_require_extra_and_needs_extra(monkeypatch) -> None:
    monkeypatch.setattr(extras, "is_installed", lambda module: module not in ("torch", "transformers"))
    with pytest.raises(MissingExtraError, match=r"^distilbench.compare needs PyTorch and transformers"):
        extras.require_extra("train", "distilbench.compare")
    extras.require_extra("parquet", "reading x.parquet")  # installed: nothing happens

    @extras.needs_extra("parquet")
    def write_parquet():
        raise ModuleNotFoundError("No module named 'pyarrow'", name="pyarrow")

    with pytest.raises(MissingExtraError, match=r"distilbench write-parquet needs pyarrow.*\[parquet\]"):
        write_parquet()

    @extras.needs_extra("parquet")
    def broken():
        raise ModuleNotFoundError("No module named 'no_such_thing'", name="no_such_thing")

    with pytest.raises(ModuleNotFoundError, match="no_such_thing"):  # a bug stays a bug
        broken()


def test_is_installed_sees_a_module_blocked_in_sys_modules(monkeypatch) -> None:
    assert extras.is_installed("json")
    monkeypatch.setitem(sys.modules, "json_blocked_for_test", None)
    assert not extras.is_installed("json_blocked_for_test")
    assert not extras.is_installed("no_such_module_here")


def test_every_extra_named_in_messages_exists_in_pyproject() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    named = {extra for extra, _ in extras.LIBRARIES.values()} | set(extras.EXTRAS)
    assert named <= set(declared), named - set(declared)
    base = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    heavy = ("torch", "transformers", "scikit-learn", "pyarrow", "scipy", "accelerate")
    assert not [dep for dep in base if dep.split(">")[0].split("=")[0].split("<")[0].strip() in heavy]
    assert {"train", "all", "dev"} <= set(declared) and "distilbench[all]" in declared["dev"]
