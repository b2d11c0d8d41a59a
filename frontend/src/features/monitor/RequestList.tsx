import { useVirtualizer } from "@tanstack/react-virtual";
import { memo, useRef } from "react";
import { cn } from "@/lib/cn";
import type { RequestTrace } from "./monitorStore";

const ROW = 52;

function summary(t: RequestTrace): string {
  const generated = t.tokens.filter((f) => f.phase === "generated");
  const text = generated
    .map((f) => f.token)
    .join("")
    .replace(/\s+/g, " ")
    .trim();
  return text.slice(0, 80) || (t.tokens.length ? "(prompt only)" : "");
}

/** Every monitored request, newest first (virtualised): time, id, token count and the start of its text. */
export const RequestList = memo(function RequestList({
  traces,
  selected,
  onSelect,
}: {
  traces: RequestTrace[];
  selected: string | null;
  onSelect: (key: string) => void;
}) {
  const parent = useRef<HTMLDivElement>(null);
  const virtualizer = useVirtualizer({
    count: traces.length,
    getScrollElement: () => parent.current,
    estimateSize: () => ROW,
    overscan: 6,
    initialRect: { width: 300, height: 400 },
  });
  let items = virtualizer.getVirtualItems();
  if (items.length === 0 && traces.length) {
    // No layout yet (first paint): show the first rows so the list is never blank.
    items = traces
      .slice(0, 10)
      .map((_, i) => ({ index: i, start: i * ROW, key: i, size: ROW, end: (i + 1) * ROW, lane: 0 }));
  }
  return (
    <div ref={parent} className="max-h-[420px] overflow-y-auto rounded-lg border border-control/30">
      {traces.length === 0 ? (
        <p className="p-6 text-center text-sm text-muted">
          No requests yet. Send one from any client (the Playground, Open WebUI, the openai SDK).
        </p>
      ) : (
        <ul aria-label="Requests" style={{ height: virtualizer.getTotalSize(), position: "relative" }}>
          {items.map((item) => {
            const t = traces[item.index];
            if (!t) return null;
            const isSel = t.key === selected;
            return (
              <li
                key={t.key}
                style={{
                  position: "absolute",
                  top: 0,
                  left: 0,
                  right: 0,
                  height: ROW,
                  transform: `translateY(${item.start}px)`,
                }}
              >
                <button
                  type="button"
                  aria-current={isSel ? "true" : undefined}
                  onClick={() => onSelect(t.key)}
                  className={cn(
                    "flex h-full w-full cursor-pointer flex-col justify-center gap-0.5 border-b border-control/20 px-3 text-left focus-visible:-outline-offset-2",
                    isSel ? "bg-accent/10" : "hover:bg-surface/50",
                  )}
                >
                  <span className="flex items-center gap-2 text-xs">
                    <span className="num text-muted">
                      {t.startedAt ? new Date(t.startedAt).toLocaleTimeString() : "earlier"}
                    </span>
                    <span className="num truncate text-label">{t.key}</span>
                    <span className="num ml-auto text-accent">
                      {t.tokens.length}
                      <span className="sr-only"> tokens</span>
                    </span>
                  </span>
                  <span className="truncate text-xs text-body">{summary(t)}</span>
                </button>
              </li>
            );
          })}
        </ul>
      )}
    </div>
  );
});
