import { PageHeader } from "@/components/PageHeader";

export function SaesPage() {
  return <PageHeader title="SAEs" subtitle="Browse, download and attach Sparse Autoencoders" />;
}
