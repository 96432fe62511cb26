// aiorch dashboard: draws every <div class="chart" data-series-url=...> with uPlot.
// The URL answers uPlot tables, one [times, values] per series, with a null inside each gap;
// uPlot.join aligns them (keeping the nulls) and spanGaps: false draws a null as a break.
// When drawn, the element carries data-state="drawn" and data-points (the real points).
(function () {
  "use strict";

  var COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
                "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

  var BYTES = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

  // 16106127360 -> "15 GiB": byte axes and legends read as people write sizes.
  function bytes(value) {
    if (value == null) { return "--"; }
    var i = 0;
    while (Math.abs(value) >= 1024 && i < BYTES.length - 1) { value /= 1024; i++; }
    return (Math.round(value * 10) / 10) + " " + BYTES[i];
  }

  function fail(el, message) {
    el.dataset.state = "error";
    el.textContent = el.dataset.title + ": " + message;
  }

  function plot(el, body) {
    el.dataset.points = String(body.points);
    el.textContent = "";
    if (body.tables.length === 0 || body.points === 0) {
      el.dataset.state = "empty";
      el.textContent = el.dataset.title + ": no data in this range";
      return;
    }
    var inBytes = el.dataset.unit.indexOf("bytes") === 0;
    var series = [{}].concat(body.series.map(function (s, i) {
      var line = { label: s.label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: false };
      if (inBytes) { line.value = function (u, v) { return bytes(v); }; }
      return line;
    }));
    var yAxis = { label: el.dataset.unit, size: 80 };
    if (inBytes) { yAxis.values = function (u, splits) { return splits.map(bytes); }; }
    var opts = {
      title: el.dataset.title,
      width: Math.max(el.clientWidth, 320),
      height: 220,
      series: series,
      scales: { x: { time: true } },
      axes: [{}, yAxis],
    };
    new uPlot(opts, uPlot.join(body.tables), el);
    el.dataset.state = "drawn";
  }

  function draw(el) {
    el.dataset.state = "loading";
    fetch(el.dataset.seriesUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("the hub answered " + response.status); }
        return response.json();
      })
      .then(function (body) { plot(el, body); })
      .catch(function (err) { fail(el, err.message); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".chart[data-series-url]").forEach(draw);
  });
})();
