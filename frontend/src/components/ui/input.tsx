import type * as React from "react";
import { cn } from "@/lib/cn";

export const inputClass =
  "w-full rounded-lg border border-control/50 bg-surface/50 px-3.5 py-2.5 text-sm text-body placeholder:text-muted focus-visible:border-accent/50 focus-visible:outline-2 focus-visible:outline-accent aria-invalid:border-danger disabled:opacity-50";

export function Input({ className, ...props }: React.ComponentProps<"input">) {
  return <input data-slot="input" className={cn(inputClass, className)} {...props} />;
}
