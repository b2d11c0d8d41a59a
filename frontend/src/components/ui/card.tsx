import type * as React from "react";
import { useId } from "react";
import { cn } from "@/lib/cn";

/** A mockup card: dark slate, thin cyan border. With a title it is a region named by that title. */
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
  const titleId = useId();
  return (
    <section
      className={cn("card", className)}
      aria-labelledby={title != null ? titleId : undefined}
      {...props}
    >
      {title != null && (
        <header className="mb-4 flex items-center gap-2">
          {icon && (
            <span className="text-accent [&_svg]:size-4" aria-hidden="true">
              {icon}
            </span>
          )}
          <h2 id={titleId} className="text-sm font-semibold text-title">
            {title}
          </h2>
          {actions && <div className="ml-auto flex items-center gap-2">{actions}</div>}
        </header>
      )}
      {children}
    </section>
  );
}
