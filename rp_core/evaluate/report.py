"""Summaries and files of an evaluation: metrics.json, metrics.csv and a self-contained report.html.

The HTML embeds every image (base64 JPEG/PNG) and has no external reference, so it can be
mailed or archived as one file; matplotlib draws the histograms with its Agg backend.
"""

from __future__ import annotations

import base64
import csv
import html
import importlib.util
import io
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rp_core.evaluate.measure import FaceResult, ImageResult
from rp_core.files.write import atomic_write_bytes

WORST_ROWS = 20


def summarize(images: Sequence[ImageResult], seconds: float, load_seconds: float = 0.0) -> dict[str, Any]:
    """Headline numbers over every evaluated face."""
    evaluated = [i for i in images if i.status == "evaluated"]
    faces = [f for i in evaluated for f in i.faces]
    summary: dict[str, Any] = {
        "images": len(images),
        "evaluated": len(evaluated),
        "problems": len(images) - len(evaluated),
        "faces": len(faces),
        "faces_missing_from_run": sum(f.in_manifest is False for f in faces),
        "faces_found_by": {d: sum(f.found_by == d for f in faces) for d in sorted({f.found_by for f in faces})},
        "run_faces_not_measured": sum(len(i.unmatched_run_faces) for i in evaluated),
        "identity": {},
        "redetected": {},
        "landmark_displacement": _stats([f.displacement for f in faces]),
        "pose_change_deg": {
            axis: _stats([abs(f.pose_after[k] - f.pose_before[k]) for f in faces if f.pose_after and f.pose_before])
            for k, axis in enumerate(("yaw", "pitch", "roll"))
        },
        "eye_openness_change": _stats([_change(f.eyes_before, f.eyes_after) for f in faces]),
        "mouth_openness_change": _stats([_change(f.mouth_before, f.mouth_after) for f in faces]),
        "changed_outside_faces": _stats([i.changed_outside for i in evaluated]),
        "seconds": {
            "total": seconds,
            "load": load_seconds,
            "per_image": statistics.fmean(i.seconds for i in evaluated) if evaluated else None,
        },
    }
    for name in _encoders(faces):
        scores = [f.identity[name] for f in faces if name in f.identity]
        first = scores[0]
        summary["identity"][name] = {
            "metric": first.metric,
            "roles": first.roles,
            "faces": len(scores),
            "declared_threshold": first.declared_threshold,
            "reidentified": {t: sum(s.reidentified[t] for s in scores) for t in first.reidentified},
            "reidentification_rate": {
                t: sum(s.reidentified[t] for s in scores) / len(scores) for t in first.reidentified
            },
            "worst_case": _stats([s.worst for s in scores]),
            "at_position": _stats([s.at_position for s in scores]),
        }
    for name in sorted({d for f in faces for d in f.found_before}):
        found = [f for f in faces if f.found_before.get(name)]
        summary["redetected"][name] = {
            "found_on_original": len(found),
            "found_on_anonymized": sum(bool(f.found_after.get(name)) for f in found),
        }
    return summary


def _change(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else abs(after - before)


def _stats(values: Sequence[float | None]) -> dict[str, Any]:
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"n": 0}
    return {
        "n": len(finite),
        "mean": statistics.fmean(finite),
        "median": statistics.median(finite),
        "min": min(finite),
        "max": max(finite),
    }


def _encoders(faces: Sequence[FaceResult]) -> list[str]:
    names: list[str] = []
    for face in faces:
        names += [n for n in face.identity if n not in names]
    return names


def worst_first(faces: Sequence[FaceResult], encoder: str) -> list[FaceResult]:
    """Faces ordered from the most re-identifiable for `encoder` (most similar / closest first)."""
    scored = [f for f in faces if encoder in f.identity]
    cosine = bool(scored) and scored[0].identity[encoder].metric == "cosine"
    return sorted(scored, key=lambda f: -f.identity[encoder].worst if cosine else f.identity[encoder].worst)


# -- files -------------------------------------------------------------------------------------


def write_json(path: Path, summary: dict[str, Any], setup: dict[str, Any], images: Sequence[ImageResult]) -> None:
    data = {"summary": _round(summary), "setup": setup, "images": [i.to_dict() for i in images]}
    atomic_write_bytes(path, (json.dumps(data, indent=2, default=str) + "\n").encode("utf-8"))


def write_csv(path: Path, images: Sequence[ImageResult]) -> None:
    """One row per face; identity columns per encoder; image-level columns repeated on each of its faces."""
    faces = [f for i in images for f in i.faces]
    encoders = _encoders(faces)
    detectors = sorted({d for f in faces for d in (*f.found_before, *f.found_after)})
    thresholds = {e: next(iter(f.identity[e].reidentified for f in faces if e in f.identity)) for e in encoders}
    header = ["image", "face", "found_by", "x0", "y0", "x1", "y1", "in_manifest", "action", "generator"]
    for e in encoders:
        header += [f"{e}_at_position", f"{e}_worst", f"{e}_worst_source"]
        header += [f"{e}_reidentified@{t}" for t in thresholds[e]]
    header += ["landmarks_after", "displacement_iod"]
    header += [f"{a}_{w}" for w in ("before", "after") for a in ("yaw", "pitch", "roll")]
    header += ["eyes_before", "eyes_after", "mouth_before", "mouth_after", "changed_in_box"]
    header += [f"found_before_{d}" for d in detectors] + [f"found_after_{d}" for d in detectors]
    header += ["image_changed_outside", "image_mean_abs_diff_outside"]
    stream = io.StringIO(newline="")
    writer = csv.writer(stream)
    writer.writerow(header)
    for image in images:
        for f in image.faces:
            row: list[Any] = [image.name, f.index, f.found_by, *f.box, f.in_manifest, f.action, f.generator]
            for e in encoders:
                s = f.identity.get(e)
                row += [s.at_position, s.worst, s.worst_source] if s else ["", "", ""]
                row += [s.reidentified.get(t) if s else "" for t in thresholds[e]]
            row += [f.landmarks_after, f.displacement]
            for pose in (f.pose_before, f.pose_after):
                row += list(pose) if pose else ["", "", ""]
            row += [f.eyes_before, f.eyes_after, f.mouth_before, f.mouth_after, f.changed_in_box]
            row += [f.found_before.get(d, "") for d in detectors] + [f.found_after.get(d, "") for d in detectors]
            row += [image.changed_outside, image.mean_abs_diff_outside]
            writer.writerow(["" if v is None else (round(v, 4) if isinstance(v, float) else v) for v in row])
    atomic_write_bytes(path, stream.getvalue().encode("utf-8"))


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def histogram_png(name: str, faces: Sequence[FaceResult]) -> bytes:
    """Histogram of one encoder's worst-case and same-position scores with its thresholds marked."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    scores = [f.identity[name] for f in faces if name in f.identity]
    metric = scores[0].metric
    worst = [s.worst for s in scores]
    at_position = [s.at_position for s in scores]
    figure = Figure(figsize=(6.4, 3.2), dpi=100)
    axes = figure.add_subplot()
    low = min([*worst, *at_position, *scores[0].thresholds])
    high = max([*worst, *at_position, *scores[0].thresholds])
    span = max(high - low, 1e-3)
    bins = [low - 0.05 * span + k * 1.1 * span / 30 for k in range(31)]
    axes.hist(worst, bins=bins, alpha=0.6, label="worst case over the whole image", color="#e45756")
    axes.hist(at_position, bins=bins, histtype="step", linewidth=1.8, label="at the same position", color="#4c78a8")
    for t in scores[0].thresholds:
        axes.axvline(t, color="black", linestyle="--", linewidth=1)
        axes.text(t, axes.get_ylim()[1] * 0.95, f" {t:g}", va="top", fontsize=8)
    side = "right of" if metric == "cosine" else "left of"
    word = "cosine similarity" if metric == "cosine" else "Euclidean distance"
    axes.set_xlabel(f"{name} {word} to the original (re-identified {side} a dashed threshold)")
    axes.set_ylabel("faces")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


# -- HTML -------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}.bad{color:#b00020;font-weight:600}.ok{color:#1b7a1b}
.faces{display:flex;flex-wrap:wrap;gap:12px}.face{border:1px solid #ddd;padding:6px;font-size:12px}
.face img{display:block;max-width:100%}.muted{color:#777}
pre{white-space:pre-wrap;font-size:12px;background:#fafafa;padding:8px}
"""
_CHECK_IMAGES = """
window.addEventListener('load', function () {
  var broken = Array.prototype.filter.call(document.images, function (i) { return !i.naturalWidth; });
  document.body.setAttribute('data-images', broken.length ? 'broken' : 'ok');
  if (broken.length) { console.error('report: ' + broken.length + ' embedded image(s) failed to decode'); }
});
"""


def write_html(
    path: Path,
    summary: dict[str, Any],
    setup: dict[str, Any],
    images: Sequence[ImageResult],
    *,
    max_thumbnails: int = 300,
) -> None:
    faces = [f for i in images for f in i.faces]
    encoders = _encoders(faces)
    primary = next((e for e in encoders if "recognizer" in faces[0].identity[e].roles), None) if faces else None
    primary = primary or (encoders[0] if encoders else None)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>rp evaluation report</title><style>{_CSS}</style></head><body data-images='pending'>",
        "<h1>rp evaluation report</h1>",
        _privacy_html(bool(setup.get("show_originals"))),
        _summary_html(summary, setup),
    ]
    if encoders:
        parts.append("<h2>Identity similarity</h2>")
        if importlib.util.find_spec("matplotlib") is None:
            parts.append("<p class='muted'>Histograms need matplotlib: pip install 'rp-anonymize[eval]'.</p>")
        else:
            for name in encoders:
                png = base64.b64encode(histogram_png(name, faces)).decode("ascii")
                parts.append(f"<img alt='histogram of {_e(name)} scores' src='data:image/png;base64,{png}'>")
    if primary is not None:
        parts.append(_worst_table(worst_first(faces, primary)[:WORST_ROWS], encoders, len(faces)))
        shown = "original" if setup.get("show_originals") else "original, blurred"
        parts.append(_gallery(worst_first(faces, primary), primary, max_thumbnails, shown))
    problems = [i for i in images if i.status != "evaluated"]
    if problems:
        parts.append("<h2>Pairs not compared</h2><table><tr><th>image</th><th>why</th></tr>")
        parts += [f"<tr><td>{_e(i.name)}</td><td class='bad'>{_e(i.problem or '')}</td></tr>" for i in problems]
        parts.append("</table>")
    notes = [(i.name, n) for i in images for n in i.notes] + [("setup", n) for n in setup.get("notes", [])]
    if notes:
        parts.append("<h2>Notes</h2><ul>")
        parts += [f"<li><b>{_e(where)}</b>: {_e(note)}</li>" for where, note in notes]
        parts.append("</ul>")
    parts.append(f"<h2>Setup</h2><pre>{_e(json.dumps(setup, indent=2, default=str))}</pre>")
    parts.append(f"<script>{_CHECK_IMAGES}</script></body></html>")
    atomic_write_bytes(path, "\n".join(parts).encode("utf-8"))


def _privacy_html(show_originals: bool) -> str:
    """What the pictures show: a shareable report blurs the originals; --show-originals warns loudly."""
    if show_originals:
        return (
            "<p id='privacy' class='bad'><b>This report pictures the original faces unblurred</b> "
            "(rp evaluate --show-originals): it identifies the people in them. Do not share it.</p>"
        )
    return (
        "<p id='privacy' class='muted'>Original faces and differences are blurred, so this report can be shared; "
        "rp evaluate --show-originals pictures them (such a report identifies the people).</p>"
    )


def _hit(score: Any) -> bool:
    """Re-identified at the recognizer's own threshold: the verdict of the summary and of --fail-on-match."""
    return bool(score.reidentified.get(f"{score.declared_threshold:g}"))


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "<span class='muted'>n/a</span>"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _e(value)


def _summary_html(summary: dict[str, Any], setup: dict[str, Any]) -> str:
    unread = [
        f"{n - ident['faces']} not readable by {_e(name)}"
        for name, ident in summary["identity"].items()
        if (n := summary["faces"]) > ident["faces"]
    ]
    rows = [
        ("image pairs", f"{summary['evaluated']} compared of {summary['images']}"),
        (
            "faces measured",
            f"{summary['faces']}" + (f" (<span class='bad'>{', '.join(unread)}</span>)" if unread else ""),
        ),
        ("found on the original by", ", ".join(f"{_e(d)} {n}" for d, n in summary["faces_found_by"].items())),
    ]
    if summary["faces_missing_from_run"]:
        rows.append(("faces the run did not process", f"<span class='bad'>{summary['faces_missing_from_run']}</span>"))
    for name, ident in summary["identity"].items():
        rates = ", ".join(
            f"<span class='{'bad' if ident['reidentified'][t] else 'ok'}'>{100 * r:.1f}% "
            f"({ident['reidentified'][t]}/{ident['faces']}) at {_e(t)}</span>"
            for t, r in ident["reidentification_rate"].items()
        )
        worst = ident["worst_case"]
        word = "similarity" if ident["metric"] == "cosine" else "distance"
        rows.append((f"re-identified by {_e(name)} ({', '.join(ident['roles'])})", rates))
        rows.append(
            (
                f"{_e(name)} worst-case {word}",
                f"mean {_num(worst.get('mean'))}, median {_num(worst.get('median'))}, range {_num(worst.get('min'))} to {_num(worst.get('max'))}",
            )
        )
    for name, found in summary["redetected"].items():
        rows.append((f"still found by {_e(name)}", f"{found['found_on_anonymized']}/{found['found_on_original']}"))
    disp = summary["landmark_displacement"]
    rows.append(
        (
            "landmark displacement (inter-ocular units)",
            f"mean {_num(disp.get('mean'))} over {disp['n']} re-detected faces",
        )
    )
    pose = summary["pose_change_deg"]
    rows.append(
        ("head-pose change, degrees (mean abs)", ", ".join(f"{a} {_num(pose[a].get('mean'), 1)}" for a in pose))
    )
    eyes, mouth = summary["eye_openness_change"], summary["mouth_openness_change"]
    rows.append(("eye / mouth openness change (mean abs)", f"{_num(eyes.get('mean'))} / {_num(mouth.get('mean'))}"))
    outside = summary["changed_outside_faces"]
    rows.append(
        (
            "pixels changed outside the faces",
            f"mean {_num(100 * outside['mean'] if outside['n'] else None, 3)}%, max {_num(100 * outside['max'] if outside['n'] else None, 3)}% "
            f"(more than {setup.get('pixel_tolerance')} levels, boxes grown by {setup.get('face_margin')})",
        )
    )
    seconds = summary["seconds"]
    rows.append(
        (
            "time",
            f"{seconds['total']:.1f} s: loading models {seconds['load']:.1f} s, "
            f"{_num(seconds['per_image'], 2)} s per image",
        )
    )
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<h2>Summary</h2><table id='summary'>{body}</table>"


def _worst_table(faces: Sequence[FaceResult], encoders: Sequence[str], total: int) -> str:
    head = "<tr><th>image</th><th>face</th>" + "".join(f"<th>{_e(e)} worst (where)</th>" for e in encoders)
    head += "<th>displacement</th><th>yaw/pitch/roll change</th><th>action</th></tr>"
    rows = []
    for f in faces:
        cells = [f"<td>{_e(f.image)}</td><td>{f.index}</td>"]
        for e in encoders:
            s = f.identity.get(e)
            if s is None:
                cells.append("<td class='muted'>n/a</td>")
                continue
            hit = _hit(s)
            cells.append(
                f"<td class='{'bad' if hit else 'ok'}'>{s.worst:.3f} <span class='muted'>({_e(s.worst_source)})</span></td>"
            )
        change = (
            "/".join(f"{abs(a - b):.1f}" for a, b in zip(f.pose_after, f.pose_before, strict=True))
            if f.pose_after and f.pose_before
            else None
        )
        if f.landmarks_after is None:
            cells.append("<td colspan='2' class='muted'>face not re-detected</td>")
        else:
            cells.append(f"<td>{_num(f.displacement)}</td><td>{_num(change)}</td>")
        cells.append(f"<td>{_e(f.action or '')}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    note = (
        f"<p class='muted'>The {len(faces)} most re-identifiable of {total} faces; red: re-identified at the "
        "recognizer's own threshold (as in the summary and --fail-on-match).</p>"
    )
    return f"<h2>Worst cases</h2>{note}<table id='worst'>{head}{''.join(rows)}</table>"


def _gallery(faces: Sequence[FaceResult], encoder: str, limit: int, original: str = "original") -> str:
    shown = [f for f in faces if f.thumbnail is not None][:limit]
    parts = [f"<h2>Faces ({original} | anonymized | difference x4), most re-identifiable by {_e(encoder)} first</h2>"]
    if len(shown) < len(faces):
        parts.append(f"<p class='muted'>{len(shown)} of {len(faces)} faces shown.</p>")
    parts.append("<div class='faces'>")
    for f in shown:
        data = base64.b64encode(f.thumbnail or b"").decode("ascii")
        s = f.identity[encoder]
        verdict = "re-identified" if _hit(s) else "not re-identified"
        parts.append(
            f"<div class='face'><img alt='face {f.index} of {_e(f.image)}' src='data:image/jpeg;base64,{data}'>"
            f"{_e(f.image)} #{f.index}: {_e(encoder)} {s.worst:.3f} "
            f"<span class='{'bad' if verdict == 're-identified' else 'ok'}'>{verdict}</span></div>"
        )
    parts.append("</div>")
    return "".join(parts)
