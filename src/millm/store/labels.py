"""Keyword-only repository functions for imported feature labels (table `sae_labels`, one row per SAE).

As in `millm.store.profiles`, every function works inside the caller's session and never commits. A row holds
one SAE's imported labels as a JSON object {"<index>": {"label": ..., "score": ...}}, always read and replaced
whole, so a write is one single-row statement and concurrent imports for one SAE end with the last one's set.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from millm.store.profiles import utcnow
from millm.store.tables import SaeLabelsRow


def get_labels(*, session: Session, sae_id: str, d_sae: int) -> dict[int, dict[str, Any]]:
    row = session.execute(
        select(SaeLabelsRow).where(SaeLabelsRow.sae_id == sae_id, SaeLabelsRow.d_sae == d_sae)
    ).scalar_one_or_none()
    return {int(k): dict(v) for k, v in row.labels.items()} if row is not None else {}


def put_labels(*, session: Session, sae_id: str, d_sae: int, labels: dict[int, dict[str, Any]], source: str) -> None:
    """Replace the SAE's imported labels (an empty dict deletes the row)."""
    delete_labels(session=session, sae_id=sae_id, d_sae=d_sae)
    if labels:
        session.add(SaeLabelsRow(sae_id=sae_id, d_sae=d_sae, source=source[:64], updated_at=utcnow(),
                                 labels={str(k): v for k, v in sorted(labels.items())}))
    session.flush()


def delete_labels(*, session: Session, sae_id: str, d_sae: int) -> None:
    session.execute(delete(SaeLabelsRow).where(SaeLabelsRow.sae_id == sae_id, SaeLabelsRow.d_sae == d_sae))
