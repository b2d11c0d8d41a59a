import { Slider as SliderPrimitive } from "radix-ui";
import { useEffect, useRef, useState } from "react";
import { inputClass } from "@/components/ui/input";
import { cn } from "@/lib/cn";
import { formatStrength, parseStrength, SLIDER_MAX, SLIDER_MIN } from "./features";

/** Keyboard changes are sent this long after the last key press (holding an arrow key sends once). */
export const KEY_COMMIT_DELAY_MS = 150;
/** While dragging, values this close to 0 snap to 0 (the detent): 3% of the slider's half range, as 0.3 was of ±10. */
export const DETENT = 0.03 * SLIDER_MAX;

export function snapToDetent(v: number): number {
  return Math.abs(v) < DETENT ? 0 : Math.round(v * 10) / 10;
}

/**
 * A feature strength: a −25…+25 slider (step 0.1, a 0 detent while dragging, a fill that grows from the
 * centre) and a number box for any finite value. Sends `onCommit` on pointer release, and ~150 ms after the
 * last keyboard change (arrows ±0.1, Shift+arrows and Page Up/Down ±1, Home/End), never while dragging.
 */
export function StrengthControl({
  index,
  value,
  onCommit,
  disabled,
}: {
  index: number;
  value: number;
  onCommit: (value: number) => void;
  disabled?: boolean;
}) {
  const [draft, setDraft] = useState<number | null>(null);
  const [text, setText] = useState(String(value));
  const [textError, setTextError] = useState<string | null>(null);
  const viaKeyboard = useRef(false);
  const keyTimer = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);
  const commitRef = useRef(onCommit);
  commitRef.current = onCommit;
  const shown = draft ?? value;

  useEffect(() => {
    setText(String(value));
    setTextError(null);
  }, [value]);
  useEffect(() => () => clearTimeout(keyTimer.current), []);

  const commit = (v: number) => {
    clearTimeout(keyTimer.current);
    setDraft(null);
    if (v !== value) commitRef.current(v);
  };

  const onValueCommit = ([v]: number[]) => {
    const next = viaKeyboard.current ? Math.round(v * 10) / 10 : snapToDetent(v);
    setDraft(next);
    if (viaKeyboard.current) {
      clearTimeout(keyTimer.current);
      keyTimer.current = setTimeout(() => commit(next), KEY_COMMIT_DELAY_MS);
    } else {
      commit(next);
    }
  };

  const submitText = () => {
    const parsed = parseStrength(text);
    if (typeof parsed === "string") {
      setTextError(parsed);
      return;
    }
    setTextError(null);
    commit(parsed);
  };

  const clamped = Math.max(SLIDER_MIN, Math.min(SLIDER_MAX, shown));
  const half = (Math.abs(clamped) / SLIDER_MAX) * 50;
  const errorId = `strength-error-${index}`;

  return (
    <div className="flex flex-col gap-1">
      <div className="flex items-center gap-3">
        <SliderPrimitive.Root
          className="relative flex h-5 w-full touch-none items-center select-none data-disabled:opacity-50"
          min={SLIDER_MIN}
          max={SLIDER_MAX}
          step={0.1}
          value={[clamped]}
          disabled={disabled}
          onKeyDown={() => {
            viaKeyboard.current = true;
          }}
          onPointerDown={() => {
            viaKeyboard.current = false;
          }}
          onValueChange={([v]) => setDraft(viaKeyboard.current ? Math.round(v * 10) / 10 : snapToDetent(v))}
          onValueCommit={onValueCommit}
        >
          <SliderPrimitive.Track className="relative h-1.5 w-full grow overflow-hidden rounded-full bg-surface">
            <span
              aria-hidden="true"
              data-testid={`fill-${index}`}
              className={cn(
                "absolute h-full",
                clamped >= 0
                  ? "bg-linear-to-r from-accent-600 to-accent"
                  : "bg-linear-to-l from-danger to-danger-tint",
              )}
              style={clamped >= 0 ? { left: "50%", width: `${half}%` } : { right: "50%", width: `${half}%` }}
            />
            <span aria-hidden="true" className="absolute top-0 left-1/2 h-full w-px bg-label/60" />
          </SliderPrimitive.Track>
          <SliderPrimitive.Thumb
            aria-label={`Strength of feature ${index}`}
            aria-valuetext={formatStrength(shown)}
            className="block size-4 rounded-full bg-accent shadow-[0_0_10px_rgb(34_211_238/0.5)] focus-visible:outline-2 focus-visible:outline-offset-2 focus-visible:outline-title"
          />
        </SliderPrimitive.Root>
        <input
          aria-label={`Strength value of feature ${index}`}
          inputMode="decimal"
          className={cn(
            inputClass,
            "num w-20 px-2 py-1 text-right font-bold",
            shown > 0 ? "text-success" : shown < 0 ? "text-danger" : "text-label",
          )}
          value={draft != null ? String(draft) : text}
          disabled={disabled}
          aria-invalid={textError ? true : undefined}
          aria-describedby={textError ? errorId : undefined}
          onChange={(e) => {
            setDraft(null);
            setText(e.target.value);
            setTextError(null);
          }}
          onBlur={submitText}
          onKeyDown={(e) => {
            if (e.key === "Enter") submitText();
            if (e.key === "Escape") {
              setText(String(value));
              setTextError(null);
            }
          }}
        />
      </div>
      {textError && (
        <p id={errorId} role="alert" className="text-xs text-danger">
          {textError}
        </p>
      )}
    </div>
  );
}
