// node --test tests/web : the module rules of web/. ComfyUI imports every .js under the pack's
// WEB_DIRECTORY as an extension module, so only the entry (web/lokr.js) may do anything when
// imported; every other module only exports. Also: imports are relative and resolve inside web/
// (so they work under any pack folder name), and every module is reached from the entry.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const WEB = fileURLToPath(new URL("../../web/", import.meta.url));
const ENTRY = join(WEB, "lokr.js");
const COMFY_SCRIPTS = ["../../scripts/app.js", "../../scripts/api.js"];  // ComfyUI's, beside /extensions/
const MODULES = readdirSync(WEB, { recursive: true }).filter((f) => f.endsWith(".js")).map((f) => join(WEB, f)).sort();
const HELPERS = MODULES.filter((f) => f !== ENTRY);
// what a module could touch at import: the page, ComfyUI, timers, the network
const WATCHED = ["document", "window", "navigator", "location", "comfyAPI", "LiteGraph", "app", "fetch",
  "setTimeout", "setInterval", "requestAnimationFrame", "queueMicrotask", "localStorage", "customElements"];

/** Import specifiers of a module's source: [{spec, dynamic}]. */
function specifiers(source) {
  const out = [];
  for (const m of source.matchAll(/^\s*(?:import|export)\b[^;'"]*?\bfrom\s*["']([^"']+)["']/gm)) out.push({ spec: m[1], dynamic: false });
  for (const m of source.matchAll(/^\s*import\s*["']([^"']+)["']/gm)) out.push({ spec: m[1], dynamic: false });
  for (const m of source.matchAll(/\bimport\s*\(\s*["']([^"']+)["']\s*\)/g)) out.push({ spec: m[1], dynamic: true });
  return out;
}

/** Whether `value` is a primitive, a function, or an object frozen all the way down. */
function immutable(value) {
  if (value === null || (typeof value !== "object" && typeof value !== "function")) return true;
  if (typeof value === "function") return true;
  return Object.isFrozen(value) && Object.values(value).every(immutable);
}

test("web/ holds the entry and helper modules", () => {
  assert.ok(MODULES.includes(ENTRY), MODULES);
  assert.ok(HELPERS.length >= 10, HELPERS);
  assert.ok(existsSync(join(WEB, "lokr.css")));
});

test("helper modules do nothing when imported: no page, ComfyUI, timer or network access, no new globals", async () => {
  const touched = [];
  const saved = new Map(WATCHED.map((name) => [name, Object.getOwnPropertyDescriptor(globalThis, name)]));
  const before = new Set(Object.getOwnPropertyNames(globalThis));
  for (const name of WATCHED) {
    Object.defineProperty(globalThis, name, {
      configurable: true,
      get() {
        const stack = new Error().stack ?? "";
        if (stack.includes(pathToFileURL(WEB).href)) touched.push(`${name}: ${stack.split("\n").find((l) => l.includes("/web/"))}`);
        return saved.get(name)?.get?.call(globalThis) ?? saved.get(name)?.value;
      },
      set(v) { touched.push(`${name} set`); },
    });
  }
  const modules = {};
  try {
    for (const file of HELPERS) modules[relative(WEB, file)] = await import(pathToFileURL(file).href);
  } finally {
    for (const name of WATCHED) {
      const d = saved.get(name);
      if (d) Object.defineProperty(globalThis, name, d);
      else delete globalThis[name];
    }
  }
  assert.deepEqual(touched, []);
  assert.deepEqual(Object.getOwnPropertyNames(globalThis).filter((n) => !before.has(n)), []);
  for (const [file, mod] of Object.entries(modules)) {
    assert.ok(Object.keys(mod).length > 0, `${file} exports nothing`);
    for (const [name, value] of Object.entries(mod)) {
      assert.ok(immutable(value), `${file}: export ${name} is mutable state (freeze it or make it a function)`);
    }
  }
});

test("the watch above sees a module that touches the page at import", async () => {
  // the same trap on a module written for the purpose, so the check above can fail
  const seen = [];
  const saved = Object.getOwnPropertyDescriptor(globalThis, "document");
  Object.defineProperty(globalThis, "document", { configurable: true, get() { seen.push(new Error().stack); return { title: "" }; } });
  try {
    await import("data:text/javascript,export const t = document.title;");
  } finally {
    if (saved) Object.defineProperty(globalThis, "document", saved);
    else delete globalThis.document;
  }
  assert.equal(seen.length, 1);
});

test("imports are relative, resolve inside web/ and reach every module from the entry", () => {
  const graph = new Map();
  for (const file of MODULES) {
    const deps = [];
    for (const { spec, dynamic } of specifiers(readFileSync(file, "utf8"))) {
      assert.ok(spec.startsWith("./") || spec.startsWith("../"), `${relative(WEB, file)}: import '${spec}' is not relative`);
      if (file === ENTRY && COMFY_SCRIPTS.includes(spec)) { assert.ok(dynamic, spec); continue; }
      assert.ok(!dynamic, `${relative(WEB, file)}: dynamic import('${spec}'): only the entry loads modules at run time`);
      const target = resolve(dirname(file), spec);
      assert.ok(target.startsWith(WEB) && existsSync(target), `${relative(WEB, file)}: '${spec}' is not a file under web/`);
      assert.notEqual(target, ENTRY, `${relative(WEB, file)} imports the entry`);
      deps.push(target);
    }
    graph.set(file, deps);
  }
  const reached = new Set([ENTRY]);
  const todo = [ENTRY];
  while (todo.length) for (const dep of graph.get(todo.pop())) if (!reached.has(dep)) { reached.add(dep); todo.push(dep); }
  assert.deepEqual(MODULES.filter((f) => !reached.has(f)).map((f) => relative(WEB, f)), []);
});
