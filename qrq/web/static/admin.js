// qrq dashboard: moves progress bars without reloading the page, and asks before
// destructive forms. Polls /admin/progress.json once a second while a shown job
// is still queued, running or retrying.
(function () {
  "use strict";
  var ACTIVE = { queued: true, running: true, retrying: true };

  // Not the job list's rows: live.js renders those again every second.
  function bars() {
    return Array.prototype.filter.call(document.querySelectorAll(".progress[data-job-id]"),
      function (el) { return !el.closest("#job-rows"); });
  }

  function activeIds() {
    var ids = {};
    bars().forEach(function (el) {
      if (el.dataset.jobId && ACTIVE[el.dataset.status]) { ids[el.dataset.jobId] = true; }
    });
    return Object.keys(ids);
  }

  function each(selector, jobId, fn) {
    Array.prototype.forEach.call(document.querySelectorAll(selector), function (el) {
      if (el.dataset.jobId === jobId) { fn(el); }
    });
  }

  function apply(jobId, job) {
    each(".progress[data-job-id]", jobId, function (el) {
      el.dataset.status = job.status;
      var bar = el.querySelector("progress");
      if (bar) { bar.value = job.progress; bar.textContent = job.progress + "%"; }
      var pct = el.querySelector("[data-role=pct]");
      if (pct) { pct.textContent = job.progress + "%"; }
    });
    each("[data-role=status]", jobId, function (el) {
      el.textContent = job.status;
      el.className = "status status-" + job.status;
    });
    each("[data-role=stage]", jobId, function (el) { el.textContent = job.stage; });
  }

  function poll() {
    if (document.hidden) {  // a hidden tab polls nothing: go on once it is shown again
      document.addEventListener("visibilitychange", poll, { once: true });
      return;
    }
    var ids = activeIds();
    if (!ids.length) { return; }
    var url = document.body.dataset.progressUrl + "?ids=" + encodeURIComponent(ids.join(","));
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (body) {
        if (!body) { return; }  // logged out or an error: stop quietly
        Object.keys(body.jobs).forEach(function (id) { apply(id, body.jobs[id]); });
        var detail = document.querySelector("[data-reload-when-ended=yes]");
        if (detail && !activeIds().length) { window.location.reload(); return; }
        window.setTimeout(poll, 1000);
      })
      .catch(function () { window.setTimeout(poll, 5000); });
  }

  document.addEventListener("submit", function (event) {
    var message = event.target.dataset && event.target.dataset.confirm;
    if (message && !window.confirm(message)) { event.preventDefault(); }
  });

  document.addEventListener("DOMContentLoaded", function () { window.setTimeout(poll, 1000); });
})();
