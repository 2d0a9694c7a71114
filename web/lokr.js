// comfyui-lokr web extension, the entry module: the only file under web/ with side effects. It finds
// ComfyUI's app, registers one extension, and on each of the pack's node types adds the panels (the
// modules under panels/) and the stylesheet lokr.css. Every other module here only exports: ComfyUI
// imports every .js under WEB_DIRECTORY as an extension. Every frontend API is feature-detected;
// when one is missing the extension does nothing. Layout and behaviour: docs/web.md.
import { panelsFor } from "./logic/node_ui.js";
import { addStylesheet } from "./common/dom.js";
import { chain } from "./common/hooks.js";
import { setupEditor } from "./panels/block_editor.js";
import { setupPanel } from "./panels/loader_panel.js";
import { setupPowerPanel } from "./panels/power_panel.js";
import { setupStackPanel } from "./panels/stack_panel.js";

const EXT_NAME = "comfyui-lokr.panel";
const STYLE_ID = "lokr-style";
const STYLESHEET = new URL("./lokr.css", import.meta.url).href;  // served beside this file, any pack folder name

/** ComfyUI's {app, api}: the frontend's scripts/app.js and api.js, else the window.comfyAPI globals. */
async function comfyHandles() {
  try {
    const [{ app }, { api }] = await Promise.all([import("../../scripts/app.js"), import("../../scripts/api.js")]);
    if (app) return { app, api };
  } catch (_) { /* older or newer frontends: fall through */ }
  const g = globalThis.comfyAPI;
  return { app: g?.app?.app ?? null, api: g?.api?.api ?? null };
}

/** The extension: before each node type registers, hook the panels its inputs call for. */
function extension(app, api) {
  return {
    name: EXT_NAME,
    async beforeRegisterNodeDef(nodeType, nodeData) {
      try {
        const panels = panelsFor(nodeData);
        if (!panels) return;
        addStylesheet(STYLESHEET, STYLE_ID);
        chain(nodeType.prototype, "onNodeCreated", function () {
          if (panels.file) setupPanel(app, api, this, panels.file);
          if (panels.slots.length) setupStackPanel(app, api, this, panels.slots);
          if (panels.vector) setupEditor(app, api, this, panels.vector);
          if (panels.power) setupPowerPanel(app, api, this, panels.power);
        });
      } catch (e) {
        console.warn("[comfyui-lokr] extension disabled for", nodeData?.name, e);
      }
    },
  };
}

async function main() {
  if (typeof document === "undefined") return;
  const { app, api } = await comfyHandles();
  if (!app || typeof app.registerExtension !== "function") return;
  app.registerExtension(extension(app, api));
}

try {
  await main();
} catch (e) {
  console.warn("[comfyui-lokr] web extension not loaded:", e);
}
