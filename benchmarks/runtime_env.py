"""Issue 39's runtime-only install, for real: a fresh virtual environment with `pip install distilbench` (no extras),
its size on disk, the heavy libraries it lacks, and `distilbench predict` and `serve` on an exported bundle there.

    .venv/bin/python benchmarks/runtime_env.py [--bundle runs/cold-start/bundle | --checkpoint CHECKPOINT]

Steps: (1) the bundle (`--bundle`, made from `--checkpoint` with `distilbench export` unless it holds a model.onnx);
(2) `python -m venv` in a temporary folder (`--venv` keeps it somewhere), then `pip install <this repository>` with no
extras, timed (pip reads the package index pip is configured with; offline here); (3) the size of its site-packages
and of the whole environment (bytes of files, links not followed), with the largest packages; (4) which of torch,
transformers, scikit-learn, scipy and pyarrow import there (none should); (5) `distilbench predict --model BUNDLE
--input -` with one text, whole processes, median of --rounds, through a wrapper that reports whether torch was
imported; (6) `distilbench serve` on the bundle, one POST /predict; (7) what `distilbench compare` says there (the
missing extra, exit code). Results: benchmarks/results/runtime_env.json (rendered by render.py's `runtime-env`
block, in docs/guides/deployment.md). The target: the environment is at most 400 MB.

--smoke skips pip: the temporary environment reaches this interpreter's packages through a .pth file, with torch and
transformers made unimportable by a sitecustomize, and a bundle of the tiny smoke model.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    PREDICT_WRAPPER,
    ROOT,
    command_line,
    export_bundle,
    results_dir,
    shown_path,
    smoke_checkpoint,
    smoke_dir,
    torch_imported,
    write_result,
)
from common import parser as common_parser  # noqa: E402

TEXT = "Bank shares rise as quarterly profits beat forecasts"
DEFAULT_BUNDLE = ROOT / "runs" / "cold-start" / "bundle"
TARGET_MB = 400
HEAVY = ("torch", "transformers", "sklearn", "scipy", "pyarrow")
# --smoke: torch and transformers made unimportable in the environment, as if they were not installed
BLOCKER = (
    "import sys\n"
    "class _NotInstalled:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('torch', 'transformers'):\n"
    "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
    "sys.meta_path.insert(0, _NotInstalled())\n"
)
MB = 1024 * 1024


def run(command: list[str], timeout: float = 900, **kwargs) -> subprocess.CompletedProcess:
    """A process run to its end (stdout and stderr captured, text), one thread per library."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **kwargs.pop("env", {})}
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, **kwargs)


def site_packages(venv: Path) -> Path:
    """The site-packages folder of a virtual environment."""
    found = sorted(venv.glob("lib/python*/site-packages"))
    if not found:
        raise SystemExit(f"no site-packages in {venv}")
    return found[0]


def disk_bytes(path: Path) -> int:
    """Bytes of every file under `path` (links counted as links, not followed)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(root, name)).st_size
    return total


def largest(site: Path, count: int = 10) -> list[dict]:
    """The `count` largest entries of site-packages (packages, their .libs and dist-info folders apart)."""
    sizes = []
    for entry in site.iterdir():
        size = disk_bytes(entry) if entry.is_dir() else entry.lstat().st_size
        sizes.append({"name": entry.name, "mb": size / MB})
    return sorted(sizes, key=lambda item: -item["mb"])[:count]


def create_env(venv: Path, smoke: bool, source: Path = ROOT, extras: str = "") -> float:
    """The fresh environment with the runtime install of `source` (a tree with pyproject.toml and src/), with
    `extras` (e.g. "openvino") where given; returns the seconds pip took (0 in --smoke)."""
    python = Path(sys.executable)
    if smoke:
        run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        site = site_packages(venv)
        here = [p for p in sys.path if p.endswith("site-packages")] + [str(ROOT / "src")]
        (site / "_distilbench_smoke.pth").write_text("\n".join(here) + "\n")
        (site / "sitecustomize.py").write_text(BLOCKER)
        (venv / "bin" / "distilbench").write_text(
            f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom distilbench.cli import main\nsys.exit(main())\n"
        )
        (venv / "bin" / "distilbench").chmod(0o755)
        return 0.0
    base = Path(getattr(sys, "_base_executable", python))
    done = run([str(base), "-m", "venv", str(venv)])
    if done.returncode != 0:
        raise SystemExit(f"python -m venv failed:\n{done.stderr[-2000:]}")
    source = stage_source(source, Path(tempfile.mkdtemp(prefix="distilbench-source-")))
    start = time.perf_counter()
    try:
        target = f"{source}[{extras}]" if extras else str(source)
        done = run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", target], timeout=1800)
    finally:
        shutil.rmtree(source, ignore_errors=True)
    if done.returncode != 0:
        raise SystemExit(f"pip install (the runtime install) failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def stage_source(root: Path, target: Path) -> Path:
    """What building the package reads (pyproject.toml, README, LICENSE, src/), copied from the working tree, so
    pip builds outside the repository (no build/ or egg-info left in it) and installs what is checked out now."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (root / name).is_file():
            shutil.copy2(root / name, target / name)
    shutil.copytree(root / "src", target / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return target


def importable(venv: Path) -> dict[str, bool]:
    """Which heavy libraries import in the environment (each in its own process)."""
    python = str(venv / "bin" / "python")
    return {name: run([python, "-c", f"import {name}"]).returncode == 0 for name in HEAVY}


def predict_walls(venv: Path, bundle: Path, rounds: int) -> dict:
    """`distilbench predict` on the bundle with one text on stdin, whole processes: walls, label, torch imported."""
    command = [str(venv / "bin" / "python"), "-c", PREDICT_WRAPPER, "predict", "--model", str(bundle)]
    command += ["--input", "-", "--no-progress"]
    walls, labels, torch_seen = [], set(), False
    for _ in range(rounds + 1):  # the first run warms the file cache and is not counted
        start = time.perf_counter()
        done = run(command, input=TEXT + "\n", cwd=venv)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"distilbench predict failed in the runtime environment:\n{done.stderr[-3000:]}")
        labels.add(json.loads(done.stdout.strip().splitlines()[-1])["label"])
        torch_seen |= bool(torch_imported(done.stderr))
        walls.append(wall)
    walls = walls[1:]
    return {
        "wall_s": {"median": statistics.median(walls), "min": min(walls), "max": max(walls), "values": walls},
        "labels": sorted(labels),
        "imported_torch": torch_seen,
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_once(venv: Path, bundle: Path, timeout: float = 120) -> dict:
    """`distilbench serve` on the bundle: seconds until /health answers, and one POST /predict's answer."""
    port = free_port()
    command = [str(venv / "bin" / "distilbench"), "serve", "--model", str(bundle), "--port", str(port)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    start = time.perf_counter()
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        ready = None
        while time.perf_counter() - start < timeout and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                    if answer.status == 200:
                        ready = time.perf_counter() - start
                        break
            except OSError:
                time.sleep(0.1)
        if ready is None:
            raise SystemExit(f"distilbench serve did not answer /health:\n{server.stderr.read()[-3000:]}")
        body = json.dumps({"texts": [TEXT]}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/predict", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            prediction = json.loads(answer.read())["predictions"][0]
        return {"ready_s": ready, "status": 200, "label": prediction.get("label", prediction.get("labels"))}
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def training_verb(venv: Path) -> dict:
    """What `distilbench compare` answers where training is not installed: its exit code and its one line."""
    command = [str(venv / "bin" / "distilbench"), "compare", "--data", "builtin:bbc-news", "--models", "minilm-l6"]
    done = run([*command, "--out", "cmp"], cwd=venv)
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    message = lines[-1] if lines else ""
    return {"exit_code": done.returncode, "message": message, "traceback": "Traceback" in done.stderr}


def measure(venv: Path, bundle: Path, smoke: bool, rounds: int, source: Path, extras: str = "") -> dict:
    """Every step on one environment."""
    install_s = create_env(venv, smoke, source, extras)
    site = site_packages(venv)
    found = {
        "install_s": install_s,
        "site_packages_mb": disk_bytes(site) / MB,
        "venv_mb": disk_bytes(venv) / MB,
        "largest": largest(site),
        "importable": importable(venv),
        "predict": predict_walls(venv, bundle, rounds),
        "serve": serve_once(venv, bundle),
        "compare": training_verb(venv),
    }
    found["within_target"] = found["venv_mb"] <= TARGET_MB
    return found


def install_words(smoke: bool, extras: str) -> str:
    if smoke:
        return "smoke: no pip"
    return f"pip install <repository>[{extras}]" if extras else "pip install <repository> (no extras)"


def main(argv: list[str] | None = None) -> int:
    parser = common_parser(__doc__)
    parser.add_argument("--bundle", help=f"the exported bundle (default: {shown_path(DEFAULT_BUNDLE)})")
    parser.add_argument("--checkpoint", help="a fine-tuned checkpoint to export when the bundle holds no model.onnx")
    parser.add_argument("--venv", help="where to create the environment (kept; default: a temporary folder)")
    parser.add_argument("--rounds", type=int, default=3, help="timed predict processes (3)")
    parser.add_argument("--source", help="install this source tree instead of the working tree (a copy with changes)")
    parser.add_argument(
        "--extras",
        default="",
        help="install these extras too, e.g. openvino (the result then goes to runtime_env-EXTRAS.json; the 400 MB "
        "target is the base install's)",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        bundle, args.rounds = smoke_dir() / "runtime-env-bundle", 1
        export_bundle(smoke_checkpoint(), bundle)
    else:
        bundle = Path(args.bundle) if args.bundle else DEFAULT_BUNDLE
        if args.checkpoint:
            export_bundle(Path(args.checkpoint), bundle)
        if not (bundle / "model.onnx").is_file():
            parser.error(f"{bundle} is not an exported bundle: pass --checkpoint to export one")
    bundle = bundle.resolve()
    temporary = None if args.venv else Path(tempfile.mkdtemp(prefix="distilbench-runtime-env-"))
    venv = Path(args.venv).resolve() if args.venv else temporary / "venv"
    try:
        source = Path(args.source).resolve() if args.source else ROOT
        found = measure(venv, bundle, args.smoke, args.rounds, source, args.extras)
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
    report = {
        "bundle": shown_path(bundle),
        "install": install_words(args.smoke, args.extras),
        "source": "the working tree" if not args.source else f"{args.source} (a copy of the working tree, changed)",
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "target_mb": TARGET_MB,
        "text": TEXT,
        "rounds": args.rounds,
        **found,
    }
    name = f"runtime_env-{args.extras.replace(',', '-')}.json" if args.extras else "runtime_env.json"
    path = write_result(results_dir(args.smoke) / name, report, command=command_line())
    print(
        f"runtime environment {found['venv_mb']:.0f} MB (site-packages {found['site_packages_mb']:.0f} MB; target "
        f"<= {TARGET_MB}); heavy libraries importable: {[k for k, v in found['importable'].items() if v] or 'none'}; "
        f"predict {found['predict']['wall_s']['median']:.2f} s (torch imported: {found['predict']['imported_torch']}); "
        f"serve ready in {found['serve']['ready_s']:.1f} s; compare exits {found['compare']['exit_code']}"
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
