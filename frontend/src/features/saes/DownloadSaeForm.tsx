import { DownloadIcon, FolderSearchIcon } from "lucide-react";
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
 * Download an SAE by Hub repo (+ folder inside it). A pasted huggingface.co/…/tree/main/<folder> link
 * fills both. Empty folder = the whole repo.
 */
export function DownloadSaeForm({
  initialRepo,
  onBrowse,
}: {
  initialRepo?: string;
  /** Open the repo browser for this repo id (lists its SAE folders without downloading). */
  onBrowse: (repoId: string) => void;
}) {
  const pathInput = useId();
  const [repo, setRepo] = useState(initialRepo ?? "");
  const [path, setPath] = useState("");
  const [touched, setTouched] = useState(false);
  const start = useStartDownload();
  const parsed = parseRepoRef(repo);
  const error = touched && repo.trim() !== "" && isRepoError(parsed) ? parsed.error : null;

  const submit = (e: React.FormEvent) => {
    e.preventDefault();
    setTouched(true);
    if (isRepoError(parsed)) return;
    const folder = path.trim().replace(/^\/+|\/+$/g, "") || parsed.path || null;
    start.mutate(
      { kind: "sae", repo_id: parsed.repoId, revision: parsed.revision ?? null, path: folder },
      {
        onSuccess: (job) => {
          toast.success(`Downloading ${job.repo_id}${job.path ? `/${job.path}` : ""}`);
          setPath("");
          setTouched(false);
        },
      },
    );
  };

  return (
    <Card title="Download an SAE from Hugging Face" icon={<DownloadIcon />}>
      <form onSubmit={submit} noValidate className="grid gap-4 md:grid-cols-[1fr_1fr_auto] md:items-start">
        <RepoIdField
          label="SAE repository"
          value={repo}
          onChange={setRepo}
          onBlur={() => setTouched(true)}
          placeholder="e.g. google/gemma-scope-2b-pt-res"
          error={error}
        />
        <div>
          <Label htmlFor={pathInput}>
            Folder in the repo{" "}
            <span className="font-normal text-muted">(optional, e.g. layer_12/width_16k/average_l0_82)</span>
          </Label>
          <Input
            id={pathInput}
            value={path}
            onChange={(e) => setPath(e.target.value)}
            placeholder="whole repo"
            autoComplete="off"
            spellCheck={false}
            className="num"
          />
        </div>
        <div className="flex gap-2 md:mt-[22px]">
          <Button
            variant="secondary"
            onClick={() => {
              setTouched(true);
              if (!isRepoError(parsed)) onBrowse(parsed.repoId);
            }}
          >
            <FolderSearchIcon aria-hidden="true" /> Browse
          </Button>
          <Button type="submit" disabled={start.isPending}>
            <DownloadIcon aria-hidden="true" /> {start.isPending ? "Starting…" : "Download"}
          </Button>
        </div>
      </form>
    </Card>
  );
}
