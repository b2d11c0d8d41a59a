import { createFileRoute } from "@tanstack/react-router";
import { PageHeader } from "@/components/PageHeader";

// Placeholder: the Profiles tab is built in features/profiles/ (see frontend/README.md).
export const Route = createFileRoute("/profiles")({
  component: ProfilesPage,
});

function ProfilesPage() {
  return <PageHeader title="Profiles" subtitle="Saved steering configurations, served as virtual models" />;
}
