// qrq analytics chart: asks for a time-based report, follows the job computing it,
// then shows the SVG chart and the top lists. One script for both pages: the public
// /analytics/chart (data-auth="token": the user's API token, kept in session storage)
// and the dashboard's /admin/analytics (data-auth="session": the admin's log-in,
// with the session's CSRF token in a header).
(function () {
  "use strict";
  const form = document.getElementById("analytics-form");
  if (!form) return;
  const statusBox = document.getElementById("status");
  const fields = ["period", "from", "to", "tz", "domain", "template_id"];
  const bySession = form.dataset.auth === "session";
  const pageArgs = new URLSearchParams(location.search);
  for (const name of fields) {
    if (pageArgs.get(name)) form.elements[name].value = pageArgs.get(name);
  }
  if (!form.elements.tz.value) {
    form.elements.tz.value = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  }
  if (!bySession) form.elements.token.value = sessionStorage.getItem("qrq-token") || "";

  function say(text, isError) {
    statusBox.textContent = text;
    statusBox.className = isError ? "error" : "";
  }
  function query(refresh) {
    const args = new URLSearchParams();
    for (const name of fields) {
      const value = form.elements[name].value.trim();
      if (value) args.set(name, value);
    }
    if (refresh) args.set("refresh", "1");
    return args;
  }
  function headers() {
    if (bySession) return { "X-CSRF-Token": form.dataset.csrf, "Accept": "application/json" };
    return { "Authorization": "Bearer " + form.elements.token.value.trim() };
  }
  function get(url) {
    return fetch(url, { headers: headers(), credentials: "same-origin" });
  }
  async function errorText(response) {
    try {
      const body = await response.json();
      const e = body.error || {};
      return (e.field ? e.field + ": " : "") + (e.message || response.statusText);
    } catch (_) {
      return response.status + " " + response.statusText;
    }
  }
  function table(title, rows, key) {
    const t = document.createElement("table");
    const head = t.createTHead().insertRow();
    for (const text of [title, "scans"]) {
      const th = document.createElement("th");
      th.textContent = text;
      head.appendChild(th);
    }
    const body = t.createTBody();
    for (const row of rows) {
      const tr = body.insertRow();
      tr.insertCell().textContent = String(row[key]);
      const n = tr.insertCell();
      n.className = "n";
      n.textContent = row.scans.toLocaleString();
    }
    return t;
  }
  function statusUrl(job) {
    return bySession ? form.dataset.jobUrl.replace("JOB_ID", encodeURIComponent(job.job_id))
                     : job.status_url;
  }
  async function waitFor(job) {
    const bar = document.createElement("progress");
    bar.max = 100;
    bar.setAttribute("aria-label", "computing the report");
    while (true) {
      const response = await get(statusUrl(job));
      if (!response.ok) throw new Error(await errorText(response));
      const status = await response.json();
      bar.value = status.progress;
      statusBox.replaceChildren("Computing: " + (status.stage || status.status) + " " +
                                status.progress + "% ", bar);
      if (status.status === "finished") return;
      if (["failed", "canceled", "expired"].includes(status.status)) {
        throw new Error("the computation " + status.status + ": " + (status.error || ""));
      }
      await new Promise((resolve) => setTimeout(resolve, 700));
    }
  }
  async function show(refresh) {
    if (!bySession) sessionStorage.setItem("qrq-token", form.elements.token.value.trim());
    say("Loading…");
    let args = query(refresh);
    let response = await get(form.dataset.reportUrl + "?" + args);
    if (response.status === 202) {
      await waitFor(await response.json());
      args = query(false);
      response = await get(form.dataset.reportUrl + "?" + args);
    }
    if (!response.ok) throw new Error(await errorText(response));
    const report = await response.json();
    const svg = await get(form.dataset.svgUrl + "?" + args);
    if (svg.status !== 200) throw new Error(await errorText(svg));
    const img = new Image();
    img.alt = "chart of scans and unique visitors";
    // A data: URL, which both pages' Content-Security-Policy allow for images.
    img.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(await svg.text());
    document.getElementById("chart").replaceChildren(img);
    const tops = document.getElementById("tops");
    tops.replaceChildren(
      table("template", report.top.templates, "template_id"),
      table("domain", report.top.domains, "domain"),
      table("country", report.top.countries, "country"),
      table("device", report.top.devices, "device"));
    document.getElementById("warnings").textContent =
      report.warnings.length ? "Warnings: " + report.warnings.join("; ") : "";
    say("Computed " + report.computed_at + " (" + Math.round(report.age_seconds) +
        " s ago; cached for " + form.dataset.ttl + " s) in " + report.seconds + " s over " +
        report.databases.read + " of " + report.databases.found + " databases.");
    history.replaceState(null, "", "?" + query(false));
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const refresh = event.submitter && event.submitter.name === "refresh";
    show(refresh).catch((error) => say(error.message, true));
  });
  if (bySession || form.elements.token.value) {
    show(false).catch((error) => say(error.message, true));
  }
})();
