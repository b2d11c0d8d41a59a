import { useQuery } from "@tanstack/react-query";
import { Link } from "@tanstack/react-router";
import { AlertTriangleIcon, Loader2Icon } from "lucide-react";
import type * as React from "react";
import { isUnreachable, statusQuery } from "@/api/queries";
import type { LoadedModelOut, SaeOut } from "@/client";
import { buttonVariants } from "@/components/ui/button";

function Notice({
  title,
  children,
  action,
}: {
  title: string;
  children?: React.ReactNode;
  action?: React.ReactNode;
}) {
  return (
    <section
      aria-label={title}
      className="flex flex-col items-start gap-3 rounded-xl border border-warning/30 bg-warning/5 p-6"
    >
      <div className="flex items-center gap-2 text-warning">
        <AlertTriangleIcon className="size-5" aria-hidden="true" />
        <h2 className="text-base font-semibold">{title}</h2>
      </div>
      {children && <p className="text-sm text-label">{children}</p>}
      {action}
    </section>
  );
}

/**
 * Renders `children(model)` when a model is loaded; otherwise says so and links to the Models tab.
 * `what` completes "… needs a loaded model to <what>".
 */
export function RequiresModel({
  what,
  children,
}: {
  what: string;
  children: (model: LoadedModelOut) => React.ReactNode;
}) {
  const { data: status, error, isPending } = useQuery(statusQuery);
  if (isPending)
    return (
      <p className="flex items-center gap-2 text-sm text-label">
        <Loader2Icon className="size-4 animate-spin" aria-hidden="true" /> Checking the server…
      </p>
    );
  if (!status) {
    return (
      <Notice title="Server not reachable">
        {isUnreachable(error)
          ? "The UI will reconnect as soon as the server answers."
          : String(error?.message ?? "")}
      </Notice>
    );
  }
  if (!status.model) {
    return (
      <Notice
        title={status.status === "loading" ? `Loading ${status.loading ?? "a model"}…` : "No model loaded"}
        action={
          <Link to="/models" className={buttonVariants({ variant: "action" })}>
            Go to Models
          </Link>
        }
      >
        A model must be loaded to {what}.
      </Notice>
    );
  }
  return <>{children(status.model)}</>;
}

/** Renders `children(sae, model)` when an SAE is attached (and a model loaded); otherwise links to where to fix it. */
export function RequiresSae({
  what,
  children,
}: {
  what: string;
  children: (sae: SaeOut, model: LoadedModelOut) => React.ReactNode;
}) {
  const { data: status } = useQuery(statusQuery);
  return (
    <RequiresModel what={what}>
      {(model) =>
        status?.sae ? (
          children(status.sae, model)
        ) : (
          <Notice
            title="No SAE attached"
            action={
              <Link to="/saes" className={buttonVariants({ variant: "action" })}>
                Go to SAEs
              </Link>
            }
          >
            An SAE must be attached to {model.id} to {what}.
          </Notice>
        )
      }
    </RequiresModel>
  );
}
