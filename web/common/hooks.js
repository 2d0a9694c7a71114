// Hooking into LiteGraph objects without replacing what the frontend or other packs put there.

/**
 * Make `obj[key]` call the method that was there first, then `fn` with the same `this` and
 * arguments; the first one's result is returned, and an error in `fn` is logged, never thrown.
 */
export function chain(obj, key, fn) {
  const prev = obj[key];
  obj[key] = function (...args) {
    const r = prev?.apply(this, args);
    try { fn.apply(this, args); } catch (e) { console.warn("[comfyui-lokr]", e); }
    return r;
  };
}
