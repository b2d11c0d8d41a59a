import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import {
  CopyIcon,
  CopyPlusIcon,
  DownloadIcon,
  FileJsonIcon,
  Loader2Icon,
  PencilIcon,
  PlusIcon,
  PowerIcon,
  PowerOffIcon,
  Trash2Icon,
} from "lucide-react";
import { useState } from "react";
import { toast } from "sonner";
import { profilesQuery, queryKeys, statusQuery } from "@/api/queries";
import { toastError } from "@/api/queryClient";
import type { ProfilePublic } from "@/client";
import {
  activateProfile,
  deactivateProfile,
  deleteProfile,
  duplicateProfile,
  exportProfile,
  exportProfiles,
} from "@/client";
import { PageHeader } from "@/components/PageHeader";
import { Button } from "@/components/ui/button";
import { ConfirmDialog } from "@/components/ui/confirm-dialog";
import { formatStrength } from "@/features/steering/features";
import { cn } from "@/lib/cn";
import { downloadText } from "@/lib/download";
import { ImportDialog } from "./ImportDialog";
import { ProfileFormDialog } from "./ProfileFormDialog";
import { virtualModelId } from "./profileName";

function useProfileActions() {
  const queryClient = useQueryClient();
  const refresh = () => {
    queryClient.invalidateQueries({ queryKey: queryKeys.profiles });
    queryClient.invalidateQueries({ queryKey: statusQuery.queryKey });
  };
  const activate = useMutation({
    mutationFn: async (name: string) => (await activateProfile({ path: { name } })).data,
    onSuccess: refresh,
    meta: {
      errorTitle: "Could not activate the profile",
      success: (p) => `Profile ${(p as ProfilePublic).name} is active`,
    },
  });
  const deactivate = useMutation({
    mutationFn: async () => {
      await deactivateProfile();
    },
    onSuccess: refresh,
    meta: {
      errorTitle: "Could not deactivate the profile",
      success: "Profile deactivated: steering cleared",
    },
  });
  const duplicate = useMutation({
    mutationFn: async (p: ProfilePublic) => {
      const taken = new Set(queryClient.getQueryData(profilesQuery.queryKey)?.data.map((x) => x.name) ?? []);
      let name = `${p.name}-copy`.slice(0, 64);
      for (let i = 2; taken.has(name); i++) name = `${p.name.slice(0, 58)}-copy${i}`;
      return (await duplicateProfile({ path: { name: p.name }, body: { name } })).data;
    },
    onSuccess: refresh,
    meta: {
      errorTitle: "Could not duplicate the profile",
      success: (p) => `Created ${(p as ProfilePublic).name}`,
    },
  });
  const remove = useMutation({
    mutationFn: async (name: string) => {
      await deleteProfile({ path: { name } });
    },
    onSuccess: refresh,
    meta: { errorTitle: "Could not delete the profile", success: "Profile deleted" },
  });
  return { activate, deactivate, duplicate, remove };
}

async function exportOne(name: string) {
  try {
    const { data } = await exportProfile({ path: { name } });
    downloadText(`${name}.json`, `${JSON.stringify(data, null, 2)}\n`);
  } catch (e) {
    toastError(e, "Could not export the profile");
  }
}

async function exportAll() {
  try {
    const { data } = await exportProfiles();
    downloadText("millm-profiles.json", `${JSON.stringify(data, null, 2)}\n`);
  } catch (e) {
    toastError(e, "Could not export the profiles");
  }
}

export function ProfilesPage() {
  const { data, isPending, error } = useQuery(profilesQuery);
  const { data: status } = useQuery(statusQuery);
  const [creating, setCreating] = useState(false);
  const [editing, setEditing] = useState<ProfilePublic | undefined>();
  const [deleting, setDeleting] = useState<ProfilePublic | undefined>();
  const actions = useProfileActions();
  const profiles = data?.data ?? [];
  const sae = status?.sae;
  const saeRef = sae
    ? {
        id: sae.id,
        hook_name: sae.hook_name,
        layer: sae.layer,
        d_sae: sae.d_sae,
        repo_id: sae.repo_id,
        path: sae.path,
      }
    : undefined;

  return (
    <>
      <PageHeader
        title="Profiles"
        subtitle="Saved steering configurations; chat clients use one by picking its virtual model id"
        actions={
          <>
            <Button
              onClick={() => setCreating(true)}
              disabled={!status?.model || !sae}
              title={!sae ? "Load a model and attach an SAE to create a profile" : undefined}
            >
              <PlusIcon aria-hidden="true" /> New profile
            </Button>
            <ImportDialog />
            <Button variant="secondary" onClick={exportAll} disabled={profiles.length === 0}>
              <DownloadIcon aria-hidden="true" /> Export all
            </Button>
          </>
        }
      />
      <section aria-labelledby="profiles-title" className="card">
        <h2 id="profiles-title" className="mb-4 text-base font-semibold text-title">
          Saved profiles ({profiles.length})
        </h2>
        {isPending ? (
          <p className="flex items-center gap-2 text-sm text-label">
            <Loader2Icon className="size-4 animate-spin" aria-hidden="true" /> Loading profiles…
          </p>
        ) : error ? (
          <p role="alert" className="text-sm text-danger">
            Could not list the profiles: {error.message}
          </p>
        ) : profiles.length === 0 ? (
          <p className="px-5 py-10 text-center text-sm text-muted">
            No profiles yet. Save the steering as a profile on the Steering tab, create one here, or import a
            file.
          </p>
        ) : (
          <ul className="flex flex-col gap-3">
            {profiles.map((p) => (
              <ProfileRow
                key={p.name}
                profile={p}
                fits={status?.model?.id === p.model && sae?.id === p.sae.id}
                onActivate={() => actions.activate.mutate(p.name)}
                onDeactivate={() => actions.deactivate.mutate()}
                onEdit={() => setEditing(p)}
                onDuplicate={() => actions.duplicate.mutate(p)}
                onDelete={() => setDeleting(p)}
                busy={
                  (actions.activate.isPending && actions.activate.variables === p.name) ||
                  (actions.deactivate.isPending && p.active)
                }
              />
            ))}
          </ul>
        )}
      </section>
      <ProfileFormDialog open={creating} onOpenChange={setCreating} model={status?.model?.id} sae={saeRef} />
      <ProfileFormDialog
        open={!!editing}
        onOpenChange={(o) => !o && setEditing(undefined)}
        profile={editing}
      />
      <ConfirmDialog
        open={!!deleting}
        onOpenChange={(o) => !o && setDeleting(undefined)}
        title={`Delete ${deleting?.name}?`}
        description={
          deleting?.active
            ? `${deleting.name} is the active profile: deleting it also stops its steering. Its ${deleting.features?.length ?? 0} features are lost unless exported.`
            : `Its ${deleting?.features?.length ?? 0} features and description are lost unless exported.`
        }
        confirmLabel="Delete profile"
        pending={actions.remove.isPending}
        onConfirm={() =>
          deleting && actions.remove.mutate(deleting.name, { onSettled: () => setDeleting(undefined) })
        }
      />
    </>
  );
}

function ProfileRow({
  profile: p,
  fits,
  onActivate,
  onDeactivate,
  onEdit,
  onDuplicate,
  onDelete,
  busy,
}: {
  profile: ProfilePublic;
  fits: boolean;
  onActivate: () => void;
  onDeactivate: () => void;
  onEdit: () => void;
  onDuplicate: () => void;
  onDelete: () => void;
  busy: boolean;
}) {
  const vid = virtualModelId(p.model, p.name);
  const features = p.features ?? [];
  return (
    <li
      aria-label={`Profile ${p.name}`}
      className={cn(
        "flex flex-wrap items-start gap-4 rounded-[10px] border p-4",
        p.active ? "border-warning/50 bg-warning/5" : "border-control/30 bg-surface/30",
      )}
    >
      <div
        className={cn(
          "grid size-10 shrink-0 place-items-center rounded-lg",
          p.active ? "bg-warning/15 text-warning" : "bg-accent/10 text-accent",
        )}
      >
        <FileJsonIcon className="size-5" aria-hidden="true" />
      </div>
      <div className="min-w-0 flex-1">
        <div className="flex flex-wrap items-center gap-2">
          <h3 className="text-[15px] font-semibold text-title">{p.name}</h3>
          {p.active && (
            <span className="rounded-full bg-warning/15 px-2.5 py-1 text-[11px] font-semibold tracking-wide text-warning uppercase">
              Active
            </span>
          )}
          {!fits && (
            <span className="text-xs text-muted" title="Activating needs this model and SAE loaded">
              (for another model or SAE)
            </span>
          )}
        </div>
        {p.description && <p className="mt-0.5 text-sm text-label">{p.description}</p>}
        <p className="mt-1 text-xs text-muted">
          Model: {p.model} • SAE: {p.sae.id} (L{p.sae.layer}) • {features.length} feature
          {features.length === 1 ? "" : "s"} • mode {p.mode ?? "add"}
        </p>
        {features.length > 0 && (
          <ul className="mt-2 flex flex-wrap gap-1.5" aria-label={`Features of ${p.name}`}>
            {features.slice(0, 12).map((f) => (
              <li
                key={f.index}
                title={f.label ?? undefined}
                className={cn(
                  "num rounded-md border px-2 py-0.5 text-xs",
                  f.strength >= 0 ? "border-success/30 text-success" : "border-danger/30 text-danger",
                )}
              >
                #{f.index}: {formatStrength(f.strength)}
              </li>
            ))}
            {features.length > 12 && <li className="text-xs text-muted">+{features.length - 12} more</li>}
          </ul>
        )}
        <div className="mt-2 flex items-center gap-2">
          <span className="text-xs text-muted">Model id for chat clients:</span>
          <code className="num rounded bg-page-0/60 px-2 py-0.5 text-xs text-body">{vid}</code>
          <Button
            variant="ghost"
            size="icon"
            aria-label={`Copy model id ${vid}`}
            onClick={() =>
              navigator.clipboard
                .writeText(vid)
                .then(() => toast.success(`Copied ${vid}`))
                .catch((e) => toastError(e, "Could not copy"))
            }
          >
            <CopyIcon aria-hidden="true" />
          </Button>
        </div>
      </div>
      <div className="flex items-center gap-1">
        {p.active ? (
          <Button variant="danger" onClick={onDeactivate} disabled={busy} aria-label={`Deactivate ${p.name}`}>
            <PowerOffIcon aria-hidden="true" /> Deactivate
          </Button>
        ) : (
          <Button
            variant="action"
            onClick={onActivate}
            disabled={busy || !fits}
            aria-label={`Activate ${p.name}`}
          >
            <PowerIcon aria-hidden="true" /> Activate
          </Button>
        )}
        <Button variant="ghost" size="icon" aria-label={`Edit ${p.name}`} onClick={onEdit}>
          <PencilIcon aria-hidden="true" />
        </Button>
        <Button variant="ghost" size="icon" aria-label={`Duplicate ${p.name}`} onClick={onDuplicate}>
          <CopyPlusIcon aria-hidden="true" />
        </Button>
        <Button variant="ghost" size="icon" aria-label={`Export ${p.name}`} onClick={() => exportOne(p.name)}>
          <DownloadIcon aria-hidden="true" />
        </Button>
        <Button variant="ghost" size="icon" aria-label={`Delete ${p.name}`} onClick={onDelete}>
          <Trash2Icon aria-hidden="true" className="text-danger" />
        </Button>
      </div>
    </li>
  );
}
