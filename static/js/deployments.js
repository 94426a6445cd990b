// Deployment page: apply live changes (step states, replica progress, log lines) in place.
// app.js opens the stream of the wrapper's data-live-topic and re-dispatches each event on it as
// "rc-live"; the data of a deployment event is {"changes": [...]}. A change of the deployment's
// status also fires "rc-deployment-status", on which htmx re-renders the header and the tiers
// from the server, with the very fragment a reload renders (steps closed at the end included).
// Applying a change twice is harmless, and log lines carry a sequence number, so events that
// overlap the rendered page (or a reconnect) neither duplicate nor lose anything.
(function () {
  "use strict";

  function setStep(root, change) {
    var badge = root.querySelector('[data-step-id="' + change.id + '"]');
    if (!badge) { return; }
    badge.dataset.status = change.status;
    badge.className = "step step-" + change.status;
    badge.textContent = change.status.charAt(0).toUpperCase() + change.status.slice(1);
    if (change.message) { badge.title = change.message; }
  }

  function setBar(cell, name, value, desired) {
    var bar = cell.querySelector('[data-bar="' + name + '"]');
    var count = cell.querySelector('[data-count="' + name + '"]');
    if (bar) { bar.max = Math.max(desired, 1); bar.value = value; }
    if (count) { count.textContent = value + "/" + desired; }
  }

  function setProgress(root, change) {
    var cell = root.querySelector('[data-wait-step="' + change.id + '"]');
    if (!cell) { return; }
    var note = cell.querySelector("[data-not-started]");
    if (note) { note.remove(); }
    cell.querySelectorAll(".bar[hidden]").forEach(function (bar) { bar.hidden = false; });
    setBar(cell, "updated", change.updated, change.desired);
    setBar(cell, "available", change.available, change.desired);
  }

  function appendLog(root, change) {
    var log = root.querySelector("#deployment-log");
    if (!log) { return; }
    var last = parseInt(log.dataset.lastSeq || "0", 10);
    if (change.seq) {
      if (change.seq <= last) { return; }
      log.dataset.lastSeq = String(change.seq);
    }
    var placeholder = log.querySelector("[data-placeholder]");
    if (placeholder) { placeholder.remove(); }
    var item = document.createElement("li");
    if (change.seq) { item.dataset.seq = String(change.seq); }
    var time = document.createElement("time");
    var at = change.t ? new Date(change.t * 1000) : new Date();
    time.dateTime = at.toISOString();
    time.textContent = at.toTimeString().slice(0, 8);
    item.appendChild(time);
    if (change.service) {
      var who = document.createElement("strong");
      who.textContent = change.service;
      item.appendChild(document.createTextNode(" "));
      item.appendChild(who);
    }
    item.appendChild(document.createTextNode(" " + change.text));
    var atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    log.appendChild(item);
    if (atBottom) { log.scrollTop = log.scrollHeight; }
  }

  function apply(root, detail) {
    var data = (detail && detail.data) || {};
    var statusChanged = detail && detail.verb === "deployment.status_changed";
    (data.changes || []).forEach(function (change) {
      if (change.type === "step") { setStep(root, change); }
      else if (change.type === "progress") { setProgress(root, change); }
      else if (change.type === "log") { appendLog(root, change); }
      else if (change.type === "status") { statusChanged = true; }
    });
    if (detail && detail.verb === "deployment.cancel_requested") { statusChanged = true; }
    if (statusChanged) {
      root.dispatchEvent(new CustomEvent("rc-deployment-status", {bubbles: false}));
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-deployment-live]").forEach(function (root) {
      root.addEventListener("rc-live", function (ev) { apply(root, ev.detail); });
    });
  });
})();
