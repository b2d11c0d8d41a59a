import { PageHeader } from "@/components/PageHeader";

export function ModelsPage() {
  return <PageHeader title="Models" subtitle="Download, load and unload Hugging Face models" />;
}
