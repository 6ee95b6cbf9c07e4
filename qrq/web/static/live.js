// qrq dashboard: keeps the overview, the job list and the consumers current without
// a reload, ticks elapsed times, and counts the rows selected for a bulk action.
//
// An element with data-live-url (and data-live-every, in ms) has its content
// replaced by the "html" of that JSON whenever it changes; the job list's rows
// (#job-rows) get the jobs created since the last poll on top and their own rows
// as they are now (a row whose job left the list's status goes). Polling pauses while the tab is hidden, and resumes at once
// when it is shown again. Elements with data-since (Unix seconds) show the time
// since then, in the server's clock, once a second.
(function () {
  "use strict";
  var ACTIVE = { queued: true, running: true, retrying: true };
  var JOBS_EVERY = 1000;
  var skew = 0;  // the server's clock minus this browser's, in seconds
  var pollers = [];
  var ended = false;  // the session: the page stops updating, and says so

  function setServerNow(now) {
    if (typeof now === "number" && isFinite(now)) { skew = now - Date.now() / 1000; }
  }

  // The same text as the dashboard's "duration" template filter.
  function duration(seconds) {
    if (seconds < 1) { return (seconds * 1000).toFixed(0) + " ms"; }
    if (seconds < 120) { return seconds.toFixed(1) + " s"; }
    if (seconds < 7200) { return (seconds / 60).toFixed(0) + " min"; }
    if (seconds < 172800) { return (seconds / 3600).toFixed(1) + " h"; }
    return (seconds / 86400).toFixed(1) + " d";
  }

  function tick() {
    var now = Date.now() / 1000 + skew;
    document.querySelectorAll("[data-since]").forEach(function (el) {
      var since = parseFloat(el.dataset.since);
      if (isFinite(since)) { el.textContent = duration(Math.max(0, now - since)); }
    });
  }

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw response.status; }
        return response.json();
      });
  }

  function withArgs(url, args) {
    var query = Object.keys(args).map(function (key) {
      return encodeURIComponent(key) + "=" + encodeURIComponent(args[key]);
    }).join("&");
    return url + (url.indexOf("?") < 0 ? "?" : (/[?&]$/.test(url) ? "" : "&")) + query;
  }

  // -- a part of the page rendered again by the server ----------------------------------
  function regionStep(el) {
    var last = null;
    return function () {
      return getJSON(el.dataset.liveUrl).then(function (body) {
        setServerNow(body.now);
        if (body.html !== last) {
          last = body.html;
          el.innerHTML = body.html;
        }
      });
    };
  }

  // -- the job list -----------------------------------------------------------------------
  function parseRows(html) {
    var holder = document.createElement("template");
    holder.innerHTML = "<table><tbody>" + html + "</tbody></table>";
    return Array.prototype.slice.call(holder.content.querySelectorAll("tr[data-job-id]"));
  }

  function rowOf(tbody, id) {
    return tbody.querySelector('tr[data-job-id="' + id + '"]');
  }

  function replaceRow(old, row) {
    var was = old.querySelector("input[name=id]");
    var box = row.querySelector("input[name=id]");
    if (was && box) {
      box.checked = was.checked;
      if (document.activeElement === was) { old.replaceWith(row); box.focus(); return; }
    }
    old.replaceWith(row);
  }

  function jobsStep(tbody) {
    return function () {
      var args = {};
      var ids = Array.prototype.filter.call(tbody.querySelectorAll("tr[data-job-id]"),
        function (tr) { return ACTIVE[tr.dataset.status]; })
        .slice(0, 100).map(function (tr) { return tr.dataset.jobId; });
      if (ids.length) { args.ids = ids.join(","); }
      if (tbody.dataset.liveSince) { args.since = tbody.dataset.liveSince; }
      if (!ids.length && !args.since) { return Promise.resolve(); }
      return getJSON(withArgs(tbody.dataset.liveUrl, args)).then(function (body) {
        setServerNow(body.now);
        parseRows(body.changed).forEach(function (row) {
          var old = rowOf(tbody, row.dataset.jobId);
          if (old) { replaceRow(old, row); }
        });
        var dropped = 0;
        (body.gone || []).forEach(function (id) {  // no longer in the list's status
          var old = rowOf(tbody, id);
          if (old) { old.remove(); dropped += 1; }
        });
        if (dropped) { addToTotal(-dropped); }
        if (args.since) {
          tbody.dataset.liveSince = body.since;
          var added = 0;
          parseRows(body["new"]).reverse().forEach(function (row) {
            if (rowOf(tbody, row.dataset.jobId)) { return; }
            row.classList.add("fresh");
            tbody.insertBefore(row, tbody.firstChild);
            added += 1;
          });
          if (added) { addToTotal(added); }
        }
        tick();
      });
    };
  }

  function addToTotal(added) {
    var total = document.getElementById("job-total");
    if (total) {
      total.dataset.total = parseInt(total.dataset.total, 10) + added;
      total.textContent = total.dataset.total;
    }
    var none = document.getElementById("no-jobs");
    if (none) { none.remove(); }
  }

  // -- polling, paused while the tab is hidden ----------------------------------------------
  function Poller(every, step) {
    this.every = every;
    this.step = step;
    this.timer = null;
    this.running = false;
  }

  Poller.prototype.later = function (delay) {
    var self = this;
    window.clearTimeout(this.timer);
    this.timer = window.setTimeout(function () { self.run(); }, delay);
  };

  Poller.prototype.run = function () {
    var self = this;
    this.timer = null;
    if (document.hidden || this.running) { return; }  // visibilitychange starts it again
    this.running = true;
    this.step().then(function () {
      self.running = false;
      self.later(self.every);
    }, function (status) {
      self.running = false;
      if (status === 401 || status === 403) { sessionEnded(); return; }
      self.later(self.every * 5);
    });
  };

  Poller.prototype.stop = function () {
    window.clearTimeout(this.timer);
    this.timer = null;
  };

  // Logged out (the session expired, or ended elsewhere): frozen figures and ticking
  // ages would look like a stalled queue, so everything stops and the page says why.
  function sessionEnded() {
    if (ended) { return; }
    ended = true;
    pollers.forEach(function (p) { p.stop(); });
    var main = document.getElementById("main");
    if (!main) { return; }
    var notice = document.createElement("p");
    notice.id = "session-ended";
    notice.className = "flash flash-error";
    notice.setAttribute("role", "alert");
    notice.appendChild(document.createTextNode(
      "Your session has ended, so this page no longer updates. "));
    var link = document.createElement("a");
    link.href = "/admin/login?next=" + encodeURIComponent(location.pathname + location.search);
    link.textContent = "Log in again";
    notice.appendChild(link);
    main.insertBefore(notice, main.firstChild);
  }

  // -- selecting rows for a bulk action -------------------------------------------------------
  function boxesOf(form) {
    return document.querySelectorAll('input[name=id][form="' + form + '"]');
  }

  function countSelected(form) {
    var picked = Array.prototype.filter.call(boxesOf(form), function (b) { return b.checked; });
    document.querySelectorAll("[data-role=selected-count]").forEach(function (el) {
      el.textContent = picked.length + " selected";
    });
  }

  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.dataset && target.dataset.selectAll) {
      boxesOf(target.dataset.selectAll).forEach(function (b) { b.checked = target.checked; });
      countSelected(target.dataset.selectAll);
    } else if (target.name === "id" && target.getAttribute("form")) {
      countSelected(target.getAttribute("form"));
    }
  });

  function start() {
    var stamped = document.querySelector("[data-now]");
    if (stamped) { setServerNow(parseFloat(stamped.dataset.now)); }
    document.querySelectorAll("[data-live-url]").forEach(function (el) {
      if (el.id === "job-rows") {
        pollers.push(new Poller(JOBS_EVERY, jobsStep(el)));
      } else {
        pollers.push(new Poller(parseInt(el.dataset.liveEvery, 10) || 3000, regionStep(el)));
      }
    });
    pollers.push(new Poller(1000, function () { tick(); return Promise.resolve(); }));
    pollers.forEach(function (p) { p.later(p.every); });
    document.addEventListener("visibilitychange", function () {
      if (ended) { return; }
      pollers.forEach(function (p) {
        if (document.hidden) { p.stop(); } else if (!p.timer) { p.run(); }
      });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
