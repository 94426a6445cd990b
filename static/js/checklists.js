// Checklist runs: one-click item actions, live updates from other people, keyboard j/k/x.
// No inline scripts (CSP). The page works without this file too: every action is a plain form.
(function () {
  "use strict";

  var run = null;

  function stateOf(li) { return li.querySelector(".item-state"); }
  function itemUrl(li) { return run.dataset.itemsUrl + li.dataset.item + "/"; }
  function versionOf(el) { return parseInt(el.dataset.version || "0", 10); }

  // The note keeps the version the person started typing on (data-base-version), so saving it is
  // refused (409) when someone else changed the note meanwhile, instead of overwriting it.
  function noteArea(li) { return li.querySelector(".item-actions textarea[name=note]"); }
  function noteDirty(area) { return !!area && area.value !== area.defaultValue; }

  function markOverdue(li) {
    var due = li.dataset.due ? Date.parse(li.dataset.due) : NaN;
    li.classList.toggle("overdue", li.dataset.state === "open" && !isNaN(due) && due < Date.now());
  }

  // The run's "N overdue" badge counts what the items say, so it follows ticks (anyone's) and
  // the clock; a timer wakes the page when the next open item falls due.
  var dueTimer = null;
  function updateOverdue() {
    var badge = run.querySelector("[data-overdue-count]");
    if (badge) {
      var count = run.querySelectorAll(".run-item.overdue").length;
      badge.textContent = count + " overdue";
      badge.hidden = count === 0;
    }
  }

  function checkDue() {
    var now = Date.now(), next = Infinity;
    run.querySelectorAll(".run-item").forEach(function (li) {
      markOverdue(li);
      var due = li.dataset.due ? Date.parse(li.dataset.due) : NaN;
      if (li.dataset.state === "open" && due > now && due < next) { next = due; }
    });
    updateOverdue();
    window.clearTimeout(dueTimer);
    // Timers of more than 24.8 days overflow; a minute's check keeps sleeping laptops honest.
    dueTimer = window.setTimeout(checkDue, Math.min(next - now + 100, 60000));
  }

  function updateProgress() {
    var total = 0, finished = 0;
    run.querySelectorAll(".run-section").forEach(function (section) {
      var items = section.querySelectorAll(".run-item");
      var done = 0;
      items.forEach(function (li) { if (li.dataset.state !== "open") { done += 1; } });
      total += items.length;
      finished += done;
      var bar = section.querySelector("[data-section-progress]");
      if (bar) {
        bar.value = done;
        bar.max = items.length || 1;
        bar.parentNode.querySelector("[data-progress-text]").textContent = done + "/" + items.length;
      }
    });
    var runBar = run.querySelector("[data-run-progress]");
    if (runBar) {
      runBar.value = finished;
      runBar.max = total || 1;
      runBar.parentNode.querySelector("[data-progress-text]").textContent = finished + "/" + total;
    }
  }

  // After an item's state part changed: the item's own attributes, the versions the action form
  // will send, the note being typed (left alone), overdue marks and progress bars.
  function stateChanged(li, state, previous, opts) {
    li.dataset.state = state.dataset.state;
    li.dataset.version = state.dataset.version;
    li.querySelectorAll(".item-actions input[name=version]").forEach(function (input) {
      input.value = state.dataset.version;
    });
    var area = noteArea(li);
    if (area) {
      if (opts.ownNote || !noteDirty(area)) {
        area.value = area.defaultValue = state.dataset.note || "";
        area.dataset.baseVersion = state.dataset.version;
      } else if (opts.change !== "note" && area.dataset.baseVersion === previous) {
        // Someone ticked or attached evidence while this person types a note: that does not
        // touch the note, so the note's base version moves along with it.
        area.dataset.baseVersion = state.dataset.version;
      }
    }
    markOverdue(li);
    updateOverdue();
    updateProgress();
  }

  // Replace the item's state part with one the server rendered. The note being typed, the N/A
  // reason and a chosen file live outside it and are never touched.
  function swapState(li, html, opts) {
    var holder = document.createElement("template");
    holder.innerHTML = html.trim();
    var fresh = holder.content.querySelector(".item-state");
    var old = stateOf(li);
    if (!fresh || !old) { return false; }
    // Answers can arrive out of order (a slow fetch after a fast one): never go back.
    if (!opts.force && versionOf(fresh) < versionOf(li)) { return false; }
    var previous = li.dataset.version;
    var hadFocus = old.contains(document.activeElement);
    old.replaceWith(fresh);
    stateChanged(li, fresh, previous, opts);
    if (hadFocus) { li.focus(); }
    return true;
  }

  // Another person's tick, untick, N/A or note carries all the page needs in the event, so the
  // state part is patched in place: no request per viewer per tick. Evidence and automated
  // checks change more than that; for those the page fetches the item's state part.
  var LABELS = {done: "✔ Done", na: "N/A", open: "Open"};
  var WHEN = new Intl.DateTimeFormat("en-GB", {
    weekday: "short", hour: "2-digit", minute: "2-digit", hour12: false, timeZone: "UTC"
  });

  function child(state, selector, tag, className, after) {
    var el = state.querySelector(selector);
    if (!el) {
      el = document.createElement(tag);
      el.className = className;
      after.after(el);
    }
    return el;
  }

  function patchState(li, detail) {
    var data = detail.data;
    var state = stateOf(li);
    var label = state && state.querySelector(".state-label");
    if (!label || !LABELS[data.state] || ["tick", "untick", "na", "note"].indexOf(data.change) < 0) {
      return false;
    }
    var previous = li.dataset.version;
    var stale = state.querySelector(".error");
    if (stale) { stale.remove(); }
    if (data.change === "note") {
      var note = state.querySelector("p.note");
      if (!data.note) {
        if (note) { note.remove(); }
      } else {
        var anchor = state.querySelector(".overdue-badge") || state.querySelector(".na-reason") ||
          state.querySelector(".who") || label;
        note = child(state, "p.note", "p", "note", anchor);
        note.textContent = "📝 " + data.note;
      }
      state.dataset.note = data.note || "";
    } else {
      var open = data.state === "open";
      var button = state.querySelector('button[data-item-action="tick"], button[data-item-action="untick"]');
      if (button) {
        button.setAttribute("formaction", itemUrl(li) + (open ? "tick/" : "untick/"));
        button.dataset.itemAction = open ? "tick" : "untick";
        button.textContent = open ? "Tick" : "Untick";
        button.className = open ? "small tick" : "small secondary outline untick";
      }
      label.textContent = LABELS[data.state];
      label.className = "state-label state-" + data.state;
      var who = state.querySelector(".who");
      if (open) {
        if (who) { who.remove(); }
      } else {
        who = child(state, ".who", "span", "who", label);
        who.textContent = (data.by || "the automated check") + " · " + WHEN.format(new Date(detail.at));
      }
      var reason = state.querySelector(".na-reason");
      if (data.state === "na") {
        reason = child(state, ".na-reason", "span", "na-reason", who || label);
        reason.textContent = "— " + (data.na_reason || "");
      } else if (reason) {
        reason.remove();
      }
    }
    state.querySelectorAll("input[name=version], button[name=version]").forEach(function (input) {
      input.value = data.version;
    });
    state.dataset.state = data.state;
    state.dataset.version = String(data.version);
    stateChanged(li, state, previous, {change: data.change});
    return true;
  }

  // Inputs of the actions form that belong to one action, cleared once it succeeded.
  var FIELDS = {na: ["reason"], evidence: ["file"], link: ["url", "name"]};

  function post(form, button, li) {
    var data = new FormData(form);
    var action = button.dataset.itemAction;
    // A tick button belongs to the page's one form (run-actions) and carries its version.
    if (button.name) { data.set(button.name, button.value); }
    if (form.closest(".item-actions")) {
      var area = noteArea(li);
      data.set("version", action === "note" ? area.dataset.baseVersion : li.dataset.version);
    }
    var buttons = Array.prototype.slice.call(form.querySelectorAll("button"));
    if (buttons.indexOf(button) < 0) { buttons.push(button); }
    // Disabling the pressed button takes the focus from it (to the body): note where it was, to
    // give it back to the same item once the answer is in.
    var hadFocus = li.contains(document.activeElement);
    buttons.forEach(function (b) { b.disabled = true; });
    // Without a formaction attribute, button.formAction is the page's own URL, not the form's.
    var url = button.hasAttribute("formaction") ? button.formAction : form.action;
    fetch(url, {
      method: "POST",
      body: data,
      credentials: "same-origin",
      headers: {"HX-Request": "true"}
    }).then(function (response) {
      return response.text().then(function (text) { return {status: response.status, text: text}; });
    }).then(function (result) {
      buttons.forEach(function (b) { b.disabled = false; });
      var ok = result.status === 200;
      if (ok || result.status === 409 || result.status === 400) {
        swapState(li, result.text, {force: true, change: action, ownNote: ok && action === "note"});
        if (hadFocus && !li.contains(document.activeElement)) { refocus(li, action); }
        if (ok) {
          (FIELDS[action] || []).forEach(function (name) {
            var input = form.querySelector("[name=" + name + "]");
            if (input) { input.value = ""; }
          });
        }
      } else {
        showError(li, result.status === 403 ? "You may not change this run." : "The change failed (" + result.status + "); reload the page.");
      }
    }).catch(function () {
      buttons.forEach(function (b) { b.disabled = false; });
      showError(li, "The server did not answer; your change may not be saved. Reload the page.");
    });
  }

  // After a tick or untick the item's new button (Untick, Tick) takes the focus, so Enter
  // undoes it again; after other actions the item itself.
  function refocus(li, action) {
    var target = (action === "tick" || action === "untick") &&
      li.querySelector('.item-state button[data-item-action="tick"], .item-state button[data-item-action="untick"]');
    if (target && !target.disabled) { target.focus(); } else { li.focus(); }
  }

  function showError(li, message) {
    var state = stateOf(li);
    var p = state.querySelector(".error");
    if (!p) {
      p = document.createElement("p");
      p.className = "error";
      p.setAttribute("role", "alert");
      state.prepend(p);
    }
    p.textContent = message;
  }

  function onSubmit(ev) {
    var form = ev.target;
    var button = ev.submitter || form.querySelector("button[data-item-action]");
    if (ev.defaultPrevented || !button || !button.dataset.itemAction) { return; }
    var li = button.closest(".run-item");
    if (!li) { return; }
    ev.preventDefault();
    post(form, button, li);
  }

  function onLive(ev) {
    var detail = ev.detail || {};
    var data = detail.data || {};
    if (data.item) {
      var li = run.querySelector('.run-item[data-item="' + data.item + '"]');
      // Our own changes come back as events too, after their answer: nothing new then.
      if (!li || versionOf(li) >= (data.version || 0)) { return; }
      // Only the very next version can be patched onto what the page shows; after a gap (a
      // missed event, a reconnect) the page asks for the item's whole state part.
      if (versionOf(li) + 1 === data.version && patchState(li, detail)) { return; }
      fetch(itemUrl(li), {credentials: "same-origin", headers: {"HX-Request": "true"}})
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) {
          if (html) { swapState(li, html, {change: data.change}); }
        });
    } else if (detail.verb === "run.completed" || detail.verb === "run.reopened") {
      var badge = run.querySelector("[data-run-status]");
      if (badge) {
        badge.textContent = data.status === "completed" ? "Completed" : "Open";
        badge.classList.toggle("go", data.status === "completed");
      }
    }
  }

  // The N/A, note and evidence forms come from the server the first time they are opened.
  function onToggle(ev) {
    var details = ev.target;
    if (!details.open || !details.classList || !details.classList.contains("item-actions")) { return; }
    var holder = details.querySelector(".item-forms");
    var li = details.closest(".run-item");
    if (!holder || !li || holder.dataset.loaded) { return; }
    holder.dataset.loaded = "loading";
    fetch(itemUrl(li) + "forms/", {credentials: "same-origin", headers: {"HX-Request": "true"}})
      .then(function (response) {
        if (!response.ok) { throw new Error(String(response.status)); }
        return response.text();
      })
      .then(function (html) {
        holder.innerHTML = html;
        holder.dataset.loaded = "1";
      })
      .catch(function () {
        delete holder.dataset.loaded;
        showError(li, "The forms could not be loaded; close and open them again.");
      });
  }

  function items() { return Array.prototype.slice.call(run.querySelectorAll(".run-item")); }

  function onKey(ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    var target = ev.target;
    if (target.closest && target.closest("input, textarea, select, [contenteditable=true]")) { return; }
    var list = items();
    if (!list.length) { return; }
    var active = document.activeElement;
    var current = active && active.closest ? active.closest(".run-item") : null;
    var index = list.indexOf(current);
    var next = null;
    if (ev.key === "j") {
      next = list[Math.min(index + 1, list.length - 1)];
    } else if (ev.key === "k") {
      next = list[Math.max(index - 1, 0)];
    } else if (ev.key === "x" && current) {
      var button = current.querySelector('.item-state button[data-item-action="tick"], .item-state button[data-item-action="untick"]');
      if (button) { ev.preventDefault(); button.click(); }
      return;
    } else {
      return;
    }
    ev.preventDefault();
    if (next) {
      next.focus();
      next.scrollIntoView({block: "nearest"});
    }
  }

  function start() {
    run = document.querySelector("[data-run]");
    if (!run) { return; }
    run.addEventListener("submit", onSubmit);
    run.addEventListener("rc-live", onLive);
    // "toggle" does not bubble: listen in the capture phase.
    run.addEventListener("toggle", onToggle, true);
    document.addEventListener("keydown", onKey);
    // Due times pass while the page is open.
    checkDue();
    run.dataset.ready = "1";
  }

  document.addEventListener("DOMContentLoaded", start);
})();
