import { cva, type VariantProps } from "class-variance-authority";
import { Slot } from "radix-ui";
import type * as React from "react";
import { cn } from "@/lib/cn";

// Vendored shadcn-style button with the mockup's variants (ui-mockup.md §1 "Buttons").
const buttonVariants = cva(
  "inline-flex items-center justify-center gap-2 whitespace-nowrap font-semibold transition-opacity hover:opacity-90 disabled:pointer-events-none disabled:opacity-50 [&_svg]:size-4 [&_svg]:shrink-0 cursor-pointer",
  {
    variants: {
      variant: {
        primary:
          "rounded-lg bg-linear-to-r from-[#155e75] to-accent-700 px-5 py-3 text-sm text-white shadow-sm",
        secondary:
          "rounded-lg border border-control/50 bg-transparent px-5 py-3 text-sm font-medium text-label hover:text-body",
        action: "rounded-md border border-accent/30 bg-accent/10 px-3.5 py-2 text-xs text-accent",
        danger: "rounded-md border border-danger-tint/30 bg-danger-tint/10 px-3.5 py-2 text-xs text-danger",
        ghost: "rounded-md p-2 text-muted hover:bg-surface/60 hover:text-body",
      },
      size: {
        default: "",
        sm: "px-3 py-1.5 text-xs",
        icon: "p-2",
      },
    },
    defaultVariants: { variant: "primary", size: "default" },
  },
);

export interface ButtonProps extends React.ComponentProps<"button">, VariantProps<typeof buttonVariants> {
  asChild?: boolean;
}

export function Button({ className, variant, size, asChild = false, type, ...props }: ButtonProps) {
  const Comp = asChild ? Slot.Root : "button";
  return (
    <Comp
      data-slot="button"
      type={asChild ? undefined : (type ?? "button")}
      className={cn(buttonVariants({ variant, size }), className)}
      {...props}
    />
  );
}

export { buttonVariants };
