// /monitoring/: live pressure per host (pressure.sample), charts with the 80/90 lines,
// alerts raised and resolved live, leak suspects, one agent process's memory on demand.
// Host and process names come from machines and agents: inserted with textContent only.
/* global Chart */
import { connectFeed, localiseTimes, showState } from "./feed.js";

const root = document.querySelector(".monitoring");
const WARNING = Number(root.dataset.warning);
const CRITICAL = Number(root.dataset.critical);
const IS_OPERATOR = root.dataset.operator === "1";
const HOUR_MS = 3600 * 1000;
const charts = new Map(); // host -> Chart
let range = "1h";

function level(pressure) {
  if (pressure > CRITICAL) return "critical";
  if (pressure > WARNING) return "warning";
  return "ok";
}

function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(1)} ${units[i]}`;
}

function timeLabel(ms) {
  const d = new Date(ms);
  return range === "7d" ? d.toLocaleDateString([], { weekday: "short", hour: "2-digit", minute: "2-digit" })
    : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function threshold(label, value, colour) {
  return { label, data: [], borderColor: colour, borderDash: [6, 4], borderWidth: 1, pointRadius: 0, fill: false, value };
}

// A horizontal line across the visible range: two points at the ends of the data.
function spanLine(dataset, points) {
  if (!points.length) return [];
  return [{ x: points[0].x, y: dataset.value }, { x: points[points.length - 1].x, y: dataset.value }];
}

function makeChart(canvas, yTitle) {
  return new Chart(canvas, {
    type: "line",
    data: {
      datasets: [
        { label: "pressure %", data: [], borderColor: "#2454d6", backgroundColor: "rgba(36,84,214,.12)", fill: true, pointRadius: 0, borderWidth: 2 },
        { label: "max %", data: [], borderColor: "rgba(179,38,30,.5)", pointRadius: 0, borderWidth: 1, hidden: true },
        { label: "PSI some avg10", data: [], borderColor: "#8a5a00", pointRadius: 0, borderWidth: 1 },
        threshold(`warning ${WARNING}%`, WARNING, "#e0a100"),
        threshold(`critical ${CRITICAL}%`, CRITICAL, "#b3261e"),
      ],
    },
    options: {
      animation: false,
      parsing: false,
      normalized: true,
      maintainAspectRatio: false,
      interaction: { mode: "nearest", axis: "x", intersect: false },
      scales: {
        x: { type: "linear", ticks: { callback: (v) => timeLabel(v), maxTicksLimit: 8 } },
        y: { min: 0, max: 100, title: { display: true, text: yTitle } },
      },
      plugins: { legend: { labels: { boxWidth: 12 } }, tooltip: { callbacks: { title: (items) => new Date(items[0].parsed.x).toLocaleString() } } },
    },
  });
}

async function loadHost(card) {
  const host = card.dataset.host;
  let chart = charts.get(host);
  if (!chart) {
    chart = makeChart(card.querySelector("canvas"), "percent");
    charts.set(host, chart);
  }
  const response = await fetch(`/monitoring/series.json?host=${encodeURIComponent(host)}&range=${range}`, { headers: { Accept: "application/json" } });
  if (!response.ok) return;
  const body = await response.json();
  const avg = body.points.map((p) => ({ x: Date.parse(p.at), y: p.avg }));
  chart.data.datasets[0].data = avg;
  chart.data.datasets[1].data = body.points.map((p) => ({ x: Date.parse(p.at), y: p.max }));
  chart.data.datasets[1].hidden = range === "1h";
  chart.data.datasets[2].data = body.points.filter((p) => p.psi_some !== undefined && p.psi_some !== null).map((p) => ({ x: Date.parse(p.at), y: p.psi_some }));
  for (const i of [3, 4]) chart.data.datasets[i].data = spanLine(chart.data.datasets[i], avg);
  chart.update();
}

function hostCard(host) {
  let card = [...document.querySelectorAll(".host")].find((c) => c.dataset.host === host);
  if (card) return card;
  // A host that started reporting after the page loaded.
  document.getElementById("no-hosts")?.remove();
  card = document.createElement("article");
  card.className = "card host";
  card.dataset.host = host;
  const head = document.createElement("header");
  head.className = "host-head";
  const name = document.createElement("h3");
  name.className = "host-name";
  name.textContent = host;
  const gauge = document.createElement("p");
  gauge.className = "gauge";
  const value = document.createElement("span");
  value.className = "gauge-value";
  const meter = document.createElement("meter");
  Object.assign(meter, { min: 0, max: 100, low: WARNING, high: CRITICAL, optimum: 0 });
  gauge.append(value, "% ", meter);
  const info = document.createElement("p");
  info.className = "muted";
  const available = document.createElement("span");
  available.className = "available";
  const at = document.createElement("time");
  at.className = "at";
  info.append("available ", available, " · at ", at);
  head.append(name, gauge, info);
  const box = document.createElement("div");
  box.className = "chart-box";
  const canvas = document.createElement("canvas");
  canvas.className = "host-chart";
  box.append(canvas);
  card.append(head, box);
  document.getElementById("hosts").append(card);
  loadHost(card);
  return card;
}

function onPressure(event) {
  const card = hostCard(event.host);
  const value = card.querySelector(".gauge-value");
  value.textContent = event.pressure.toFixed(1);
  value.dataset.level = level(event.pressure);
  card.querySelector("meter").value = event.pressure;
  card.querySelector(".available").textContent = bytes(event.available_bytes);
  const at = card.querySelector("time.at");
  at.dateTime = event.at;
  at.textContent = new Date(event.at).toLocaleTimeString();
  const chart = charts.get(event.host);
  if (!chart || range !== "1h") return;
  const line = chart.data.datasets[0].data;
  line.push({ x: Date.parse(event.at), y: event.pressure });
  const since = Date.now() - HOUR_MS;
  while (line.length && line[0].x < since) line.shift();
  for (const i of [3, 4]) chart.data.datasets[i].data = spanLine(chart.data.datasets[i], line);
  chart.update("none");
}

function alertItem(alert) {
  const li = document.createElement("li");
  li.className = "alert";
  li.dataset.id = alert.id;
  li.dataset.severity = alert.severity;
  const strong = document.createElement("strong");
  strong.textContent = alert.severity;
  const where = document.createElement("span");
  where.className = "where";
  where.textContent = alert.process ? `${alert.host} · ${alert.process}` : alert.host;
  const started = new Date(alert.started_at).toLocaleTimeString();
  li.append(strong, " ", where, ` — ${Number(alert.value).toFixed(1)}% over ${alert.threshold}% since ${started} `);
  if (IS_OPERATOR) {
    const form = document.createElement("form");
    form.method = "post";
    form.action = `/monitoring/alerts/${encodeURIComponent(alert.id)}/acknowledge`;
    form.className = "ack-form";
    form.append(document.querySelector("#csrf input[name=csrfmiddlewaretoken]").cloneNode());
    const button = document.createElement("button");
    button.type = "submit";
    button.textContent = "Acknowledge";
    form.append(button);
    li.append(form);
  }
  return li;
}

function showAlerts(list) {
  const ul = document.getElementById("firing");
  const acknowledged = new Map([...ul.querySelectorAll("li[data-id]")].map((li) => [li.dataset.id, li]));
  ul.replaceChildren(...list.map((alert) => acknowledged.get(String(alert.id)) || alertItem(alert)));
  if (!list.length) {
    const li = document.createElement("li");
    li.className = "empty-note";
    li.textContent = "No alert is firing.";
    ul.append(li);
  }
}

function onAlert(event) {
  const ul = document.getElementById("firing");
  const existing = ul.querySelector(`li[data-id="${CSS.escape(String(event.alert.id))}"]`);
  if (event.type === "alert.resolved") {
    existing?.remove();
    if (!ul.querySelector("li[data-id]")) showAlerts([]);
    return;
  }
  if (existing) return;
  ul.querySelector(".empty-note")?.remove();
  ul.prepend(alertItem(event.alert));
}

// A finding: its samples, the fitted line of the judged span, nothing inserted as HTML.
async function drawLeak(article) {
  const response = await fetch(`/monitoring/leaks/${article.dataset.id}.json`, { headers: { Accept: "application/json" } });
  if (!response.ok) return;
  const body = await response.json();
  const mib = (p) => ({ x: Date.parse(p.at), y: p.rss / (1024 * 1024) });
  new Chart(article.querySelector(".leak-chart"), {
    type: "line",
    data: {
      datasets: [
        { label: "RSS (MiB)", data: body.points.map(mib), borderColor: "#1f7a3a", pointRadius: 0, borderWidth: 1.5 },
        { label: "fitted trend", data: body.fit.map(mib), borderColor: "#b3261e", borderDash: [6, 4], pointRadius: 0, borderWidth: 2 },
      ],
    },
    options: {
      animation: false, parsing: false, maintainAspectRatio: false,
      scales: { x: { type: "linear", ticks: { callback: (v) => new Date(v).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) } } },
      plugins: { legend: { labels: { boxWidth: 12 } } },
    },
  });
}

function onLeak(finding) {
  const list = document.getElementById("leaks");
  if (list.querySelector(`.leak[data-id="${finding.id}"]`)) return;
  list.querySelector(".empty-note")?.remove();
  const article = document.createElement("article");
  article.className = "leak";
  article.dataset.id = String(finding.id);
  article.dataset.status = finding.status;
  const title = document.createElement("h3");
  title.textContent = `${finding.process || "process"} (pid ${finding.pid}) on ${finding.host} · ${finding.agent ? `agent ${finding.agent}` : "host process"} · ${finding.status}`;
  const text = document.createElement("p");
  text.textContent = `Growing ${bytes(finding.slope_bytes_per_hour)}/h · first detected ${new Date(finding.first_detected_at).toLocaleString()} · memory runs out ${finding.exhaustion_at ? new Date(finding.exhaustion_at).toLocaleString() : "—"} (reload for evidence and actions)`;
  const box = document.createElement("div");
  box.className = "chart-box";
  const canvas = document.createElement("canvas");
  canvas.className = "leak-chart";
  box.append(canvas);
  article.append(title, text, box);
  list.prepend(article);
  drawLeak(article);
}

let processChart = null;
async function showProcess(row) {
  const params = new URLSearchParams({ agent: row.dataset.agent, host: row.dataset.host, pid: row.dataset.pid, range });
  const response = await fetch(`/monitoring/process.json?${params}`, { headers: { Accept: "application/json" } });
  if (!response.ok) return;
  const body = await response.json();
  document.getElementById("process-box").hidden = false;
  document.getElementById("process-title").textContent = `${row.cells[0].textContent} · ${row.cells[2].textContent} on ${row.dataset.host}`;
  const data = body.points.map((p) => ({ x: Date.parse(p.at), y: p.rss / (1024 * 1024) }));
  if (!processChart) {
    processChart = new Chart(document.getElementById("process-chart"), {
      type: "line",
      data: { datasets: [{ label: "RSS (MiB)", data, borderColor: "#1f7a3a", pointRadius: 0, borderWidth: 2 }] },
      options: { animation: false, parsing: false, maintainAspectRatio: false, scales: { x: { type: "linear", ticks: { callback: (v) => timeLabel(v) } }, y: { beginAtZero: true } } },
    });
  } else {
    processChart.data.datasets[0].data = data;
    processChart.update();
  }
}

for (const button of document.querySelectorAll(".range button")) {
  button.addEventListener("click", () => {
    range = button.dataset.range;
    for (const b of document.querySelectorAll(".range button")) b.setAttribute("aria-pressed", String(b === button));
    document.querySelectorAll(".host").forEach(loadHost);
  });
}
for (const button of document.querySelectorAll(".show-process")) {
  button.addEventListener("click", () => showProcess(button.closest("tr")));
}

localiseTimes();
document.querySelectorAll(".host").forEach(loadHost);
document.querySelectorAll(".leak").forEach(drawLeak);
connectFeed({
  onSnapshot: (snapshot) => showAlerts(snapshot.alerts),
  onEvent(event) {
    if (event.type === "pressure.sample") onPressure(event);
    else if (event.type === "alert.raised" || event.type === "alert.resolved") onAlert(event);
    else if (event.type === "leak.suspected") onLeak(event.finding);
  },
  onState: (state, delay) => showState(document.getElementById("live-status"), state, delay),
});
