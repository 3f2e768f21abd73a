// The monthly review's charts, drawn with the vendored Chart.js from the figures the
// page embeds (json_script). Labels are data: Chart.js draws them on a canvas, never as HTML.
(function () {
  "use strict";
  const source = document.getElementById("report-data");
  if (!source || typeof Chart === "undefined") return;
  const data = JSON.parse(source.textContent);
  const css = getComputedStyle(document.documentElement);
  const color = (name, fallback) => (css.getPropertyValue(name) || "").trim() || fallback;
  const palette = {
    policy: color("--ok", "#1f7a3a"),
    operator: color("--accent", "#2454d6"),
    timeout: color("--danger", "#b3261e"),
    agent: color("--muted", "#5b6475"),
    standing: "#7c3aed",
    pending: "#c9a227",
  };
  const common = { responsive: true, maintainAspectRatio: false, animation: false };

  function draw(id, config) {
    const canvas = document.getElementById(id);
    if (canvas) new Chart(canvas, config);
  }

  const days = data.daily.map((d) => d.day.slice(5));
  draw("chart-daily", {
    type: "bar",
    data: {
      labels: days,
      datasets: ["policy", "standing", "operator", "timeout", "agent", "pending"].map((key) => ({
        label: key === "agent" ? "cancelled" : key,
        data: data.daily.map((d) => d[key]),
        backgroundColor: palette[key],
      })),
    },
    options: { ...common, scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } },
  });

  const buckets = data.ttd_histogram.map((b, i, all) =>
    b.le === null ? "> " + all[i - 1].le + "s" : "≤ " + b.le + "s");
  draw("chart-ttd", {
    type: "bar",
    data: { labels: buckets, datasets: [{ label: "human decisions", data: data.ttd_histogram.map((b) => b.count), backgroundColor: palette.operator }] },
    options: { ...common, scales: { y: { beginAtZero: true } } },
  });

  draw("chart-rules", {
    type: "bar",
    data: {
      labels: data.rules.map((r) => r.name.split("+").join(" + ")),
      datasets: [
        { label: "critical", data: data.rules.map((r) => r.critical), backgroundColor: palette.timeout },
        { label: "trusted bypass", data: data.rules.map((r) => r.trusted_bypasses), backgroundColor: palette.agent },
      ],
    },
    options: { ...common, indexAxis: "y", scales: { x: { stacked: true, beginAtZero: true }, y: { stacked: true } } },
  });

  if (data.alerts_per_day) {
    draw("chart-alerts", {
      type: "bar",
      data: {
        labels: data.alerts_per_day.map((d) => d.day.slice(5)),
        datasets: [
          { label: "warning", data: data.alerts_per_day.map((d) => d.warning), backgroundColor: palette.pending },
          { label: "critical", data: data.alerts_per_day.map((d) => d.critical), backgroundColor: palette.timeout },
        ],
      },
      options: { ...common, scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } },
    });
  }

  const print = document.getElementById("print");
  if (print) print.addEventListener("click", () => window.print());
})();
