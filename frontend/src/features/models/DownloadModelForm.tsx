import { DownloadIcon } from "lucide-react";
import { useId, useState } from "react";
import { toast } from "sonner";
import { Button } from "@/components/ui/button";
import { Card } from "@/components/ui/card";
import { Input } from "@/components/ui/input";
import { Label } from "@/components/ui/label";
import { RepoIdField } from "@/features/downloads/RepoIdField";
import { isRepoError, parseRepoRef } from "@/features/downloads/repoId";
import { useStartDownload } from "@/features/downloads/useDownloadActions";

/**
 * "Download from Hugging Face": a Hub id or pasted link, validated inline, optional revision.
 * The typed value lives in the URL (?download=) so a link can prefill it.
 */
export function DownloadModelForm({
  value,
  onValueChange,
}: {
  value: string;
  onValueChange: (v: string) => void;
}) {
  const revId = useId();
  const [revision, setRevision] = useState("");
  const [touched, setTouched] = useState(false);
  const start = useStartDownload();
  const parsed = parseRepoRef(value);
  const error = touched && value.trim() !== "" && isRepoError(parsed) ? parsed.error : null;

  const submit = (e: React.FormEvent) => {
    e.preventDefault();
    setTouched(true);
    if (isRepoError(parsed)) return;
    start.mutate(
      { kind: "model", repo_id: parsed.repoId, revision: revision.trim() || parsed.revision || null },
      {
        onSuccess: (job) => {
          toast.success(`Downloading ${job.repo_id}`, {
            description: "Progress shows below and in the status bar.",
          });
          onValueChange("");
          setRevision("");
          setTouched(false);
        },
      },
    );
  };

  return (
    <Card title="Download from Hugging Face" icon={<DownloadIcon />}>
      <form onSubmit={submit} noValidate className="grid gap-4 md:grid-cols-[2fr_1fr_auto] md:items-start">
        <RepoIdField
          label="Hugging Face model repository"
          value={value}
          onChange={onValueChange}
          onBlur={() => setTouched(true)}
          placeholder="e.g. google/gemma-2-2b or a huggingface.co link"
          error={error}
        />
        <div>
          <Label htmlFor={revId}>
            Revision <span className="font-normal text-muted">(optional, default main)</span>
          </Label>
          <Input
            id={revId}
            value={revision}
            onChange={(e) => setRevision(e.target.value)}
            placeholder="main"
            autoComplete="off"
            spellCheck={false}
            className="num"
          />
        </div>
        <Button type="submit" className="md:mt-[22px]" disabled={start.isPending}>
          <DownloadIcon aria-hidden="true" /> {start.isPending ? "Starting…" : "Download"}
        </Button>
      </form>
      <p className="mt-3 text-xs text-muted">
        Downloads run on the server: they continue if you close this page, and every open tab shows their
        progress. Gated models need the server's HF_TOKEN.
      </p>
    </Card>
  );
}
