import { useQuery } from "@tanstack/react-query";
import { XIcon } from "lucide-react";
import { labelSearchQuery } from "@/api/queries";
import { Button } from "@/components/ui/button";
import { Switch } from "@/components/ui/switch";
import { cn } from "@/lib/cn";
import type { FeatureRow } from "./features";
import { StrengthControl } from "./StrengthControl";

/** A feature's label: the one the server reported with the steering, else looked up by index. */
export function useFeatureLabel(index: number, known?: string | null): string | null {
  const { data } = useQuery({ ...labelSearchQuery(String(index), 50), enabled: known == null });
  if (known != null) return known;
  return data?.data.find((l) => l.index === index)?.label ?? null;
}

/** One selected feature: label, index, strength slider + number box, mute switch, remove. */
export function FeatureRowItem({
  row,
  label,
  applied,
  onStrength,
  onMute,
  onRemove,
}: {
  row: FeatureRow;
  label?: string | null;
  /** Whether the server applies it now (false: selected in the URL but not sent). */
  applied: boolean;
  onStrength: (value: number) => void;
  onMute: (muted: boolean) => void;
  onRemove: () => void;
}) {
  const name = useFeatureLabel(row.index, label);
  return (
    <li
      className={cn("rounded-lg border border-control/30 bg-surface/50 p-3", row.muted && "opacity-70")}
      aria-label={`Feature ${row.index}`}
    >
      <div className="mb-2 flex items-center gap-2">
        <span className="num text-sm font-bold text-accent">#{row.index}</span>
        <span className="min-w-0 flex-1 truncate text-sm text-label" title={name ?? undefined}>
          {name ?? <span className="italic text-muted">no label</span>}
        </span>
        {!applied && !row.muted && (
          <span className="rounded-full bg-warning/15 px-2 py-0.5 text-[11px] font-semibold uppercase text-warning">
            not applied
          </span>
        )}
        <span className="flex items-center gap-1.5 text-xs text-label">
          <Switch
            checked={!row.muted}
            onCheckedChange={(on) => onMute(!on)}
            aria-label={`Apply feature ${row.index}`}
          />
          {row.muted ? "Muted" : "On"}
        </span>
        <Button variant="ghost" size="icon" aria-label={`Remove feature ${row.index}`} onClick={onRemove}>
          <XIcon aria-hidden="true" />
        </Button>
      </div>
      <StrengthControl index={row.index} value={row.strength} onCommit={onStrength} />
    </li>
  );
}
