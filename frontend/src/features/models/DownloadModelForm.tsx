import { DownloadIcon, EyeIcon } from "lucide-react";
import { useId, useState } from "react";
import { toast } from "sonner";
import { Button } from "@/components/ui/button";
import { Card } from "@/components/ui/card";
import { Input } from "@/components/ui/input";
import { Label } from "@/components/ui/label";
import { RepoIdField } from "@/features/downloads/RepoIdField";
import { isRepoError, parseRepoRef } from "@/features/downloads/repoId";
import { useStartDownload } from "@/features/downloads/useDownloadActions";
import { ModelPreviewDialog } from "./ModelPreviewDialog";
import type { Precision } from "./precision";

/**
 * "Download from Hugging Face": a Hub id or pasted link, validated inline, optional revision, "Trust remote
 * code" (amber: it lets the repo's own Python run on the server), and "Preview" (the Hub card and memory per
 * precision before downloading). The typed value lives in the URL (?download=), the previewed repo too (?preview=).
 */
export function DownloadModelForm({
  value,
  onValueChange,
  preview,
  onPreviewChange,
  onPrecisionChosen,
}: {
  value: string;
  onValueChange: (v: string) => void;
  preview?: string;
  onPreviewChange?: (repoId: string | undefined) => void;
  /** The precision picked in the preview, for the load dialog later. */
  onPrecisionChosen?: (p: Precision) => void;
}) {
  const revId = useId();
  const trustId = useId();
  const [revision, setRevision] = useState("");
  const [trustRemoteCode, setTrustRemoteCode] = useState(false);
  const [touched, setTouched] = useState(false);
  const start = useStartDownload();
  const parsed = parseRepoRef(value);
  const error = touched && value.trim() !== "" && isRepoError(parsed) ? parsed.error : null;
  const rev = (isRepoError(parsed) ? null : revision.trim() || parsed.revision) || undefined;

  const download = (repoId: string, after?: () => void) =>
    start.mutate(
      { kind: "model", repo_id: repoId, revision: rev ?? null, trust_remote_code: trustRemoteCode },
      {
        onSuccess: (job) => {
          toast.success(`Downloading ${job.repo_id}`, {
            description: "Progress shows below and in the status bar.",
          });
          onValueChange("");
          setRevision("");
          setTouched(false);
          after?.();
        },
      },
    );

  const submit = (e: React.FormEvent) => {
    e.preventDefault();
    setTouched(true);
    if (isRepoError(parsed)) return;
    download(parsed.repoId);
  };
  const openPreview = () => {
    setTouched(true);
    if (!isRepoError(parsed)) onPreviewChange?.(parsed.repoId);
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
        <div className="flex gap-2 md:mt-[22px]">
          {onPreviewChange && (
            <Button type="button" variant="secondary" onClick={openPreview}>
              <EyeIcon aria-hidden="true" /> Preview
            </Button>
          )}
          <Button type="submit" disabled={start.isPending}>
            <DownloadIcon aria-hidden="true" /> {start.isPending ? "Starting…" : "Download"}
          </Button>
        </div>
        <div className="md:col-span-3">
          <label htmlFor={trustId} className="flex w-fit items-center gap-2 text-sm font-medium text-warning">
            <input
              id={trustId}
              type="checkbox"
              checked={trustRemoteCode}
              onChange={(e) => setTrustRemoteCode(e.target.checked)}
              aria-describedby={`${trustId}-hint`}
            />
            Trust remote code
          </label>
          <p id={`${trustId}-hint`} className="mt-1 text-xs text-muted">
            Some models (e.g. Phi-3 small, some Qwen or InternLM) ship their own Python code, which runs on
            the server when they load: arbitrary code from the Hub. Tick this only for repos you trust; the
            server must also have been started with --trust-remote-code.
          </p>
        </div>
      </form>
      <p className="mt-3 text-xs text-muted">
        Downloads run on the server: they continue if you close this page, and every open tab shows their
        progress. Gated models need the server's HF_TOKEN.
      </p>
      {preview && onPreviewChange && (
        <ModelPreviewDialog
          repoId={preview}
          revision={rev}
          trustRemoteCode={trustRemoteCode}
          onTrustRemoteCodeChange={setTrustRemoteCode}
          downloading={start.isPending}
          onClose={() => onPreviewChange(undefined)}
          onDownload={(precision) => {
            if (precision) onPrecisionChosen?.(precision);
            download(preview, () => onPreviewChange(undefined));
          }}
        />
      )}
    </Card>
  );
}
