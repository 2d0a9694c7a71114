// The client of the pack's read-only routes (nodes/routes.py; see docs/web.md, HTTP routes).

/** The JSON answer of GET `path` (through ComfyUI's api.fetchApi when there is one); throws Error with
 *  the server's message when the answer is not ok. */
export async function getJSON(api, path) {
  const resp = api?.fetchApi ? await api.fetchApi(path) : await fetch(path);
  let body = null;
  try { body = await resp.json(); } catch (_) { body = null; }
  if (!resp.ok) throw new Error(body?.error ?? `HTTP ${resp.status}`);
  return body;
}

/** The /lokr/info summary of a file in the loras folders. */
export function fetchInfo(api, file) {
  return getJSON(api, "/lokr/info?file=" + encodeURIComponent(file));
}

/** lokr_core's block-weight presets, {name: vector} ({} when the answer has none). */
export async function fetchPresets(api) {
  const body = await getJSON(api, "/lokr/presets");
  return body?.presets ?? {};
}

/** The /lokr/sidecar answer of a file: trigger words, base model, title, source link, preview route. */
export function fetchSidecar(api, file) {
  return getJSON(api, "/lokr/sidecar?file=" + encodeURIComponent(file));
}

/** The address the page loads a route from: ComfyUI's api.apiURL (the /api prefix and any base path)
 *  when there is one, else the route itself (the pack registers its routes without the prefix too). */
export function routeUrl(api, route) {
  return typeof api?.apiURL === "function" ? api.apiURL(route) : route;
}
