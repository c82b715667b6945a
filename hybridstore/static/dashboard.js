// Refreshes the dashboard without a reload: polls /ui/data every 2 s and writes text
// nodes only (never HTML), so nothing from a job can run as markup. The requeue and
// cancel buttons POST with the CSRF token of the page's <meta>.
(function () {
  "use strict";
  var params = new URLSearchParams(location.search);
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  function text(id, value) {
    var node = document.getElementById(id);
    if (node) node.textContent = value === null || value === undefined ? "" : String(value);
  }
  function cell(row, value) {
    var td = document.createElement("td");
    td.textContent = value === null || value === undefined ? "" : String(value);
    row.appendChild(td);
    return td;
  }
  function render(data) {
    text("total", data.total_jobs);
    document.querySelectorAll("#status-counts td.count").forEach(function (td) {
      td.textContent = String(data.status_counts[td.dataset.status] || 0);
    });
    var types = document.getElementById("type-counts");
    while (types.rows.length > 1) types.deleteRow(1);
    Object.keys(data.content_type_counts).forEach(function (name) {
      var row = types.insertRow();
      cell(row, name);
      cell(row, data.content_type_counts[name]);
    });
    text("page", data.page);
    text("pages", data.pages);
    var jobs = document.getElementById("jobs");
    while (jobs.rows.length > 1) jobs.deleteRow(1);
    data.jobs.forEach(function (job) {
      var row = jobs.insertRow();
      row.dataset.jobId = job.id;
      var link = document.createElement("a");
      var query = new URLSearchParams({status: data.status, page: data.page, job: job.id});
      link.href = "/?" + query.toString();
      link.textContent = job.id;
      cell(row, "").appendChild(link);
      cell(row, job.status).className = "status";
      cell(row, job.content_type);
      cell(row, job.worker_id);
      cell(row, job.created_at);
      cell(row, job.retry_count);
    });
    if (data.job) {
      text("job-status", data.job.status);
      text("job-progress", data.job.progress === null || data.job.progress === undefined
        ? "" : Math.round(data.job.progress * 100) + " %");
      text("job-message", data.job.progress_message);
      text("job-json", JSON.stringify(data.job, null, 2));
    }
  }
  function refresh() {
    fetch("/ui/data?" + params.toString(), {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) render(data); })
      .catch(function () {});
  }
  document.querySelectorAll("button[data-action]").forEach(function (button) {
    button.addEventListener("click", function () {
      var id = document.getElementById("job-id").textContent;
      fetch("/ui/jobs/" + encodeURIComponent(id) + "/" + button.dataset.action, {
        method: "POST", credentials: "same-origin", headers: {"X-CSRF-Token": csrf}
      }).then(function (r) {
        return r.json().then(function (body) {
          text("action-result", r.ok ? button.dataset.action + "d" : body.message);
          refresh();
        });
      }).catch(function () { text("action-result", "request failed"); });
    });
  });
  setInterval(refresh, 2000);
})();
