"""The demo's report: ``report.json`` (the record), ``report.md`` and ``accuracy.png`` (for people),
and the table printed on the terminal.

All are rendered from the one report dictionary that :func:`ckptsurgery.graft.demo.run_demo` returns, so
they cannot disagree. Files are written atomically (:func:`~ckptsurgery.formats.output.atomic_file`).
"""

from __future__ import annotations

import json
import os

from ..errors import OutputError

__all__ = ["REPORT_FILES", "new_report", "load_report", "write_report", "summary_rows",
           "render_table", "render_markdown", "plot_accuracy"]

REPORT_FILES = ("report.json", "report.md", "accuracy.png")

_COLUMNS = (
    ("step", "step"), ("valid", "valid acc"), ("test", "test acc"), ("best", "best epoch"),
    ("seconds", "s/epoch"), ("trainable", "trainable"), ("frozen", "frozen"), ("new", "new"),
    ("hidden1_2", "hidden1-2 vs base"),
)


def new_report(source: str, data, *, epochs: int, seed: int, batch_size: int,
               previous: dict | None = None) -> dict:
    """A report for a run on ``data`` (a :class:`~ckptsurgery.train.data.Split` described by
    ``source``), keeping the step results of ``previous`` (an earlier run in the same folder)."""
    import tensorflow as tf

    from .. import __version__

    return {
        "tool": "ckptsurgery demo",
        "ckptsurgery": __version__,
        "tensorflow": tf.__version__,
        "data": {"source": source, "train_rows": len(data.y_train),
                 "valid_rows": len(data.y_valid),
                 "test_rows": None if data.y_test is None else len(data.y_test)},
        "epochs": epochs,
        "seed": seed,
        "batch_size": batch_size,
        "steps": dict(previous["steps"]) if previous else {},
    }


def load_report(out_dir: str) -> dict | None:
    """The ``report.json`` of ``out_dir``, or None if there is none.

    Raises:
        OutputError: it exists but is not a demo report.
    """
    path = os.path.join(out_dir, REPORT_FILES[0])
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        raise OutputError(f"cannot read '{path}' ({e}); remove it, or run all steps again "
                          "with --force") from e
    if not isinstance(report, dict) or not isinstance(report.get("steps"), dict):
        raise OutputError(f"'{path}' is not a report of 'ckptsurgery demo'; choose another --out")
    return report


def write_report(report: dict, out_dir: str, *, force: bool = False) -> list[str]:
    """Write ``report.json``, ``report.md`` and ``accuracy.png`` into ``out_dir``.

    Returns:
        The paths written.

    Raises:
        OutputError: a file exists and ``force`` is False, or cannot be written.
    """
    from ..formats.output import atomic_file, check_output_file

    paths = [check_output_file(os.path.join(out_dir, name), force=force)
             for name in REPORT_FILES]
    with atomic_file(paths[0]) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    with atomic_file(paths[1]) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(render_markdown(report))
    with atomic_file(paths[2]) as tmp:
        plot_accuracy(report, tmp)
    return paths


def summary_rows(report: dict) -> list[dict[str, str]]:
    """One row of formatted cells per step: the table of the terminal and of ``report.md``."""
    rows = []
    for name, step in report["steps"].items():
        seconds = step.get("seconds") or []
        test = step.get("test_accuracy")
        check = step.get("frozen_check")
        rows.append({
            "step": name,
            "valid": f"{step['final_valid_accuracy']:.4f}",
            "test": "-" if test is None else f"{test:.4f}",
            "best": f"{step['best_epoch']}/{len(seconds)}",
            "seconds": f"{sum(seconds) / len(seconds):.1f}" if seconds else "-",
            "trainable": f"{step['params']['trained']:,}",
            "frozen": f"{step['params']['frozen']:,}",
            "new": f"{step['params']['new']:,}",
            "hidden1_2": "(the base)" if check is None else check["hidden1_2"],
        })
    return rows


def render_table(report: dict) -> str:
    """The summary as a plain-text table for the terminal."""
    rows = summary_rows(report)
    widths = {key: max([len(title)] + [len(r[key]) for r in rows]) for key, title in _COLUMNS}

    def line(cells: dict) -> str:
        return "  ".join(cells[key].ljust(widths[key]) if key in ("step", "hidden1_2")
                         else cells[key].rjust(widths[key]) for key, _ in _COLUMNS).rstrip()

    header = line(dict(_COLUMNS))
    return "\n".join([header, "-" * len(header)] + [line(r) for r in rows])


def render_markdown(report: dict) -> str:
    """``report.md``: summary table, plot, frozen-layer check, accuracy per epoch, settings."""
    data = report["data"]
    steps = report["steps"]
    out = [
        "# ckptsurgery demo: MNIST transfer learning",
        "",
        f"Data: {data['source']}: {data['train_rows']:,} training rows, {data['valid_rows']:,} "
        "validation rows (the first training rows, never trained on), "
        + (f"{data['test_rows']:,} test rows." if data["test_rows"] else "no test rows."),
        f"{report['epochs']} epochs per step, batch {report['batch_size']}, seed {report['seed']}; "
        f"ckptsurgery {report['ckptsurgery']}, TensorFlow {report['tensorflow']}. "
        "Validation accuracy is that of the best epoch, whose weights each checkpoint holds.",
    ]
    sources = {s.get("data") for s in steps.values()}
    if len(sources) > 1:
        out.append(f"**Note:** the steps were run on different data ({', '.join(sorted(sources))}).")
    out += ["", _markdown_table([title for _, title in _COLUMNS],
                                [[r[k] for k, _ in _COLUMNS] for r in summary_rows(report)]),
            "", "![Validation accuracy per epoch](accuracy.png)", ""]

    checked = {n: s["frozen_check"] for n, s in steps.items() if s.get("frozen_check")}
    if checked:
        layers = list(dict.fromkeys(layer for c in checked.values() for layer in c["layers"]))
        against = next(iter(checked.values()))["against"]
        out += [
            "## Frozen layers: each checkpoint compared with the base checkpoint",
            "",
            f"Every kernel and bias compared with `{against}` by `ckptsurgery.migrate.diff"
            ".diff_checkpoints` (identical = bit for bit; changed = largest absolute "
            "difference; reshaped = a new layer of another shape).",
            "",
            _markdown_table(
                ["step", *layers, "frozen by the step"],
                [[name, *(_layer_cell(c["layers"].get(layer)) for layer in layers),
                  _frozen_cell(c)] for name, c in checked.items()]),
            "",
        ]
    if steps.get("distill", {}).get("distill"):
        d = steps["distill"]["distill"]
        out += [
            "## Distillation: the same student with and without the base's soft targets",
            "",
            f"{d['per_class']} training images per digit; validation accuracy of the best epoch.",
            "",
            _markdown_table(["seed", "labels alone", "distilled"],
                            [[str(s), f"{a:.4f}", f"{b:.4f}"] for s, a, b in
                             zip(d["seeds"], d["labels_alone"], d["distilled"], strict=True)]),
            "",
        ]
    n_epochs = max((len(s["valid_accuracy"]) for s in steps.values()), default=0)
    out += ["## Validation accuracy per epoch", "",
            _markdown_table(["step", *(str(i) for i in range(1, n_epochs + 1))],
                            [[name, *(f"{a:.4f}" for a in s["valid_accuracy"])]
                             for name, s in steps.items()]),
            "", "## Steps", ""]
    for name, s in steps.items():
        origin = f"from `{s['source']}`" if s.get("source") else "from scratch"
        if s.get("started_from"):
            origin += f" (the best transfer step, {s['started_from']})"
        out.append(f"- **{name}** → `{s['checkpoint']}`, {origin}: {s['title']}; "
                   f"{s['optimizer']} lr {s['lr']}"
                   + (", frozen part computed once and fed" if s.get("cache_frozen") else "")
                   + f"; {s.get('seconds_total', 0):.0f} s in all.")
    return "\n".join(out) + "\n"


def plot_accuracy(report: dict, path: str) -> None:
    """Save the validation accuracy per epoch of every step, one line each, as a PNG at ``path``.

    Uses the Agg canvas directly, leaving matplotlib's global backend alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    # Steps may give the same curve (the three ways of freezing do): hollow markers of
    # different shapes and dashes keep every line visible.
    for i, (name, step) in enumerate(report["steps"].items()):
        acc = step["valid_accuracy"]
        ax.plot(range(1, len(acc) + 1), acc, marker="osD^vx"[i % 6], markersize=9 - i,
                markerfacecolor="none", linestyle=("-", "--", ":", "-.")[i % 4],
                label=f"{name} ({step['final_valid_accuracy']:.4f})")
    ax.set_xlabel("epoch of the step")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"ckptsurgery demo: validation accuracy, {os.path.basename(report['data']['source'])}",
                 fontsize=10)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, format="png")


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _layer_cell(layer: dict | None) -> str:
    if layer is None:
        return "-"
    if layer["status"] == "changed":
        return f"changed ({layer['max_abs_diff']:.2g})"
    return layer["status"]


def _frozen_cell(check: dict) -> str:
    if check["frozen_identical"] is None:
        return "nothing frozen"
    n = len(check["frozen_variables"])
    return (f"{n} variables, all identical" if check["frozen_identical"]
            else f"{n} variables, NOT all identical")
