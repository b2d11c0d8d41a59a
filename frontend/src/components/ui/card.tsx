import type * as React from "react";
import { cn } from "@/lib/cn";

/** A mockup card: dark slate, thin cyan border. Give it a title (and optional icon) for a labelled region. */
export function Card({
  title,
  icon,
  actions,
  className,
  children,
  ...props
}: Omit<React.ComponentProps<"section">, "title"> & {
  title?: React.ReactNode;
  icon?: React.ReactNode;
  actions?: React.ReactNode;
}) {
  return (
    <section className={cn("card", className)} {...props}>
      {title != null && (
        <header className="mb-4 flex items-center gap-2">
          {icon && (
            <span className="text-accent [&_svg]:size-4" aria-hidden="true">
              {icon}
            </span>
          )}
          <h2 className="text-sm font-semibold text-title">{title}</h2>
          {actions && <div className="ml-auto flex items-center gap-2">{actions}</div>}
        </header>
      )}
      {children}
    </section>
  );
}
