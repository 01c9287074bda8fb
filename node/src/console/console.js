// The Hanse console: reads /api/* every two seconds and draws the page shown.
"use strict";

const token = (() => {
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    sessionStorage.setItem("hanse-token", decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + "#overview");
  }
  return sessionStorage.getItem("hanse-token");
})();

async function api(path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const answer = await fetch(path, { headers });
  if (!answer.ok) {
    throw new Error(path + ": " + answer.status + " " + (await answer.text()));
  }
  return answer.json();
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function row(cells, attributes) {
  const tr = document.createElement("tr");
  for (const [name, value] of Object.entries(attributes || {})) tr.dataset[name] = value;
  for (const cell of cells) {
    const td = element("td", cell.text ?? cell, cell.num ? "num" : undefined);
    if (cell.field) td.dataset.field = cell.field;
    tr.appendChild(td);
  }
  return tr;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function range(start, end) {
  return "[" + (start || "−∞") + ", " + (end || "+∞") + ")";
}

function showOverview(cluster) {
  const totals = document.getElementById("totals");
  totals.replaceChildren();
  const live = cluster.nodes.filter((n) => n.live).length;
  for (const [label, value] of [
    ["nodes live", live + " / " + cluster.nodes.length],
    ["shards", cluster.shards.length],
    ["reads/s", cluster.reads_per_sec],
    ["writes/s", cluster.writes_per_sec],
  ]) {
    const card = element("div", undefined, "card");
    card.appendChild(element("div", String(value), "big"));
    card.appendChild(element("div", label));
    totals.appendChild(card);
  }
  const regions = document.getElementById("regions");
  regions.replaceChildren();
  const byRegion = new Map();
  for (const node of cluster.nodes) {
    if (!byRegion.has(node.region)) byRegion.set(node.region, []);
    byRegion.get(node.region).push(node);
  }
  for (const [name, nodes] of [...byRegion.entries()].sort()) {
    const box = element("div", undefined, "region");
    box.dataset.region = name;
    box.appendChild(element("h3", name));
    for (const node of nodes) {
      const line = element("div", undefined, "node");
      line.dataset.node = node.id;
      line.appendChild(element("span", "node " + node.id + " · " + node.addr));
      line.appendChild(element("span", node.leaders + " leaders / " + node.replicas + " replicas"));
      line.appendChild(element("span", node.live ? "live" : "down (" + node.seconds_since_report + " s)",
        node.live ? "live" : "down"));
      box.appendChild(line);
    }
    regions.appendChild(box);
  }
}

function showShards(cluster) {
  const body = document.querySelector("#shard-table tbody");
  body.replaceChildren();
  for (const s of cluster.shards) {
    const replicas = s.replicas.map((r) => r.node + (r.role === "learner" ? " (learner)" : "") + "@" + r.region).join(", ");
    body.appendChild(row([
      { text: String(s.id), field: "id" },
      { text: s.start || "−∞", field: "start" },
      { text: s.end || "+∞", field: "end" },
      { text: s.epoch, field: "epoch" },
      { text: s.leader_node ? s.leader_node + "@" + s.leader_region : "none", field: "leader" },
      { text: replicas, field: "replicas" },
      { text: bytes(s.size_bytes), num: true, field: "size" },
      { text: String(s.keys), num: true, field: "keys" },
      { text: String(s.reads_per_sec), num: true, field: "reads" },
      { text: String(s.writes_per_sec), num: true, field: "writes" },
    ], { shard: s.id }));
  }
}

function showPlanner(page) {
  const summary = document.getElementById("planner-summary");
  const p = page.planner;
  summary.textContent = p
    ? "mode " + p.mode + ", " + p.ticks + " ticks; the last decided by " + p.acting +
      (p.fallback ? " (heuristic stood in: " + p.fallback + ")" : "") +
      (p.refused.length ? "; refused: " + p.refused.join("; ") : "")
    : "no planner runs: the balancer's rules decide";
  const decisions = document.querySelector("#decision-table tbody");
  decisions.replaceChildren();
  for (const d of (p ? p.decisions : []).slice().reverse()) {
    decisions.appendChild(row([String(d.tick), d.policy, d.action,
      d.features.map((f) => f.toFixed(2)).join(" ")]));
  }
  const actions = document.querySelector("#action-table tbody");
  actions.replaceChildren();
  for (const a of page.actions.slice().reverse()) {
    actions.appendChild(row([new Date(a.unix_ms).toLocaleTimeString(), a.kind,
      String(a.shard_id), a.decided_by, a.detail]));
  }
}

// The heat map: one row per key interval between the range boundaries any column saw,
// one column per interval of time; a cell holds the load of the shard holding its keys.
function heatMatrix(map, kind) {
  const boundaries = new Set();
  for (const column of map.columns) for (const r of column.ranges) boundaries.add(r.start);
  const rows = [...boundaries].sort();
  const values = map.columns.map((column) => rows.map((key) => {
    const r = column.ranges.find((r) => r.start <= key && (r.end === "" || key < r.end));
    if (!r) return 0;
    return kind === "reads" ? r.reads : kind === "writes" ? r.writes : r.reads + r.writes;
  }));
  return { rows, values, times: map.columns.map((c) => c.unix_ms) };
}

function showHeat(map) {
  const kind = document.querySelector("input[name=heat-kind]:checked").value;
  const heat = heatMatrix(map, kind);
  window.hanseHeat = heat;
  const canvas = document.getElementById("heat-canvas");
  const g = canvas.getContext("2d");
  g.fillStyle = "#0b0f14";
  g.fillRect(0, 0, canvas.width, canvas.height);
  const columns = heat.values.length, rows = heat.rows.length;
  const keys = document.getElementById("heat-keys");
  keys.replaceChildren(...heat.rows.map((k) => element("div", k || "−∞")));
  keys.style.height = canvas.height + "px";
  if (!columns || !rows) return;
  const max = Math.max(1, ...heat.values.flat());
  const w = canvas.width / columns, h = canvas.height / rows;
  for (let c = 0; c < columns; c++) {
    for (let r = 0; r < rows; r++) {
      const v = heat.values[c][r];
      if (!v) continue;
      const t = Math.sqrt(v / max);
      g.fillStyle = "rgb(" + Math.round(60 + 195 * t) + "," + Math.round(30 + 190 * t) + "," + Math.round(20 + 40 * t) + ")";
      g.fillRect(Math.floor(c * w), Math.floor(r * h), Math.ceil(w), Math.ceil(h));
    }
  }
  document.getElementById("heat-legend").textContent =
    "brightest: " + max + " " + kind + "/s · " + columns + " columns of " + map.interval_ms / 1000 + " s";
}

let heatData = null;
async function refresh() {
  const status = document.getElementById("status");
  try {
    const [cluster, planner, heat] = await Promise.all([
      api("/api/cluster"), api("/api/planner"), api("/api/heatmap"),
    ]);
    showOverview(cluster);
    showShards(cluster);
    showPlanner(planner);
    heatData = heat;
    showHeat(heat);
    status.textContent = "node " + cluster.served_by + " · " + new Date().toLocaleTimeString();
    if (window.hanseRendered === undefined) window.hanseRendered = performance.now();
  } catch (e) {
    status.textContent = String(e.message || e);
  }
}

function showPage() {
  const name = (location.hash.replace("#", "") || "overview").split("&")[0];
  for (const page of document.querySelectorAll(".page")) page.classList.toggle("active", page.id === name);
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.page === name);
}

window.addEventListener("hashchange", showPage);
for (const input of document.querySelectorAll("input[name=heat-kind]")) {
  input.addEventListener("change", () => heatData && showHeat(heatData));
}
showPage();
refresh();
setInterval(refresh, 2000);
