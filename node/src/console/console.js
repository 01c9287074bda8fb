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

// The heat map as the node sends it: rows of key ranges, columns of time, and per
// column the reads and the writes of each row.
function heatMatrix(map, kind) {
  const values = map.times.map((_, c) => map.rows.map((_, r) =>
    kind === "reads" ? map.reads[c][r] : kind === "writes" ? map.writes[c][r] : map.reads[c][r] + map.writes[c][r]));
  return { rows: map.rows, values, times: map.times };
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
  let max = 1;
  for (const column of heat.values) for (const v of column) if (v > max) max = v;
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

function currentPage() {
  return (location.hash.replace("#", "") || "overview").split("&")[0];
}

let heatData = null;
let heatFetched = 0;
async function refresh() {
  const status = document.getElementById("status");
  try {
    // The heat map is the largest answer and changes once a column (10 s): it is fetched
    // while shown, at most every ten seconds.
    const wantHeat = currentPage() === "heatmap" && performance.now() - heatFetched > 10000;
    const [cluster, heat] = await Promise.all([
      api("/api/cluster"), wantHeat ? api("/api/heatmap") : null,
    ]);
    showOverview(cluster);
    showShards(cluster);
    showPlanner(cluster);
    if (heat) {
      heatData = heat;
      heatFetched = performance.now();
      showHeat(heat);
    }
    status.textContent = "node " + cluster.served_by + " · " + new Date().toLocaleTimeString();
    if (window.hanseRendered === undefined) window.hanseRendered = performance.now();
  } catch (e) {
    status.textContent = String(e.message || e);
  }
}

function showPage() {
  const name = currentPage();
  if (name === "heatmap" && !heatData) refresh();
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
