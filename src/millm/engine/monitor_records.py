"""Monitor records: the SAE activations the last forward captured, turned into one `MonitorRecord` per token.

The intervention captures the monitored features (top-k or a selection) at every position of a forward it
ran in while monitoring is on; `MonitorRecorder` names each row's tokens (text cached per model), skips a
leading BOS, and hands the records to the sink (the monitor service's publish) on the worker thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from millm.engine.types import FeatureActivation, MonitorRecord

if TYPE_CHECKING:
    import torch

    from millm.engine.intervention import SaeIntervention
    from millm.engine.model_loading import LoadedModel

MonitorSink = Callable[[list[MonitorRecord]], None]


class MonitorRecorder:
    def __init__(self) -> None:
        self.sink: MonitorSink | None = None
        self._texts_model: Any = None
        self._texts: dict[int, str] = {}

    def wanted(self, iv: SaeIntervention | None) -> bool:
        """Whether a forward should capture for the monitor: monitoring is on and someone listens."""
        return iv is not None and iv.monitor_config.enabled and self.sink is not None

    def prompt(self, iv: SaeIntervention | None, lm: LoadedModel | None, request_ids: list[str], ids: torch.Tensor,
               *, phase: Literal["prompt", "embedding"], pads: list[int] | None = None) -> None:
        """Records for a forward over ids (B, T), row b for request request_ids[b]; a row left-padded by pads[b]
        columns starts its positions after the padding."""
        if iv is None or lm is None or not iv.captures or self.sink is None:
            return
        cap = iv.captures[-1]
        vals, idx, toks = cap.values.tolist(), cap.indices.tolist(), ids.tolist()
        records = []
        for b, request_id in enumerate(request_ids):
            pad = pads[b] if pads else 0
            for t in range(pad, len(toks[b])):
                tok, position = toks[b][t], t - pad
                if tok == lm.bos_id and position == 0:
                    continue
                records.append(MonitorRecord(
                    request_id=request_id, choice=0, position=position, token_id=tok,
                    token=self._token_text(lm, tok), phase=phase,
                    activations=tuple(FeatureActivation(int(i), float(v)) for i, v in zip(idx[b][t], vals[b][t])),
                ))
        iv.captures = []
        if records:
            self.sink(records)

    def step(self, iv: SaeIntervention | None, lm: LoadedModel | None,
             rows: Sequence[tuple[str, int, int, int]]) -> None:
        """Records for a decode step: rows[b] = (request id, choice, position, token read at that position)."""
        if iv is None or lm is None or not iv.captures or self.sink is None:
            return
        cap = iv.captures[-1]
        vals, idx = cap.values.tolist(), cap.indices.tolist()
        records = [
            MonitorRecord(
                request_id=request_id, choice=choice, position=position, token_id=tok,
                token=self._token_text(lm, tok), phase="generated",
                activations=tuple(FeatureActivation(int(i), float(v)) for i, v in zip(idx[b][0], vals[b][0])),
            )
            for b, (request_id, choice, position, tok) in enumerate(rows)
        ]
        iv.captures = []
        self.sink(records)

    def _token_text(self, lm: LoadedModel, tok: int) -> str:
        """tokenizer.decode([tok]), cached per model (monitor records name every token)."""
        if self._texts_model is not lm.model:
            self._texts_model, self._texts = lm.model, {}
        text = self._texts.get(tok)
        if text is None:
            text = self._texts[tok] = lm.tokenizer.decode([tok])
        return text
