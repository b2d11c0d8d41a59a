import { keepPreviousData, useQuery } from "@tanstack/react-query";
import { useVirtualizer } from "@tanstack/react-virtual";
import { Loader2Icon, PlusIcon } from "lucide-react";
import { useEffect, useRef, useState } from "react";
import { labelSearchQuery } from "@/api/queries";
import { Input } from "@/components/ui/input";

const ROW_HEIGHT = 36;

export function useDebounced<T>(value: T, ms: number): T {
  const [v, setV] = useState(value);
  useEffect(() => {
    const t = setTimeout(() => setV(value), ms);
    return () => clearTimeout(t);
  }, [value, ms]);
  return v;
}

/** Search the attached SAE's feature labels (text or index) and add a result with one click. */
export function LabelSearch({
  selected,
  onAdd,
  labelledFeatures,
}: {
  selected: Set<number>;
  onAdd: (index: number, label: string) => void;
  labelledFeatures: number;
}) {
  const [q, setQ] = useState("");
  const debounced = useDebounced(q.trim(), 200);
  const { data, isFetching, error } = useQuery({
    ...labelSearchQuery(debounced, 500),
    placeholderData: keepPreviousData,
  });
  const results = (data?.data ?? []).filter((l) => !selected.has(l.index));
  const parentRef = useRef<HTMLDivElement>(null);
  const virtualizer = useVirtualizer({
    count: results.length,
    getScrollElement: () => parentRef.current,
    estimateSize: () => ROW_HEIGHT,
    overscan: 8,
    initialRect: { width: 320, height: 288 },
  });
  const items = virtualizer.getVirtualItems();

  return (
    <div className="flex flex-col gap-2">
      <div className="relative">
        <Input
          type="search"
          aria-label="Search labels"
          placeholder={labelledFeatures ? "Search labels or an index…" : "This SAE has no labels"}
          value={q}
          onChange={(e) => setQ(e.target.value)}
        />
        {isFetching && (
          <Loader2Icon aria-hidden="true" className="absolute top-3 right-3 size-4 animate-spin text-muted" />
        )}
      </div>
      <p className="text-xs text-muted" aria-live="polite">
        {error
          ? "Label search failed."
          : data
            ? `${data.count} label${data.count === 1 ? "" : "s"} match${data.count === 1 ? "es" : ""}${
                data.count > data.data.length ? ` (first ${data.data.length} shown)` : ""
              }`
            : ""}
      </p>
      <div ref={parentRef} className="max-h-72 overflow-y-auto rounded-lg border border-control/30">
        {results.length === 0 ? (
          <p className="p-4 text-center text-xs text-muted">{data ? "No labels match." : ""}</p>
        ) : (
          <ul
            aria-label="Label search results"
            style={{ height: virtualizer.getTotalSize(), position: "relative" }}
          >
            {(items.length
              ? items
              : results.slice(0, 20).map((_, i) => ({ index: i, start: i * ROW_HEIGHT, key: i }))
            ).map((item) => {
              const l = results[item.index];
              return (
                <li
                  key={item.key}
                  style={{
                    position: "absolute",
                    top: 0,
                    left: 0,
                    right: 0,
                    height: ROW_HEIGHT,
                    transform: `translateY(${item.start}px)`,
                  }}
                >
                  <button
                    type="button"
                    className="flex h-full w-full cursor-pointer items-center gap-2 px-3 text-left text-sm hover:bg-surface/60 focus-visible:-outline-offset-2"
                    aria-label={`Add feature #${l.index} ${l.label}`}
                    onClick={() => onAdd(l.index, l.label)}
                  >
                    <span className="num w-14 shrink-0 text-xs font-bold text-accent">#{l.index}</span>{" "}
                    <span className="min-w-0 flex-1 truncate text-body">{l.label}</span>
                    <PlusIcon aria-hidden="true" className="size-4 text-muted" />
                  </button>
                </li>
              );
            })}
          </ul>
        )}
      </div>
    </div>
  );
}
