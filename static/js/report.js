// The monthly review's charts, drawn with the vendored Chart.js from the figures the
// page embeds (json_script), in the site's one chart style (charts.js). Labels are
// data: Chart.js draws them on a canvas, never as HTML.
import { countAxis, drawChart, palette } from "./charts.js";

const source = document.getElementById("report-data");
if (source && typeof Chart !== "undefined") {
  const data = JSON.parse(source.textContent);
  const colours = { policy: palette.ok, operator: palette.accent, timeout: palette.danger, agent: palette.muted, standing: "#7c3aed", pending: palette.warn };
  const nothing = (what) => `Nothing this month: ${what}.`;

  drawChart(document.getElementById("chart-daily"), {
    type: "bar",
    data: {
      labels: data.daily.map((d) => d.day.slice(5)),
      datasets: ["policy", "standing", "operator", "timeout", "agent", "pending"].map((key) => ({
        label: key === "agent" ? "cancelled" : key,
        data: data.daily.map((d) => d[key]),
        backgroundColor: colours[key],
      })),
    },
    options: { scales: { x: { stacked: true, ticks: { maxRotation: 0, autoSkipPadding: 8 } }, y: countAxis({ stacked: true }) } },
  }, { empty: nothing("no request was submitted") });

  const buckets = data.ttd_histogram.map((b, i, all) => (b.le === null ? `> ${all[i - 1].le} s` : `≤ ${b.le} s`));
  drawChart(document.getElementById("chart-ttd"), {
    type: "bar",
    data: { labels: buckets, datasets: [{ label: "human decisions", data: data.ttd_histogram.map((b) => b.count), backgroundColor: colours.operator }] },
    options: { scales: { x: { ticks: { maxRotation: 0, autoSkip: false } }, y: countAxis() } },
  }, { empty: nothing("no operator decided a request") });

  drawChart(document.getElementById("chart-rules"), {
    type: "bar",
    data: {
      // One rule per line, so a combination of three never runs off the chart.
      labels: data.rules.map((r) => r.name.split("+")),
      datasets: [
        { label: "critical", data: data.rules.map((r) => r.critical), backgroundColor: colours.timeout },
        { label: "trusted bypass", data: data.rules.map((r) => r.trusted_bypasses), backgroundColor: colours.agent },
      ],
    },
    options: { indexAxis: "y", scales: { x: countAxis({ stacked: true }), y: { stacked: true } } },
  }, { empty: nothing("no rule fired") });

  if (data.alerts_per_day) {
    drawChart(document.getElementById("chart-alerts"), {
      type: "bar",
      data: {
        labels: data.alerts_per_day.map((d) => d.day.slice(5)),
        datasets: [
          { label: "warning", data: data.alerts_per_day.map((d) => d.warning), backgroundColor: colours.pending },
          { label: "critical", data: data.alerts_per_day.map((d) => d.critical), backgroundColor: colours.timeout },
        ],
      },
      options: { scales: { x: { stacked: true, ticks: { maxRotation: 0, autoSkipPadding: 8 } }, y: countAxis({ stacked: true }) } },
    }, { empty: nothing("no memory alert was raised") });
  }
}

const print = document.getElementById("print");
if (print) print.addEventListener("click", () => window.print());
