import { memo } from "react";
import { cn } from "@/lib/cn";
import { type FeatureStat, mean } from "./monitorStore";

/** Per-feature count, min, max and mean over the selected request, strongest first; click a row to focus it. */
export const StatsTable = memo(function StatsTable({
  stats,
  focus,
  onFocus,
  limit = 15,
}: {
  stats: FeatureStat[];
  focus: number | null;
  onFocus: (index: number) => void;
  limit?: number;
}) {
  const rows = [...stats].sort((a, b) => b.max - a.max).slice(0, limit);
  if (!rows.length) return <p className="py-6 text-center text-sm text-muted">No activations recorded.</p>;
  return (
    <table className="w-full text-left text-sm">
      <caption className="sr-only">Feature statistics of the selected request</caption>
      <thead className="bg-surface/50 text-[11px] font-semibold tracking-wide text-muted uppercase">
        <tr>
          <th scope="col" className="px-3 py-2">
            Feature
          </th>
          <th scope="col" className="px-3 py-2">
            Label
          </th>
          <th scope="col" className="px-3 py-2 text-right">
            Tokens
          </th>
          <th scope="col" className="px-3 py-2 text-right">
            Min
          </th>
          <th scope="col" className="px-3 py-2 text-right">
            Max
          </th>
          <th scope="col" className="px-3 py-2 text-right">
            Mean
          </th>
        </tr>
      </thead>
      <tbody>
        {rows.map((s) => (
          <tr key={s.index} className={cn("border-b border-control/20", s.index === focus && "bg-accent/10")}>
            <td className="px-3 py-1.5">
              <button
                type="button"
                className="num cursor-pointer font-bold text-accent hover:underline"
                aria-label={`Focus feature ${s.index}`}
                aria-pressed={s.index === focus}
                onClick={() => onFocus(s.index)}
              >
                #{s.index}
              </button>
            </td>
            <td className="max-w-48 truncate px-3 py-1.5 text-label">{s.label ?? "—"}</td>
            <td className="num px-3 py-1.5 text-right">{s.count}</td>
            <td className="num px-3 py-1.5 text-right">{s.min.toFixed(3)}</td>
            <td className="num px-3 py-1.5 text-right text-success">{s.max.toFixed(3)}</td>
            <td className="num px-3 py-1.5 text-right">{mean(s).toFixed(3)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
});
