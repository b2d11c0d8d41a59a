import { AlertDialog as AlertPrimitive } from "radix-ui";
import type * as React from "react";
import { Button } from "./button";

/**
 * A confirmation for destructive actions (unload, detach, delete): role="alertdialog", focus on Cancel.
 * `description` must say what will be lost. `onConfirm` may return a promise; the dialog closes when it settles.
 */
export function ConfirmDialog({
  open,
  onOpenChange,
  title,
  description,
  confirmLabel,
  onConfirm,
  pending,
}: {
  open: boolean;
  onOpenChange: (open: boolean) => void;
  title: string;
  description: React.ReactNode;
  confirmLabel: string;
  onConfirm: () => void;
  pending?: boolean;
}) {
  return (
    <AlertPrimitive.Root open={open} onOpenChange={onOpenChange}>
      <AlertPrimitive.Portal>
        <AlertPrimitive.Overlay className="fixed inset-0 z-200 bg-black/60 backdrop-blur-sm" />
        <AlertPrimitive.Content className="fixed top-1/2 left-1/2 z-201 w-[calc(100%-2rem)] max-w-md -translate-x-1/2 -translate-y-1/2 rounded-xl border border-chrome/20 bg-page-1 p-6 shadow-2xl">
          <AlertPrimitive.Title className="text-lg font-semibold text-title">{title}</AlertPrimitive.Title>
          <AlertPrimitive.Description className="mt-2 text-sm text-label">
            {description}
          </AlertPrimitive.Description>
          <div className="mt-6 flex justify-end gap-3">
            <AlertPrimitive.Cancel asChild>
              <Button variant="secondary">Cancel</Button>
            </AlertPrimitive.Cancel>
            <Button
              variant="danger"
              className="px-5 py-3 text-sm"
              disabled={pending}
              onClick={(e) => {
                e.preventDefault();
                onConfirm();
              }}
            >
              {confirmLabel}
            </Button>
          </div>
        </AlertPrimitive.Content>
      </AlertPrimitive.Portal>
    </AlertPrimitive.Root>
  );
}
