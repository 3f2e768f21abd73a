// One chart style for every page: Chart.js defaults, binary sizes, time axes in the
// page's time format, integer steps for counts, and empty charts that say so.
/* global Chart */

const css = getComputedStyle(document.documentElement);
const colour = (name, fallback) => (css.getPropertyValue(name) || "").trim() || fallback;

export const palette = {
  accent: colour("--accent", "#2454d6"),
  ok: colour("--ok", "#1f7a3a"),
  danger: colour("--danger", "#b3261e"),
  warn: "#c9a227",
  muted: colour("--muted", "#545d6e"),
  grid: colour("--border", "#d9dde5"),
};

if (typeof Chart !== "undefined") {
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.font.size = 12;
  Chart.defaults.color = palette.muted;
  Chart.defaults.borderColor = palette.grid;
  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.plugins.legend.labels.boxWidth = 12;
}

// Sizes are binary everywhere: KiB, MiB, GiB, TiB (1024-based, as the kernel counts).
export function binaryBytes(n) {
  if (n === null || n === undefined || Number.isNaN(Number(n))) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = Number(n);
  let i = 0;
  while (Math.abs(value) >= 1024 && i < units.length - 1) {
    value /= 1024;
    i += 1;
  }
  return i === 0 ? `${value} B` : `${value.toFixed(1)} ${units[i]}`;
}

// Times as the page shows them (feed.js's localiseTimes: the browser's locale and its
// clock, 12- or 24-hour), to the minute.
const CLOCK = { hour: "numeric", minute: "2-digit" };
export function clock(ms) {
  return new Date(ms).toLocaleTimeString([], CLOCK);
}

const HOUR = 3600 * 1000;
const RANGES = {
  "1h": { span: HOUR, step: 10 * 60 * 1000 },
  "24h": { span: 24 * HOUR, step: 3 * HOUR },
  "7d": { span: 7 * 24 * HOUR, step: 24 * HOUR },
};

// An x axis (linear, epoch milliseconds) covering the whole range up to now, with one
// label per step and no label twice: clock times within a day, the day beyond.
export function timeAxis(range, now = Date.now()) {
  const { span, step } = RANGES[range] || RANGES["1h"];
  const today = new Date(now).toDateString();
  return {
    type: "linear",
    min: now - span,
    max: now,
    ticks: {
      stepSize: step,
      includeBounds: false,
      autoSkip: true,
      maxRotation: 0,
      callback(value) {
        const when = new Date(value);
        if (span > 24 * HOUR) return when.toLocaleDateString([], { weekday: "short", day: "numeric" });
        if (span === 24 * HOUR && when.toDateString() !== today) {
          return `${when.toLocaleDateString([], { weekday: "short" })} ${clock(value)}`;
        }
        return clock(value);
      },
    },
  };
}

// A count axis: whole numbers only, from zero.
export const countAxis = (extra = {}) => ({ beginAtZero: true, ticks: { precision: 0 }, ...extra });

// Draw a chart, or, when it has nothing to show, a sentence saying what is missing.
export function drawChart(canvas, config, { empty = "Nothing to show." } = {}) {
  if (!canvas) return null;
  const box = canvas.parentElement;
  const hasData = config.data.datasets.some((set) => set.data.some((v) => (v && typeof v === "object" ? v.y : v)));
  let note = box.querySelector(".chart-empty");
  if (!hasData) {
    canvas.hidden = true;
    if (!note) {
      note = document.createElement("p");
      note.className = "chart-empty muted";
      box.append(note);
    }
    note.textContent = empty;
    return null;
  }
  canvas.hidden = false;
  note?.remove();
  return new Chart(canvas, config);
}
