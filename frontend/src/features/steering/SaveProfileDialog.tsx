import { useMutation, useQueryClient } from "@tanstack/react-query";
import { SaveIcon } from "lucide-react";
import { useState } from "react";
import { errorMessage } from "@/api/errors";
import { queryKeys } from "@/api/queries";
import { createProfileFromSteering } from "@/client";
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
import { profileNameError, suggestProfileName } from "@/features/profiles/profileName";
import { cn } from "@/lib/cn";

/** "Save as profile": the server-wide steering (with the model and SAE) under a new name. */
export function SaveProfileButton({
  model,
  features,
  disabled,
}: {
  model: string;
  features: { index: number; strength: number; label?: string | null }[];
  disabled?: boolean;
}) {
  const [open, setOpen] = useState(false);
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [nameError, setNameError] = useState<string | null>(null);
  const queryClient = useQueryClient();
  const save = useMutation({
    mutationFn: async () => (await createProfileFromSteering({ body: { name, description } })).data,
    meta: { inlineError: true, success: (p) => `Saved profile ${(p as { name: string }).name}` },
    onSuccess: () => {
      queryClient.invalidateQueries({ queryKey: queryKeys.profiles });
      setOpen(false);
    },
  });

  const openDialog = () => {
    setName(suggestProfileName(model));
    setDescription(
      features
        .map((f) => `#${f.index}${f.label ? ` ${f.label}` : ""} ${f.strength > 0 ? "+" : ""}${f.strength}`)
        .join(", "),
    );
    setNameError(null);
    save.reset();
    setOpen(true);
  };

  return (
    <>
      <Button variant="secondary" onClick={openDialog} disabled={disabled}>
        <SaveIcon aria-hidden="true" /> Save as profile
      </Button>
      <Dialog open={open} onOpenChange={setOpen}>
        <DialogContent>
          <DialogHeader>
            <DialogTitle>Save the steering as a profile</DialogTitle>
            <DialogDescription>
              Saves the {features.length} applied feature{features.length === 1 ? "" : "s"} with {model} and
              the attached SAE. Chat clients can then pick <span className="num">{model}+name</span>.
            </DialogDescription>
          </DialogHeader>
          <form
            className="flex flex-col gap-4"
            noValidate
            onSubmit={(e) => {
              e.preventDefault();
              const err = profileNameError(name);
              setNameError(err);
              if (!err) save.mutate();
            }}
          >
            <div>
              <Label htmlFor="save-profile-name">Profile name</Label>
              <Input
                id="save-profile-name"
                value={name}
                aria-invalid={nameError ? true : undefined}
                aria-describedby={nameError ? "save-profile-name-error" : undefined}
                onChange={(e) => {
                  setName(e.target.value);
                  setNameError(null);
                }}
              />
              {nameError && (
                <p id="save-profile-name-error" role="alert" className="mt-1 text-xs text-danger">
                  {nameError}
                </p>
              )}
            </div>
            <div>
              <Label htmlFor="save-profile-description">Description (optional)</Label>
              <textarea
                id="save-profile-description"
                className={cn(inputClass, "resize-y")}
                rows={3}
                value={description}
                onChange={(e) => setDescription(e.target.value)}
              />
            </div>
            {save.error && (
              <p
                role="alert"
                className="rounded-md border border-danger/40 bg-danger/10 p-2 text-sm text-danger"
              >
                {errorMessage(save.error)}
              </p>
            )}
            <DialogFooter>
              <Button variant="secondary" onClick={() => setOpen(false)}>
                Cancel
              </Button>
              <Button type="submit" disabled={save.isPending}>
                Save profile
              </Button>
            </DialogFooter>
          </form>
        </DialogContent>
      </Dialog>
    </>
  );
}
