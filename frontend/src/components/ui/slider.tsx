import { Slider as SliderPrimitive } from "radix-ui";
import type * as React from "react";
import { cn } from "@/lib/cn";

/**
 * Radix slider (arrow keys, Page Up/Down, Home/End built in). Pass `aria-label` (or thumbLabel).
 * Use `onValueCommit` to send to the server on release (and on each key press), `onValueChange` for the local value.
 */
export function Slider({
  className,
  thumbLabel,
  ...props
}: React.ComponentProps<typeof SliderPrimitive.Root> & { thumbLabel?: string }) {
  const count = (props.value ?? props.defaultValue ?? [0]).length;
  return (
    <SliderPrimitive.Root
      data-slot="slider"
      className={cn(
        "relative flex w-full touch-none items-center select-none data-disabled:opacity-50",
        className,
      )}
      {...props}
    >
      <SliderPrimitive.Track className="relative h-1.5 w-full grow overflow-hidden rounded-full bg-surface">
        <SliderPrimitive.Range className="absolute h-full bg-accent/70" />
      </SliderPrimitive.Track>
      {Array.from({ length: count }, (_, i) => (
        <SliderPrimitive.Thumb
          // biome-ignore lint/suspicious/noArrayIndexKey: thumbs are positional
          key={i}
          aria-label={thumbLabel ?? props["aria-label"]}
          className="block size-4 rounded-full bg-accent shadow-[0_0_10px_rgb(34_211_238/0.5)] focus-visible:outline-2 focus-visible:outline-offset-2 focus-visible:outline-title"
        />
      ))}
    </SliderPrimitive.Root>
  );
}
