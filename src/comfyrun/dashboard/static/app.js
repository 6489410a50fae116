"use strict";
// The comfyrun dashboard. Polls the native JSON API for stats, backends and the job list, and
// follows the selected job's event stream. The stream is read with fetch rather than
// EventSource because EventSource cannot send the Authorization header.
(() => {
  const API = new URL("../api/v2/", document.baseURI);
  const STATUSES = ["queued", "running", "canceling", "succeeded", "failed", "canceled", "expired"];
  const TERMINAL = new Set(["succeeded", "failed", "canceled", "expired"]);
  const TOKEN_KEY = "comfyrun.token";
  const POLL_MS = 3000;
  const PAGE_SIZE = 25;

  const state = {
    filter: new Set(), // statuses shown; empty means all
    cursors: [null], // the cursor of every page up to the current one
    next: null,
    selected: null, // the followed job's id
    job: null, // its latest Job object
    stream: null, // AbortController of its event stream
    thumbs: new Map(), // output url -> object URL of an image fetched with the token
    askedFor: null, // the token a 401 last asked to replace
    log: [], // the followed job's log events
    preview: null, // its latest live preview image, as a data: URL
    reloading: null, // the job reload in flight, and whether another is wanted after it
    reloadAgain: false,
    jobsSeq: 0, // numbers job list requests, so a slow answer cannot overwrite a newer one
  };
  const $ = (id) => document.getElementById(id);
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "class") el.className = v;
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat(Infinity)) if (c != null) el.append(c instanceof Node ? c : String(c));
    return el;
  }

  // --- the API ----------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.error && body.error.message) || `HTTP ${status}`);
      this.status = status;
    }
  }

  function headers(extra) {
    const token = localStorage.getItem(TOKEN_KEY);
    return { ...(token ? { Authorization: `Bearer ${token}` } : {}), ...extra };
  }

  async function api(path, opts = {}) {
    const res = await fetch(new URL(path, API), { ...opts, headers: headers(opts.headers) });
    const json = (res.headers.get("content-type") || "").includes("json");
    const body = json ? await res.json() : null;
    if (res.status === 401) askToken(true);
    if (!res.ok) throw new ApiError(res.status, body);
    return body;
  }

  function setConn(error) {
    const el = $("conn");
    el.className = error ? "conn down" : "conn";
    el.textContent = error ? `offline: ${error.message}` : `live · ${new Date().toLocaleTimeString()}`;
  }

  // --- formatting ---------------------------------------------------------------------------
  function dur(s) {
    if (s == null) return "–";
    if (s < 1) return `${Math.round(s * 1000)} ms`;
    if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${Math.floor(s % 60)}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  }
  const since = (iso) => (iso ? (Date.now() - Date.parse(iso)) / 1000 : null);
  const ago = (iso) => (iso ? `${dur(Math.max(0, since(iso)))} ago` : "–");
  const when = (iso) => (iso ? new Date(iso).toLocaleString() : "–");
  const badge = (s) => h("span", { class: `badge ${s}` }, s);
  const size = (n) => (n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1048576).toFixed(1)} MiB`);

  function runtime(job) {
    if (job.metrics && job.metrics.execution_ms != null) return job.metrics.execution_ms / 1000;
    return job.started_at && !TERMINAL.has(job.status) ? since(job.started_at) : null;
  }

  function bar(job, big) {
    const p = job.progress;
    const value = job.status === "succeeded" ? 1 : p ? p.value : 0;
    const cls = job.status === "succeeded" ? "done" : job.status === "failed" ? "failed" : "";
    return h("div", { class: `bar ${big ? "big" : ""} ${cls}`, title: `${Math.round(value * 100)}%` },
      h("span", { style: `width:${(value * 100).toFixed(1)}%` }));
  }

  function progressText(p) {
    if (!p) return "";
    return [`${p.nodes_done}/${p.nodes_total} nodes`, p.steps ? `step ${p.step}/${p.steps}` : null,
      p.current_node_class ? `${p.current_node_class} (#${p.current_node})` : null, p.message].filter(Boolean).join(" · ");
  }

  // --- stats and backends -------------------------------------------------------------------
  function card(label, value, status) {
    const active = status && state.filter.size === 1 && state.filter.has(status);
    return h(status ? "button" : "div", {
      class: `card ${status ? "" : "static"} ${active ? "active" : ""}`,
      type: status ? "button" : null,
      onclick: status ? () => setFilter(active ? [] : [status]) : null,
    }, h("span", { class: "n" }, value), h("span", { class: "k" }, label));
  }

  async function loadStats() {
    const s = await api("stats");
    $("stats").replaceChildren(
      card("queue depth", s.queue_depth),
      card("oldest queued", s.oldest_queued_age_s == null ? "–" : dur(s.oldest_queued_age_s)),
      ...STATUSES.map((st) => card(st, s.counts[st] || 0, st)));
  }

  async function loadBackends() {
    const { backends } = await api("backends");
    const tbody = $("backends").tBodies[0];
    const open = new Set([...tbody.querySelectorAll("details[open]")].map((d) => d.dataset.name));
    const rows = backends.map((b) => h("tr", {},
      h("td", {}, h("strong", {}, b.name), b.managed ? h("span", { class: "muted" }, " managed") : null),
      h("td", {}, badge(b.state),
        // an admin's hold (POST /api/v2/backends/{name}/drain|stop): no new jobs go there
        b.kept_stopped ? h("span", { class: "muted" }, " kept stopped")
          : b.draining && b.state !== "draining" ? h("span", { class: "muted" }, " draining") : null),
      h("td", {}, b.inflight),
      h("td", {}, b.jobs_done),
      h("td", {}, b.url ? h("code", {}, b.url) : "–"),
      h("td", { class: b.last_error ? "err" : "" }, b.last_error || "",
        b.log_tail.length ? h("details", { "data-name": b.name, open: open.has(b.name) },
          h("summary", {}, `log (${b.log_tail.length} lines)`), h("pre", {}, b.log_tail.join("\n"))) : null)));
    tbody.replaceChildren(...(rows.length ? rows
      : [h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No backends in this process (an API-only server?)"))]));
  }

  // --- the job list -------------------------------------------------------------------------
  function setFilter(statuses) {
    state.filter = new Set(statuses);
    state.cursors = [null];
    renderFilters();
    refresh();
  }

  function renderFilters() {
    const chip = (label, on, click) => h("button", { type: "button", "aria-pressed": String(on), onclick: click }, label);
    $("filters").replaceChildren(chip("all", state.filter.size === 0, () => setFilter([])),
      ...STATUSES.map((s) => chip(s, state.filter.has(s), () => {
        const next = new Set(state.filter);
        if (!next.delete(s)) next.add(s);
        setFilter([...next]);
      })));
  }

  async function loadJobs() {
    const q = new URLSearchParams({ limit: PAGE_SIZE });
    if (state.filter.size) q.set("status", [...state.filter].join(","));
    const cursor = state.cursors[state.cursors.length - 1];
    if (cursor) q.set("cursor", cursor);
    const seq = ++state.jobsSeq;
    const page = await api(`jobs?${q}`);
    if (seq !== state.jobsSeq) return; // a newer request (another page, a filter) answers instead
    state.next = page.next_cursor;
    const rows = page.jobs.map((j) => h("tr", { class: j.id === state.selected ? "selected" : "", onclick: () => select(j.id) },
      h("td", { title: j.id }, h("code", {}, j.id.slice(0, 12))),
      h("td", { class: "type" }, j.type || "comfy"),
      h("td", {}, badge(j.status), j.queue_position != null ? h("span", { class: "muted" }, ` #${j.queue_position}`) : null),
      h("td", {}, bar(j)),
      h("td", {}, j.backend || "–"),
      h("td", { title: when(j.created_at) }, ago(j.created_at)),
      h("td", {}, dur(runtime(j))),
      h("td", {}, j.priority)));
    $("jobs").tBodies[0].replaceChildren(...(rows.length ? rows
      : [h("tr", {}, h("td", { colspan: 8, class: "empty" }, "No jobs"))]));
    $("page").textContent = `page ${state.cursors.length}`;
    $("prev").disabled = state.cursors.length === 1;
    $("next").disabled = !state.next;
  }

  // --- the selected job ---------------------------------------------------------------------
  async function select(id) {
    if (state.stream) state.stream.abort();
    for (const url of state.thumbs.values()) URL.revokeObjectURL(url);
    state.thumbs.clear();
    state.selected = id;
    state.job = null;
    state.log = [];
    state.preview = null;
    history.replaceState(null, "", id ? `#job=${encodeURIComponent(id)}` : "#");
    for (const tr of $("jobs").tBodies[0].rows) tr.classList.toggle("selected", tr.querySelector("td")?.title === id);
    if (!id) return renderDetail();
    try {
      await reloadJob(id);
    } catch (e) {
      return $("detail").replaceChildren(h("p", { class: "err" }, `Job ${id}: ${e.message}`));
    }
    follow(id);
  }

  async function reloadJob(id) {
    const job = await api(`jobs/${encodeURIComponent(id)}`);
    if (state.selected !== id) return;
    // the API names the backend once the prompt is sent (held in its queue, still "queued")
    job.backend ??= state.log.findLast((e) => e.backend)?.backend ?? null;
    state.job = job;
    renderDetail();
  }

  // Events can come in bursts (a replayed history): one reload at a time, one more after it.
  function reloadSoon(id) {
    if (state.reloading) return void (state.reloadAgain = true);
    state.reloading = reloadJob(id).catch((e) => note(e.message)).finally(() => {
      state.reloading = null;
      if (state.reloadAgain && state.selected === id) {
        state.reloadAgain = false;
        reloadSoon(id);
      }
    });
  }

  function renderDetail() {
    const job = state.job;
    if (!job) return $("detail").replaceChildren(h("p", { class: "muted" }, "Select a job to follow it live."));
    const facts = [
      ["type", job.type || "comfy"], ["created", when(job.created_at)], ["started", when(job.started_at)],
      ["completed", when(job.completed_at)], ["queue position", job.queue_position ?? "–"],
      ["backend", job.backend || "–"], ["attempts", `${job.attempts} (retries allowed: ${job.max_retries})`],
      ["priority", job.priority], ["queued for", dur(job.metrics.queue_ms == null ? null : job.metrics.queue_ms / 1000)],
      ["ran for", dur(runtime(job))], ["expires", when(job.expires_at)],
    ];
    $("detail").replaceChildren(h("div", {},
      h("div", { class: "detail-head" }, h("h2", {}, "Job ", h("code", {}, job.id)), badge(job.status),
        TERMINAL.has(job.status) ? null : h("button", { type: "button", class: "danger", onclick: cancel }, "Cancel")),
      h("div", { id: "detail-bar" }, bar(job, true)),
      h("div", { id: "detail-what", class: "muted" }, progressText(job.progress)),
      h("img", { id: "detail-preview", class: "preview", alt: "live preview", hidden: !state.preview || TERMINAL.has(job.status), src: state.preview }),
      h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
      job.error ? errorView(job.error) : null,
      job.outputs.length ? [h("h2", {}, `Outputs (${job.outputs.length})`), h("div", { class: "outputs" }, job.outputs.map(outputView))] : null,
      Object.keys(job.metadata).length ? [h("h2", {}, "Metadata"), h("pre", {}, JSON.stringify(job.metadata, null, 2))] : null,
      h("h2", {}, "Log"), h("ol", { id: "detail-log", class: "log" }, state.log.map(logLine)),
      h("div", { id: "stream-note", class: "stream-note" })));
  }

  function errorView(e) {
    const more = (label, text) => h("details", {}, h("summary", {}, label), h("pre", {}, text));
    return h("div", { class: "error-box" }, h("strong", {}, e.code), ": ", e.message,
      e.node_id ? h("div", { class: "muted" }, `node ${e.node_id} (${e.class_type || "?"})`) : null,
      e.traceback ? more("traceback", e.traceback) : null,
      e.details != null ? more("details", JSON.stringify(e.details, null, 2)) : null);
  }

  function outputView(o) {
    const caption = h("figcaption", {}, `${o.name} · ${size(o.size_bytes)}`);
    if (o.text != null) return h("figure", {}, h("pre", {}, o.text), caption);
    const img = o.content_type.startsWith("image/") ? h("img", { alt: o.name, loading: "lazy" }) : null;
    const link = h("a", { href: o.url, target: "_blank", rel: "noopener" }, img || `download ${o.type}`);
    if (img) {
      fileUrl(o.url).then((u) => { img.src = link.href = u; }, (e) => { img.alt = `${o.name} (${e.message})`; });
    } else if (needsToken(o.url)) {
      link.addEventListener("click", async (e) => {
        e.preventDefault();
        const a = h("a", { href: await fileUrl(o.url).catch((err) => alert(err.message)), download: o.name });
        if (a.href) a.click();
      });
    }
    return h("figure", {}, link, caption);
  }

  // A same-origin file needs the token, which <img> and <a> cannot send: fetch it as a blob.
  const needsToken = (url) => new URL(url, location.href).origin === location.origin && !!localStorage.getItem(TOKEN_KEY);

  async function fileUrl(url) {
    if (!needsToken(url)) return url;
    if (!state.thumbs.has(url)) {
      const res = await fetch(url, { headers: headers() });
      if (!res.ok) throw new ApiError(res.status, null);
      state.thumbs.set(url, URL.createObjectURL(await res.blob()));
    }
    return state.thumbs.get(url);
  }

  async function cancel() {
    if (!state.job || !confirm(`Cancel job ${state.job.id}?`)) return;
    try {
      state.job = await api(`jobs/${encodeURIComponent(state.job.id)}/cancel`, { method: "POST" });
      renderDetail();
    } catch (e) {
      alert(`Cancel failed: ${e.message}`);
    }
    refresh();
  }

  // Reads the job's event stream from its first event (so the log is complete), resuming
  // after the last id seen, until the job ends: the server closes the stream after that.
  async function follow(id) {
    const ctl = new AbortController();
    state.stream = ctl;
    let last = "0";
    for (;;) {
      try {
        const res = await fetch(new URL(`jobs/${encodeURIComponent(id)}/events`, API), {
          headers: headers({ Accept: "text/event-stream", ...(last ? { "Last-Event-ID": last } : {}) }),
          signal: ctl.signal,
        });
        if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
        note(TERMINAL.has(state.job?.status) ? "" : "following live");
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf = (buf + value).replace(/\r\n?/g, "\n");
          for (let i; (i = buf.indexOf("\n\n")) >= 0; buf = buf.slice(i + 2)) {
            const ev = parseEvent(buf.slice(0, i));
            if (ev.id) last = ev.id;
            if (ev.data != null) await onEvent(id, ev);
          }
        }
      } catch (e) {
        if (ctl.signal.aborted) return;
        note(`stream: ${e.message}; retrying`);
        if (e.status === 404) return;
      }
      if (ctl.signal.aborted || TERMINAL.has(state.job?.status)) return note("");
      await sleep(1000);
    }
  }

  function parseEvent(block) {
    const ev = { event: "message", data: null, id: null };
    for (const line of block.split("\n")) {
      const colon = line.indexOf(":");
      if (colon === 0) continue; // a comment (keep-alive)
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") ev.event = value;
      else if (field === "id") ev.id = value;
      else if (field === "data") ev.data = ev.data == null ? value : `${ev.data}\n${value}`;
    }
    return ev;
  }

  async function onEvent(id, ev) {
    if (state.selected !== id || !state.job) return;
    const data = JSON.parse(ev.data);
    if (ev.event === "progress") {
      state.job.progress = data; // only the bar changes: no re-render, thumbnails stay put
      const old = $("detail-bar");
      if (old) old.replaceChildren(bar(state.job, true));
      const what = $("detail-what");
      if (what) what.textContent = progressText(data);
    } else if (ev.event === "preview" && /^image\/(png|jpeg|webp|gif)$/.test(data.content_type)) {
      state.preview = `data:${data.content_type};base64,${data.data_base64}`;
      const img = $("detail-preview");
      if (img && !TERMINAL.has(state.job.status)) Object.assign(img, { src: state.preview, hidden: false });
    } else if (ev.event === "log") {
      state.log.push(data);
      const list = $("detail-log");
      if (list) list.append(logLine(data));
    } else if (ev.event === "status" || ev.event === "output") {
      if (ev.event === "status") state.job.status = data.status;
      reloadSoon(id);
    }
  }

  const logLine = (e) => h("li", { class: e.level || "info" }, e.message || e.action || JSON.stringify(e));

  function note(text) {
    const el = $("stream-note");
    if (el) el.textContent = text;
  }

  // --- the token ----------------------------------------------------------------------------
  // A 401 asks once per token: dismissing the dialog is not undone by the next poll.
  function askToken(auto) {
    const dialog = $("token-dialog");
    const token = localStorage.getItem(TOKEN_KEY) || "";
    if (dialog.open || (auto === true && state.askedFor === token)) return;
    if (auto === true) state.askedFor = token;
    $("token-input").value = localStorage.getItem(TOKEN_KEY) || "";
    dialog.showModal();
  }

  $("token-dialog").addEventListener("close", () => {
    const choice = $("token-dialog").returnValue;
    if (choice === "save" && $("token-input").value.trim()) localStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
    else if (choice === "clear") localStorage.removeItem(TOKEN_KEY);
    else return;
    refresh();
    if (state.selected) select(state.selected);
  });

  // --- wiring -------------------------------------------------------------------------------
  async function refresh() {
    const results = await Promise.allSettled([loadStats(), loadBackends(), loadJobs()]);
    const failed = results.find((r) => r.status === "rejected");
    setConn(failed ? failed.reason : null);
  }

  async function poll() {
    for (;;) {
      if (!document.hidden) await refresh();
      await sleep(POLL_MS);
    }
  }

  $("token-btn").addEventListener("click", () => askToken(false));
  $("prev").addEventListener("click", () => { state.cursors.pop(); loadJobs().catch(setConn); });
  $("next").addEventListener("click", () => { state.cursors.push(state.next); loadJobs().catch(setConn); });
  $("open-job").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("open-job-id").value.trim();
    if (id) select(id);
  });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
  const hashJob = () => new URLSearchParams(location.hash.slice(1)).get("job");
  window.addEventListener("hashchange", () => { if (hashJob() !== state.selected) select(hashJob()); });

  renderFilters();
  if (hashJob()) select(hashJob());
  poll();
})();
