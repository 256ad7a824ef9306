"""Renders every results table and the README's figure from benchmarks/results/*.json into the published text.

    .venv/bin/python benchmarks/render.py            # rewrites the blocks in README.md and docs/*.md in place
    .venv/bin/python benchmarks/render.py --check    # exits 1 and prints a diff where the published text differs

A block is the text between `<!-- results:NAME -->` and `<!-- /results:NAME -->` in README.md or any docs/*.md;
NAME is one of BLOCKS below, and the same block may appear in several files. Every table ends with the stamp of
the result it comes from (file, commit, date, CPU and its flags, command). It also renders the detailed view
beside each result (benchmarks/results/NAME.md) with the markdown() of the script that made it, so those tables
are checked too. The figure
(docs/assets/accuracy-vs-throughput.png) carries a hash of the numbers it plots, which --check compares, so a
figure from other numbers fails the check while a different matplotlib version does not.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, ROOT, markdown_view, parser, stamp_line  # noqa: E402

FIGURE = ROOT / "docs" / "assets" / "accuracy-vs-throughput.png"
MARKER = re.compile(r"(<!-- results:([\w-]+) -->\n)(.*?)(<!-- /results:\2 -->)", re.DOTALL)


# ---------------------------------------------------------------- reading results and formatting numbers


def load(name: str) -> dict:
    """A result file of benchmarks/results, by its file name."""
    return json.loads((RESULTS / name).read_text(encoding="utf-8"))


def stamp_of(name: str) -> str:
    """The stamp line of a result file (relative link from the docs, which is where every block can live)."""
    return stamp_line(load(name)["stamp"], f"benchmarks/results/{name}")


def ci(interval: dict | None, digits: int = 4) -> str:
    """'0.9304 [0.9232, 0.9374]' from an interval {'value', 'low', 'high'}."""
    if not interval:
        return ""
    return f"{interval['value']:.{digits}f} [{interval['low']:.{digits}f}, {interval['high']:.{digits}f}]"


def points(diff: dict | None) -> str:
    """'-0.24 [-0.70, +0.22]': a paired difference in points with its interval."""
    if not diff:
        return ""
    value = diff.get("difference_points", diff.get("value"))
    return f"{value:+.2f} [{diff['low']:+.2f}, {diff['high']:+.2f}]"


def spread(values: dict, digits: int = 1) -> str:
    """'62.5 (61.6-62.6)': a median with its min and max."""
    return f"{values['median']:.{digits}f} ({values['min']:.{digits}f}-{values['max']:.{digits}f})"


def table(header: list[str], rows: list[list]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def block(*parts: str) -> str:
    """Paragraphs of a block, separated by blank lines."""
    return "\n\n".join(part.strip("\n") for part in parts if part)


# ---------------------------------------------------------------- the thesis at full scale


def speed_of(task: dict, step: str, backend: str) -> dict | None:
    return next(
        (r["samples_per_s"] for r in task["speed"]["results"] if r["step"] == step and r["backend"] == backend), None
    )


def student_speed(task: dict, step: str, backend: str) -> dict | None:
    """A student step's measured throughput, or the fine-tuned student's (the same architecture) where the step
    was not timed."""
    return speed_of(task, step, backend) or speed_of(task, "student", backend)


def thesis_scale_rows(task: dict, metric: str) -> list[list]:
    teacher_speed = speed_of(task, "teacher", "torch-bf16")["median"]
    rows = []
    for row in task["rows"]:
        rate = (
            student_speed(task, row["step"], "torch-bf16")
            if row["step"] != "teacher"
            else speed_of(task, "teacher", "torch-bf16")
        )
        general = f" (general {row['general_time_s'] / 60:.1f})" if row.get("general_time_s") else ""
        rows.append(
            [
                row["model"],
                f"{row['params'] / 1e6:.1f} M",
                ci(row["test"][metric]),
                points(row.get("vs_teacher")),
                points(row.get("vs_student")),
                (row.get("kept") or f"epoch {row['best_epoch']}").replace("-", " ", 1),
                f"{row['train_time_s'] / 60:.1f} min{general}",
                f"{row['train_time_ratio']:.2f}",
                f"{rate['median'] / teacher_speed:.2f}x",
            ]
        )
    return rows


THESIS_SCALE_HEADER = [
    "model",
    "parameters",
    "{metric} [95% CI]",
    "vs teacher, points [95% CI]",
    "vs label-only student",
    "tested",
    "train time",
    "time ratio",
    "throughput vs teacher (bf16)",
]


def render_thesis_scale(name: str, task_name: str, metric: str, label: str) -> str:
    task = load(name)["tasks"][task_name]
    header = [h.format(metric=label) for h in THESIS_SCALE_HEADER]
    return block(table(header, thesis_scale_rows(task, metric)), stamp_of(name))


def render_thesis_scale_speed() -> str:
    rows = []
    for name, task_name, shown in (
        ("thesis_scale.json", "multiclass", "headlines"),
        ("thesis_scale_multilabel_probe.json", "multilabel", "toxic comments"),
    ):
        task = load(name)["tasks"][task_name]
        for step in ("teacher", "student"):
            cells = []
            for backend in task["speed"]["backends"]:
                rate, base = speed_of(task, step, backend), speed_of(task, "teacher", backend)
                ratio = f", **{rate['median'] / base['median']:.2f}x**" if step != "teacher" else ""
                cells.append(spread(rate) + ratio)
            rows.append([shown, "teacher (12 layers)" if step == "teacher" else "student (6 layers)", *cells])
    header = ["task", "model", "torch-fp32 rows/s", "torch-bf16 rows/s"]
    return block(table(header, rows), stamp_of("thesis_scale.json"), stamp_of("thesis_scale_multilabel_probe.json"))


def render_readme_thesis() -> str:
    """The thesis's pair against distilbench's full-scale pair (a 12-layer teacher and its 6-layer student)."""
    rows = []
    for name, task_name, metric, shown in (
        ("thesis_scale.json", "multiclass", "accuracy", "news headlines"),
        ("thesis_scale_multilabel_probe.json", "multilabel", "hamming_score", "toxic comments"),
    ):
        task, thesis = load(name)["tasks"][task_name], load("thesis_reference.json")["tasks"][task_name]
        teacher = task["rows"][0]
        best = next(r for r in task["rows"] if r["step"] == "student-general")
        ratio = (
            student_speed(task, "student-general", "torch-bf16")["median"]
            / speed_of(task, "teacher", "torch-bf16")["median"]
        )
        rows.append(
            [
                f"{shown} ({thesis['metric']})",
                f"{thesis['teacher']:.4f} → {thesis['student']:.4f}, {thesis['teacher_s'] / thesis['student_s']:.2f}x",
                f"{ci(teacher['test'][metric])} → {ci(best['test'][metric])}",
                points(best["vs_teacher"]),
                f"{ratio:.2f}x",
            ]
        )
    header = [
        "task",
        "thesis: BERT-base → DistilBERT (P100), speed-up",
        "distilbench: mpnet-base (12 layers) → 6-layer student, general + task distillation [95% CI]",
        "student − teacher, points [95% CI]",
        "speed-up (CPU, bf16)",
    ]
    reference = load("thesis_reference.json")
    source = f"<sub>The thesis's numbers: `benchmarks/results/thesis_reference.json`, {reference['source']}; "
    source += f"{reference['setting']}.</sub>"
    return block(
        table(header, rows), source, stamp_of("thesis_scale.json"), stamp_of("thesis_scale_multilabel_probe.json")
    )


# ---------------------------------------------------------------- verdicts with seeds


def verdict_rows(name: str, task_name: str, metrics: list[str], setting: str) -> list[list]:
    comparison = load(name)["tasks"][task_name]["defaults"]["comparison"]
    rows = []
    for row in comparison["rows"]:
        first = row["test_ci"][metrics[0]]
        spread_text = f"{first['std_over_seeds']:.4f} ({min(first['values']):.4f}-{max(first['values']):.4f})"
        vs = row.get("vs_reference")
        rows.append(
            [
                setting,
                row["model"],
                *(ci(row["test_ci"][m]) for m in metrics[:1]),
                spread_text,
                *(ci(row["test_ci"][m]) for m in metrics[1:]),
                points(vs) if vs else "",
                f"**{vs['verdict']}**" if vs else "reference",
                f"{row['train_time_s']:.0f} s",
            ]
        )
    for baseline in comparison["baselines"]["baselines"].values():
        values = baseline["metrics"]
        rows.append(
            ["trivial baseline", baseline["description"], ci(values.get(metrics[0])), ""]
            + [ci(values[m]) if m in values else "" for m in metrics[1:]]
            + ["", "", ""]
        )
    return rows


def render_verdicts(name: str, task_name: str, metrics: list[str], labels: list[str], setting: str) -> str:
    comparison = load(name)["tasks"][task_name]["defaults"]["comparison"]
    header = [
        "settings",
        "model",
        f"{labels[0]} [95% CI]",
        "sd over seeds (min-max)",
        *(f"{label} [95% CI]" for label in labels[1:]),
        f"vs {comparison['reference']}, points [95% CI]",
        f"verdict (margin {comparison['margin_points']:g})",
        "train time per seed",
    ]
    return block(table(header, verdict_rows(name, task_name, metrics, setting)), stamp_of(name))


SETTINGS_TRIED = {
    "verdicts-multiclass.json": "the defaults",
    "verdicts-multiclass-batch16-epyc.json": "`--train-batch-size 16`",
    "verdicts-multiclass-epochs4.json": "`--epochs 4`",
    "verdicts-multiclass-epochs6-average5.json": "`--epochs 6 --average-checkpoints 5`",
    "verdicts-multiclass-lr-constant.json": "`--lr-schedule constant`",
    "verdicts-multiclass-lr-cosine.json": "`--lr-schedule cosine`",
    "verdicts-multiclass-lr2e-4.json": "`--learning-rate 2e-4`",
    "verdicts-multiclass-layer-lr-decay-0.8.json": "`--layer-lr-decay 0.8`",
    "verdicts-multiclass-standard-head-full.json": "`--head standard`",
    "verdicts-multiclass-label-smoothing-0.1.json": "`--label-smoothing 0.1`",
}


def render_settings_tried() -> str:
    """minilm-l6 on the headlines, 3 seeds, one setting changed from the defaults per row."""
    rows, stamps = [], []
    for name, setting in SETTINGS_TRIED.items():
        row = load(name)["tasks"]["multiclass"]["defaults"]["comparison"]["rows"][0]
        accuracy = row["test_ci"]["accuracy"]
        seeds = ", ".join(f"{v:.4f}" for v in accuracy["values"])
        rows.append([setting, ci(accuracy), seeds, f"{row['train_time_s']:.0f} s"])
        stamps.append(stamp_of(name))
    header = ["minilm-l6 with", "accuracy [95% CI]", "seeds 42, 43, 44", "train time per seed"]
    return block(table(header, rows), "\n".join(stamp + "<br>" for stamp in stamps[:-1]) + "\n" + stamps[-1])


# ---------------------------------------------------------------- distillation


def render_distillation_variants() -> str:
    report = load("distillation_variants.json")
    rows = [
        [
            row["variant"],
            ci(row["test_accuracy"]),
            points(row.get("vs_label_only")) or "—",
            f"{row['val_accuracy']:.4f}",
            f"{row['train_time_s']:.0f} s",
        ]
        for row in report["rows"]
    ]
    header = [
        "student (3 layers)",
        "test accuracy [95% CI]",
        "vs label-only, points [95% CI]",
        "val accuracy",
        "train time",
    ]
    return block(table(header, rows), stamp_of("distillation_variants.json"))


def render_bigger_teacher() -> str:
    report = load("minilm_from_mpnet.json")
    rows = [
        [
            f"teacher {report['teacher']['model']} ({report['teacher']['method']})",
            ci(report["teacher"]["accuracy"]),
            "",
            "",
        ]
    ]
    label_only = report["earlier_label_only"]["accuracy"]
    rows.append(["minilm-l6 on labels alone (the defaults)", ci(label_only), _seeds(label_only), ""])
    for step, shown in (
        ("distilled", "minilm-l6 distilled from it"),
        ("augmented", "… with one masked copy of each text"),
    ):
        found = report["steps"].get(step)
        if found:
            rows.append([shown, ci(found["accuracy"]), _seeds(found["accuracy"]), f"{found['train_time_s']:.0f} s"])
    header = ["model", "test accuracy [95% CI]", "seeds 42, 43, 44", "train time per seed"]
    return block(table(header, rows), stamp_of("minilm_from_mpnet.json"))


def _seeds(interval: dict) -> str:
    return ", ".join(f"{v:.4f}" for v in interval.get("values", []))


# ---------------------------------------------------------------- speed


def render_speed_vs_pipeline() -> str:
    report = load("speed.json")["vs_pipeline"]
    rows, base = [], {}
    for row in report["rows"]:
        base.setdefault(row["model"], row["samples_per_s"])
        rows.append(
            [
                row["model"],
                row["way"],
                spread(row["seconds"], 2),
                f"{row['samples_per_s']:.0f}",
                f"{row['samples_per_s'] / base[row['model']]:.1f}x",
                f"{row['accuracy']:.4f}",
            ]
        )
    header = ["model", "way", "seconds, median (min-max)", "samples/s", "vs pipeline", "test accuracy"]
    return block(table(header, rows), stamp_of("speed.json"))


def render_speed_thesis_table() -> str:
    report = load("speed.json")["thesis_speed"]
    by_way: dict[str, dict] = {}
    for row in report["rows"]:
        by_way.setdefault(row["way"], {})[row["architecture"]] = row["seconds"]
    thesis_way = next(iter(by_way.values()))["bert-base-uncased"]["median"]
    rows = []
    for way, seconds in by_way.items():
        bert, distil = seconds["bert-base-uncased"], seconds["distilbert-base-uncased"]
        ratio = distil["median"] / bert["median"]
        rows.append([way, spread(bert, 2), spread(distil, 2), f"{ratio:.2f}", f"{thesis_way / bert['median']:.1f}x"])
    header = ["way", "BERT-base s", "DistilBERT-base s", "DistilBERT / BERT", "BERT speed-up vs thesis way"]
    return block(table(header, rows), stamp_of("speed.json"))


def render_speed_training() -> str:
    report = load("speed.json")["training"]
    rows, first = [], None
    for way, row in report["rows"].items():
        first = first or row["seconds"]["median"]
        alone = row.get("train_seconds")
        rows.append(
            [
                way,
                spread(row["seconds"]),
                f"{row['seconds']['median'] / first:.2f}x",
                f"{row['accuracy'][0]:.4f}",
                spread(alone) if alone else "-",
            ]
        )
    header = ["way", "seconds", "ratio", "accuracy", "training steps alone, seconds"]
    return block(table(header, rows), stamp_of("speed.json"))


def render_backend_auto() -> str:
    report = load("evaluate_speed.json")
    rows = []
    for kind, found in report["kinds"].items():
        pipeline = sorted(found["pipeline_s"])[len(found["pipeline_s"]) // 2]
        auto = sorted(found["auto_s"])[len(found["auto_s"]) // 2]
        rows.append(
            [
                f"{found['machine']['cpu']} {kind} ({', '.join(found['machine']['cpu_flags'])})",
                f"{pipeline:.1f}",
                f"{auto:.1f} ({found['choice']['chosen']})",
                f"**{pipeline / auto:.2f}x**",
                f"{found['accuracy']['pipeline']:.4f} / {found['accuracy']['auto']:.4f}",
                found["fastest_valid"],
            ]
        )
    header = [
        "CPU",
        "transformers.pipeline s",
        "evaluate --backend auto s",
        "vs pipeline",
        "accuracy pipeline / auto",
        "fastest valid backend",
    ]
    return block(table(header, rows), stamp_of("evaluate_speed.json"))


def render_readme_speed() -> str:
    """The best distilbench way against transformers.pipeline in the same run: prediction loop and whole process."""
    loop = load("speed.json")["vs_pipeline"]
    rows = []
    for model in dict.fromkeys(row["model"] for row in loop["rows"]):
        mine = [row for row in loop["rows"] if row["model"] == model]
        pipeline, best = mine[0], max(mine[1:], key=lambda row: row["samples_per_s"])
        rows.append(
            [
                f"{model}: predict {loop['texts']:,} headlines",
                f"{pipeline['samples_per_s']:.0f} rows/s",
                f"{best['samples_per_s']:.0f} rows/s ({best['way'].removeprefix('distilbench ')})",
                f"**{best['samples_per_s'] / pipeline['samples_per_s']:.1f}x**",
            ]
        )
    for kind, found in load("evaluate_speed.json")["kinds"].items():
        pipeline, auto = (sorted(found[key])[len(found[key]) // 2] for key in ("pipeline_s", "auto_s"))
        rows.append(
            [
                f"whole `evaluate` process, {found['texts']:,} headlines, {kind} CPU",
                f"{pipeline:.1f} s",
                f"{auto:.1f} s (auto: {found['choice']['chosen']})",
                f"**{pipeline / auto:.2f}x**",
            ]
        )
    rows += _bundle_rows()
    header = ["measurement", "transformers.pipeline", "distilbench", "ratio"]
    stamps = [stamp_of(name) for name in ("speed.json", "evaluate_speed.json", "cold_start.json")]
    return block(table(header, rows), *stamps, stamp_of("bulk_vs_pipeline.json"))


def _bundle_rows() -> list[list]:
    """An exported bundle in the runtime install: one text's whole process, and the bulk run `auto`'s bundle makes."""
    cold = load("cold_start.json")
    bulk = load("bulk_vs_pipeline.json")
    pipeline = next(row for row in bulk["rows"] if row["key"] == "pipeline")
    auto = next(row for row in bulk["rows"] if row["key"] == "auto-auto")
    return [
        [
            "one headline, whole process (an exported bundle, no torch)",
            f"{cold['pipeline_s']['median']:.2f} s",
            f"{cold['bundle_predict_s']['median']:.2f} s",
            f"**{cold['ratio']:.1f}x**",
        ],
        [
            f"whole `predict` process, {bulk['texts']:,} headlines (`export --quantize auto` bundle)",
            f"{pipeline['seconds']['median']:.1f} s, {pipeline['peak_rss_mb']:.0f} MB",
            f"{auto['seconds']['median']:.1f} s, {auto['peak_rss_mb']:.0f} MB ({auto['backend']})",
            f"**{auto['speedup_vs_pipeline']:.2f}x**",
        ],
    ]


# ---------------------------------------------------------------- bulk prediction, serving, Ray


def render_bulk_predict() -> str:
    report = load("bulk_predict.json")
    rows = [
        [
            f"{run['rows']:,}",
            run["workers"],
            f"{run['seconds']:.1f}",
            f"{run['rows_per_s']:.0f}",
            f"{run['predict_rows_per_s']:.0f}",
            f"{run['peak_rss_mb']['sum']:.0f}",
            f"{run['speedup']:.2f}x" if run.get("speedup") else "-",
        ]
        for run in report["runs"]
    ]
    header = ["rows", "workers", "wall s", "rows/s (wall)", "rows/s (predict)", "peak MB, all processes", "speed-up"]
    return block(table(header, rows), stamp_of("bulk_predict.json"))


def render_serve() -> str:
    report = load("serve.json")
    rows = [
        [
            mode,
            spread(found["requests_per_s"]),
            f"{found['latency_ms']['p50']:.1f}",
            f"{found['latency_ms']['p95']:.1f}",
            f"{found['latency_ms']['p99']:.1f}",
            found["errors"],
            f"{found['texts_per_forward']:.1f}",
        ]
        for mode, found in report["modes"].items()
    ]
    header = ["mode", "requests/s (median, min-max)", "p50 ms", "p95 ms", "p99 ms", "errors", "texts per forward"]
    return block(table(header, rows), stamp_of("serve.json"))


def render_ray() -> str:
    report = load("ray_predict.json")
    rows = [
        [
            run["engine"],
            run.get("parallel", ""),
            f"{run['rows']:,}",
            f"{run['seconds']:.1f}",
            f"{run['rows_per_s']:,.0f}",
            f"{run['peak_rss_mb']['sum']:,.0f}",
            run["peak_rss_mb"]["processes"],
        ]
        for run in report["runs"]
    ]
    header = ["engine", "parallel", "rows", "wall s", "rows/s (wall)", "peak MB (all processes)", "processes"]
    return block(table(header, rows), stamp_of("ray_predict.json"))


def render_cold_start() -> str:
    """Issue 39's cold start: predict on an exported bundle against transformers.pipeline, whole processes."""
    report = load("cold_start.json")
    torch_note = "imports torch" if report["bundle_imported_torch"] else "no torch"
    where = report.get("bundle_environment", "full install (.venv)")
    rows = [
        [
            f"`distilbench predict` on the exported bundle, {where} ({torch_note})",
            spread(report["bundle_predict_s"], 2),
            "1x",
        ],
        [
            "`transformers.pipeline` on the checkpoint",
            spread(report["pipeline_s"], 2),
            f"**{report['ratio']:.1f}x** slower",
        ],
    ]
    header = [f"one text, whole process (median of {report['rounds']}, side by side)", "wall s (min-max)", "ratio"]
    return block(table(header, rows), stamp_of("cold_start.json"))


def render_runtime_env() -> str:
    """Issue 39's runtime-only install: a fresh environment with `pip install distilbench` (no extras), its size,
    and predict, serve and a training verb there."""
    report = load("runtime_env.json")
    present = [name for name, found in report["importable"].items() if found]
    shown_present = f" but **{', '.join(present)}**" if present else ""
    predict = report["predict"]
    verdict = "within" if report["within_target"] else "**over**"
    rows = [
        [
            "environment on disk (site-packages)",
            f"{report['venv_mb']:.0f} MB ({report['site_packages_mb']:.0f} MB), {verdict} the "
            f"{report['target_mb']} MB target",
        ],
        ["`pip install` (no extras), offline", f"{report['install_s']:.0f} s"],
        [f"`import` of {', '.join(report['importable'])}", f"fails for all{shown_present}"],
        [
            f"`distilbench predict`, one text from stdin, whole process (median of {report['rounds']})",
            f"{spread(predict['wall_s'], 2)} s, {'imports torch' if predict['imported_torch'] else 'no torch'}",
        ],
        ["`distilbench serve`: start until `/health` answers", f"{report['serve']['ready_s']:.1f} s"],
        [
            "`distilbench compare` there",
            f"exit {report['compare']['exit_code']}{', a traceback' if report['compare']['traceback'] else ''}: "
            f"`{report['compare']['message'].replace('|', '/')}`",
        ],
    ]
    largest = ", ".join(f"{item['name']} {item['mb']:.0f} MB" for item in report["largest"][:6])
    source = report.get("source", "the working tree")
    source = "" if source == "the working tree" else f" Installed from {source}."
    return block(
        table(["runtime-only install (`pip install distilbench`)", "measured"], rows),
        f"Largest in site-packages: {largest}.{source}",
        stamp_of("runtime_env.json"),
        _openvino_env_line(),
    )


def _openvino_env_line() -> str:
    """The same measurement with the [openvino] extra (runtime_env.py --extras openvino), where it was made."""
    if not (RESULTS / "runtime_env-openvino.json").is_file():
        return ""
    report = load("runtime_env-openvino.json")
    present = [name for name, found in report["importable"].items() if found]
    return block(
        f'With the `[openvino]` extra (`pip install "distilbench[openvino]"`, for `openvino-*` bundles): '
        f"{report['venv_mb']:.0f} MB on disk; {', '.join(present) or 'none'} of "
        f"{', '.join(report['importable'])} importable; `predict` from stdin "
        f"{spread(report['predict']['wall_s'], 2)} s.",
        stamp_of("runtime_env-openvino.json"),
    )


def render_ladder() -> str:
    """Issue 38's ladder: minilm-l6, tfidf and static:minilm-l6 on both thesis tasks, speed measured side by side."""
    report = load("ladder.json")
    parts = []
    for task, result in report["tasks"].items():
        metric = result["metric"]
        header = [
            "model",
            f"{metric.replace('_', ' ')} [95% CI]",
            "vs minilm-l6, points [95% CI]",
            "verdict",
            "rows/s (median of 5)",
            "throughput vs minilm-l6",
            "size MB",
            "train s",
        ]
        rows = [
            [
                f"`{row['model']}`",
                ci((row.get("test_ci") or {}).get(metric)),
                points(row.get("vs_reference")) or "(reference)",
                (row.get("vs_reference") or {}).get("verdict", "reference"),
                f"{row['throughput']['median']:,.0f}",
                f"{row['throughput_ratio']:.1f}x",
                f"{row['size_mb']:.1f}",
                f"{row['train_time_s']:.0f}",
            ]
            for row in result["rows"]
        ]
        split = result["rows_per_split"]
        targets = "; ".join(
            f"`{t['model']}` {t['metric'].replace('_', ' ')} >= {t['least']}"
            + (f" at >= {t['least_ratio']:.0f}x" if t["least_ratio"] else "")
            + f": {t['value']:.4f}"
            + (f" at {t['ratio']:.1f}x" if t["least_ratio"] else "")
            + f" ({'met' if t['met'] else '**not met**'})"
            for t in result["targets"]
        )
        title = f"**{'News headlines' if task == 'multiclass' else 'Toxic comments'}** (train {split['train']:,}, "
        title += f"validation {split['val']:,}, test {split['test']:,} rows)"
        parts += [title, table(header, rows), f"Targets of the issue, on this split's test rows: {targets}."]
    return block(*parts, stamp_of("ladder.json"))


def _curve_rows(stage: dict, small_rate: float, big_rate: float) -> list[list]:
    """About eight points of a cascade's calibration curve, the chosen threshold in bold; throughput computed from
    the two models' measured rates (every row through the small model, the deferred ones through the big one)."""
    curve = stage["curve"]
    step = max(1, len(curve) // 8)
    picked = sorted(
        {*range(0, len(curve), step), len(curve) - 1}
        | {i for i, point in enumerate(curve) if point["threshold"] == stage.get("threshold")}
    )
    rows = []
    for i in picked:
        point = curve[i]
        rate = 1 / (1 / small_rate + (1 - point["share"]) / big_rate)
        cells = [
            f"{point['threshold']:.4f}",
            f"{100 * point['share']:.1f} %",
            f"{point['cascade_metric']:.4f}",
            f"{point['loss_points']:+.2f}",
            f"{point['p_value']:.3g}",
            "yes" if point["certified"] else "no",
            f"{rate:,.0f}",
        ]
        rows.append([f"**{c}**" for c in cells] if point["threshold"] == stage.get("threshold") else cells)
    return rows


def _whole_process_line(result: dict) -> str:
    """Whole `distilbench predict` processes with the guaranteed cascade and with minilm-l6 alone: with the run's
    checkpoints, and deployed as bundles (minilm-l6 exported with --quantize auto; no torch)."""
    parts = []
    forms = [("the run's checkpoints", result["predict"], None)]
    if "bundles" in result:
        bundles = result["bundles"]
        forms.append((f"bundles (`minilm-l6` as `{bundles['backend']}`)", bundles["predict"], bundles["test"]))
    for name, predict, test in forms:
        answered = f", tfidf answering {100 * test['shares'][0]:.1f} %" if test else ""
        parts.append(
            f"with {name}{answered}: the cascade {predict['median_s']['cascade']:.2f} s, `minilm-l6` alone "
            f"{predict['median_s']['big']:.2f} s, **{predict['ratio']:.1f}x**"
        )
    rounds = result["predict"]["rounds"]
    return f"Whole `distilbench predict` processes on the test texts (median of {rounds}, alternating), " + (
        "; ".join(parts) + "."
    )


def render_cascade() -> str:
    """Issue 38's cascades tfidf -> minilm-l6: the guaranteed and the best-accuracy threshold, on both tasks."""
    report = load("cascade.json")
    ladder = load("ladder.json")
    parts = []
    for task, result in report["tasks"].items():
        header = [
            "objective",
            "tfidf answers (test)",
            "cascade",
            "minilm-l6 alone",
            "difference, points [95% CI]",
            "guarantee (at most 0.5 points lost)",
            "rows/s cascade / minilm-l6 (median of 3)",
        ]
        rows = []
        for name in ("cost", "accuracy"):
            test, speed = result[name]["test"], result[name]["speed"]
            low, high = test["interval_points"]
            rows.append(
                [
                    f"`--objective {name}`",
                    f"{100 * test['shares'][0]:.1f} %",
                    f"{test['cascade_metric']:.4f}",
                    f"{test['big_metric']:.4f}",
                    f"{test['difference_points']:+.2f} [{low:+.2f}, {high:+.2f}]",
                    ("held" if test["guarantee_held"] else "**not held**") if name == "cost" else "none asked",
                    f"{speed['cascade_rows_per_s']:,.0f} / {speed['big_rows_per_s']:,.0f} ({speed['speedup']:.1f}x)",
                ]
            )
        title = f"**{'News headlines' if task == 'multiclass' else 'Toxic comments'}**"
        whole = _whole_process_line(result)
        stage = result["cost"]["curve"]["stages"][0]
        rates = {row["model"]: row["throughput"]["median"] for row in ladder["tasks"][task]["rows"]}
        curve_header = [
            "threshold",
            "tfidf answers",
            "cascade metric",
            "loss, points",
            "p-value",
            "certified",
            "rows/s (computed)",
        ]
        curve = table(curve_header, _curve_rows(stage, rates["tfidf"], rates["minilm-l6"]))
        parts += [
            title,
            table(header, rows),
            whole,
            "The calibration curve (validation rows), the guaranteed threshold in bold:",
            curve,
        ]
    return block(*parts, stamp_of("cascade.json"))


def render_bulk_vs_pipeline(name: str = "bulk_vs_pipeline.json") -> str:
    """Issue 39's bulk target: `distilbench predict` on bundles against transformers.pipeline, whole processes
    (`name`: the run on this CPU, or bulk_vs_pipeline-avx2.json on it as an AVX2-only one, simulated)."""
    report = load(name)
    rows = [
        [
            row["way"],
            f"`{row['backend']}`",
            spread(row["seconds"], 1),
            f"{row['speedup_vs_pipeline']:.2f}x",
            f"{row['peak_rss_mb']:.0f}",
            f"{100 * row['agreement_with_pipeline']:.2f} %",
            f"{row['accuracy']:.4f}",
        ]
        for row in report["rows"]
    ]
    header = [
        f"{report['texts']:,} test headlines, whole process (median of {report['rounds']}, alternating)",
        "backend",
        "wall s (min-max)",
        "vs pipeline",
        "peak MB",
        "same labels as the pipeline",
        "accuracy",
    ]
    from bulk_predict import versus_sentences

    return block(table(header, rows), versus_sentences(report), stamp_of(name))


def render_readme_ladder() -> str:
    """The README's view of issue 38: how far down the ladder the news headlines can go, and the cascade."""
    ladder, cascade = load("ladder.json")["tasks"]["multiclass"], load("cascade.json")["tasks"]["multiclass"]
    rows = [
        [
            f"`{row['model']}`",
            ci((row.get("test_ci") or {}).get("accuracy")),
            points(row.get("vs_reference")) or "(reference)",
            f"{row['throughput_ratio']:.1f}x",
            f"{row['size_mb']:.0f} MB",
        ]
        for row in ladder["rows"]
    ]
    test, speed = cascade["cost"]["test"], cascade["cost"]["speed"]
    low, high = test["interval_points"]
    whole = cascade["predict"]["ratio"]
    rows.append(
        [
            "cascade `tfidf` → `minilm-l6`, at most 0.5 points lost (95 %)",
            f"{test['cascade_metric']:.4f} (tfidf answers {100 * test['shares'][0]:.0f} %)",
            f"{test['difference_points']:+.2f} [{low:+.2f}, {high:+.2f}]",
            f"{speed['speedup']:.1f}x (a whole `predict` process: {whole:.1f}x)",
            "",
        ]
    )
    header = [
        "news headlines, 3,000 test rows",
        "accuracy [95% CI]",
        "vs minilm-l6, points",
        "throughput vs minilm-l6",
        "size",
    ]
    return block(table(header, rows), stamp_of("ladder.json"), stamp_of("cascade.json"))


def render_demo() -> str:
    report = load("demo.json")
    return block("```\n" + report["output"].rstrip("\n") + "\n```", stamp_of("demo.json"))


BLOCKS = {
    "readme-thesis": render_readme_thesis,
    "readme-speed": render_readme_speed,
    "demo": render_demo,
    "thesis-scale-headlines": lambda: render_thesis_scale("thesis_scale.json", "multiclass", "accuracy", "accuracy"),
    "thesis-scale-toxic": lambda: render_thesis_scale(
        "thesis_scale_multilabel_probe.json", "multilabel", "hamming_score", "hamming score"
    ),
    "thesis-scale-speed": render_thesis_scale_speed,
    "verdicts-headlines": lambda: render_verdicts(
        "verdicts-multiclass.json", "multiclass", ["accuracy", "f1_macro"], ["accuracy", "macro F1"], "defaults"
    ),
    "verdicts-toxic": lambda: render_verdicts(
        "verdicts-multilabel-defaults-probe.json",
        "multilabel",
        ["hamming_score", "f1_macro", "roc_auc_macro"],
        ["hamming score", "macro F1", "macro ROC-AUC"],
        "defaults",
    ),
    "settings-tried": render_settings_tried,
    "distillation-variants": render_distillation_variants,
    "bigger-teacher": render_bigger_teacher,
    "speed-vs-pipeline": render_speed_vs_pipeline,
    "speed-thesis-table": render_speed_thesis_table,
    "speed-training": render_speed_training,
    "backend-auto": render_backend_auto,
    "bulk-predict": render_bulk_predict,
    "serve": render_serve,
    "ray": render_ray,
    "cold-start": render_cold_start,
    "runtime-env": render_runtime_env,
    "ladder": render_ladder,
    "readme-ladder": render_readme_ladder,
    "cascade": render_cascade,
    "bulk-vs-pipeline": render_bulk_vs_pipeline,
    "bulk-vs-pipeline-avx2": lambda: render_bulk_vs_pipeline("bulk_vs_pipeline-avx2.json"),
}


# ---------------------------------------------------------------- the figure


def figure_data() -> dict:
    """What the README's figure plots: each headline model's test accuracy with its interval against its bf16
    throughput, from the full-scale thesis result."""
    report = load("thesis_scale.json")
    task = report["tasks"]["multiclass"]
    points_ = []
    for row in task["rows"]:
        rate = (
            speed_of(task, "teacher", "torch-bf16")
            if row["step"] == "teacher"
            else student_speed(task, row["step"], "torch-bf16")
        )
        accuracy = row["test"]["accuracy"]
        points_.append(
            {
                "model": row["model"],
                "rows_per_s": rate["median"],
                "accuracy": accuracy["value"],
                "low": accuracy["low"],
                "high": accuracy["high"],
            }
        )
    cpu = f"{report['stamp']['cpu']} ({report['stamp'].get('cpu_count', '?')} cores), torch-bf16"
    return {"points": points_, "cpu": cpu, "commit": report["stamp"]["commit"]}


def data_hash(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def render_figure(path: Path) -> None:
    """Draws the figure deterministically (fixed size and dpi, no date in its metadata) with the data's hash."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = figure_data()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    students = [p for p in data["points"] if p["model"] != data["points"][0]["model"]]
    for point in data["points"]:
        error = [[point["accuracy"] - point["low"]], [point["high"] - point["accuracy"]]]
        # the students share one throughput: set side by side (4 rows/s apart) so each interval shows
        dodge = 4.0 * (students.index(point) - (len(students) - 1) / 2) if point in students else 0.0
        ax.errorbar(
            point["rows_per_s"] + dodge, point["accuracy"], yerr=error, fmt="o", capsize=4, label=point["model"]
        )
    ax.set_xlabel(f"throughput, rows/s ({data['cpu']}; students set 4 rows/s apart)")
    ax.set_ylabel("test accuracy, 95% interval")
    ax.set_title("News headlines: mpnet-base (12 layers) and its 6-layer students", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None, "Description": f"data {data_hash(data)}"})
    plt.close(fig)


def figure_hash_on_disk(path: Path) -> str | None:
    """The data hash stored in the figure's PNG metadata, or None."""
    if not path.is_file():
        return None
    from PIL import Image

    with Image.open(path) as image:
        description = image.info.get("Description", "")
    return description.removeprefix("data ") or None


# ---------------------------------------------------------------- the detailed views beside the results

# result file -> the script whose markdown() writes the view beside it (result.md); verdicts-* all by verdicts.py
VIEW_SCRIPTS = {
    "thesis_scale": "thesis_scale",
    "thesis_scale_multilabel_probe": "thesis_scale",
    "distillation_variants": "distillation_variants",
    "minilm_from_mpnet": "bigger_teacher",
    "speed": "speed",
    "evaluate_speed": "evaluate_speed",
    "bulk_predict": "bulk_predict",
    "serve": "serve",
    "ray_predict": "ray_predict",
    "bulk_vs_pipeline": "bulk_predict",
    "bulk_vs_pipeline-avx2": "bulk_predict",
    "ladder": "ladder",
    "cascade": "cascade",
}


def view_script(stem: str) -> str | None:
    """The script that renders the view of result `stem`; None for a result without one (the demo's)."""
    return VIEW_SCRIPTS.get(stem) or ("verdicts" if stem.startswith("verdicts") else None)


def expected_views() -> dict[Path, str]:
    """Every live result's markdown view as its script's markdown() renders it from the JSON, with the stamp."""
    import importlib

    views = {}
    for path in sorted(RESULTS.glob("*.json")):
        script = view_script(path.stem)
        if script is None:
            continue
        report = load(path.name)
        text = importlib.import_module(script).markdown(report)
        views[path.with_suffix(".md")] = markdown_view(report, text, f"benchmarks/results/{path.name}")
    return views


# ---------------------------------------------------------------- the published text


def published_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]


def render_text(text: str, rendered: dict[str, str], source: Path) -> str:
    """`text` with every block between its markers replaced by its rendering."""

    def replace(match: re.Match) -> str:
        name = match.group(2)
        if name not in BLOCKS:
            raise SystemExit(f"{source}: unknown results block '{name}' (known: {', '.join(BLOCKS)})")
        if name not in rendered:
            rendered[name] = BLOCKS[name]()
        return f"{match.group(1)}{rendered[name]}\n{match.group(4)}"

    return MARKER.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    args_parser = parser(__doc__)
    args_parser.add_argument("--check", action="store_true", help="change nothing; exit 1 with a diff where it differs")
    args = args_parser.parse_args(argv)
    if args.smoke:
        for name, render in BLOCKS.items():
            assert render().strip(), name
        print(f"rendered {len(BLOCKS)} blocks; --smoke writes nothing")
        return 0
    rendered: dict[str, str] = {}
    differs = False
    for path in published_files():
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        new = render_text(text, rendered, path)
        if new == text:
            continue
        differs = True
        if args.check:
            name = str(path.relative_to(ROOT))
            sys.stdout.writelines(
                difflib.unified_diff(text.splitlines(True), new.splitlines(True), name, name + " (rendered)")
            )
        else:
            path.write_text(new, encoding="utf-8")
            print(f"rendered {path.relative_to(ROOT)}")
    for path, view in expected_views().items():
        old = path.read_text(encoding="utf-8") if path.is_file() else ""
        if old == view:
            continue
        differs = True
        name = str(path.relative_to(ROOT))
        if args.check:
            sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), view.splitlines(True), name, name))
        else:
            path.write_text(view, encoding="utf-8")
            print(f"rendered {name}")
    if figure_hash_on_disk(FIGURE) != data_hash(figure_data()):
        differs = True
        if args.check:
            print(f"{FIGURE.relative_to(ROOT)} was drawn from other numbers; run benchmarks/render.py")
        else:
            render_figure(FIGURE)
            print(f"rendered {FIGURE.relative_to(ROOT)}")
    if args.check and differs:
        print("\nthe published results differ from benchmarks/results: run .venv/bin/python benchmarks/render.py")
        return 1
    if not args.check:
        missing = sorted(set(BLOCKS) - set(rendered))
        if missing:
            print(f"note: blocks not placed in any published file: {', '.join(missing)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
