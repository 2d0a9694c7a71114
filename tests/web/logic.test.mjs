// node --test tests/web : the pure logic of the web extension (web/logic/*.js).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as blockVector from "../../web/logic/block_vector.js";
import * as family from "../../web/logic/family.js";
import * as format from "../../web/logic/format.js";
import * as nodeUi from "../../web/logic/node_ui.js";
import * as stack from "../../web/logic/stack.js";
import * as summary from "../../web/logic/summary.js";

const L = { ...blockVector, ...family, ...format, ...nodeUi, ...stack, ...summary };

const shared = JSON.parse(readFileSync(new URL("./block_vectors.json", import.meta.url), "utf8"));

test("block IDs: lengths and order per family (docs/block-weights.md)", () => {
  assert.equal(L.blockIds("sd1", 17).length, 17);
  assert.equal(L.blockIds("sd1", 26).length, 26);
  assert.equal(L.blockIds("sdxl", 12).length, 12);
  assert.equal(L.blockIds("sdxl", 20).length, 20);
  assert.deepEqual(L.blockIds("sd1", 17).slice(0, 8), ["BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "MID"]);
  assert.deepEqual(L.blockIds("sdxl", 12).slice(-2), ["OUT04", "OUT05"]);
  assert.deepEqual(L.blockIds("sd2", 26), L.blockIds("sd1", 26));
  assert.equal(L.blockIds("sdxl", 17), null);
  assert.equal(L.blockIds("flux", 17), null);
  assert.deepEqual(L.familiesForLength(17), ["sd1", "sd2"]);
  assert.deepEqual(L.familiesForLength(20), ["sdxl"]);
  assert.deepEqual(L.familiesForLength(5), []);
});

for (const [i, c] of shared.cases.entries()) {
  test(`shared vector case ${i}: ${JSON.stringify(c.vector).slice(0, 40)} (${c.family})`, () => {
    const opts = { family: c.family, A: c.A ?? 4, B: c.B ?? 1 };
    if (c.error) {
      assert.throws(() => L.parseBlockVector(c.vector, opts), (e) => e.message.includes(c.error));
      return;
    }
    const parsed = L.parseBlockVector(c.vector, opts);
    assert.deepEqual(Object.keys(parsed.blocks), Object.keys(c.blocks));
    for (const [id, v] of Object.entries(c.blocks)) {
      if (v === null) assert.equal(parsed.blocks[id], null, id);
      else assert.ok(Math.abs(parsed.blocks[id] - v) < 1e-12, `${id}: ${parsed.blocks[id]} != ${v}`);
    }
  });
}

test("parseBlockVector infers the family from the length and resolves presets", () => {
  assert.equal(L.parseBlockVector("1,1,1,1,1,1,1,1,1,1,1,1").family, "sdxl");
  assert.equal(L.parseBlockVector("1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1").family, "sd1");
  const p = L.parseBlockVector("SD-OUT", { presets: { "SD-OUT": "1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1" } });
  assert.equal(p.blocks.OUT11, 1);
  assert.equal(p.blocks.MID, 0);
  assert.throws(() => L.parseBlockVector("1,1", {}), /has 2 values; expected 17 for SD 1.x\/2.x .* or 12 for SDXL/);
  assert.throws(() => L.parseBlockVector("1,1", { family: "flux" }), /unknown model family 'flux'/);
});

test("parseToken", () => {
  assert.equal(L.parseToken(" 2.5 "), 2.5);
  assert.equal(L.parseToken("a", { A: 3 }), 1.5);
  assert.equal(L.parseToken("b", { B: 1 }), 0.5);
  assert.equal(L.parseToken("R"), null);
  assert.throws(() => L.parseToken("1.2.3"), /'1.2.3' is not a number/);
  assert.equal(L.parseToken("A"), 4);  // lokr_core's default A=4, B=1
  assert.equal(L.parseToken("r"), null);
  assert.throws(() => L.parseToken("Infinity"), /not a number/);
});

test("formatVector / formatNumber / formatCounts", () => {
  assert.equal(L.formatVector([1, 0.5, 0.123456, "R", -1]), "1,0.5,0.1235,R,-1");
  assert.equal(L.formatNumber(0.30000000000000004), "0.3");
  assert.equal(L.formatNumber("inf"), "∞");
  assert.equal(L.formatNumber("-inf"), "-∞");
  assert.equal(L.formatNumber("nan"), "NaN");
  assert.equal(L.formatNumber(1e10), "10000000000");
  assert.equal(L.formatNumber(12345678.5), "1.23e+7");
  assert.equal(L.formatNumber(null), "–");
  assert.equal(L.formatNumber("4"), "4");
  assert.equal(L.formatNumber(Infinity), "∞");
  assert.equal(L.formatCounts({ full: 2, split_w2: 10, tucker: 2 }), "split_w2: 10, full: 2, tucker: 2");
  assert.equal(L.formatCounts(null), "");
  // the formatted vector parses back to the same values
  const v = [1, 0.25, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0.5];
  assert.deepEqual(L.parseBlockVector(L.formatVector(v)).values, v);
});

test("family labels, checkpoint-name guesses and mismatch text", () => {
  assert.equal(L.familyLabel("sdxl"), "SDXL");
  assert.equal(L.familyLabel(null), "unknown");
  assert.equal(L.familyLabel("flux"), "flux");
  assert.equal(L.familyFromCheckpointName("sd_xl_base_1.0.safetensors"), "sdxl");
  assert.equal(L.familyFromCheckpointName("ponyDiffusionV6XL.safetensors"), "sdxl");
  assert.equal(L.familyFromCheckpointName("v2-1_768-ema-pruned.safetensors"), "sd2");
  assert.equal(L.familyFromCheckpointName("v1-5-pruned-emaonly.safetensors"), "sd1");
  assert.equal(L.familyFromCheckpointName("mystery.safetensors"), null);
  assert.equal(L.familyFromCheckpointName(null), null);
  assert.equal(L.familyMismatch("sd1", "sdxl"), "This LoKr looks like SD 1.x, the model like SDXL");
  assert.equal(L.familyMismatch("sd1", "sd1"), null);
  assert.equal(L.familyMismatch(null, "sd1"), null);
  assert.equal(L.familyMismatch("sdxl", null), null);
  assert.equal(L.familyMismatch("sd1/sd2", "sd2"), null);
  assert.equal(L.familyMismatch("sd1", "sd1/sd2"), null);
  assert.equal(L.familyMismatch("sd1/sd2", "sdxl"), "This LoKr looks like SD 1.x/2.x, the model like SDXL");
  assert.equal(L.familyLabel("sd1/sd2"), "SD 1.x/2.x");
});

test("triggerWords: explicit list, else top tags, else tag frequency totals", () => {
  assert.deepEqual(L.triggerWords({ trigger_words: ["ohwx", "dog"] }), ["ohwx", "dog"]);
  assert.deepEqual(L.triggerWords({ metadata: { trigger_words: ["ohwx"], top_tags: [["cat", 3]] } }), ["ohwx"]);
  assert.deepEqual(L.triggerWords({ metadata: { trigger_words: [], top_tags: [["cat", 3], ["hat", 1]] } }), ["cat", "hat"]);
  const s = { metadata: { tag_frequency: { "10_a": { cat: 3, hat: 5 }, "5_b": { cat: 4 } } } };
  assert.deepEqual(L.triggerWords(s), ["cat", "hat"]);
  assert.deepEqual(L.triggerWords(s, 1), ["cat"]);
  assert.deepEqual(L.triggerWords(null), []);
  assert.deepEqual(L.triggerWords({}), []);
});

test("summaryRows: the lokr_core.report.summarize schema", () => {
  const rows = L.summaryRows({
    file: "x.safetensors", format: "lycoris", family: "sd1", module_count: 140,
    blocks: { te: 12, down: 40, mid: 8, up: 80 }, layouts: { "full+split": 128, "full+full": 12 },
    ranks: { 4: 128, full: 12 }, params: 2500000, dora: 0, scale_rule: "file",
    scales: { a: 0.5 }, scale_values: { "0.5": 128, "1": 12 }, warnings: [],
    other_modules: { lora: 3 },
    metadata: {
      training: { ss_sd_model_name: "v1-5.safetensors", ss_network_dim: "32", ss_network_alpha: "1",
        ss_network_args: { algo: "lokr", factor: 8 } },
      trigger_words: [], top_tags: [["cat", 9], ["hat", 4]], keys: [],
    },
  });
  const map = Object.fromEntries(rows.map((r) => [r.label, r.text]));
  assert.deepEqual(map, {
    Family: "SD 1.x",
    Modules: "140 (te: 12, down: 40, mid: 8, up: 80), 2.5M params",
    Layouts: "full+split: 128, full+full: 12",
    Rank: "4 ×128, full ×12",
    Scale: "0.5 ×128, 1 ×12 (rule: file)",
    Trained: "dim 32, alpha 1",
    "Base model": "v1-5.safetensors",
    Algorithm: "algo=lokr factor=8",
    "Not LoKr": "lora: 3",
  });
  assert.deepEqual(L.summaryRows(null), []);
  const one = Object.fromEntries(L.summaryRows({ family: "sdxl", module_count: 2, scale_values: { 1: 2 }, dora: 2 })
    .map((r) => [r.label, r.text]));
  assert.deepEqual(one, { Family: "SDXL", Modules: "2", Scale: "1", DoRA: "2 modules" });
  assert.equal(L.formatCount(1234), "1.2k");
  assert.equal(L.formatCount(12), "12");
  assert.equal(L.formatTally({ 8: 3 }), "8");
  assert.equal(L.formatTally(null), "");
});

test("stack slots: slot names in slot order, chosen files without None / empty", () => {
  assert.deepEqual(L.stackSlotNames(["strength_model_1", "lokr_10", "lokr_2", "lokr_1", "lokr_name", "lokr_x", "lora_stack"]),
    ["lokr_1", "lokr_2", "lokr_10"]);
  assert.deepEqual(L.stackSlotNames(undefined), []);
  const widgets = [
    { name: "lokr_2", value: "b.safetensors" }, { name: "strength_model_1", value: 1 },
    { name: "lokr_1", value: "a.safetensors" }, { name: "lokr_3", value: L.NO_FILE },
    { name: "lokr_4", value: "" }, { name: "lokr_5", value: "a.safetensors" }, { name: "lokr_stack_panel" }, null,
  ];
  assert.deepEqual(L.stackSelection(widgets), [
    { slot: 1, name: "lokr_1", file: "a.safetensors" },
    { slot: 2, name: "lokr_2", file: "b.safetensors" },
    { slot: 5, name: "lokr_5", file: "a.safetensors" },
  ]);
  assert.deepEqual(L.stackSelection([{ name: "lokr_1", value: "None" }]), []);
  assert.deepEqual(L.stackSelection(null), []);
});

test("compactSummary: one line for the stack panel", () => {
  const line = L.compactSummary({
    family: "sd1", module_count: 40, layouts: { "split-w2": 36, full: 4 }, scale_values: { 1: 40 },
    metadata: { trigger_words: [], top_tags: [["ohwx corgi", 24], ["grass", 9], ["sitting", 7], ["outdoors", 5]] },
  });
  assert.deepEqual(line, {
    family: "SD 1.x", text: "40 modules · split-w2: 36, full: 4 · scale 1",
    words: ["ohwx corgi", "grass", "sitting"], explicit: false,
  });
  const one = L.compactSummary({ family: "sdxl", module_count: 1, scale_values: { "0.5": 1 }, trigger_words: ["zk"] }, 5);
  assert.deepEqual(one, { family: "SDXL", text: "1 module · scale 0.5", words: ["zk"], explicit: true });
  assert.deepEqual(L.compactSummary(null), { family: "unknown", text: "", words: [], explicit: false });
  assert.equal(L.scaleText({ scales: "inf" }), "∞");
  assert.equal(L.scaleText({}), "");
  assert.equal(L.hasTriggerWords({ metadata: { trigger_words: ["a"] } }), true);
  assert.equal(L.hasTriggerWords({ metadata: { trigger_words: [] } }), false);
});

test("reportRows: counts, warnings, unmatched names cut", () => {
  const rows = L.reportRows({ matched: { a: 1, b: 2 }, unmatched: ["x1", "x2", "x3"], shape_mismatch: {} }, 2);
  assert.deepEqual(rows, [
    { label: "Matched", text: "2" },
    { label: "Unmatched", text: "3", warn: true },
    { label: "Shape mismatch", text: "0", warn: false },
    { label: "Not applied", text: "x1, x2 … +1", warn: true },
  ]);
  assert.deepEqual(L.reportRows({ matched: 5, total: 7 })[0], { label: "Matched", text: "5 / 7" });
  assert.deepEqual(L.reportRows(undefined), []);
});

test("warningsOf and presetsFor", () => {
  assert.deepEqual(L.warningsOf({ warnings: "x" }), ["x"]);
  assert.deepEqual(L.warningsOf({ warnings: ["a", "b"] }), ["a", "b"]);
  assert.deepEqual(L.warningsOf({}), []);
  const presets = { "SD-ALL": "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1", "XL-ALL": "1,1,1,1,1,1,1,1,1,1,1,1" };
  assert.deepEqual(Object.keys(L.presetsFor(presets, "sd1", 17)), ["SD-ALL"]);
  assert.deepEqual(Object.keys(L.presetsFor(presets, "sdxl", 12)), ["XL-ALL"]);
  assert.deepEqual(L.presetsFor(presets, "sdxl", 20), {});
});

test("editor layouts: labels and the layout of a parsed vector", () => {
  assert.deepEqual(L.EDITOR_LAYOUTS.map(L.layoutLabel),
    ["SD 1.x/2.x · 17 values", "SD 1.x/2.x · 26 values", "SDXL · 12 values", "SDXL · 20 values"]);
  assert.equal(L.layoutIndex("sd1", 26), 1);
  assert.equal(L.layoutIndex("sd2", 17), 0);  // SD 2.x uses the SD 1.x layouts
  assert.equal(L.layoutIndex("sdxl", 20), 3);
  assert.equal(L.layoutIndex("sdxl", 17), -1);
  for (const [fam, n] of L.EDITOR_LAYOUTS) assert.equal(L.blockIds(fam, n).length, n);
});

test("panelsFor: the pack's node definitions get the panels their inputs call for", () => {
  const def = (name, required, optional = {}) => ({ name, input: { required, optional } });
  assert.deepEqual(L.panelsFor(def("LoKrLoader", { model: ["MODEL"], lokr_name: [[]] })),
    { file: "lokr_name", vector: null, slots: [] });
  assert.deepEqual(L.panelsFor(def("LoKrBlockWeights", { lokr_name: [[]], preset: [[]], block_vector: ["STRING"] }, { A: ["FLOAT"] })),
    { file: "lokr_name", vector: "block_vector", slots: [] });
  assert.deepEqual(L.panelsFor(def("LoKrStack", { lokr_2: [[]], strength_model_1: ["FLOAT"], lokr_1: [[]] })),
    { file: null, vector: null, slots: ["lokr_1", "lokr_2"] });
  assert.equal(L.panelsFor(def("LoKrApplyStack", { lora_stack: ["LORA_STACK"] })), null);
  assert.equal(L.panelsFor(def("LoraLoader", { lora_name: [[]] })), null);  // another pack's (core's) node
  assert.equal(L.panelsFor(def("LoKrLoader", { lora_name: [[]], vector: ["STRING"], lbw: ["STRING"] })), null);
  assert.deepEqual(L.panelsFor({ name: "X", python_module: "custom_nodes.comfyui-lokr", input: { required: { lokr_name: [[]] } } }),
    { file: "lokr_name", vector: null, slots: [] });
  assert.equal(L.panelsFor(null), null);
  assert.deepEqual(L.inputNames(def("N", { a: 1 }, { b: 2 })), ["a", "b"]);
  assert.deepEqual(L.inputNames(undefined), []);
});

test("run report from a node's executed message; editor text and family from the node's widgets", () => {
  assert.deepEqual(L.reportFromMessage({ lokr_report: [{ matched: 1 }] }), { matched: 1 });
  assert.deepEqual(L.reportFromMessage({ lokr_report: { matched: 2 } }), { matched: 2 });
  assert.equal(L.reportFromMessage({ lokr_report: [] }), null);
  assert.equal(L.reportFromMessage({ text: ["x"] }), null);
  assert.equal(L.reportFromMessage(undefined), null);
  assert.equal(L.vectorText("SD-OUTALL", "1,1"), "SD-OUTALL");
  assert.equal(L.vectorText("custom", " 1,0 "), "1,0");
  assert.equal(L.vectorText(undefined, undefined), "");
  assert.equal(L.parseFamily("sdxl", "1,1", "sd1"), "sdxl");
  assert.equal(L.parseFamily("auto", "%in=0", "sd1"), "sd1");
  assert.equal(L.parseFamily("auto", "1,1", "sdxl"), null);
  assert.equal(L.parseFamily("flux", "1,1", "sd1"), null);
});

test("summaryFamily and the warning badge text", () => {
  assert.equal(L.summaryFamily({ family: "sdxl" }), "sdxl");
  assert.equal(L.summaryFamily({ model_family: "sd1" }), "sd1");
  assert.equal(L.summaryFamily(null), undefined);
  assert.equal(L.warningBadgeText("short"), "⚠ short");
  const long = "x".repeat(41);
  assert.equal(L.warningBadgeText(long), "⚠ " + "x".repeat(38) + "…");
});
