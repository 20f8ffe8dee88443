// edgeship site grid: one tile per camera (live view, health, counters), polled from api/cameras.
// No external libraries: devices have no internet.
(function () {
  "use strict";
  var grid = document.getElementById("grid"), tiles = {};

  function fmt(v, d) { return v === null || v === undefined ? "-" : Number(v).toFixed(d); }
  function el(tag, cls, text) { var e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; }

  function appLine(app) {
    if (!app) return "";
    if (app.app === "security") return (app.events || 0) + " events";
    if (app.app === "industrial" && app.session) return "pass " + app.session.pass + " / fail " + app.session.fail;
    if (app.app === "robot") return (app.published || 0) + " states published";
    return "";
  }

  function tile(name) {
    var t = el("section", "cam"), head = el("h2"), link = el("a", null, name);
    link.href = "cameras/" + encodeURIComponent(name) + "/";
    head.appendChild(link);
    var badge = el("span", "badge", "..."); head.appendChild(badge);
    var img = el("img"); img.alt = name + " live view"; img.src = "cameras/" + encodeURIComponent(name) + "/stream.mjpg";
    var stats = el("div", "stats"), app = el("div", "stats");
    t.appendChild(head); t.appendChild(img); t.appendChild(stats); t.appendChild(app);
    t.dataset.camera = name;
    grid.appendChild(t);
    return { root: t, badge: badge, stats: stats, app: app };
  }

  function update(data) {
    document.body.dataset.polls = String(Number(document.body.dataset.polls) + 1);
    var h = document.getElementById("health");
    h.textContent = data.status; h.className = "badge " + (data.status === "ok" ? "ok" : "bad");
    document.getElementById("reason").textContent = data.reason || "";
    var names = Object.keys(data.cameras);
    document.getElementById("count").textContent = names.length + " camera" + (names.length === 1 ? "" : "s");
    names.forEach(function (name) {
      var cam = data.cameras[name], t = tiles[name] || (tiles[name] = tile(name)), m = cam.metrics || {}, hh = cam.health || {};
      t.badge.textContent = hh.status + (hh.state && hh.state !== "up" ? " (" + hh.state + ")" : "");
      t.badge.className = "badge " + (hh.status === "ok" ? "ok" : "bad");
      t.root.dataset.status = hh.status;
      t.stats.textContent = fmt(m.recent_fps, 1) + " fps \u00b7 " + (m.frames_processed || 0) + " processed \u00b7 " +
        (m.frames_dropped || 0) + " dropped \u00b7 " + (m.reconnects || 0) + " reconnects";
      t.app.textContent = appLine(cam.app);
    });
  }

  function poll() {
    fetch("api/cameras", { cache: "no-store" }).then(function (r) { return r.json(); })
      .then(update).catch(function () { document.getElementById("health").textContent = "unreachable"; })
      .then(function () { setTimeout(poll, 1000); });
  }
  poll();
})();
