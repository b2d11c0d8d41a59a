import { Toaster as Sonner } from "sonner";

/** The one toast region (sonner renders an aria-live section labelled "Notifications"). */
export function Toaster() {
  return (
    <Sonner
      theme="dark"
      position="bottom-right"
      closeButton
      richColors
      duration={6000}
      toastOptions={{ classNames: { toast: "font-sans", description: "text-label" } }}
    />
  );
}
