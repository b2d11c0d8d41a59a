/**
 * The optional API key (MILLM_API_KEY on the server). Kept in localStorage; HTTP requests send it as
 * `Authorization: Bearer`, WebSockets as `?api_key=` (browsers cannot set WebSocket headers).
 * `onKeyNeeded` listeners are told when the server answers 401 invalid_api_key (ApiKeyDialog opens).
 */
const STORAGE_KEY = "millm.apiKey";

type Listener = () => void;
/** `explicit`: the user asked (a button), not a 401 from a background poll. */
type NeedListener = (explicit: boolean) => void;
const needListeners = new Set<NeedListener>();
const changeListeners = new Set<Listener>();

export function getApiKey(): string | null {
  try {
    return localStorage.getItem(STORAGE_KEY);
  } catch {
    return null;
  }
}

export function setApiKey(key: string | null): void {
  try {
    if (key) localStorage.setItem(STORAGE_KEY, key);
    else localStorage.removeItem(STORAGE_KEY);
  } catch {
    // storage unavailable (private mode): the key lives for this page only
  }
  for (const fn of changeListeners) fn();
}

/** Called by the API layer on a 401 (and by "Enter API key" buttons, explicit): ask the user for the key. */
export function requestApiKey(explicit = false): void {
  for (const fn of needListeners) fn(explicit);
}

export function onApiKeyNeeded(fn: NeedListener): () => void {
  needListeners.add(fn);
  return () => needListeners.delete(fn);
}

export function onApiKeyChanged(fn: Listener): () => void {
  changeListeners.add(fn);
  return () => changeListeners.delete(fn);
}
