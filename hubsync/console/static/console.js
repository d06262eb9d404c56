// hubsync console: sign-in, actions with a confirmation, the New activation steps, live updates
// from /api/v1/events and the two charts. Plain JavaScript, no build step, nothing external.
// The server formats every number: on a change this script fetches the row or panel again.
"use strict";

(function () {
  const $ = (selector, root) => (root || document).querySelector(selector);
  const $$ = (selector, root) => Array.from((root || document).querySelectorAll(selector));

  function cookie(name) {
    const found = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
    return found ? decodeURIComponent(found.slice(name.length + 1)) : "";
  }

  // Every call to the API: JSON in and out; the CSRF token on anything that changes state.
  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") headers["X-CSRF-Token"] = cookie("hubsync_csrf");
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401 && document.body.dataset.page !== "signin") {
      location.href = "/signin?next=" + encodeURIComponent(location.pathname);
    }
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      data = null;
    }
    return { ok: response.ok, status: response.status, data };
  }

  function problem(result) {
    const d = result.data || {};
    return d.message || "hubsync answered " + result.status;
  }

  function toast(text) {
    const box = $("#toast");
    if (!box) return;
    box.textContent = text;
    box.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => (box.hidden = true), 8000);
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
    children.flat().forEach((c) => node.append(c instanceof Node ? c : document.createTextNode(String(c))));
    return node;
  }

  // A confirmation that names the action on its button; red only for what removes something.
  function confirmWith(title, text, action, destructive) {
    const dialog = $("#confirm");
    if (!dialog || !dialog.showModal) return Promise.resolve(window.confirm(title + "\n\n" + text));
    $("#confirm-title").textContent = title;
    $("#confirm-text").textContent = text;
    $("#confirm-ok").textContent = action || "Confirm";
    $("#confirm-ok").className = destructive ? "danger" : "";
    dialog.returnValue = "";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.showModal();
      $("#confirm-ok").focus();
    });
  }

  const number = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
  const seconds = (s) => (s === null || s === undefined ? "–" : s < 60 ? Math.round(s) + " s" : Math.round(s / 60) + " min");

  // --- sign in and out -----------------------------------------------------------------------

  function signIn() {
    const form = $("#sign-in");
    if (!form) return;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const error = $("#sign-in-error");
      error.textContent = "";
      const result = await api("POST", "/api/v1/session", { api_key: $("#api-key").value });
      if (result.ok) {
        location.href = form.dataset.next || "/";
      } else {
        error.textContent = problem(result);
        $("#api-key").focus();
      }
    });
  }

  function signOut() {
    const button = $("#sign-out");
    if (!button) return;
    button.addEventListener("click", async () => {
      await api("DELETE", "/api/v1/session");
      location.href = "/signin";
    });
  }

  // --- live updates --------------------------------------------------------------------------

  async function fragment(path) {
    const response = await fetch(path, { credentials: "same-origin" });
    if (!response.ok) return null;
    const holder = document.createElement("template");
    holder.innerHTML = (await response.text()).trim();
    return holder.content.firstElementChild;
  }

  async function refreshRow(id) {
    const row = await fragment("/fragments/rows/" + encodeURIComponent(id));
    if (!row) return;
    const old = document.getElementById("row-" + id);
    if (old) old.replaceWith(row);
    else {
      const empty = $("#activations tr.empty");
      if (empty) empty.remove();
      $("#activations tbody").append(row);
    }
  }

  async function refreshPanel(id) {
    const panel = await fragment("/fragments/status/" + encodeURIComponent(id));
    const old = $("#status-panel");
    if (!panel || !old) return;
    // Keep keyboard focus where it was: the same button in the new panel.
    const focused = document.activeElement && old.contains(document.activeElement) ? document.activeElement.dataset.path : null;
    const job = $("#job", old).textContent;
    old.replaceWith(panel);
    $("#job", panel).textContent = job;
    if (focused) {
      const again = $$("[data-path]", panel).find((b) => b.dataset.path === focused);
      if (again) again.focus();
    }
  }

  function live() {
    const page = document.body.dataset.page;
    if (!("EventSource" in window) || (page !== "home" && page !== "activation")) return;
    const current = page === "activation" ? $("#live").dataset.activation : null;
    const source = new EventSource("/api/v1/events");
    source.addEventListener("activation", (event) => {
      const view = JSON.parse(event.data);
      if (page === "home") refreshRow(view.id);
      else if (view.id === current) {
        refreshPanel(view.id);
        charts.add(pointOf(view));
      }
      const note = $("#live-note");
      if (note) note.textContent = "Live: updated " + new Date().toLocaleTimeString();
    });
    source.addEventListener("deleted", (event) => {
      const id = JSON.parse(event.data).id;
      const row = document.getElementById("row-" + id);
      if (row) row.remove();
      if (id === current) toast("This activation was deleted.");
    });
  }

  // --- actions -------------------------------------------------------------------------------

  async function followJob(job) {
    const line = $("#job");
    while (job.state === "running") {
      line.textContent = "Verifying: " + (job.progress === null ? "starting" : Math.round(job.progress * 100) + "% (" + number(job.done) + " of " + number(job.total) + ")");
      await new Promise((r) => setTimeout(r, 1000));
      const result = await api("GET", "/api/v1/jobs/" + encodeURIComponent(job.id));
      if (!result.ok) return;
      job = result.data;
    }
    const line2 = $("#job");
    if (job.state === "done") {
      const r = job.result || {};
      line2.textContent = "Verify done: " + number(r.checked) + " contacts checked, " + number(r.differing) + " differ from the CDP.";
    } else {
      line2.textContent = "Verify failed: " + ((job.error && job.error.message) || "see hubsync's log");
    }
  }

  function actions() {
    document.addEventListener("click", async (event) => {
      const button = event.target.closest("button[data-path]");
      if (!button) return;
      const confirmed = await confirmWith(button.dataset.title || "Are you sure?", button.dataset.confirm || "", button.textContent.trim(), button.dataset.method === "DELETE");
      if (!confirmed) return;
      button.disabled = true;
      const body = button.dataset.body ? JSON.parse(button.dataset.body) : button.dataset.method === "POST" ? {} : undefined;
      const result = await api(button.dataset.method, button.dataset.path, body);
      button.disabled = false;
      if (!result.ok) {
        toast(problem(result));
        return;
      }
      const after = button.dataset.after;
      if (after === "home") location.href = "/";
      else if (after === "reload") location.reload();
      else if (after === "job") followJob(result.data);
      else {
        toast((result.data && result.data.message) || "Done.");
        const live = $("#live");
        if (live) refreshPanel(live.dataset.activation);
      }
    });
    const add = $("#add-subscription");
    if (add) {
      add.addEventListener("submit", async (event) => {
        event.preventDefault();
        const [kind, id] = $("#add-what").value.split(/:(.*)/s);
        const path = "/api/v1/activations/" + encodeURIComponent(add.dataset.activation) + "/" + kind;
        const result = await api("POST", path, { id });
        if (result.ok) location.reload();
        else toast(problem(result));
      });
    }
  }

  // --- New activation ------------------------------------------------------------------------

  function draft() {
    const checked = (name) => $$("input[name=" + name + "]:checked").map((i) => i.value);
    const body = {
      name: $("#name").value.trim(),
      token: $("#token").value.trim(),
      plan: $("#plan").value,
      audiences: checked("audiences"),
      attributes: checked("attributes"),
      update_only: $("#update_only").checked,
      base_url: $("#base_url").value.trim() || "https://api.hubapi.com",
    };
    return body;
  }

  function showConnection(box, check) {
    box.replaceChildren();
    const lines = [];
    if (check.ok) {
      lines.push(el("p", { class: "ok" }, "✓ Connected" + (check.hub_id ? " to HubSpot account " + check.hub_id : "") + ". " + (check.unverified_scopes.length ? "" : "All four scopes are granted.")));
    } else if (check.missing_scopes && check.missing_scopes.length) {
      lines.push(el("p", { class: "error-text" }, "✗ The token lacks " + check.missing_scopes.length + " of the four scopes: " + check.missing_scopes.join(", ") + ". Tick them on the key in HubSpot, then test again."));
    } else {
      lines.push(el("p", { class: "error-text" }, "✗ " + (check.message || check.error || "HubSpot refused the token.")));
    }
    if (check.unverified_scopes && check.unverified_scopes.length) {
      lines.push(el("p", { class: "warn-text" }, "Could not be checked without writing (not confirmed, not refused): " + check.unverified_scopes.join(", ") + "."));
    }
    const limits = check.limits || {};
    if (limits.per_window) {
      lines.push(el("p", {}, "Limits from HubSpot: " + number(limits.per_window) + " calls per 10 s" + (limits.daily ? ", " + number(limits.daily) + " per day" : "") + (limits.plan ? " (the " + limits.plan + " plan: selected above)" : "") + "."));
      if (limits.plan) $("#plan").value = limits.plan;
    }
    if (check.ok && check.message) lines.push(el("p", { class: "muted" }, check.message));
    box.append(...lines);
  }

  function showPlan(box, plan) {
    box.replaceChildren();
    if (!plan.properties.length) {
      box.append(el("p", { class: "warn-text" }, "Pick at least one audience or attribute in step 4."));
      return;
    }
    const rows = plan.properties.map((p) => el("tr", {}, el("td", {}, p.label), el("td", {}, el("code", {}, p.name)), el("td", {}, p.type + " / " + p.fieldType), el("td", {}, number(p.contacts))));
    box.append(
      el("table", { class: "grid" },
        el("caption", {}, "Properties hubsync will create"),
        el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Label"), el("th", { scope: "col" }, "Internal name"), el("th", { scope: "col" }, "Type"), el("th", { scope: "col" }, "Contacts to backfill"))),
        el("tbody", {}, rows)),
      el("p", {}, "Backfill: " + number(plan.calls) + " HubSpot calls, about " + seconds(plan.seconds_at_limits) + " at the plan's limits, " + (plan.share_of_daily_budget * 100).toFixed(2) + "% of the daily budget."),
    );
  }

  function newActivation() {
    const form = $("#new-activation");
    if (!form) return;
    $("#catalog-search").addEventListener("input", (event) => {
      const q = event.target.value.trim().toLowerCase();
      $$("li[data-search]").forEach((li) => (li.hidden = q !== "" && !li.dataset.search.includes(q)));
    });
    $("#test-connection").addEventListener("click", async () => {
      const box = $("#connection-result");
      const body = draft();
      if (!body.token) {
        box.replaceChildren(el("p", { class: "error-text" }, "Paste the token first."));
        $("#token").focus();
        return;
      }
      box.replaceChildren(el("p", { class: "muted" }, "Asking HubSpot …"));
      const result = await api("POST", "/api/v1/connections/test", { token: body.token, base_url: body.base_url });
      if (result.ok) showConnection(box, result.data);
      else box.replaceChildren(el("p", { class: "error-text" }, "✗ " + problem(result)));
    });
    $("#preview").addEventListener("click", async () => {
      const body = draft();
      delete body.token;
      if (!body.name) delete body.name;
      const box = $("#plan-result");
      const result = await api("POST", "/api/v1/activations?dry_run=true", body);
      if (result.ok) showPlan(box, result.data);
      else box.replaceChildren(el("p", { class: "error-text" }, problem(result)));
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const error = $("#save-error");
      const body = draft();
      const missing = !body.name ? "name" : !body.token ? "token" : null;
      if (missing) {
        error.textContent = missing === "name" ? "Give the activation a name (step 2)." : "Paste the HubSpot token (step 3).";
        $("#" + missing).focus();
        return;
      }
      if (!body.audiences.length && !body.attributes.length) {
        error.textContent = "Pick at least one audience or attribute (step 4).";
        $("#catalog-search").focus();
        return;
      }
      error.textContent = "";
      $("#save").disabled = true;
      const result = await api("POST", "/api/v1/activations", body);
      $("#save").disabled = false;
      if (result.ok) {
        location.href = "/activations/" + encodeURIComponent(result.data.id);
        return;
      }
      error.textContent = problem(result);
      const field = result.data && result.data.field ? result.data.field.split(/[.[]/)[0] : null;
      if (field && document.getElementById(field)) document.getElementById(field).focus();
    });
  }

  // --- charts --------------------------------------------------------------------------------

  const SPAN_S = 600; // the charts show the last ten minutes
  const NS = "http://www.w3.org/2000/svg";

  function pointOf(view) {
    const b = view.budget || {};
    const used = b.window_limit !== undefined && b.window_left !== undefined ? Math.max(0, b.window_limit - b.window_left) : null;
    return { at: Date.now() / 1000, calls_window: used, window_limit: b.window_limit === undefined ? null : b.window_limit, lag_s: view.status.lag_s === undefined ? null : view.status.lag_s };
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(NS, tag);
    Object.entries(attrs).forEach(([k, v]) => node.setAttribute(k, v));
    return node;
  }

  function draw(chart, points, key, limit, unit) {
    const W = 600, H = 160, L = 44, R = 8, T = 10, B = 24;
    const now = Date.now() / 1000;
    const values = points.filter((p) => p[key] !== null && p.at > now - SPAN_S);
    const top = Math.max(limit || 0, ...values.map((p) => p[key]), unit === "s" ? 1 : 10) * 1.1;
    const x = (at) => L + ((at - (now - SPAN_S)) / SPAN_S) * (W - L - R);
    const y = (v) => H - B - (v / top) * (H - T - B);
    chart.replaceChildren();
    chart.append(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }));
    chart.append(svg("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
    [[0, "0"], [top / 1.1, (top / 1.1).toFixed(unit === "s" ? 1 : 0)]].forEach(([v, label]) => {
      const t = svg("text", { x: L - 6, y: y(v) + 4, class: "tick", "text-anchor": "end" });
      t.textContent = label;
      chart.append(t);
    });
    [[now - SPAN_S, "10 min ago"], [now - SPAN_S / 2, "5 min ago"], [now, "now"]].forEach(([at, label], i) => {
      const t = svg("text", { x: x(at), y: H - 6, class: "tick", "text-anchor": ["start", "middle", "end"][i] });
      t.textContent = label;
      chart.append(t);
    });
    if (limit) {
      chart.append(svg("line", { x1: L, y1: y(limit), x2: W - R, y2: y(limit), class: "limit" }));
      const t = svg("text", { x: W - R, y: y(limit) - 4, class: "tick", "text-anchor": "end" });
      t.textContent = "limit " + limit;
      chart.append(t);
    }
    if (values.length) {
      const coords = values.map((p) => x(p.at).toFixed(1) + "," + y(p[key]).toFixed(1));
      coords.push(x(now).toFixed(1) + "," + y(values[values.length - 1][key]).toFixed(1)); // holds until it changes
      chart.append(svg("polyline", { points: coords.join(" "), class: "series" }));
      const lastPoint = values[values.length - 1];
      chart.append(svg("circle", { cx: x(lastPoint.at), cy: y(lastPoint[key]), r: 3.5, class: "dot" }));
    }
    return values;
  }

  const charts = {
    points: [],
    add(point) {
      this.points.push(point);
      this.points = this.points.filter((p) => p.at > Date.now() / 1000 - SPAN_S);
      this.draw();
    },
    draw() {
      const calls = $("#calls-chart");
      if (!calls) return;
      const last = this.points.length ? this.points[this.points.length - 1] : null;
      const limit = (last && last.window_limit) || Number(calls.dataset.limit) || null;
      const c = draw(calls, this.points, "calls_window", limit, "calls");
      const peak = c.length ? Math.max(...c.map((p) => p.calls_window)) : null;
      $("#calls-summary").textContent = c.length
        ? "Now " + number(c[c.length - 1].calls_window) + " calls in the window" + (limit ? " of " + number(limit) : "") + "; at most " + number(peak) + " in the last 10 minutes."
        : "No calls recorded yet.";
      const l = draw($("#lag-chart"), this.points, "lag_s", null, "s");
      $("#lag-summary").textContent = l.length
        ? "Now " + seconds(l[l.length - 1].lag_s) + "; at most " + seconds(Math.max(...l.map((p) => p.lag_s))) + " in the last 10 minutes."
        : "No writes yet, so no lag to show.";
    },
    async start() {
      const live = $("#live");
      if (!live) return;
      const result = await api("GET", "/api/v1/activations/" + encodeURIComponent(live.dataset.activation) + "/history");
      if (result.ok) this.points = result.data.points.concat(this.points).sort((a, b) => a.at - b.at);
      this.draw();
      setInterval(() => this.draw(), 5000); // slide the time axis
    },
  };

  document.addEventListener("DOMContentLoaded", () => {
    signIn();
    signOut();
    actions();
    newActivation();
    charts.start();
    live();
  });
})();
