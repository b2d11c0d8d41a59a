import { createFileRoute } from "@tanstack/react-router";
import { PageHeader } from "@/components/PageHeader";
import { RequiresSae } from "@/components/RequiresModel";

// Placeholder: the Steering tab (+ Playground) is built in features/steering/ (see frontend/README.md).
export const Route = createFileRoute("/steering")({
  component: SteeringPage,
});

function SteeringPage() {
  return (
    <>
      <PageHeader title="Steering" subtitle="Turn SAE features up or down for every request" />
      <RequiresSae what="steer features">
        {(sae) => (
          <p className="card text-sm text-label">
            {sae.id} at layer {sae.layer}: {sae.d_sae} features.
          </p>
        )}
      </RequiresSae>
    </>
  );
}
