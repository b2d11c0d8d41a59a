import { createFileRoute } from "@tanstack/react-router";
import { PageHeader } from "@/components/PageHeader";
import { RequiresSae } from "@/components/RequiresModel";

// Placeholder: the Monitor tab is built in features/monitor/ (see frontend/README.md).
export const Route = createFileRoute("/monitor")({
  component: MonitorPage,
});

function MonitorPage() {
  return (
    <>
      <PageHeader title="Monitor" subtitle="Live feature activations for every request, from any client" />
      <RequiresSae what="watch feature activations">{() => null}</RequiresSae>
    </>
  );
}
