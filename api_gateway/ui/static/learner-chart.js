// Draws the learner page's chart from the JSON embedded in the page (one line per aspect).
// The same numbers are in the table under the chart, so nothing depends on this script.
(function () {
  "use strict";
  var holder = document.getElementById("chart-data");
  var canvas = document.getElementById("aspect-chart");
  if (!holder || !canvas || typeof Chart === "undefined") { return; }
  var data = JSON.parse(holder.textContent);
  var colours = { accuracy: "#0b5cad", fluency: "#2e8b57", prosody: "#b35c00", completeness: "#6a3d9a", total: "#1b1f24" };
  var dashes = { accuracy: [], fluency: [6, 3], prosody: [2, 3], completeness: [10, 4, 2, 4], total: [] };
  var chart = new Chart(canvas, {
    type: "line",
    data: {
      labels: data.labels,
      datasets: data.series.map(function (s) {
        return { label: s.aspect, data: s.values, borderColor: colours[s.aspect], backgroundColor: colours[s.aspect],
                 borderDash: dashes[s.aspect], borderWidth: s.aspect === "total" ? 3 : 2, pointRadius: 3, spanGaps: true, tension: 0 };
      })
    },
    options: {
      animation: false, responsive: true, maintainAspectRatio: false,
      interaction: { mode: "nearest", intersect: false },
      scales: { y: { min: 0, max: 10, title: { display: true, text: "score (0-10)" } },
                x: { title: { display: true, text: "recorded (UTC)" } } },
      plugins: { tooltip: { callbacks: { title: function (items) { return items.length ? items[0].label : ""; } } } }
    }
  });
  canvas.dataset.series = String(chart.data.datasets.length);
  canvas.dataset.ready = "1";
})();
