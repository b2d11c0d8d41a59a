import { memo, useMemo } from "react";
import { cn } from "@/lib/cn";
import type { ActivationFrame } from "@/ws/frames.gen";
import { highlightAlpha, valueAt } from "./monitorStore";

/** How a token's text is shown: newlines as ↵ (then a real line break), tokenizer space marks as spaces. */
export function displayToken(token: string): string {
  return token
    .replace(/Ġ|▁/g, " ")
    .replace(/Ċ|<0x0A>/g, "\n")
    .replace(/\n/g, "↵\n");
}

/** Background for an activation: cyan at the highlight alpha; text turns dark where the background is strong. */
export function tokenStyle(value: number, max: number): React.CSSProperties | undefined {
  const a = highlightAlpha(value, max);
  if (a === 0) return undefined;
  return { backgroundColor: `rgb(34 211 238 / ${a.toFixed(3)})`, color: a > 0.55 ? "#0a0f1a" : undefined };
}

const Token = memo(function Token({
  i,
  token,
  value,
  max,
  active,
  prompt,
}: {
  i: number;
  token: string;
  value: number;
  max: number;
  active: boolean;
  prompt: boolean;
}) {
  return (
    <span
      id={`tok-${i}`}
      role="option"
      aria-selected={active}
      tabIndex={-1}
      data-i={i}
      data-value={value}
      style={tokenStyle(value, max)}
      className={cn(
        "cursor-pointer rounded-[3px] whitespace-pre-wrap",
        prompt && "text-muted italic",
        active && "ring-2 ring-warning",
      )}
    >
      {displayToken(token)}
    </span>
  );
});

const CHUNK = 64;

/**
 * A run of up to 64 tokens. A full chunk whose tokens, scale and active token did not change is skipped, so a
 * streaming request costs O(new tokens) per update, not O(all tokens).
 */
const TokenChunk = memo(
  function TokenChunk({
    tokens,
    start,
    end,
    focus,
    max,
    active,
  }: {
    tokens: ActivationFrame[];
    start: number;
    end: number;
    focus: number | null;
    max: number;
    active: number | null;
  }) {
    const out = [];
    for (let i = start; i < end; i++) {
      const t = tokens[i];
      out.push(
        <Token
          key={`${t.phase}-${t.position}`}
          i={i}
          token={t.token}
          value={valueAt(t, focus)}
          max={max}
          active={i === active}
          prompt={t.phase === "prompt"}
        />,
      );
    }
    return <>{out}</>;
  },
  (a, b) =>
    a.start === b.start &&
    a.end === b.end &&
    a.focus === b.focus &&
    a.max === b.max &&
    a.tokens[a.start] === b.tokens[b.start] &&
    a.tokens[a.end - 1] === b.tokens[b.end - 1] &&
    (a.active === b.active ||
      ((a.active == null || a.active < a.start || a.active >= a.end) &&
        (b.active == null || b.active < b.start || b.active >= b.end))),
);

/**
 * A request's tokens as text, each token's background showing the activation of the feature in focus,
 * scaled to its max over the request. Hover or arrow keys pick a token (its features show in the inspector);
 * click or Enter pins it.
 */
export const TokenView = memo(function TokenView({
  label,
  tokens,
  focus,
  active,
  onActive,
  onPin,
}: {
  label: string;
  tokens: ActivationFrame[];
  focus: number | null;
  active: number | null;
  onActive: (i: number | null) => void;
  onPin: (i: number) => void;
}) {
  const shown = tokens;
  const max = useMemo(() => shown.reduce((m, t) => Math.max(m, valueAt(t, focus)), 0), [shown, focus]);
  const indexOf = (el: EventTarget | null) => {
    const i = (el as HTMLElement | null)?.closest?.("[data-i]")?.getAttribute("data-i");
    return i == null ? null : Number(i);
  };
  const move = (delta: number) => {
    if (!shown.length) return;
    const cur = active == null ? (delta > 0 ? -1 : shown.length) : active;
    onActive(Math.max(0, Math.min(shown.length - 1, cur + delta)));
  };

  if (shown.length === 0)
    return (
      <p className="rounded-lg border border-control/30 bg-page-0/40 p-3 text-sm text-muted italic">
        No tokens yet: send a request from any client.
      </p>
    );
  return (
    <div
      role="listbox"
      aria-orientation="horizontal"
      tabIndex={0}
      aria-label={label}
      aria-activedescendant={active != null && active < shown.length ? `tok-${active}` : undefined}
      aria-describedby="token-view-help"
      data-testid="token-view"
      data-max={max}
      className="max-h-96 overflow-y-auto rounded-lg border border-control/30 bg-page-0/40 p-3 font-mono text-sm leading-7 text-body"
      onPointerOver={(e) => {
        const i = indexOf(e.target);
        if (i != null) onActive(i);
      }}
      onClick={(e) => {
        const i = indexOf(e.target);
        if (i != null) onPin(i);
      }}
      onKeyDown={(e) => {
        if (e.key === "ArrowRight" || e.key === "ArrowDown") move(e.key === "ArrowDown" ? 10 : 1);
        else if (e.key === "ArrowLeft" || e.key === "ArrowUp") move(e.key === "ArrowUp" ? -10 : -1);
        else if (e.key === "Home") onActive(0);
        else if (e.key === "End") onActive(shown.length - 1);
        else if ((e.key === "Enter" || e.key === " ") && active != null) onPin(active);
        else return;
        e.preventDefault();
      }}
    >
      {Array.from({ length: Math.ceil(shown.length / CHUNK) }, (_, c) => (
        <TokenChunk
          // biome-ignore lint/suspicious/noArrayIndexKey: chunks are positional
          key={c}
          tokens={shown}
          start={c * CHUNK}
          end={Math.min(shown.length, (c + 1) * CHUNK)}
          focus={focus}
          max={max}
          active={active}
        />
      ))}
    </div>
  );
});
