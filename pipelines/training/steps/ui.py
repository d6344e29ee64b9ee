"""What the KFP UI renders: ROC points and a confusion matrix (``ClassificationMetrics``) and
self-contained HTML pages (``HTML``: inline PNG, inline CSS, no external resource).

Plain functions from arrays to lists and strings; the evaluate and validate components hand the
results to kfp's artifact classes.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import numpy as np
from sklearn import metrics as skm

#: at most this many ROC points go into the artifact's metadata (the UI draws a line through them)
ROC_POINTS = 200
#: the classes of a binary target, in the order of the confusion matrix rows and columns
CLASSES = ["false", "true"]

_STYLE = (
    "body{font-family:sans-serif;margin:1em;color:#222}img{margin:.5em;vertical-align:top}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}"
)


def roc_points(y: np.ndarray, score: np.ndarray, limit: int = ROC_POINTS) -> tuple[list[float], ...]:
    """(false positive rates, true positive rates, thresholds), thinned to at most ``limit`` points
    (always keeping both ends); thresholds are finite (scikit-learn's first one is +inf)."""
    fpr, tpr, thresholds = skm.roc_curve(y, score)
    if len(fpr) > limit:
        keep = np.unique(np.linspace(0, len(fpr) - 1, limit).round().astype(int))
        fpr, tpr, thresholds = fpr[keep], tpr[keep], thresholds[keep]
    finite = np.minimum(thresholds, max(1.0, float(np.max(score))))
    return [float(v) for v in fpr], [float(v) for v in tpr], [float(v) for v in finite]


def confusion(y: np.ndarray, score: np.ndarray, threshold: float) -> list[list[int]]:
    """Counts at ``threshold``: rows are the actual class, columns the predicted one (``CLASSES``)."""
    matrix = skm.confusion_matrix(np.asarray(y, dtype=bool), score >= threshold, labels=[False, True])
    return [[int(v) for v in row] for row in matrix]


def page(title: str, images: dict[str, bytes], lines: list[str]) -> str:
    """A self-contained HTML page: ``lines`` as a list, then the PNG ``images`` inline."""
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    figures = "".join(
        f'<img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        for name, png in images.items()
    )
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h2>{html.escape(title)}</h2><ul>{items}</ul>{figures}</body></html>"
    )


_EXTERNAL_TAG = re.compile(
    r"<link\b[^>]*>|<script\b[^>]*\bsrc=[^>]*>\s*</script>|<script\b[^>]*>.*?</script>", re.IGNORECASE | re.DOTALL
)
_REMOTE_URL = re.compile(r"""url\(\s*['"]?(?:https?:)?//[^)]*\)""", re.IGNORECASE)
_STYLESHEET = re.compile(r"""<link\b[^>]*href=["']([^"']+\.css)["'][^>]*>""", re.IGNORECASE)


def data_docs_page(site: Path) -> str:
    """The Data Docs validation page of ``site`` as one self-contained file: the site's own
    stylesheets inlined, every external stylesheet and every script dropped (the page's content
    is static HTML), links to other pages of the site made inert."""
    pages = sorted((site / "validations").rglob("*.html")) or [site / "index.html"]
    source = pages[-1]
    text = source.read_text(encoding="utf-8")
    styles = []
    for href in _STYLESHEET.findall(text):
        local = (source.parent / href).resolve()
        if "://" not in href and local.is_file() and local.is_relative_to(site.resolve()):
            styles.append(local.read_text(encoding="utf-8"))
    text = _EXTERNAL_TAG.sub("", text)
    text = re.sub(r"""\b(href|src)=["'](?!#|data:)[^"']*["']""", "", text)
    inline = "".join(f"<style>{css}</style>" for css in styles) + f"<style>{_STYLE}</style>"
    text = text.replace("</head>", inline + "</head>", 1) if "</head>" in text else inline + text
    return _REMOTE_URL.sub("none", text)
