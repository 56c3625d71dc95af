// The console's own script: alarm charts (uPlot), the live tap (server-sent
// events) and confirmations. No inline script anywhere: the pages' CSP allows
// only the console's own files.
"use strict";

(function () {
  // -- alarm charts -----------------------------------------------------------

  // Shade the spans in ALARM and draw the threshold, under the series.
  function alarmPlugin(data) {
    return {
      hooks: {
        drawClear: [
          function (u) {
            var ctx = u.ctx;
            ctx.save();
            ctx.fillStyle = "rgba(220, 38, 38, 0.15)";
            data.alarms.forEach(function (span) {
              var left = u.valToPos(span[0], "x", true);
              var right = u.valToPos(span[1], "x", true);
              ctx.fillRect(left, u.bbox.top, Math.max(right - left, 1), u.bbox.height);
            });
            ctx.restore();
          },
        ],
        draw: [
          function (u) {
            var ctx = u.ctx;
            var y = u.valToPos(data.threshold, "y", true);
            ctx.save();
            ctx.strokeStyle = "#dc2626";
            ctx.lineWidth = 2 * devicePixelRatio;
            ctx.setLineDash([8 * devicePixelRatio, 6 * devicePixelRatio]);
            ctx.beginPath();
            ctx.moveTo(u.bbox.left, y);
            ctx.lineTo(u.bbox.left + u.bbox.width, y);
            ctx.stroke();
            ctx.restore();
          },
        ],
      },
    };
  }

  // The time axis in UTC, 24-hour: seconds shown when the ticks are under a
  // minute apart, the date when the chart spans more than a day.
  function utcTimes(u, splits) {
    var step = splits.length > 1 ? splits[1] - splits[0] : 60;
    var span = splits.length ? splits[splits.length - 1] - splits[0] : 0;
    return splits.map(function (value) {
      var text = new Date(value * 1000).toISOString();
      var time = step < 60 ? text.slice(11, 19) : text.slice(11, 16);
      return span > 86400 ? text.slice(5, 10) + " " + time : time;
    });
  }

  function drawChart(figure) {
    fetch(figure.dataset.chart, { credentials: "same-origin" })
      .then(function (answer) {
        if (!answer.ok) throw new Error("HTTP " + answer.status);
        return answer.json();
      })
      .then(function (data) {
        var known = data.values.filter(function (v) { return v !== null; });
        var low = Math.min.apply(null, known.concat([data.threshold]));
        var high = Math.max.apply(null, known.concat([data.threshold]));
        var pad = (high - low) * 0.1 || 1;
        var options = {
          title: data.label,
          width: Math.max(figure.clientWidth - 20, 300),
          height: 320,
          plugins: [alarmPlugin(data)],
          scales: { x: { time: true }, y: { range: [Math.min(low - pad, 0), high + pad] } },
          axes: [{ label: "time (UTC)", values: utcTimes }, { label: data.label.split(" per ")[0] }],
          series: [
            {},
            { label: data.name, stroke: "#2563eb", width: 2, spanGaps: false,
              points: { show: true, size: 5 } },
          ],
          tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); },
        };
        var old = figure.querySelector(".uplot");
        if (old) old.remove();
        var plot = new uPlot(options, [data.times, data.values], figure);
        plot.threshold = data.threshold;
        figure.plot = plot; // for tests and the browser's console
        figure.dataset.threshold = String(data.threshold);
        figure.dataset.alarmSpans = String(data.alarms.length);
        figure.dataset.points = String(known.length);
        figure.classList.add("drawn");
        return plot;
      })
      .catch(function (error) {
        figure.dataset.error = String(error);
        figure.insertAdjacentText("beforeend", " (the chart could not be drawn: " + error + ")");
      });
  }

  // -- the live tap -------------------------------------------------------------

  function tap(box) {
    var list = document.createElement("ol");
    list.className = "events";
    var status = document.createElement("p");
    status.className = "hint";
    status.textContent = "connecting…";
    box.append(status, list);
    var seen = 0;
    var missed = 0;
    var source = new EventSource(box.dataset.stream);
    source.onopen = function () { status.textContent = "watching"; };
    source.onerror = function () { status.textContent = "disconnected; trying again…"; };
    source.onmessage = function (message) {
      var item = JSON.parse(message.data);
      seen += 1;
      missed += item.dropped || 0;
      var entry = document.createElement("li");
      var head = document.createElement("div");
      head.className = "meta";
      var event = item.event;
      head.textContent = item.bus + " · " + (event.source || "") + " · " +
        (event["detail-type"] || "") + " · " + (event.time || "");
      var body = document.createElement("pre");
      body.textContent = JSON.stringify(event, null, 2);
      entry.append(head, body);
      list.prepend(entry);
      while (list.children.length > 200) list.lastChild.remove();
      status.textContent = "watching: " + seen + " events" +
        (missed ? ", " + missed + " more not shown (at most 100 a second are)" : "");
    };
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("figure[data-chart]").forEach(function (figure) {
      drawChart(figure);
      setInterval(function () { drawChart(figure); }, 10000);
    });
    document.querySelectorAll("#tap[data-stream]").forEach(tap);
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.dataset.confirm)) event.preventDefault();
      });
    });
  });
})();
