import { cva, type VariantProps } from "class-variance-authority";
import type * as React from "react";
import { cn } from "@/lib/cn";

// Status colours (ui-mockup.md §1): green active/loaded, cyan ready, purple attached, amber profile/caution.
const badgeVariants = cva(
  "inline-flex items-center gap-1 rounded-full px-2.5 py-1 text-[11px] font-semibold uppercase tracking-wider",
  {
    variants: {
      tone: {
        success: "bg-success/15 text-success",
        ready: "bg-accent/15 text-accent",
        attached: "bg-attached/15 text-attached",
        warning: "bg-warning/15 text-warning",
        danger: "bg-danger/15 text-danger",
        muted: "bg-surface/80 text-label",
      },
    },
    defaultVariants: { tone: "muted" },
  },
);

export function Badge({
  className,
  tone,
  ...props
}: React.ComponentProps<"span"> & VariantProps<typeof badgeVariants>) {
  return <span data-slot="badge" className={cn(badgeVariants({ tone }), className)} {...props} />;
}
