import { CrosshairIcon, PinIcon, PlusIcon } from "lucide-react";
import { Button } from "@/components/ui/button";
import { cn } from "@/lib/cn";
import type { ActivationFrame } from "@/ws/frames.gen";
import { displayToken } from "./TokenView";

/** The features at one token (values and labels), each with Focus, Pin to chart and Add to steering. */
export function TokenInspector({
  frame,
  pinned,
  focus,
  labels,
  onFocus,
  onPin,
  onSteer,
}: {
  frame: ActivationFrame | null;
  pinned: boolean;
  focus: number | null;
  labels: Record<number, string>;
  onFocus: (index: number) => void;
  onPin: (index: number) => void;
  onSteer: (index: number) => void;
}) {
  if (!frame)
    return (
      <p className="text-sm text-muted">
        Hover a token (or focus the text and use the arrow keys) to see its top features; click to keep it.
      </p>
    );
  const acts = [...frame.activations].sort((a, b) => b.value - a.value);
  return (
    <div aria-live="polite">
      <p className="mb-2 text-xs text-label">
        Token <span className="num text-body">{frame.position}</span>{" "}
        <code className="num rounded bg-page-0/60 px-1.5 py-0.5 text-title">{displayToken(frame.token)}</code>{" "}
        <span className="text-muted">
          ({frame.phase}
          {pinned ? ", pinned" : ""})
        </span>
      </p>
      {acts.length === 0 ? (
        <p className="text-sm text-muted">No feature captured at this token.</p>
      ) : (
        <ul aria-label={`Features at token ${frame.position}`} className="flex flex-col gap-1">
          {acts.map((a) => (
            <li
              key={a.index}
              className={cn(
                "flex items-center gap-2 rounded-md px-2 py-1 text-sm",
                a.index === focus ? "bg-accent/10" : "hover:bg-surface/50",
              )}
            >
              <span className="num w-12 shrink-0 text-xs font-bold text-accent">#{a.index}</span>
              <span className="min-w-0 flex-1 truncate text-label" title={a.label ?? labels[a.index]}>
                {a.label ?? labels[a.index] ?? "no label"}
              </span>
              <span className="num w-14 text-right text-xs text-body">{a.value.toFixed(3)}</span>
              <Button
                variant="ghost"
                size="icon"
                className="p-1"
                aria-label={`Focus feature ${a.index}`}
                aria-pressed={a.index === focus}
                onClick={() => onFocus(a.index)}
              >
                <CrosshairIcon aria-hidden="true" />
              </Button>
              <Button
                variant="ghost"
                size="icon"
                aria-label={`Chart feature ${a.index}`}
                onClick={() => onPin(a.index)}
              >
                <PinIcon aria-hidden="true" />
              </Button>
              <Button
                variant="ghost"
                size="icon"
                className="p-1"
                aria-label={`Add feature ${a.index} to steering`}
                onClick={() => onSteer(a.index)}
              >
                <PlusIcon aria-hidden="true" />
              </Button>
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}
