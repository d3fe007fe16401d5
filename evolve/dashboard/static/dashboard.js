// evorank dashboard: follows runs by polling the server's JSON (no reload), draws plots as SVG elements.
// Everything a run produced (program code, model replies, failure details, even collection names) is data:
// it enters the document only through text nodes (textContent / createTextNode), never as markup.
"use strict";

const state = {
  runs: [], pollMs: 2000, current: 0,
  data: {},      // run index -> overview
  etags: {},     // run index -> ETag of that overview
  points: {},    // run index -> program points (objects), id order
  maxId: {},     // run index -> highest program id fetched
  selected: null, // {run, id} of the program shown
  drawn: {},      // section -> what it was last drawn from
  gridShape: null, topHead: null
};
const SVGNS = "http://www.w3.org/2000/svg";
const COLORS = { best: "#d62728", val: "#1f77b4", held: "#2ca02c", dots: "#9aa5b1" };
const SEED_COLORS = ["#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
const RUN_COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];
const OUTCOME_COLORS = { accepted: "#2ca02c", failed: "#d62728", duplicate: "#9aa5b1", rejected_cascade: "#bcbd22" };

// -- small helpers ------------------------------------------------------------------------------------------

function $(id) { return document.getElementById(id); }

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined) continue;
    if (k === "className") node.className = v;
    else if (k === "id") node.id = v;
    else if (k === "onclick") node.addEventListener("click", v);
    else if (k === "title") node.title = String(v);
    else if (k.startsWith("data-")) node.setAttribute(k, String(v));
    else if (k === "colSpan" || k === "rowSpan") node[k] = v;
    else throw new Error("unknown property " + k);
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    node.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svgEl(tag, attrs, text) {
  const node = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

function num(x) { return typeof x === "number" && isFinite(x); }
function fmt(x, d = 4) { return num(x) ? x.toFixed(d) : "-"; }
function pct(x) { return num(x) ? (x >= 0 ? "+" : "") + (x * 100).toFixed(2) + "%" : ""; }
function dur(s) {
  if (!num(s)) return "-";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h + ":" + String(m).padStart(2, "0") + ":" + String(r).padStart(2, "0");
}

async function getJSON(url, etag) {
  const headers = etag ? { "If-None-Match": etag } : {};
  const resp = await fetch(url, { headers, cache: "no-store" });
  if (resp.status === 304) return { status: 304 };
  const body = await resp.json();
  if (!resp.ok) throw new Error(body.error || resp.statusText);
  return { status: resp.status, body, etag: resp.headers.get("ETag") };
}

function showError(message) {
  const box = $("error");
  box.hidden = !message;
  box.textContent = message || "";
}

// -- polling ------------------------------------------------------------------------------------------------

async function boot() {
  try {
    const r = await getJSON("/api/runs");
    state.runs = r.body.runs;
    state.pollMs = r.body.poll_ms;
  } catch (e) {
    showError("cannot reach the dashboard server: " + e.message);
    return;
  }
  renderTabs();
  $("compare").hidden = state.runs.length < 2;
  poll();
}

async function refreshRun(i) {
  const r = await getJSON("/api/runs/" + i + "/overview", state.etags[i]);
  if (r.status === 304) return false;
  state.etags[i] = r.etag;
  state.data[i] = r.body;
  const known = state.maxId[i] || 0;
  if (r.body.max_id > known || !state.points[i]) {
    const p = await getJSON("/api/runs/" + i + "/points?since=" + known);
    const fields = p.body.fields;
    const rows = p.body.points.map(row => Object.fromEntries(fields.map((f, k) => [f, row[k]])));
    state.points[i] = (state.points[i] || []).concat(rows);
    state.maxId[i] = p.body.max_id;
  }
  return true;
}

async function poll() {
  const wanted = state.runs.length > 1 ? state.runs.map(r => r.index) : [state.current];
  try {
    const changed = [];
    for (const i of wanted) if (await refreshRun(i)) changed.push(i);
    if (changed.includes(state.current)) renderRun();
    if (state.runs.length > 1 && changed.length) renderCompare();
    $("live").textContent = "live · updated " + new Date().toLocaleTimeString();
    showError(null);
  } catch (e) {
    $("live").textContent = "no answer from the server";
    showError(e.message);
  }
  setTimeout(poll, state.pollMs);
}

// -- run tabs and comparison --------------------------------------------------------------------------------

function renderTabs() {
  const nav = clear($("run-tabs"));
  for (const r of state.runs) {
    nav.appendChild(el("button", {
      className: r.index === state.current ? "active" : "", title: r.path, "data-run": r.index,
      onclick: () => {
        state.current = r.index;
        renderTabs();
        renderRun();
        if (!state.data[r.index]) refreshRun(r.index).then(renderRun, e => showError(e.message));
      }
    }, r.name));
  }
}

function bestSoFar(points) {
  // Steps of the best program so far by train fitness (migration copies left out: their originals count).
  const out = [];
  let best = null;
  const sorted = points.filter(p => p.status === "accepted" && num(p.fitness) && p.operator !== "migration")
    .sort((a, b) => a.iteration - b.iteration || a.id - b.id);
  for (const p of sorted) {
    if (!best || p.fitness > best.fitness) best = p;
    out.push({ x: p.iteration, y: best.fitness, val: best.val_fitness, id: best.id });
  }
  return out;
}

function renderCompare() {
  const table = clear($("compare-table"));
  const runs = state.runs.filter(r => state.data[r.index]);
  const head = el("tr", {}, el("th", {}, ""), ...runs.map(r => el("th", { title: r.path }, r.name)));
  table.appendChild(el("thead", {}, head));
  const rows = [
    ["state", d => d.state],
    ["proposals", d => d.proposals_done + " / " + (d.iterations_total ?? "?")],
    ["speed", d => num(d.speed.per_min) ? d.speed.per_min.toFixed(1) + " / min" : "-"],
    ["time left", d => d.speed.eta_s !== null ? dur(d.speed.eta_s) : "-"],
    ["best fitness (train)", d => d.best ? fmt(d.best.fitness) : "-"],
    ["gain vs best seed", d => d.best ? pct(d.best.gain_vs_best_seed) : "-"],
    ["validation fitness", d => d.best ? fmt(d.best.validation_fitness) : "-"],
    ["held-out fitness (BM25 there)", d => d.heldout ? fmt(d.heldout.fitness) + " (" + fmt(d.heldout.reference_fitness) + ")" : "-"],
    ["accepted / failed / duplicate / cut", d => [d.proposals.accepted, d.proposals.failed, d.proposals.duplicate,
                                                  d.proposals.rejected_cascade].join(" / ")],
    ["elites", d => d.islands.map(x => x.elites).join(" + ")],
    ["suite", d => d.config.suite || (d.config.datasets || []).join(", ") || "-"],
    ["proposer", d => d.config.llm || "-"],
    ["cost", d => "$" + (d.cost_usd || 0).toFixed(4)],
  ];
  const body = el("tbody");
  for (const [label, f] of rows) {
    body.appendChild(el("tr", {}, el("th", { className: "head" }, label),
      ...runs.map(r => el("td", { className: "num" }, f(state.data[r.index])))));
  }
  table.appendChild(body);
  const series = runs.map((r, k) => ({
    kind: "step", color: RUN_COLORS[k % RUN_COLORS.length], label: r.name,
    points: bestSoFar(state.points[r.index] || []).map(s => [s.x, s.y])
  }));
  plot($("compare-plot"), series, "iteration", "best fitness so far (train)");
}

// -- one run ------------------------------------------------------------------------------------------------

function card(key, label, value, sub) {
  return el("div", { className: "card", "data-key": key },
    el("div", { className: "k" }, label), el("div", { className: "v" }, value), sub ? el("div", { className: "s" }, sub) : null);
}

function renderRun() {
  const info = state.runs[state.current];
  const d = state.data[state.current];
  $("run-title").textContent = "run " + (info ? info.name : "");
  $("run-path").textContent = info ? info.path : "";
  if (!d) return;
  const total = d.iterations_total;
  $("progress-bar").style.width = (total ? Math.min(100, 100 * d.proposals_done / total) : 0) + "%";
  const p = d.proposals;
  const best = d.best;
  const held = d.heldout;
  const cards = clear($("cards"));
  cards.append(
    card("state", "state", d.state.split(" (")[0], d.alive ? "pid " + d.writer_pid : d.state),
    card("proposals", "proposals", d.proposals_done + " / " + (total ?? "?"), "last iteration " + d.last_iteration),
    card("speed", "speed", num(d.speed.per_min) ? d.speed.per_min.toFixed(1) + " / min" : "-",
      d.speed.eta_s !== null ? "about " + dur(d.speed.eta_s) + " left" : "elapsed " + dur(d.elapsed_s)),
    card("best", "best fitness", best ? fmt(best.fitness) : "-",
      best ? "#" + best.id + " " + pct(best.gain_vs_best_seed) + " vs best seed" : "no accepted program yet"),
    card("validation", "validation", best ? fmt(best.validation_fitness) : "-",
      best && num(best.gap) ? "gap " + (best.gap >= 0 ? "+" : "") + best.gap.toFixed(4) : ""),
    card("heldout", "held-out", held ? fmt(held.fitness) : "-",
      held ? "BM25 " + fmt(held.reference_fitness) + " (#" + held.id + ")" : "not tracked"),
    card("outcomes", "accepted / failed", p.accepted + " / " + p.failed, p.duplicate + " duplicate, " + p.rejected_cascade + " cut"),
    card("cost", "LLM cost", "$" + (d.cost_usd || 0).toFixed(4),
      (d.prompt_tokens + d.completion_tokens).toLocaleString() + " tokens"),
  );
  const points = state.points[state.current] || [];
  // redraw a section only when what it shows changed (a poll often brings news for one part only)
  once("fitness", [points.length, d.last_iteration, d.seeds, d.heldout_history.length], () => renderFitness(d, points));
  once("outcomes", [d.proposals, d.failure_reasons], () => renderOutcomes(d));
  once("grids", [d.grid, state.selected], () => renderGrids(d));
  once("top", [d.top, d.collections], () => renderTop(d));
}

function once(section, inputs, draw) {
  const key = state.current + ":" + JSON.stringify(inputs);
  if (state.drawn[section] === key) return;
  state.drawn[section] = key;
  draw();
}

function renderFitness(d, points) {
  const accepted = points.filter(p => p.status === "accepted" && num(p.fitness) && p.iteration > 0
                                      && p.operator !== "migration");
  const steps = bestSoFar(points);
  const last = Math.max(1, d.last_iteration || 0, ...points.map(p => p.iteration));
  if (steps.length) steps.push({ x: last, y: steps[steps.length - 1].y, val: steps[steps.length - 1].val });
  const series = [
    { kind: "dots", color: COLORS.dots, label: "accepted program", points: accepted.map(p => [p.iteration, p.fitness]) },
    { kind: "step", color: COLORS.best, label: "best so far (train)", points: steps.map(s => [s.x, s.y]) },
  ];
  if (steps.some(s => num(s.val))) {
    series.push({ kind: "step", color: COLORS.val, label: "its validation fitness",
                  points: steps.filter(s => num(s.val)).map(s => [s.x, s.val]) });
  }
  const bm25 = d.seeds.bm25 ? d.seeds.bm25.fitness : d.seed_best;
  const held = (d.heldout_history || []).filter(h => num(h.fitness) && num(h.reference_fitness) && h.reference_fitness > 0);
  if (held.length && num(bm25)) {
    series.push({ kind: "line", color: COLORS.held, label: "held-out (scaled)",
                  points: held.map(h => [h.iteration, h.fitness * bm25 / h.reference_fitness]) });
  }
  Object.entries(d.seeds).forEach(([name, s], k) => {
    if (num(s.fitness)) series.push({ kind: "hline", color: SEED_COLORS[k % SEED_COLORS.length], label: "seed " + name, y: s.fitness });
  });
  plot($("fitness-plot"), series, "iteration", "fitness");
}

function renderOutcomes(d) {
  const bar = clear($("outcome-bar"));
  const total = Object.values(d.proposals).reduce((a, b) => a + b, 0);
  for (const [k, n] of Object.entries(d.proposals)) {
    if (!n) continue;
    const part = el("div", { title: k + ": " + n });
    part.style.width = (100 * n / total) + "%";
    part.style.background = OUTCOME_COLORS[k] || "#7f7f7f";
    bar.appendChild(part);
  }
  const table = clear($("reasons"));
  table.appendChild(el("thead", {}, el("tr", {}, el("th", {}, "outcome"), el("th", {}, "proposals"))));
  const body = el("tbody");
  for (const [k, n] of Object.entries(d.proposals)) body.appendChild(el("tr", {}, el("td", {}, k), el("td", { className: "num" }, n)));
  for (const [k, n] of Object.entries(d.failure_reasons)) {
    body.appendChild(el("tr", {}, el("td", {}, "  not accepted: " + k), el("td", { className: "num" }, n)));
  }
  table.appendChild(body);
}

function gainColor(gain, span) {
  if (!num(gain)) return "#f0f2f5";
  const t = Math.max(-1, Math.min(1, gain / span));
  const [r, g, b] = t >= 0 ? [214, 96, 77] : [67, 147, 195];
  const a = Math.abs(t);
  const mix = (c) => Math.round(255 + (c - 255) * a);
  return "rgb(" + mix(r) + "," + mix(g) + "," + mix(b) + ")";
}

function renderGrids(d) {
  // The grids' cells are built once per grid shape and then updated in place: a poll that redraws them never
  // replaces the element under a pointer in the middle of a click.
  const g = d.grid;
  const shape = state.current + ":" + JSON.stringify([g.y, g.x, g.islands.map(isl => isl.island)]);
  if (state.gridShape !== shape) buildGrids(g, shape);
  const gains = g.islands.flatMap(isl => isl.cells.map(c => Math.abs(c.gain || 0)));
  const span = Math.max(0.005, ...gains);
  for (const isl of g.islands) {
    const byPos = new Map(isl.cells.map(c => [c.y + ":" + c.x, c]));
    $("grid-title-" + isl.island).textContent = "island " + isl.island + ": " + isl.elites + " elites";
    for (const td of document.querySelectorAll('.grid[data-island="' + isl.island + '"] td.cell')) {
      const c = byPos.get(td.dataset.pos);
      const button = td.firstChild;
      if (!c || c.id === null) {
        td.removeAttribute("data-id");
        td.title = "";
        button.textContent = "";
        button.disabled = true;
        td.style.background = "";
        td.classList.remove("selected");
        continue;
      }
      td.setAttribute("data-id", c.id);
      td.title = "#" + c.id + " " + c.operator + ", fitness " + fmt(c.fitness) + " (" + pct(c.gain) + " vs best seed)" +
                 (c.elites > 1 ? ", best of " + c.elites + " elites over " + g.folded.join(", ") : "");
      button.textContent = fmt(c.fitness, 3);
      button.disabled = false;
      td.style.background = gainColor(c.gain, span);
      td.classList.toggle("selected", !!(state.selected && state.selected.run === state.current && state.selected.id === c.id));
    }
  }
}

function buildGrids(g, shape) {
  state.gridShape = shape;
  $("grid-note").textContent = "rows: " + g.y.name + (g.x ? "; columns: " + g.x.name : "") +
    (g.folded.length ? "; best elite over " + g.folded.join(", ") : "") +
    ". Each cell shows its elite's fitness, coloured by its gain over the best seed (red better, blue worse); click a cell to open its program.";
  const list = clear($("grid-list"));
  const nx = g.x ? g.x.labels.length : 1;
  for (const isl of g.islands) {
    const body = el("tbody");
    for (let y = g.y.labels.length - 1; y >= 0; y--) {
      const row = el("tr", {}, el("th", { className: "axis" }, g.y.labels[y]));
      for (let x = 0; x < nx; x++) {
        const td = el("td", { className: "cell", "data-island": isl.island, "data-pos": y + ":" + x });
        td.appendChild(el("button", { onclick: () => { if (td.dataset.id) openProgram(state.current, +td.dataset.id); } }));
        row.appendChild(td);
      }
      body.appendChild(row);
    }
    if (g.x) body.appendChild(el("tr", {}, el("th", {}, ""), ...g.x.labels.map(l => el("th", { className: "axis" }, l))));
    list.appendChild(el("div", { className: "grid", "data-island": isl.island },
      el("h3", { id: "grid-title-" + isl.island }), el("table", {}, body)));
  }
}

function renderTop(d) {
  // rows are reused (their cells' text updated), for the same reason as the grids' cells
  const table = $("top-table");
  const colls = d.collections;
  const head = JSON.stringify(colls);
  if (state.topHead !== head) {
    state.topHead = head;
    clear(table);
    table.appendChild(el("thead", {}, el("tr", {}, ...["#", "id", "operator", "island", "iteration", "fitness", "val", "latency"]
      .map(h => el("th", {}, h)), ...colls.map(c => el("th", { title: c.address }, c.label, el("br"), "nDCG@10 / R@100")))));
    const body = el("tbody");
    body.addEventListener("click", (ev) => {
      const tr = ev.target.closest("tr[data-id]");
      if (tr) openProgram(state.current, +tr.dataset.id);
    });
    table.appendChild(body);
  }
  const body = table.tBodies[0];
  const bm25 = d.seeds.bm25 ? d.seeds.bm25.fitness : null;
  d.top.forEach((r, k) => {
    const gain = num(bm25) && r.id !== d.seeds.bm25.id ? " (" + pct(r.fitness / bm25 - 1) + ")" : "";
    const cells = [[r.rank, "num"], ["#" + r.id, "num"], [r.operator + (r.seed_name ? " (" + r.seed_name + ")" : ""), ""],
      [r.island, "num"], [r.iteration, "num"], [fmt(r.fitness) + gain, "num"], [fmt(r.val_fitness), "num"],
      [num(r.latency_ratio) ? r.latency_ratio.toFixed(2) + "×" : "-", "num"],
      ...colls.map(c => { const m = r.metrics[c.address] || {}; return [fmt(m["ndcg@10"]) + " / " + fmt(m["recall@100"]), "num"]; })];
    let tr = body.rows[k];
    if (!tr || tr.cells.length !== cells.length) {
      const fresh = el("tr", { className: "clickable" }, ...cells.map(([, cls]) => el("td", { className: cls })));
      if (tr) body.replaceChild(fresh, tr); else body.appendChild(fresh);
      tr = fresh;
    }
    tr.setAttribute("data-id", r.id);
    cells.forEach(([text], i) => { if (tr.cells[i].textContent !== String(text)) tr.cells[i].textContent = text; });
  });
  while (body.rows.length > d.top.length) body.deleteRow(-1);
}

// -- one program --------------------------------------------------------------------------------------------

async function openProgram(run, id) {
  let r;
  try {
    r = await getJSON("/api/runs/" + run + "/programs/" + encodeURIComponent(id));
  } catch (e) {
    showError("program " + id + ": " + e.message);
    return;
  }
  state.selected = { run, id: r.body.id };
  renderProgram(run, r.body);
  document.querySelectorAll(".grid td.cell.selected").forEach(td => td.classList.remove("selected"));
  document.querySelectorAll('.grid td.cell[data-id="' + r.body.id + '"]').forEach(td => td.classList.add("selected"));
  $("program").scrollIntoView({ block: "start" });
}

function programButton(run, p, current, role) {
  const label = "#" + p.id + " " + p.operator + (p.seed_name ? " (" + p.seed_name + ")" : "") + " " + fmt(p.fitness);
  return el("button", { className: (current ? "current" : "") + (p.status !== "accepted" ? " failed" : ""),
                        title: p.status + (p.failure_reason ? ": " + p.failure_reason : "") + ", island " + p.island +
                               ", iteration " + p.iteration, "data-id": p.id, "data-role": role,
                        onclick: () => openProgram(run, p.id) }, label);
}

function renderProgram(run, p) {
  $("program").hidden = false;
  $("program-title").textContent = "program #" + p.id + " — " + p.operator + ", " + p.status;
  const parts = ["island " + p.island, "generation " + p.generation, "iteration " + p.iteration,
                 "parents " + (p.parent_ids.length ? p.parent_ids.map(x => "#" + x).join(", ") : "-"),
                 "fitness " + fmt(p.fitness), "validation " + fmt(p.val_fitness),
                 "latency " + (num(p.latency_ratio) ? p.latency_ratio.toFixed(2) + "× BM25" : "-")];
  if (p.model) parts.push("model " + p.model + " (" + (p.prompt_tokens + p.completion_tokens) + " tokens, $" + p.cost_usd.toFixed(4) + ")");
  if (p.direction) parts.push("direction " + p.direction);
  $("program-meta").textContent = parts.join(" · ");
  const failure = $("program-failure");
  failure.hidden = !(p.failure_reason || p.failure_detail);
  failure.textContent = p.failure_reason ? "not accepted: " + p.failure_reason + (p.failure_detail ? "\n" + p.failure_detail : "") : "";
  // lineage: seed first, each step nested in the one before; crossover partners beside a step; children last
  const tree = clear($("program-lineage"));
  let holder = tree;
  p.lineage.forEach((step, k) => {
    const ul = el("ul");
    const li = el("li", {}, programButton(run, step, step.id === p.id, "step"));
    if (num(step.delta)) li.appendChild(el("span", { className: "side " + (step.delta > 0 ? "up" : step.delta < 0 ? "down" : "") },
      (step.delta >= 0 ? "+" : "") + step.delta.toFixed(4)));
    for (const o of step.other_parents) li.append(el("span", { className: "side" }, "crossed with"), programButton(run, o, false, "partner"));
    ul.appendChild(li);
    holder.appendChild(ul);
    holder = li;
  });
  if (p.children.length) {
    const ul = el("ul");
    for (const c of p.children) ul.appendChild(el("li", {}, el("span", { className: "side" }, "child"), programButton(run, c, false, "child")));
    holder.appendChild(ul);
  }
  // metrics beside the parent's and the seed's
  const table = clear($("program-metrics"));
  const labels = Object.fromEntries(p.collections.map(c => [c.address, c.label]));
  table.appendChild(el("thead", {}, el("tr", {}, ...["collection", "metric", "#" + p.id,
    p.parent ? "parent #" + p.parent.id : "parent", "Δ", p.seed ? "seed " + (p.seed.seed_name || "") : "seed", "Δ"].map(h => el("th", {}, h)))));
  const body = el("tbody");
  const delta = (a, b) => num(a) && num(b) ? ((a - b >= 0 ? "+" : "") + (a - b).toFixed(4)) : "";
  for (const row of p.comparison) {
    body.appendChild(el("tr", {}, el("td", { title: row.collection || "" }, row.collection ? (labels[row.collection] || row.collection) : "all"),
      el("td", {}, row.metric), el("td", { className: "num" }, fmt(row.value)), el("td", { className: "num" }, fmt(row.parent)),
      el("td", { className: "num" }, delta(row.value, row.parent)), el("td", { className: "num" }, fmt(row.seed)),
      el("td", { className: "num" }, delta(row.value, row.seed))));
  }
  table.appendChild(body);
  $("program-explanation").textContent = p.explanation || "(no explanation recorded)";
  $("program-code").textContent = p.code;
  const diff = clear($("program-diff"));
  $("program-diff-title").textContent = p.parent ? "Diff against its parent #" + p.parent.id : "Diff against its parent (none: a seed)";
  if (p.diff === null) diff.textContent = "(no parent)";
  else if (!p.diff) diff.textContent = "(identical code)";
  else {
    for (const line of p.diff.split("\n")) {
      const cls = line.startsWith("+++") || line.startsWith("---") ? "file" : line.startsWith("+") ? "add"
        : line.startsWith("-") ? "del" : line.startsWith("@@") ? "hunk" : null;
      diff.appendChild(cls ? el("span", { className: cls }, line) : document.createTextNode(line + "\n"));
    }
  }
}

// -- plots (SVG elements, no library) -----------------------------------------------------------------------

function ticks(lo, hi, n) {
  const span = hi - lo || 1;
  const step0 = Math.pow(10, Math.floor(Math.log10(span / n)));
  const step = [1, 2, 5, 10].map(m => m * step0).find(s => span / s <= n) || step0 * 10;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toFixed(10));
  return out;
}

function plot(figure, series, xlabel, ylabel) {
  clear(figure);
  const W = 900, H = 300, L = 60, R = 12, T = 10, B = 36;
  const xs = [], ys = [];
  for (const s of series) {
    if (s.kind === "hline") { ys.push(s.y); continue; }
    for (const [x, y] of s.points) { xs.push(x); ys.push(y); }
  }
  const root = svgEl("svg", { viewBox: "0 0 " + W + " " + H, role: "img" });
  figure.appendChild(root);
  if (!xs.length && !ys.length) {
    root.appendChild(svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no programs yet"));
    return;
  }
  let [x0, x1] = [Math.min(0, ...xs), Math.max(1, ...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const pad = (y1 - y0) * 0.08 || Math.abs(y1) * 0.02 || 0.01;
  y0 -= pad; y1 += pad;
  const sx = x => L + (x - x0) / (x1 - x0 || 1) * (W - L - R);
  const sy = y => T + (1 - (y - y0) / (y1 - y0 || 1)) * (H - T - B);
  for (const v of ticks(y0, y1, 6)) {
    root.appendChild(svgEl("line", { x1: L, x2: W - R, y1: sy(v), y2: sy(v), class: "gridline" }));
    root.appendChild(svgEl("text", { x: L - 6, y: sy(v) + 4, "text-anchor": "end" }, v.toFixed(3)));
  }
  for (const v of ticks(x0, x1, 10)) {
    root.appendChild(svgEl("text", { x: sx(v), y: H - B + 16, "text-anchor": "middle" }, v));
  }
  root.appendChild(svgEl("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }));
  root.appendChild(svgEl("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" }));
  root.appendChild(svgEl("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, xlabel));
  root.appendChild(svgEl("text", { x: 12, y: (T + H - B) / 2, "text-anchor": "middle",
                                   transform: "rotate(-90 12 " + (T + H - B) / 2 + ")" }, ylabel));
  const legend = el("div", { className: "legend" });
  for (const s of series) {
    if (s.kind === "hline") {
      root.appendChild(svgEl("line", { x1: L, x2: W - R, y1: sy(s.y), y2: sy(s.y), stroke: s.color,
                                       "stroke-dasharray": "5 4", "stroke-width": 1 }));
    } else if (s.kind === "dots") {
      // one path of zero-length round-capped strokes: a single element however many programs a run has
      const d = s.points.map(([x, y]) => "M" + sx(x).toFixed(1) + " " + sy(y).toFixed(1) + "h0").join("");
      root.appendChild(svgEl("path", { d: d || "M0 0", stroke: s.color, "stroke-opacity": 0.7, "stroke-width": 5,
                                       "stroke-linecap": "round", fill: "none" }));
    } else if (s.points.length) {
      let d = "";
      s.points.forEach(([x, y], k) => {
        if (k === 0) d += "M" + sx(x) + " " + sy(y);
        else d += (s.kind === "step" ? " H" + sx(x) + " V" + sy(y) : " L" + sx(x) + " " + sy(y));
      });
      root.appendChild(svgEl("path", { d, fill: "none", stroke: s.color, "stroke-width": s.kind === "step" ? 2 : 1.5 }));
      if (s.kind === "line") for (const [x, y] of s.points) root.appendChild(svgEl("circle", { cx: sx(x), cy: sy(y), r: 3, fill: s.color }));
    }
    const sw = el("span", { className: "sw" });
    sw.style.background = s.color;
    legend.appendChild(el("span", {}, sw, s.label));
  }
  figure.appendChild(legend);
}

document.addEventListener("DOMContentLoaded", boot);
