import { useMutation, useQueryClient } from "@tanstack/react-query";
import { useEffect, useState } from "react";
import { queryKeys, statusQuery } from "@/api/queries";
import type { ProfilePublic, SaeRef } from "@/client";
import { createProfile, updateProfile } from "@/client";
import { Button } from "@/components/ui/button";
import {
  Dialog,
  DialogContent,
  DialogDescription,
  DialogFooter,
  DialogHeader,
  DialogTitle,
} from "@/components/ui/dialog";
import { Input, inputClass } from "@/components/ui/input";
import { Label } from "@/components/ui/label";
import { type EntryError, parseFeatureList } from "@/features/steering/features";
import { cn } from "@/lib/cn";
import { errorsFor, type FieldError, parseFieldErrors } from "./fieldErrors";
import { profileNameError } from "./profileName";

/** "16:4, 40:-2.5": the editable text of a feature list. */
export function featuresToText(features: { index: number; strength: number }[]): string {
  return features.map((f) => `${f.index}:${f.strength}`).join(", ");
}

function FieldErrors({ id, errors }: { id: string; errors: (FieldError | EntryError)[] }) {
  if (!errors.length) return null;
  return (
    <ul id={id} className="mt-1 flex flex-col gap-0.5" role="alert">
      {errors.map((e) => {
        const where = "path" in e ? e.path : e.entry;
        return (
          <li key={`${where}-${e.message}`} className="text-xs text-danger">
            {where && <span className="num font-semibold">{where}</span>}
            {where && ": "}
            {e.message}
          </li>
        );
      })}
    </ul>
  );
}

/**
 * Create or edit a profile: name, description, mode and features (as an editable list, checked against the
 * SAE's d_sae inline). The server's field errors show under the field they name.
 */
export function ProfileFormDialog({
  open,
  onOpenChange,
  profile,
  model,
  sae,
}: {
  open: boolean;
  onOpenChange: (open: boolean) => void;
  /** The profile to edit; absent: create one for `model` and `sae`. */
  profile?: ProfilePublic;
  model?: string;
  sae?: SaeRef;
}) {
  const queryClient = useQueryClient();
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [mode, setMode] = useState<"add" | "clamp">("add");
  const [features, setFeatures] = useState("");
  const [localErrors, setLocalErrors] = useState<FieldError[]>([]);
  const [entryErrors, setEntryErrors] = useState<EntryError[]>([]);
  const dSae = profile?.sae.d_sae ?? sae?.d_sae ?? Number.MAX_SAFE_INTEGER;

  useEffect(() => {
    if (!open) return;
    setName(profile?.name ?? "");
    setDescription(profile?.description ?? "");
    setMode(profile?.mode ?? "add");
    setFeatures(featuresToText(profile?.features ?? []));
    setLocalErrors([]);
    setEntryErrors([]);
  }, [open, profile]);

  const save = useMutation({
    mutationFn: async (body: { features: { index: number; strength: number; label?: string | null }[] }) => {
      if (profile) {
        return (
          await updateProfile({
            path: { name: profile.name },
            body: { version: profile.version, name, description, mode, features: body.features },
          })
        ).data;
      }
      if (!model || !sae) throw new Error("Load a model and attach an SAE first.");
      return (await createProfile({ body: { name, description, mode, model, sae, features: body.features } }))
        .data;
    },
    meta: { inlineError: true, success: (p) => `Saved profile ${(p as ProfilePublic).name}` },
    onSuccess: () => {
      queryClient.invalidateQueries({ queryKey: queryKeys.profiles });
      queryClient.invalidateQueries({ queryKey: statusQuery.queryKey });
      onOpenChange(false);
    },
  });
  const serverErrors = save.error ? parseFieldErrors(save.error) : [];
  const all = [...localErrors, ...serverErrors];
  const nameErrors = errorsFor(all, "name");
  const descErrors = errorsFor(all, "description");
  const featureErrors = errorsFor(all, "features");
  const other = all.filter(
    (e) => !nameErrors.includes(e) && !descErrors.includes(e) && !featureErrors.includes(e),
  );

  const submit = () => {
    save.reset();
    const errs: FieldError[] = [];
    const nameErr = profileNameError(name);
    if (nameErr) errs.push({ path: "name", message: nameErr });
    const parsed = parseFeatureList(features, dSae);
    setEntryErrors(parsed.errors);
    setLocalErrors(errs);
    if (errs.length || parsed.errors.length) return;
    const labels = new Map((profile?.features ?? []).map((f) => [f.index, f.label]));
    save.mutate({ features: parsed.entries.map((e) => ({ ...e, label: labels.get(e.index) ?? null })) });
  };

  return (
    <Dialog open={open} onOpenChange={onOpenChange}>
      <DialogContent>
        <DialogHeader>
          <DialogTitle>{profile ? `Edit ${profile.name}` : "New profile"}</DialogTitle>
          <DialogDescription>
            {profile
              ? `For ${profile.model} with ${profile.sae.id} (layer ${profile.sae.layer}, ${profile.sae.d_sae} features).`
              : `For ${model} with ${sae?.id} (layer ${sae?.layer}, ${sae?.d_sae} features).`}
          </DialogDescription>
        </DialogHeader>
        <form
          className="flex flex-col gap-4"
          noValidate
          onSubmit={(e) => {
            e.preventDefault();
            submit();
          }}
        >
          <div>
            <Label htmlFor="profile-name">Name</Label>
            <Input
              id="profile-name"
              value={name}
              aria-invalid={nameErrors.length ? true : undefined}
              aria-describedby={nameErrors.length ? "profile-name-errors" : undefined}
              onChange={(e) => setName(e.target.value)}
            />
            <FieldErrors id="profile-name-errors" errors={nameErrors} />
          </div>
          <div>
            <Label htmlFor="profile-description">Description</Label>
            <textarea
              id="profile-description"
              rows={2}
              className={cn(inputClass, "resize-y")}
              value={description}
              aria-invalid={descErrors.length ? true : undefined}
              onChange={(e) => setDescription(e.target.value)}
            />
            <FieldErrors id="profile-description-errors" errors={descErrors} />
          </div>
          <div>
            <Label htmlFor="profile-mode">Mode</Label>
            <select
              id="profile-mode"
              className={inputClass}
              value={mode}
              onChange={(e) => setMode(e.target.value as "add" | "clamp")}
            >
              <option value="add">add: h += strength × decoder direction</option>
              <option value="clamp">clamp: pin the feature's activation</option>
            </select>
          </div>
          <div>
            <Label htmlFor="profile-features">Features</Label>
            <textarea
              id="profile-features"
              rows={3}
              className={cn(inputClass, "num resize-y")}
              placeholder="16:4, 40:-2.5"
              value={features}
              aria-invalid={entryErrors.length || featureErrors.length ? true : undefined}
              aria-describedby="profile-features-help profile-features-errors"
              onChange={(e) => setFeatures(e.target.value)}
            />
            <p id="profile-features-help" className="mt-1 text-xs text-muted">
              index:strength, separated by commas or new lines.
            </p>
            <FieldErrors id="profile-features-errors" errors={[...entryErrors, ...featureErrors]} />
          </div>
          <FieldErrors id="profile-other-errors" errors={other} />
          <DialogFooter>
            <Button variant="secondary" onClick={() => onOpenChange(false)}>
              Cancel
            </Button>
            <Button type="submit" disabled={save.isPending}>
              {profile ? "Save changes" : "Create profile"}
            </Button>
          </DialogFooter>
        </form>
      </DialogContent>
    </Dialog>
  );
}
