// edgeship dashboard: polls api/status, draws charts on <canvas>, reads the MJPEG stream with fetch().
// No external libraries: devices have no internet.
(function () {
  "use strict";
  var q = "";  // the token, when the server has one, travels in its HttpOnly cookie, never in a URL
  var HISTORY = 120;
  var series = { fps: [], infer: [], g2g: [], skipped: [] };
  var last = null;
  var body = document.body;

  function $(id) { return document.getElementById(id); }
  function fmt(v, digits) { return v === null || v === undefined ? "-" : Number(v).toFixed(digits); }
  function push(arr, v) { arr.push(v === null || v === undefined || isNaN(v) ? 0 : v); if (arr.length > HISTORY) arr.shift(); }

  function drawChart(canvas, lines, colors) {
    var ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height, pad = 22;
    ctx.clearRect(0, 0, w, h);
    var max = 0;
    lines.forEach(function (l) { l.forEach(function (v) { if (v > max) max = v; }); });
    max = max > 0 ? max * 1.15 : 1;
    ctx.strokeStyle = "#2a313b"; ctx.fillStyle = "#8a94a3"; ctx.font = "10px sans-serif"; ctx.lineWidth = 1;
    for (var g = 0; g <= 2; g++) {
      var y = h - pad / 2 - (h - pad) * g / 2;
      ctx.beginPath(); ctx.moveTo(pad + 8, y); ctx.lineTo(w, y); ctx.stroke();
      ctx.fillText((max * g / 2).toFixed(max < 10 ? 1 : 0), 0, y + 3);
    }
    lines.forEach(function (l, i) {
      if (!l.length) return;
      ctx.strokeStyle = colors[i]; ctx.lineWidth = 1.5; ctx.beginPath();
      l.forEach(function (v, k) {
        var x = pad + 8 + (w - pad - 8) * k / (HISTORY - 1);
        var y = h - pad / 2 - (h - pad) * v / max;
        if (k === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
      });
      ctx.stroke();
    });
  }

  function cell(tr, text, cls) { var td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; tr.appendChild(td); }
  function table(headers, rows) {
    var thead = $("app-table").tHead, tbody = $("app-table").tBodies[0];
    thead.innerHTML = ""; tbody.innerHTML = "";
    var tr = document.createElement("tr");
    headers.forEach(function (h) { var th = document.createElement("th"); th.textContent = h; tr.appendChild(th); });
    thead.appendChild(tr);
    rows.forEach(function (r) {
      var row = document.createElement("tr");
      r.forEach(function (c) { cell(row, c[0], c[1]); });
      tbody.appendChild(row);
    });
  }

  var renderApp = {
    security: function (a) {
      var occ = Object.keys(a.occupancy || {}).map(function (z) { return z + ": " + (a.occupancy[z].join(", ") || "empty"); });
      var lines = Object.keys(a.lines || {}).map(function (n) { return n + " in " + a.lines[n]["in"] + " out " + a.lines[n].out; });
      $("app-summary").textContent = a.events + " events \u00b7 " + occ.concat(lines).join(" \u00b7 ") +
        (a.motion ? " \u00b7 motion skipped " + a.motion.skipped : "");
      table(["time", "where", "what", "class", "track", "score", "box"], (a.recent_events || []).map(function (e) {
        var what = e.action || e.direction || "";
        if (e.dwell_s !== undefined && e.action === "exit") what += " (" + fmt(e.dwell_s, 1) + " s)";
        return [[e.time], [e.zone || e.line], [what], [e["class"]], [e.track_id === undefined ? "-" : "#" + e.track_id],
                [fmt(e.score, 2)], [e.box.map(function (v) { return Math.round(v); }).join(",")]];
      }));
    },
    industrial: function (a) {
      var c = a.counters || {};
      $("app-summary").textContent = "total " + c.total + " \u00b7 pass " + c.pass + " \u00b7 fail " + c.fail +
        " \u00b7 yield " + (c["yield"] === null || c["yield"] === undefined ? "-" : (100 * c["yield"]).toFixed(1) + "%") +
        " \u00b7 trigger " + a.trigger.mode;
      table(["time", "verdict", "label", "score", "reason"], (a.recent_inspections || []).map(function (r) {
        return [[r.time], [r.verdict, r.verdict], [r.label], [fmt(r.score, 2)], [r.reason]];
      }));
    },
    robot: function (a) {
      $("app-summary").textContent = "published " + a.published + " at " + a.rate_hz + " Hz \u00b7 age " +
        fmt(a.age_ms, 1) + " ms" + (a.stale ? " (STALE)" : "");
      table(["key", "value"], [[["udp"], [(a.udp_targets || []).join(", ") || "-"]], [["stale after ms"], [String(a.stale_ms)]]]);
    }
  };

  function update(s) {
    var m = s.metrics || {}, lat = m.latency_ms || {};
    $("model").textContent = s.model || "model";
    $("source").textContent = s.source || "source";
    var h = s.health || {};
    $("health").textContent = h.status || "?";
    $("health").className = "badge " + (h.status === "ok" ? "ok" : "bad");
    $("fps").textContent = fmt(m.recent_fps, 1);
    $("latency").textContent = fmt((lat.infer || {}).p50, 2);
    $("g2g").textContent = fmt((m.glass_to_glass_ms || {}).p50, 2);
    $("processed").textContent = m.frames_processed === undefined ? "-" : m.frames_processed;
    $("skipped").textContent = m.skipped === undefined ? "-" : m.skipped;
    $("reconnects").textContent = m.reconnects === undefined ? "-" : m.reconnects;
    var skippedRate = 0;
    if (last && s.time > last.time) skippedRate = Math.max(0, ((m.skipped || 0) - ((last.metrics || {}).skipped || 0)) / (s.time - last.time));
    push(series.fps, m.recent_fps); push(series.infer, (lat.infer || {}).p50);
    push(series.g2g, (m.glass_to_glass_ms || {}).p50); push(series.skipped, skippedRate);
    drawChart($("chart-fps"), [series.fps], ["#4fb3ff"]);
    drawChart($("chart-latency"), [series.infer, series.g2g], ["#3ccf7a", "#ffb84f"]);
    drawChart($("chart-skipped"), [series.skipped], ["#ff5a5a"]);
    if (s.app && renderApp[s.app.app]) { $("app-title").textContent = s.app.app; renderApp[s.app.app](s.app); }
    last = s;
    body.dataset.polls = String(Number(body.dataset.polls) + 1);
    body.dataset.processed = String(m.frames_processed || 0);
  }

  function poll() {
    fetch("api/status" + q, { cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(update)
      .catch(function (e) { $("health").textContent = "offline"; $("health").className = "badge bad"; body.dataset.error = String(e); })
      .then(function () { setTimeout(poll, 1000); });
  }

  // ---- MJPEG over fetch(): parse multipart parts, draw each JPEG on the canvas, count frames ----
  function indexOf(buf, len, pattern, from) {
    outer: for (var i = from; i <= len - pattern.length; i++) {
      for (var j = 0; j < pattern.length; j++) if (buf[i + j] !== pattern[j]) continue outer;
      return i;
    }
    return -1;
  }
  var CRLF2 = [13, 10, 13, 10];

  function stream() {
    var canvas = $("stream"), ctx = canvas.getContext("2d");
    var buf = new Uint8Array(1 << 20), len = 0, drawing = false;
    fetch("stream.mjpg" + q, { cache: "no-store" }).then(function (resp) {
      if (!resp.ok || !resp.body) throw new Error("stream HTTP " + resp.status);
      var reader = resp.body.getReader();
      function pump() {
        return reader.read().then(function (r) {
          if (r.done) throw new Error("stream ended");
          if (len + r.value.length > buf.length) { var bigger = new Uint8Array(Math.max(buf.length * 2, len + r.value.length)); bigger.set(buf.subarray(0, len)); buf = bigger; }
          buf.set(r.value, len); len += r.value.length;
          for (;;) {
            var he = indexOf(buf, len, CRLF2, 0);
            if (he < 0) break;
            var head = new TextDecoder().decode(buf.subarray(0, he));
            var m = /content-length:\s*(\d+)/i.exec(head);
            if (!m) { buf.copyWithin(0, he + 4, len); len -= he + 4; continue; }
            var n = Number(m[1]), start = he + 4;
            if (len < start + n + 2) break;
            var jpeg = buf.slice(start, start + n);
            buf.copyWithin(0, start + n + 2, len); len -= start + n + 2;
            if (!drawing) {
              drawing = true;
              createImageBitmap(new Blob([jpeg], { type: "image/jpeg" })).then(function (img) {
                if (canvas.width !== img.width) canvas.width = img.width;
                if (canvas.height !== img.height) canvas.height = img.height;
                ctx.drawImage(img, 0, 0);
                body.dataset.frames = String(Number(body.dataset.frames) + 1);
                body.dataset.frameSize = img.width + "x" + img.height;
              }).catch(function () {}).then(function () { drawing = false; });
            }
          }
          return pump();
        });
      }
      return pump();
    }).catch(function (e) { body.dataset.streamError = String(e); setTimeout(stream, 2000); });
  }

  poll();
  stream();
})();
