"""Feature labels from elsewhere: reading label files, and keeping imported labels per SAE.

Formats read (detected from the content unless `fmt` says):

- `neuronpedia`: Neuronpedia explanation exports, a JSON array (or `{"explanations": [...]}`) or JSON Lines of
  records with `index` (a number or a numeric string) and `description`; feature exports whose records carry
  `explanations: [{"description": ...}]` work too. Several explanations of one feature: the best `score` wins,
  else the first.
- `map`: a JSON object `{"<index>": "<label>"}`, or `{"<index>": {"label": ..., "score": ...}}` (the layout of
  the `labels.json` miLLM ships with the demo SAE), optionally wrapped as `{"labels": {...}, "d_sae": N}`.
- `csv`: a header row with an `index` (or `feature`) column and a `label` (or `description`, `explanation`)
  column, an optional `score` column.

Labels shipped inside an SAE folder or repo (`labels.json`, `labels.csv`, `labels.jsonl`, `explanations.json`,
`explanations.jsonl`, next to the weights or one folder up) are read at attach time. Imported labels are kept
in the profile store, one row per (SAE id, d_sae), and are laid over the shipped ones.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from millm.errors import InvalidRequest

Format = Literal["neuronpedia", "map", "csv"]
MAX_LABEL_CHARS = 512
SHIPPED_FILES = ("labels.json", "labels.jsonl", "labels.csv", "explanations.json", "explanations.jsonl")
_LABEL_KEYS = ("label", "description", "explanation")
_INDEX_KEYS = ("index", "feature", "feature_index", "featureIndex")

Labels = dict[int, dict[str, Any]]  # index -> {"label": str, "score": float | None}


@dataclass(frozen=True)
class ParsedLabels:
    labels: Labels
    format: Format
    d_sae: int | None = None  # when the file says which width it was made for


def _bad(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="invalid_labels")


def _index(value: Any, where: str, param: str) -> int:
    if isinstance(value, bool):
        raise _bad(f"{where}: the feature index must be a whole number, got {value!r}", param)
    if isinstance(value, int):
        index = value
    elif isinstance(value, str) and value.strip().isdigit():
        index = int(value.strip())
    elif isinstance(value, float) and value.is_integer():
        index = int(value)
    else:
        raise _bad(f"{where}: the feature index must be a whole number, got {value!r}", param)
    if index < 0:
        raise _bad(f"{where}: the feature index must not be negative, got {index}", param)
    return index


def _score(value: Any) -> float | None:
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    return score if score == score and abs(score) != float("inf") else None


def _entry(label: Any, score: Any = None) -> dict[str, Any] | None:
    if not isinstance(label, str) or not label.strip():
        return None
    return {"label": label.strip()[:MAX_LABEL_CHARS], "score": _score(score)}


def _keep(out: Labels, index: int, entry: dict[str, Any] | None) -> None:
    """Several labels for one feature: the best score wins, else the first."""
    if entry is None:
        return
    old = out.get(index)
    if old is None or (entry["score"] is not None and (old["score"] is None or entry["score"] > old["score"])):
        out[index] = entry


def _records(records: list[Any], param: str) -> Labels:
    out: Labels = {}
    for n, rec in enumerate(records):
        where = f"record {n}"
        if not isinstance(rec, dict):
            raise _bad(f"{where}: expected an object with 'index' and 'description'", param)
        key = next((k for k in _INDEX_KEYS if k in rec), None)
        if key is None:
            raise _bad(f"{where}: no 'index'", param)
        index = _index(rec[key], where, param)
        label = next((rec[k] for k in _LABEL_KEYS if isinstance(rec.get(k), str)), None)
        if label is not None:
            _keep(out, index, _entry(label, rec.get("score")))
        for exp in rec.get("explanations") or []:
            if isinstance(exp, dict):
                _keep(out, index, _entry(exp.get("description") or exp.get("label"), exp.get("score")))
    return out


def _map(data: dict[str, Any], param: str) -> Labels:
    out: Labels = {}
    for key, value in data.items():
        index = _index(key, f"key {key!r}", param)
        if isinstance(value, dict):
            label = next((value[k] for k in _LABEL_KEYS if isinstance(value.get(k), str)), None)
            _keep(out, index, _entry(label, value.get("score")))
        elif isinstance(value, str):
            _keep(out, index, _entry(value))
        else:
            raise _bad(f"key {key!r}: the label must be a string or an object with 'label'", param)
    return out


def _csv(text: str, param: str) -> Labels:
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip().lower() for f in reader.fieldnames or []]
    index_col = next((reader.fieldnames[i] for i, f in enumerate(fields) if f in ("index", "feature",  # type: ignore[index]
                                                                                    "feature_index")), None)
    label_col = next((reader.fieldnames[i] for i, f in enumerate(fields) if f in _LABEL_KEYS), None)  # type: ignore[index]
    score_col = next((reader.fieldnames[i] for i, f in enumerate(fields) if f == "score"), None)  # type: ignore[index]
    if index_col is None or label_col is None:
        raise _bad("a CSV needs a header row with an 'index' column and a 'label' (or 'description') column", param)
    out: Labels = {}
    for n, row in enumerate(reader, start=2):
        _keep(out, _index(row.get(index_col), f"line {n}", param),
              _entry(row.get(label_col), row.get(score_col) if score_col else None))
    return out


def _from_json(data: Any, param: str) -> ParsedLabels:
    d_sae = None
    if isinstance(data, dict):
        for key in ("d_sae", "num_features", "numFeatures"):
            if isinstance(data.get(key), int) and not isinstance(data.get(key), bool):
                d_sae = int(data[key])
        if isinstance(data.get("explanations"), list):
            return ParsedLabels(_records(data["explanations"], param), "neuronpedia", d_sae)
        if isinstance(data.get("labels"), dict):
            return ParsedLabels(_map(data["labels"], param), "map", d_sae)
        if isinstance(data.get("labels"), list):
            return ParsedLabels(_records(data["labels"], param), "neuronpedia", d_sae)
        return ParsedLabels(_map(data, param), "map", d_sae)
    if isinstance(data, list):
        return ParsedLabels(_records(data, param), "neuronpedia")
    raise _bad("expected a JSON array of records, an object of index -> label, JSON Lines or CSV", param)


def parse_labels(raw: bytes | str, *, filename: str | None = None, fmt: Format | None = None,
                 param: str = "file") -> ParsedLabels:
    """Read a label file (see the module docstring); a 400 naming `param` when it cannot be read."""
    try:
        text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as e:
        raise _bad(f"the labels are not UTF-8 text ({e.reason} at byte {e.start})", param) from e
    name = (filename or "").lower()
    if fmt == "csv" or (fmt is None and name.endswith(".csv")):
        return ParsedLabels(_csv(text, param), "csv")
    stripped = text.strip()
    if not stripped:
        raise _bad("the labels are empty", param)
    try:
        parsed = _from_json(json.loads(stripped), param)
    except json.JSONDecodeError:
        lines = [ln for ln in stripped.splitlines() if ln.strip()]
        try:
            records = [json.loads(ln) for ln in lines]
        except json.JSONDecodeError:
            if fmt is None and "," in lines[0]:
                return ParsedLabels(_csv(text, param), "csv")
            raise _bad("the labels are neither JSON, JSON Lines nor CSV", param) from None
        parsed = ParsedLabels(_records(records, param), "neuronpedia")
    if fmt is not None and fmt != parsed.format:
        raise _bad(f"the content is in the {parsed.format} format, not {fmt}", param)
    return parsed


def check_width(parsed: ParsedLabels, d_sae: int, sae_id: str, *, param: str = "file") -> None:
    """Labels made for another SAE (another width, or an index past this one's) are a 400."""
    if parsed.d_sae is not None and parsed.d_sae != d_sae:
        raise InvalidRequest(f"these labels are for an SAE with d_sae={parsed.d_sae}; {sae_id!r} has d_sae={d_sae}",
                             param=param, code="labels_mismatch")
    past = [i for i in parsed.labels if i >= d_sae]
    if past:
        raise InvalidRequest(f"these labels are for another SAE: they label feature {max(past)}, but {sae_id!r} has "
                             f"d_sae={d_sae} ({len(past)} labels out of range)", param=param, code="labels_mismatch")


def shipped_labels(folder: Path, d_sae: int | None = None) -> Labels:
    """Labels shipped next to an SAE's weights (or one folder up); unreadable or mismatched files are skipped."""
    for base in (folder, folder.parent):
        for name in SHIPPED_FILES:
            candidate = base / name
            if candidate.is_file():
                try:
                    parsed = parse_labels(candidate.read_bytes(), filename=name)
                    if d_sae is not None:
                        check_width(parsed, d_sae, folder.name)
                except (InvalidRequest, OSError):
                    continue
                return parsed.labels
    return {}
