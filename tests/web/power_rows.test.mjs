// node --test tests/web : LoKr Power Loader's row model (web/logic/power_rows.js): the `rows` widget
// text, the editor's edits, file filter / groups, family flags and the run status of a row.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as P from "../../web/logic/power_rows.js";

const row = (file, extra = {}) => ({ ...P.newRow(file), ...extra });

test("parseRows reads the widget text and fills the node's defaults", () => {
  assert.deepEqual(P.parseRows(""), { rows: [], error: null });
  assert.deepEqual(P.parseRows("[]"), { rows: [], error: null });
  const { rows, error } = P.parseRows('[{"file": "a.safetensors", "strength_model": 0.5}, {"on": false, "file": "s/b.safetensors",'
    + ' "strength_model": 1, "strength_clip": 0.25, "linked": false, "blocks": "SD-OUTALL"}]');
  assert.equal(error, null);
  assert.deepEqual(rows, [
    { on: true, file: "a.safetensors", strength_model: 0.5, strength_clip: 0.5, linked: true, blocks: "" },
    { on: false, file: "s/b.safetensors", strength_model: 1, strength_clip: 0.25, linked: false, blocks: "SD-OUTALL" },
  ]);
});

test("parseRows names what is wrong with bad text and returns no rows", () => {
  assert.match(P.parseRows("[{").error, /^rows: not JSON/);
  assert.deepEqual(P.parseRows('{"file": "a"}').rows, [P.newRow("a")]);  // one row object, as the node reads it
  assert.deepEqual(P.parseRows([{ file: "a", on: false }]).rows, [{ ...P.newRow("a"), on: false }]);  // a decoded list
  assert.equal(P.parseRows("3").error, "rows: expected a JSON list of row objects");
  assert.equal(P.parseRows('[{"file": "a"}, 3]').error, "rows: row 2 is not an object");
  assert.deepEqual(P.parseRows("[1]").rows, []);
});

test("serializeRows writes every key in schema order and round-trips through parseRows", () => {
  const rows = [row("a.safetensors", { strength_model: 0.75, strength_clip: 0.75 }), row("x/b.safetensors", { on: false, extra: 1 })];
  const text = P.serializeRows(rows);
  const back = JSON.parse(text);
  assert.deepEqual(back.map(Object.keys), [P.ROW_KEYS, P.ROW_KEYS]);  // unknown keys dropped, order fixed
  assert.deepEqual(P.parseRows(text).rows, rows.map(P.normalizeRow));
  assert.equal(P.serializeRows([]), "[]");
});

test("add, remove, move and toggle return new lists", () => {
  const a = P.addRow(P.addRow(P.addRow([], "a"), "b"), "c");
  assert.deepEqual(a.map((r) => r.file), ["a", "b", "c"]);
  assert.deepEqual(P.moveRow(a, 2, -1).map((r) => r.file), ["a", "c", "b"]);
  assert.deepEqual(P.moveRow(a, 0, 1).map((r) => r.file), ["b", "a", "c"]);
  assert.deepEqual(P.moveRow(a, 0, -1).map((r) => r.file), ["a", "b", "c"]);  // first row cannot go up
  assert.deepEqual(P.moveRow(a, 2, 1).map((r) => r.file), ["a", "b", "c"]);
  assert.deepEqual(P.removeRow(a, 1).map((r) => r.file), ["a", "c"]);
  const off = P.toggleRow(a, 1);
  assert.deepEqual(off.map((r) => r.on), [true, false, true]);
  assert.deepEqual(P.toggleRow(off, 1).map((r) => r.on), [true, true, true]);
  assert.equal(P.toggleRow(off, 1, false)[1].on, false);
  assert.deepEqual(a.map((r) => [r.file, r.on]), [["a", true], ["b", true], ["c", true]]);  // untouched
  assert.equal(P.setFile(a, 0, "z")[0].file, "z");
  assert.equal(P.setBlocks(a, 2, "SD-INALL")[2].blocks, "SD-INALL");
});

test("drag: the drop place counts the other rows above the pointer", () => {
  const mids = [10, 30, 50, 70];
  assert.equal(P.dropIndex(mids, 0, 5), 0);
  assert.equal(P.dropIndex(mids, 0, 55), 2);  // row 0 dropped below rows 1 and 2
  assert.equal(P.dropIndex(mids, 3, 20), 1);
  assert.equal(P.dropIndex(mids, 3, 99), 3);
  const rows = ["a", "b", "c", "d"].map((f) => row(f));
  assert.deepEqual(P.moveRowTo(rows, 0, 2).map((r) => r.file), ["b", "c", "a", "d"]);
  assert.deepEqual(P.moveRowTo(rows, 3, 1).map((r) => r.file), ["a", "d", "b", "c"]);
  assert.deepEqual(P.moveRowTo(rows, 9, 1).map((r) => r.file), ["a", "b", "c", "d"]);
});

test("strengths: a linked row's clip follows its model; editing clip unlinks; relinking copies model", () => {
  let rows = [row("a")];
  rows = P.setStrength(rows, 0, "model", "0.6");
  assert.deepEqual([rows[0].strength_model, rows[0].strength_clip, rows[0].linked], [0.6, 0.6, true]);
  rows = P.setStrength(rows, 0, "clip", 0.2);
  assert.deepEqual([rows[0].strength_model, rows[0].strength_clip, rows[0].linked], [0.6, 0.2, false]);
  rows = P.setStrength(rows, 0, "model", 1.5);  // unlinked: clip stays
  assert.deepEqual([rows[0].strength_model, rows[0].strength_clip], [1.5, 0.2]);
  assert.deepEqual(P.setStrength(rows, 0, "model", "abc"), rows);  // not a number: no change
  rows = P.setLinked(rows, 0, true);
  assert.deepEqual([rows[0].strength_model, rows[0].strength_clip, rows[0].linked], [1.5, 1.5, true]);
  assert.equal(P.setLinked(rows, 0, false)[0].strength_clip, 1.5);
});

test("files: filter by words, group by sub folder, base names", () => {
  const files = [{ name: "z.safetensors" }, { name: "style/Watercolor v2.safetensors" }, { name: "chars/corgi.safetensors" },
    { name: "style/ink.safetensors" }, { name: "a.safetensors" }];
  assert.deepEqual(P.filterFiles(files, "  STYLE  v2 ").map((f) => f.name), ["style/Watercolor v2.safetensors"]);
  assert.equal(P.filterFiles(files, "").length, 5);
  assert.deepEqual(P.groupFiles(files).map((g) => [g.folder, g.files.map((f) => P.baseName(f.name))]),
    [["", ["a.safetensors", "z.safetensors"]], ["chars", ["corgi.safetensors"]], ["style", ["Watercolor v2.safetensors", "ink.safetensors"]]]);
  assert.equal(P.folderOf("a\\b\\c.safetensors"), "a/b");
  assert.equal(P.baseName("a/b/c.safetensors"), "c.safetensors");
});

test("family: the run's model family first, else the majority of on rows; flags name the reason", () => {
  const byName = P.filesByName([{ name: "x1", family: "sdxl", family_label: "SDXL" }, { name: "x2", family: "sdxl" },
    { name: "s1", family: "sd1", family_label: "SD1.x" }, { name: "f", family: "flux" }]);
  const rows = [row("x1"), row("x2"), row("s1"), row("f", { on: false })];
  assert.equal(P.majorityFamily(rows, byName), "sdxl");
  assert.equal(P.majorityFamily([row("x1"), row("s1")], byName), null);  // a tie names none
  assert.equal(P.majorityFamily([row("x1", { on: false }), row("s1")], byName), "sd1");  // off rows do not vote
  const fromRows = P.modelFamilyOf(null, rows, byName);
  assert.deepEqual(fromRows, { family: "sdxl", label: "SDXL", source: "rows" });
  assert.match(P.fileFlag(byName.get("s1"), fromRows), /SD1\.x.*SDXL.*most of the rows that are on/);
  assert.equal(P.fileFlag(byName.get("x2"), fromRows), null);
  const fromRun = P.modelFamilyOf({ model_family: "flux", model_family_label: "Flux.1", rows: [] }, rows, byName);
  assert.deepEqual(fromRun, { family: "flux", label: "Flux.1", source: "run" });
  assert.match(P.fileFlag(byName.get("x1"), fromRun), /SDXL.*Flux\.1.*last run/);
  assert.equal(P.fileFlag(byName.get("f"), fromRun), null);
  assert.equal(P.fileFlag({ name: "u", family: null }, fromRun), null);  // unknown family: no flag
  assert.deepEqual(P.modelFamilyOf(null, [], byName), { family: null, label: null, source: null });
});

test("preset choices keep a row's own vector", () => {
  const presets = { "SD-ALL": "1,1", "SD-OUTALL": "1,0" };
  assert.deepEqual(P.presetChoices(presets, "").map((c) => c.value), ["", "SD-ALL", "SD-OUTALL"]);
  assert.deepEqual(P.presetChoices(presets, "1,0.5").at(-1), { value: "1,0.5", label: "custom: 1,0.5" });
  assert.equal(P.presetChoices({}, "SD-ALL").length, 2);
});

test("run status: from the executed message, by index and file, then by file", () => {
  assert.equal(P.powerFromMessage({ lokr_report: [] }), null);
  const power = P.powerFromMessage({ lokr_power: [{ model_family: "sd1", rows: [
    { index: 0, file: "a", on: true, kind: "lokr", matched: 30, total: 32 },
    { index: 1, file: "b", on: false, kind: "off", matched: null, total: null },
    { index: 2, file: "c", on: true, kind: "lora", matched: 10, total: 10 }] }] });
  assert.equal(power.model_family, "sd1");
  assert.equal(P.rowStatus(power, 0, row("a")).kind, "lokr");
  assert.equal(P.rowStatus(power, 0, row("c")).index, 2);  // moved since the run
  assert.equal(P.rowStatus(power, 3, row("zzz")), null);
  assert.deepEqual(P.statusText(power.rows[0]), { text: "LoKr · 30 / 32 matched", bad: true });
  assert.deepEqual(P.statusText(power.rows[1]), { text: "off in the last run", bad: false });
  assert.deepEqual(P.statusText(power.rows[2]), { text: "LoRA (ComfyUI) · 10 / 10 matched", bad: false });
  assert.deepEqual(P.statusText(power.rows[2], "mismatch"), { text: "LoRA (ComfyUI) · 10 / 10 matched · family mismatch", bad: true });
  assert.equal(P.statusText(null), null);
});
