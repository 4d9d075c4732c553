// The Quantix host web client: a single page on top of the node API (nothing here is possible only
// through this page). Preact + htm (no build step), uPlot for charts, noVNC for consoles (loaded only
// when a console opens). Sessions: the cookie is HttpOnly; the CSRF token is kept in memory only and sent
// as X-CSRF-Token on every state-changing request. Polling requests say X-Qx-Background: 1 so that they
// do not keep an idle session alive. See README.md beside this file.
import { h, render } from "preact";
import { useEffect, useRef, useState, useCallback } from "preact/hooks";
import htm from "htm";

const html = htm.bind(h);
const KEEP_S = 3600; // the charts show the last hour: the hour qx-node keeps (GET /v1/host/metrics/history)

// ---------------------------------------------------------------------------------------------- API
let csrf = null;
let onSignedOut = () => {};

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.field = body && body.field;
    this.hint = body && body.hint;
  }
}

async function api(method, path, { body, background = false } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  if (background) headers["X-Qx-Background"] = "1";
  const r = await fetch(path, { method, headers, credentials: "same-origin", cache: "no-store",
                                body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let doc = null;
  try { doc = text ? JSON.parse(text) : null; } catch (_e) { doc = { error: text }; }
  if (r.status === 401 && !path.startsWith("/ui/")) onSignedOut((doc && doc.error) || "signed out");
  if (!r.ok) throw new ApiError(r.status, doc);
  return doc;
}

function errText(e) {
  if (!(e instanceof ApiError)) return String(e && e.message ? e.message : e);
  return e.hint ? `${e.message} — ${e.hint}` : e.message;
}

// The long operations (create, clone, snapshot) answer 202 at once with their task (README.md beside this
// file): follow it by its "task" events, and by polling its URL too (its end may have come before this
// listener, or while the stream reconnects). onUpdate(task) on every change; resolves with the ended task,
// or throws its error (the API's {error, field, hint}) when it failed or was cancelled.
const TASK_POLL_MS = 2000;
function followTask(task, onUpdate = () => {}) {
  return new Promise((resolve, reject) => {
    let ended = false;
    const update = (t) => {
      if (ended || !t || t.id !== task.id) return;
      onUpdate(t);
      if (t.state === "running") return;
      ended = true; listeners.delete(listener); clearInterval(timer);
      if (t.state === "succeeded") resolve(t); else reject(new ApiError((t.error && t.error.status) || 500, t.error));
    };
    const listener = (kind, d) => { if (kind === "task") update(d.task); };
    const gone = (e) => { // forgotten (the node keeps the last 100 ended tasks, and none across a restart)
      if (ended || !(e instanceof ApiError) || e.status !== 404) return; // else: the next poll tries again
      ended = true; listeners.delete(listener); clearInterval(timer); reject(e);
    };
    const poll = () => api("GET", task.url, { background: true }).then(update, gone);
    listeners.add(listener);
    const timer = setInterval(poll, TASK_POLL_MS);
    update(task);
    if (!ended) poll();
  });
}

// ------------------------------------------------------------------------------ live data (one each)
const listeners = new Set();
const RECENT = 20;
const recent = []; // the newest events of this page's stream, newest first
function describe(kind, d) {
  if (kind === "lifecycle") return `VM ${d.vm}: ${d.event} (${d.detail}), now ${d.state}`;
  if (kind === "task") return `task ${d.task.kind} ${d.task.target}: ${d.task.state} ${d.task.progress || 0}%`;
  if (kind === "connection") return `libvirt ${d.state}${d.reason ? `: ${d.reason}` : ""}`;
  if (kind === "maintenance") return `maintenance mode ${d.maintenance ? "on" : "off"}`;
  if (kind === "host") return `host ${d.action} requested`;
  return kind;
}
let events = null;
function startEvents() {
  if (events) return;
  events = new EventSource("/v1/events");
  for (const kind of ["snapshot", "lifecycle", "task", "connection", "maintenance", "host", "stats"]) {
    events.addEventListener(kind, (ev) => {
      let data = null;
      try { data = JSON.parse(ev.data); } catch (_e) { return; }
      if (kind === "stats") { pushStats(data); return; }
      if (kind !== "snapshot") {
        recent.unshift({ kind, time: data.time, text: describe(kind, data) });
        recent.length = Math.min(recent.length, RECENT);
      }
      for (const l of listeners) l(kind, data);
    });
  }
}
function stopEvents() { if (events) { events.close(); events = null; } }
// A page left (or kept in the back-forward cache) must not keep its event stream open: browsers allow six
// connections per host, and leftover streams would make a later page wait for a free one.
addEventListener("pagehide", () => { stopEvents(); stopStats(); });
addEventListener("pageshow", (ev) => { if (ev.persisted && csrf) { startEvents(); startStats(); } });
function useEvents(fn) {
  const ref = useRef(fn);
  ref.current = fn;
  useEffect(() => { const l = (k, d) => ref.current(k, d); listeners.add(l); return () => listeners.delete(l); }, []);
}

// The host's rates for the charts: the hour qx-node kept before the page opened, then its samples as they are
// taken ("stats" events of the stream, one per 5 s). One sampler on the host for every open page, and one clock:
// every time is the host's.
const stats = { t: [], cpu: [], mem: [], disk: [], net: [], subs: new Set(), started: false, inflight: null };
const SERIES = ["cpu", "mem", "disk", "net"];
function pushStats(d) {
  if (stats.t.length && d.t <= stats.t[stats.t.length - 1]) return; // already there (from the kept hour)
  stats.t.push(d.t);
  for (const k of SERIES) stats[k].push(d[k]);
  trimStats();
  for (const f of stats.subs) f();
}
function trimStats() {
  const oldest = stats.t[stats.t.length - 1] - KEEP_S;
  let n = 0;
  while (n < stats.t.length && stats.t[n] < oldest) n++;
  if (n) { stats.t.splice(0, n); for (const k of SERIES) stats[k].splice(0, n); }
}
// The hour before the page opened, from qx-node's own ring, put before the samples the stream brought
// meanwhile (only what is older than the first of them).
async function loadHistory() {
  try {
    const h = await api("GET", "/v1/host/metrics/history", { background: true });
    const first = stats.t.length ? stats.t[0] : Infinity;
    const upto = h.t.findIndex((t) => t >= first);
    const n = upto < 0 ? h.t.length : upto;
    stats.t.unshift(...h.t.slice(0, n));
    for (const k of SERIES) stats[k].unshift(...h[k].slice(0, n));
    trimStats();
    for (const f of stats.subs) f();
  } catch (_e) { /* the live samples go on without it */ }
}
// Sign-out waits for stats.inflight: the history's request does not outlive the session.
function startStats() { if (!stats.started) { stats.started = true; stats.inflight = loadHistory(); } }
function stopStats() { stats.started = false; }

// ---------------------------------------------------------------------------------------- helpers
function useHash() {
  const [hash, setHash] = useState(location.hash || "#/");
  useEffect(() => { const f = () => setHash(location.hash || "#/"); addEventListener("hashchange", f);
                    return () => removeEventListener("hashchange", f); }, []);
  return hash;
}

function useLoad(fn, deps = []) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const reload = useCallback(async () => {
    try { setState({ data: await fn(), error: null, loading: false }); }
    catch (e) { setState((s) => ({ data: s.data, error: errText(e), loading: false })); }
  }, deps);
  useEffect(() => { reload(); }, [reload]);
  return [state, reload];
}

const mib = (n) => (n >= 1024 ? `${(n / 1024).toFixed(n % 1024 ? 1 : 0)} GiB` : `${n} MiB`);
function bytes(n) {
  if (n == null) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}
// A Performance API mark the first time a page shows its data (bench/web.py reads it: "meaningful paint").
function useMark(name, ready) {
  useEffect(() => {
    if (ready && !performance.getEntriesByName(name, "mark").length) {
      requestAnimationFrame(() => performance.mark(name));
    }
  }, [!!ready]);
}
const Err = ({ text }) => text ? html`<p class="error" role="alert">${text}</p>` : null;

// ---------------------------------------------------------------------------------------- sign-in
function SignIn({ onIn, reason }) {
  const [useToken, setUseToken] = useState(false);
  const [secret, setSecret] = useState("");
  const [error, setError] = useState(reason || null);
  const [busy, setBusy] = useState(false);
  async function submit(ev) {
    ev.preventDefault();
    setBusy(true);
    try {
      const s = await api("POST", "/ui/login", { body: useToken ? { token: secret } : { password: secret } });
      setSecret("");
      onIn(s);
    } catch (e) { setError(errText(e)); } finally { setBusy(false); }
  }
  return html`<main class="signin">
    <form id="signin" onSubmit=${submit} aria-labelledby="signin-title">
      <h1 id="signin-title">Quantix host</h1>
      <label for="secret">${useToken ? "API token" : "Root password"}</label>
      <input id="secret" type="password" autocomplete=${useToken ? "off" : "current-password"} required autofocus
             value=${secret} onInput=${(e) => setSecret(e.target.value)} />
      <button id="signin-submit" type="submit" disabled=${busy}>Sign in</button>
      <button type="button" class="link" id="signin-mode" onClick=${() => { setUseToken(!useToken); setError(null); }}>
        ${useToken ? "Sign in with the root password" : "Sign in with the API token"}</button>
      <${Err} text=${error} />
    </form></main>`;
}

// --------------------------------------------------------------------------------------- dashboard
function Chart({ title, series, unit, id }) {
  const fmt = (x) => (unit === "%" ? `${x}%` : `${bytes(x)}/s`);
  const el = useRef(null);
  useEffect(() => {
    let plot = null;
    let cancelled = false;
    // data-points / data-first: what the chart holds, for tests (the first point is the history's oldest).
    const mark = () => { if (el.current) { el.current.dataset.points = stats.t.length;
                                           el.current.dataset.first = stats.t.length ? stats.t[0] : ""; } };
    const draw = () => { if (plot) { plot.setData([stats.t.slice(), stats[series].slice()]); mark(); } };
    import("./vendor/uplot/uPlot.esm.js").then(({ default: UPlot }) => {
      if (cancelled || !el.current) return;
      const width = Math.max(240, el.current.clientWidth);
      const y = unit === "%" ? { range: [0, 100] } : { range: (_u, _min, max) => [0, Math.max(1024, max)] };
      plot = new UPlot({ width, height: 160, scales: { y }, legend: { show: false },
                         series: [{}, { label: title, stroke: "#2b6cb0", fill: "rgba(43,108,176,0.12)", width: 1.5 }],
                         axes: [{}, { size: 70, values: (_u, v) => v.map(fmt) }] },
                       [stats.t.slice(), stats[series].slice()], el.current);
      mark();
      el.current.dataset.ready = "1";
    });
    stats.subs.add(draw);
    return () => { cancelled = true; stats.subs.delete(draw); if (plot) plot.destroy(); };
  }, []);
  const last = stats[series].length ? stats[series][stats[series].length - 1] : null;
  return html`<figure class="chart"><figcaption>${title}: <strong>${last == null ? "–" : fmt(last)}</strong>
    </figcaption><div id=${id} ref=${el} role="img" aria-label=${`${title}, last hour`}></div></figure>`;
}

function Dashboard() {
  const [host] = useLoad(() => api("GET", "/v1/host"));
  const [health, reloadHealth] = useLoad(() => fetch("/health", { cache: "no-store" }).then((r) => r.json()));
  const [vms, reloadVms] = useLoad(() => api("GET", "/v1/vms"));
  const [tasks, reloadTasks] = useLoad(() => api("GET", "/v1/tasks"));
  const [upd, reloadUpd] = useLoad(() => api("GET", "/v1/host/updates"));
  const [, tick] = useState(0);
  useEffect(() => { const f = () => tick((n) => n + 1); stats.subs.add(f); return () => stats.subs.delete(f); }, []);
  useEvents((kind, d) => { if (kind === "lifecycle") reloadVms(); if (kind === "task") reloadTasks();
                           if (kind === "task" && d.task.kind === "update" && d.task.state !== "running") reloadUpd();
                           if (kind === "connection") reloadHealth(); tick((n) => n + 1); });
  const u = upd.data;
  const h0 = host.data;
  useMark("qx:dashboard", h0 && vms.data && health.data);
  const counts = {};
  for (const v of vms.data || []) counts[v.state] = (counts[v.state] || 0) + 1;
  return html`<section aria-labelledby="dash-title">
    <h1 id="dash-title">${h0 ? h0.hostname : "Host"}</h1>
    <${Err} text=${host.error || vms.error} />
    <div class="cards">
      <div class="card" id="card-version"><h2>System</h2>${h0 && html`<dl>
        <dt>Version</dt><dd>${h0.version}</dd><dt>Running slot</dt><dd id="running-slot">${slotText(h0, u)}</dd>
        <dt>Updates</dt><dd id="update-state" data-state=${u ? u.state : ""}>${u ? html`${updateText(u)}
          <a href="#/host">Updates</a>` : upd.error ? `unknown: ${upd.error}` : "…"}</dd>
        ${u && u.rollback && html`<dt>Rolled back</dt><dd id="update-rollback">${rollbackText(u.rollback)}</dd>`}
        <dt>Virtualization</dt><dd>${h0.virtualization}${h0.kvm && !h0.kvm.usable ? " (KVM not usable)" : ""}</dd>
        <dt>CPU</dt><dd>${h0.cpu_model}, ${h0.cpu_threads} threads</dd><dt>Memory</dt><dd>${bytes(h0.memory_bytes)}</dd>
        <dt>Uptime</dt><dd>${Math.floor(h0.uptime_s / 3600)} h</dd></dl>`}</div>
      <div class="card" id="card-health"><h2>Health: ${health.data ? health.data.status : "…"}</h2><ul class="plain">
        ${health.data && Object.entries(health.data.components).map(([k, c]) => html`<li data-component=${k}
          class=${c.ok ? "ok" : "bad"}><span class="dot" aria-hidden="true"></span> ${k}: ${c.ok ? "ok" : "failing"}
          <small>${c.detail}</small></li>`)}</ul></div>
      <div class="card" id="card-vms"><h2>Virtual machines</h2>
        <p class="big" id="vm-total">${vms.data ? vms.data.length : "…"}</p>
        <p>${Object.entries(counts).map(([s, n]) => html`<span class=${`state state-${s}`}>${n} ${s}</span> `)}</p>
        <a href="#/vms">Manage VMs</a></div>
    </div>
    <div class="charts">
      <${Chart} id="chart-cpu" title="CPU" series="cpu" unit="%" />
      <${Chart} id="chart-mem" title="Memory used" series="mem" unit="%" />
      <${Chart} id="chart-disk" title="Disk I/O" series="disk" unit="B/s" />
      <${Chart} id="chart-net" title="Network" series="net" unit="B/s" />
    </div>
    <h2>Recent tasks</h2>
    <${Tasks} list=${(tasks.data || []).slice(0, 8)} />
    <h2>Recent events</h2>
    ${recent.length ? html`<ul id="events" class="plain">${recent.map((e) => html`<li>
      <time>${new Date(e.time * 1000).toLocaleTimeString()}</time> ${e.text}</li>`)}</ul>`
      : html`<p class="muted">No events since this page opened.</p>`}
  </section>`;
}

// The update state in one line, what an operator must know first: installing, installed awaiting the reboot,
// rolled back (and why), available, up to date; else qx-update's own sentence.
function updateText(u) {
  if (u.applying) return "an update is being installed";
  if (u.awaiting_reboot) return `${u.awaiting_reboot} installed: reboot to start it`;
  if (u.state === "rolled-back" && u.rollback) return `rolled back from ${u.rollback.from_version}`;
  if (u.available) return `${u.available} available (channel ${u.channel})`;
  if (u.state === "up-to-date") return `up to date (channel ${u.channel})`;
  if (u.state === "not-checked") return `not checked yet (channel ${u.channel})`;
  return u.message;
}
const rollbackText = (r) => `from ${r.from_version} (slot ${r.from_slot.toUpperCase()}) to slot ${r.to_slot.toUpperCase()}: ` +
  `${r.reason}${r.at || r.detected_at ? ` (${r.at || r.detected_at})` : ""}`;
// The running slot as qx-update reads the boot entries, else the kernel command line's (GET /v1/host).
function slotText(h0, u) {
  if (u) return `${u.running_slot.toUpperCase()} (release ${u.running_version})`;
  return h0.slot ? h0.slot.toUpperCase() : "not an A/B boot";
}

function Tasks({ list }) {
  if (!list.length) return html`<p class="muted">No tasks yet.</p>`;
  return html`<table class="list" id="tasks"><thead><tr><th>Task</th><th>Target</th><th>State</th><th>Progress</th>
    </tr></thead><tbody>${list.map((t) => html`<tr key=${t.id}><td>${t.kind}</td><td>${t.target}</td>
    <td>${t.state}${t.error ? html` <small>${t.error.error}</small>` : ""}</td>
    <td><progress max="100" value=${t.progress || 0}>${t.progress || 0}%</progress></td></tr>`)}</tbody></table>`;
}

// -------------------------------------------------------------------------------------------- VMs
const ACTIONS = { running: ["shutdown", "stop", "reboot", "pause"], paused: ["resume", "stop"],
                  shutoff: ["start"], crashed: ["start", "stop"] };
const LABEL = { start: "Start", shutdown: "Shut down", stop: "Power off", reboot: "Reboot", pause: "Pause",
                resume: "Resume" };

function VmList() {
  const [vms, reload] = useLoad(() => api("GET", "/v1/vms"));
  const [error, setError] = useState(null);
  const [deleting, setDeleting] = useState(null);
  useEvents((kind) => { if (kind === "lifecycle" || kind === "snapshot") reload(); });
  useMark("qx:vms", vms.data);
  async function act(name, action) {
    setError(null);
    try { await api("POST", `/v1/vms/${encodeURIComponent(name)}/${action}`); } catch (e) { setError(errText(e)); }
    reload();
  }
  return html`<section aria-labelledby="vms-title">
    <div class="bar"><h1 id="vms-title">Virtual machines</h1><a class="button" id="new-vm" href="#/vms/new">Create VM</a></div>
    <${Err} text=${error || vms.error} />
    ${vms.data && !vms.data.length && html`<p class="muted">No VMs yet.</p>`}
    ${vms.data && vms.data.length > 0 && html`<table class="list" id="vm-table"><thead><tr><th>Name</th><th>State</th>
      <th>vCPUs</th><th>Memory</th><th>Actions</th></tr></thead><tbody>
      ${vms.data.map((v) => html`<tr key=${v.name} data-vm=${v.name} data-state=${v.state}>
        <td><a href=${`#/vms/${encodeURIComponent(v.name)}`} data-action="open">${v.name}</a></td>
        <td><span class=${`state state-${v.state}`}>${v.state}</span></td><td>${v.vcpus}</td>
        <td>${mib(v.memory_mib)}</td><td class="actions">
        ${(ACTIONS[v.state] || []).map((a) => html`<button type="button" data-action=${a}
            onClick=${() => act(v.name, a)}>${LABEL[a]}</button>`)}
        ${v.state === "running" && html`<a class="button" data-action="console"
            href=${`#/vms/${encodeURIComponent(v.name)}/console`}>Console</a><a class="button" data-action="serial"
            href=${`#/vms/${encodeURIComponent(v.name)}/serial`}>Serial</a>`}
        <button type="button" class="danger" data-action="delete" onClick=${() => setDeleting(v)}>Delete</button>
        </td></tr>`)}</tbody></table>`}
    ${deleting && html`<${DeleteDialog} vm=${deleting} onDone=${() => { setDeleting(null); reload(); }} />`}
  </section>`;
}

function DeleteDialog({ vm, onDone }) {
  const ref = useRef(null);
  const [removeDisks, setRemoveDisks] = useState(false);
  const [error, setError] = useState(null);
  useEffect(() => { ref.current.showModal(); }, []);
  async function confirm(ev) {
    ev.preventDefault();
    const q = `remove_disks=${removeDisks}&force=${vm.state !== "shutoff"}`;
    try { await api("DELETE", `/v1/vms/${encodeURIComponent(vm.name)}?${q}`); ref.current.close(); onDone(); }
    catch (e) { setError(errText(e)); }
  }
  return html`<dialog ref=${ref} id="delete-dialog" onClose=${onDone} aria-labelledby="del-title">
    <form onSubmit=${confirm}><h2 id="del-title">Delete ${vm.name}?</h2>
    ${vm.state !== "shutoff" && html`<p>The VM is ${vm.state}: it is powered off first.</p>`}
    <label><input type="checkbox" id="remove-disks" checked=${removeDisks}
      onChange=${(e) => setRemoveDisks(e.target.checked)} /> Also delete its disks (otherwise they stay in the pool)</label>
    <${Err} text=${error} />
    <div class="bar"><button type="button" onClick=${() => { ref.current.close(); }}>Cancel</button>
    <button type="submit" class="danger" id="delete-confirm">Delete</button></div></form></dialog>`;
}

// One VM: edit (vCPUs, memory, description, autostart: "applied" says now or at the next start),
// snapshots (tree flattened with depth; create, revert, delete), clone (a task: its progress is shown).
function VmDetail({ name }) {
  const path = `/v1/vms/${encodeURIComponent(name)}`;
  const [vm, reloadVm] = useLoad(() => api("GET", path), [name]);
  const [snaps, reloadSnaps] = useLoad(() => api("GET", `${path}/snapshots`), [name]);
  const [edit, setEdit] = useState(null);
  const [snapName, setSnapName] = useState("");
  const [cloneName, setCloneName] = useState("");
  const [task, setTask] = useState(null);
  const [snapTask, setSnapTask] = useState(null);
  const [error, setError] = useState(null);
  const [note, setNote] = useState(null);
  useEvents((kind, d) => {
    if (kind === "lifecycle" && d.vm === name) reloadVm();
  });
  useEffect(() => { if (vm.data && !edit) setEdit({ vcpus: vm.data.vcpus, memory_mib: vm.data.memory_mib,
    description: vm.data.description || "", autostart: vm.data.autostart }); }, [vm.data]);
  async function run(fn) { setError(null); setNote(null); try { await fn(); } catch (e) { setError(errText(e)); } }
  const save = (ev) => { ev.preventDefault(); run(async () => {
    const body = {};
    for (const k of ["vcpus", "memory_mib"]) if (Number(edit[k]) !== vm.data[k]) body[k] = Number(edit[k]);
    if (edit.description !== (vm.data.description || "")) body.description = edit.description;
    if (edit.autostart !== vm.data.autostart) body.autostart = edit.autostart;
    if (!Object.keys(body).length) { setNote("Nothing changed."); return; }
    const r = await api("PATCH", path, { body });
    const when = r.applied ? Object.entries(r.applied).map(([k, v]) => `${k}: ${v === "now" ? "now" : "at the next start"}`) : [];
    setNote(`Saved${when.length ? ` (${when.join(", ")})` : ""}.`);
    reloadVm();
  }); };
  const snapshot = (ev) => { ev.preventDefault(); run(async () => {
    const taking = snapName;
    const t = await api("POST", `${path}/snapshots`, { body: { name: taking } }); setSnapName("");
    try { await followTask(t, (x) => setSnapTask({ ...x, name: taking })); } finally { reloadSnaps(); } }); };
  const revert = (s) => run(async () => {
    if (!confirm(`Revert ${name} to snapshot ${s}? Its current state is lost.`)) return;
    await api("POST", `${path}/snapshots/${encodeURIComponent(s)}/revert`); reloadSnaps(); reloadVm(); });
  const dropSnap = (s) => run(async () => {
    if (!confirm(`Delete snapshot ${s}?`)) return;
    await api("DELETE", `${path}/snapshots/${encodeURIComponent(s)}`); reloadSnaps(); });
  const [diskGib, setDiskGib] = useState(10);
  const [dropping, setDropping] = useState(null); // the disk whose removal is being asked
  const [nicOn, setNicOn] = useState("");
  const [nets] = useLoad(() => api("GET", "/v1/networks"), [name]);
  const addDisk = (ev) => { ev.preventDefault(); run(async () => {
    const r = await api("POST", `${path}/disks`, { body: { size_gib: Number(diskGib) } });
    setNote(`Disk added${r.applied ? ` (${r.applied === "now" ? "in use now" : "at the next start"})` : ""}.`); reloadVm(); }); };
  const addNic = (ev) => { ev.preventDefault(); run(async () => {
    const [kind, dev] = nicOn.split(":");
    await api("POST", `${path}/nics`, { body: { [kind]: dev } }); setNote("Network adapter added."); reloadVm(); }); };
  const dropNic = (mac) => run(async () => {
    if (!confirm(`Remove the network adapter ${mac}?`)) return;
    await api("DELETE", `${path}/nics/${encodeURIComponent(mac)}`); setNote("Network adapter removed."); reloadVm(); });
  const [cd, setCd] = useState("");
  const [isos] = useLoad(async () => (await api("GET", "/v1/storage/volumes")).filter((x) => x.name.endsWith(".iso"))
    .map((x) => x.name), [name]);
  const insert = (ev) => { ev.preventDefault(); run(async () => {
    await api("PUT", `${path}/cdrom`, { body: { volume: cd } }); setNote(`${cd} inserted.`); reloadVm(); }); };
  const eject = () => run(async () => { await api("DELETE", `${path}/cdrom`); setNote("CD ejected."); reloadVm(); });
  const clone = (ev) => { ev.preventDefault(); run(async () => {
    const t = await api("POST", `${path}/clone`, { body: { name: cloneName } });
    const to = cloneName;
    try { await followTask(t, (x) => setTask({ ...x, name: to })); } finally { reloadVm(); } }); };
  const flat = [];
  const walk = (list, depth) => { for (const sn of list || []) { flat.push({ ...sn, depth }); walk(sn.children, depth + 1); } };
  walk(snaps.data && snaps.data.snapshots, 0);
  const v = vm.data;
  const set = (k, conv = (x) => x) => (e) => setEdit({ ...edit, [k]: conv(e.target.type === "checkbox" ? e.target.checked
                                                                                                        : e.target.value) });
  return html`<section aria-labelledby="vm-title"><div class="bar"><h1 id="vm-title">${name}</h1>
    <a class="button" href="#/vms">Back</a></div>
    <${Err} text=${error || vm.error} />${note && html`<p role="status" id="vm-note">${note}</p>`}
    ${v && html`<p>State <span class=${`state state-${v.state}`} id="vm-state">${v.state}</span> · firmware ${v.firmware}
      · disks ${v.disks.length} · NICs ${v.nics.length}${v.cdroms.length ? ` · CD ${v.cdroms.join(", ")}` : ""}</p>`}
    ${edit && html`<h2>Settings</h2><form id="vm-edit" class="form" onSubmit=${save}>
      <${Field} id="edit-vcpus" label="vCPUs"><input id="edit-vcpus" type="number" min="1" max="256" value=${edit.vcpus}
        onInput=${set("vcpus")} /><//>
      <${Field} id="edit-memory" label="Memory (MiB)"><input id="edit-memory" type="number" min="16" value=${edit.memory_mib}
        onInput=${set("memory_mib")} /><//>
      <${Field} id="edit-description" label="Description"><input id="edit-description" maxlength="4096"
        value=${edit.description} onInput=${set("description")} /><//>
      <label class="check"><input type="checkbox" id="edit-autostart" checked=${edit.autostart}
        onChange=${set("autostart")} /> Start when the host boots</label>
      <div class="bar"><button type="submit" id="edit-save">Save</button></div></form>`}
    ${v && html`<h2>Devices</h2>
      <ul class="plain" id="vm-disks">${(v.disk_devices || []).map((d) => html`<li data-dev=${d.dev}>disk ${d.dev}:
        <code>${d.path}</code>${d.removed_at_next_start ? html` <small>(removed at the next start)</small>`
        : html` <button type="button" class="danger" data-action="remove-disk" onClick=${() => setDropping(d)}>Remove</button>`}
        </li>`)}</ul>
      ${dropping && html`<${RemoveDiskDialog} vm=${name} state=${v.state} disk=${dropping}
        onDone=${(msg) => { setDropping(null); if (msg) setNote(msg); reloadVm(); }} />`}
      <form id="disk-add" class="bar" onSubmit=${addDisk}><label for="disk-gib">New disk (GiB)</label>
        <input id="disk-gib" type="number" min="1" max="65536" value=${diskGib}
          onInput=${(e) => setDiskGib(e.target.value)} /><button type="submit">Add disk</button></form>
      <ul class="plain" id="vm-nics">${v.nics.map((n) => html`<li data-mac=${n.mac}>adapter ${n.mac} on
        ${n.network ? `network ${n.network}` : `bridge ${n.bridge}`} <button type="button" class="danger"
        data-action="remove-nic" onClick=${() => dropNic(n.mac)}>Remove</button></li>`)}</ul>
      <form id="nic-add" class="bar" onSubmit=${addNic}><label for="nic-on">New network adapter on</label>
        <select id="nic-on" required value=${nicOn} onChange=${(e) => setNicOn(e.target.value)}>
          <option value="">choose…</option>
          ${nets.data && nets.data.networks.map((x) => html`<option value=${`network:${x.name}`}>network ${x.name}</option>`)}
          ${nets.data && nets.data.host.filter((x) => x.kind === "bridge").map((x) =>
            html`<option value=${`bridge:${x.name}`}>host bridge ${x.name}</option>`)}</select>
        <button type="submit">Add adapter</button></form>`}
    ${v && html`<form id="cd-insert" class="bar" onSubmit=${insert}><label for="cd-iso">CD</label>
        <select id="cd-iso" required value=${cd} onChange=${(e) => setCd(e.target.value)}><option value="">choose an ISO…</option>
          ${(isos.data || []).map((i) => html`<option value=${i}>${i}</option>`)}</select>
        <button type="submit">Insert</button>
        ${v.cdroms.length > 0 && html`<button type="button" id="cd-eject" onClick=${eject}>Eject ${v.cdroms.join(", ")}</button>`}
      </form>`}
    <h2>Snapshots</h2>
    <form id="snap-create" class="bar" onSubmit=${snapshot}><label for="snap-name">New snapshot</label>
      <input id="snap-name" required pattern="[A-Za-z0-9][A-Za-z0-9_.\\-]{0,62}" value=${snapName}
        onInput=${(e) => setSnapName(e.target.value)} /><button type="submit">Take snapshot</button></form>
    <${TaskState} id="snap-task" label=${snapTask && `Snapshot ${snapTask.name}`} task=${snapTask} />
    ${flat.length ? html`<table class="list" id="snapshots"><thead><tr><th>Snapshot</th><th>Taken</th><th>Actions</th></tr>
      </thead><tbody>${flat.map((sn) => html`<tr key=${sn.name} data-snapshot=${sn.name}>
      <td class=${`depth-${Math.min(sn.depth, 5)}`}>${sn.name}${snaps.data.current === sn.name ? " (current)" : ""}</td>
      <td>${sn.created ? new Date(sn.created * 1000).toLocaleString() : ""}</td><td class="actions">
      <button type="button" data-action="revert" onClick=${() => revert(sn.name)}>Revert</button>
      <button type="button" class="danger" data-action="delete" onClick=${() => dropSnap(sn.name)}>Delete</button></td>
      </tr>`)}</tbody></table>` : html`<p class="muted">No snapshots.</p>`}
    <h2>Clone</h2>
    <form id="clone" class="bar" onSubmit=${clone}><label for="clone-name">New VM's name</label>
      <input id="clone-name" required pattern="[A-Za-z0-9][A-Za-z0-9_.\\-]{0,62}" value=${cloneName}
        onInput=${(e) => setCloneName(e.target.value)} /><button type="submit" disabled=${v && v.state !== "shutoff"}>Clone</button>
      ${v && v.state !== "shutoff" && html`<small>only a shut-off VM can be cloned</small>`}</form>
    <${TaskState} id="clone-task" label=${task && `Clone to ${task.name}`} task=${task} />
  </section>`;
}

// A long operation's task as it goes: state, progress and what it is doing (why it failed is the page's alert).
function TaskState({ id, label, task }) {
  if (!task) return null;
  return html`<p id=${id} role="status">${label}: ${task.state} <progress max="100" value=${task.progress || 0}></progress>
    ${task.progress || 0}%${task.message && task.state === "running" ? ` — ${task.message}` : ""}</p>`;
}

// Removing a disk: the volume stays in the pool unless asked; a refusal (e.g. deleting the volume of a running
// VM) is shown in the dialog with the API's reason and hint, and nothing changes.
function RemoveDiskDialog({ vm, state, disk, onDone }) {
  const ref = useRef(null);
  const [removeVolume, setRemoveVolume] = useState(false);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => { ref.current.showModal(); }, []);
  async function submit(ev) {
    ev.preventDefault();
    setBusy(true); setError(null);
    try {
      const r = await api("DELETE", `/v1/vms/${encodeURIComponent(vm)}/disks/${encodeURIComponent(disk.dev)}` +
                                    `?remove_volume=${removeVolume}`);
      const later = r.applied && r.applied.disks === "next_start" ? " at the next start (the running VM keeps it until then)" : "";
      ref.current.close();
      onDone(`Disk ${disk.dev} removed${later}; its volume was ${removeVolume ? "deleted" : "kept in the pool"}.`);
    } catch (e) { setError(errText(e)); } finally { setBusy(false); }
  }
  return html`<dialog ref=${ref} id="disk-remove-dialog" onClose=${() => onDone(null)} aria-labelledby="disk-rm-title">
    <form onSubmit=${submit}><h2 id="disk-rm-title">Remove disk ${disk.dev} from ${vm}?</h2><p><code>${disk.path}</code></p>
    ${state !== "shutoff" && html`<p>The VM is ${state}: the guest loses the disk now where it can, else at its next start.</p>`}
    <label><input type="checkbox" id="remove-volume" checked=${removeVolume}
      onChange=${(e) => setRemoveVolume(e.target.checked)} /> Also delete its volume (otherwise it stays in the pool)</label>
    <${Err} text=${error} />
    <div class="bar"><button type="button" onClick=${() => ref.current.close()}>Cancel</button>
    <button type="submit" class="danger" id="disk-remove-confirm" disabled=${busy}>Remove</button></div></form></dialog>`;
}

function Field({ id, label, children, help }) {
  return html`<div class="field"><label for=${id}>${label}</label>${children}${help && html`<small>${help}</small>`}</div>`;
}

function CreateVm() {
  const [opts] = useLoad(async () => {
    const [vols, nets] = await Promise.all([api("GET", "/v1/storage/volumes"), api("GET", "/v1/networks")]);
    return { isos: vols.filter((v) => v.name.endsWith(".iso")).map((v) => v.name),
             networks: nets.networks.map((n) => n.name), bridges: nets.host.map((b) => b.name) };
  });
  const [f, setF] = useState({ name: "", vcpus: 1, memory_mib: 1024, disk_gib: 10, iso: "", nic: "", firmware: "bios",
                               start: true });
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const [task, setTask] = useState(null);
  const set = (k, conv = (x) => x) => (e) => setF({ ...f, [k]: conv(e.target.type === "checkbox" ? e.target.checked
                                                                                                   : e.target.value) });
  async function submit(ev) {
    ev.preventDefault();
    const spec = { name: f.name, vcpus: Number(f.vcpus), memory_mib: Number(f.memory_mib), firmware: f.firmware,
                   start: f.start, disks: Number(f.disk_gib) > 0 ? [{ size_gib: Number(f.disk_gib) }] : [] };
    if (f.iso) { spec.cdrom = f.iso; spec.boot = "cdrom"; }
    if (f.nic) spec.nics = [f.nic.startsWith("bridge:") ? { bridge: f.nic.slice(7) } : { network: f.nic.slice(8) }];
    setBusy(true); setError(null); setTask(null);
    try { await followTask(await api("POST", "/v1/vms", { body: spec }), setTask); location.hash = "#/vms"; }
    catch (e) { setError(errText(e)); } finally { setBusy(false); }
  }
  const o = opts.data || { isos: [], networks: [], bridges: [] };
  return html`<section aria-labelledby="new-title"><h1 id="new-title">Create a virtual machine</h1>
    <form id="create-vm" class="form" onSubmit=${submit}>
      <${Field} id="vm-name" label="Name" help="letters, digits, . _ -"><input id="vm-name" required
        pattern="[A-Za-z0-9][A-Za-z0-9_.\\-]{0,62}" value=${f.name} onInput=${set("name")} /><//>
      <${Field} id="vm-vcpus" label="vCPUs"><input id="vm-vcpus" type="number" min="1" max="256" value=${f.vcpus}
        onInput=${set("vcpus")} /><//>
      <${Field} id="vm-memory" label="Memory (MiB)"><input id="vm-memory" type="number" min="16" step="16"
        value=${f.memory_mib} onInput=${set("memory_mib")} /><//>
      <${Field} id="vm-disk" label="Disk (GiB)" help="0 for none; a new thin qcow2 volume"><input id="vm-disk"
        type="number" min="0" max="65536" value=${f.disk_gib} onInput=${set("disk_gib")} /><//>
      <${Field} id="vm-iso" label="ISO (boots from it)"><select id="vm-iso" value=${f.iso} onChange=${set("iso")}>
        <option value="">none</option>${o.isos.map((i) => html`<option value=${i}>${i}</option>`)}</select><//>
      <${Field} id="vm-nic" label="Network"><select id="vm-nic" value=${f.nic} onChange=${set("nic")}>
        <option value="">no network adapter</option>
        ${o.networks.map((n) => html`<option value=${`network:${n}`}>network ${n}</option>`)}
        ${o.bridges.map((b) => html`<option value=${`bridge:${b}`}>host bridge ${b}</option>`)}</select><//>
      <${Field} id="vm-firmware" label="Firmware"><select id="vm-firmware" value=${f.firmware}
        onChange=${set("firmware")}><option value="bios">BIOS</option><option value="uefi">UEFI</option></select><//>
      <label class="check"><input type="checkbox" id="vm-start" checked=${f.start} onChange=${set("start")} />
        Start it now</label>
      <${TaskState} id="create-task" label=${`Creating ${f.name}`} task=${task} />
      <${Err} text=${error || opts.error} />
      <div class="bar"><a href="#/vms" class="button">Cancel</a>
        <button type="submit" id="create-submit" disabled=${busy}>Create</button></div>
    </form></section>`;
}

function Console({ name }) {
  const screen = useRef(null);
  const [status, setStatus] = useState("connecting…");
  useEffect(() => {
    let rfb = null;
    let gone = false;
    (async () => {
      try {
        const t = await api("POST", `/v1/vms/${encodeURIComponent(name)}/console?kind=vnc`);
        const { default: RFB } = await import("./vendor/novnc/core/rfb.js");
        if (gone) return;
        rfb = new RFB(screen.current, `wss://${location.host}${t.url}`, { wsProtocols: ["binary"] });
        rfb.scaleViewport = true;
        rfb.addEventListener("connect", () => setStatus("connected"));
        rfb.addEventListener("disconnect", (e) => setStatus(e.detail.clean ? "disconnected" : "connection lost"));
      } catch (e) { setStatus(errText(e)); }
    })();
    return () => { gone = true; if (rfb) rfb.disconnect(); };
  }, [name]);
  return html`<section aria-labelledby="console-title"><div class="bar"><h1 id="console-title">Console: ${name}</h1>
    <span id="console-status" role="status">${status}</span><a class="button" href="#/vms">Back</a></div>
    <div id="console-screen" class="console" ref=${screen}></div></section>`;
}

// The serial console: the guest's first serial port as text (ANSI control sequences dropped, the last
// SERIAL_KEEP characters kept); keys typed on the focused pane go to the guest as they are.
const SERIAL_KEEP = 200000;
const KEYS = { Enter: "\r", Backspace: "\x7f", Tab: "\t", Escape: "\x1b", ArrowUp: "\x1b[A", ArrowDown: "\x1b[B",
               ArrowRight: "\x1b[C", ArrowLeft: "\x1b[D", Home: "\x1b[H", End: "\x1b[F", Delete: "\x1b[3~" };
function Serial({ name }) {
  const pane = useRef(null);
  const ws = useRef(null);
  const [text, setText] = useState("");
  const [status, setStatus] = useState("connecting…");
  useEffect(() => {
    let gone = false;
    const dec = new TextDecoder();
    (async () => {
      try {
        const t = await api("POST", `/v1/vms/${encodeURIComponent(name)}/console?kind=serial`);
        if (gone) return;
        const sock = new WebSocket(`wss://${location.host}${t.url}`);
        sock.binaryType = "arraybuffer";
        ws.current = sock;
        sock.onopen = () => setStatus("connected");
        sock.onclose = () => setStatus("disconnected");
        sock.onmessage = (ev) => {
          const chunk = typeof ev.data === "string" ? ev.data : dec.decode(ev.data, { stream: true });
          const clean = chunk.replace(/\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\r/g, "");
          setText((old) => (old + clean).slice(-SERIAL_KEEP));
        };
      } catch (e) { setStatus(errText(e)); }
    })();
    return () => { gone = true; if (ws.current) ws.current.close(); };
  }, [name]);
  useEffect(() => { if (pane.current) pane.current.scrollTop = pane.current.scrollHeight; }, [text]);
  function key(ev) {
    const sock = ws.current;
    if (!sock || sock.readyState !== WebSocket.OPEN) return;
    let data = KEYS[ev.key];
    if (ev.ctrlKey && ev.key.length === 1) data = String.fromCharCode(ev.key.toUpperCase().charCodeAt(0) - 64);
    else if (!data && ev.key.length === 1 && !ev.metaKey && !ev.altKey) data = ev.key;
    if (data) { ev.preventDefault(); sock.send(data); }
  }
  return html`<section aria-labelledby="serial-title"><div class="bar"><h1 id="serial-title">Serial console: ${name}</h1>
    <span id="serial-status" role="status">${status}</span><a class="button" href="#/vms">Back</a></div>
    <pre id="serial-screen" class="serial" tabindex="0" ref=${pane} onKeyDown=${key}
      aria-label="serial console output; type here to send keys">${text}</pre></section>`;
}

// ----------------------------------------------------------------------------- storage, networks, host
function Storage() {
  const [pool] = useLoad(() => api("GET", "/v1/storage/pool"));
  const [vols, reload] = useLoad(() => api("GET", "/v1/storage/volumes"));
  const [up, setUp] = useState(null);
  const xhrRef = useRef(null);
  function upload(ev) {
    ev.preventDefault();
    const file = ev.target.elements.iso.files[0];
    if (!file) return;
    const xhr = new XMLHttpRequest();
    xhrRef.current = xhr;
    xhr.open("PUT", `/v1/storage/isos/${encodeURIComponent(file.name)}`);
    xhr.setRequestHeader("X-CSRF-Token", csrf);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.onprogress = (e) => setUp({ name: file.name, pct: e.lengthComputable ? Math.round(100 * e.loaded / e.total) : 0 });
    xhr.onload = () => { let msg = null;
      if (xhr.status >= 300) { try { msg = JSON.parse(xhr.responseText).error; } catch (_e) { msg = `HTTP ${xhr.status}`; } }
      setUp(msg ? { name: file.name, error: msg } : { name: file.name, done: true }); reload(); };
    xhr.onerror = () => setUp({ name: file.name, error: "the upload failed (connection lost)" });
    xhr.onabort = () => setUp({ name: file.name, error: "cancelled" });
    setUp({ name: file.name, pct: 0 });
    xhr.send(file);
  }
  const [error, setError] = useState(null);
  async function drop(name) {
    setError(null);
    if (!confirm(`Delete volume ${name}? Its data is lost.`)) return;
    try { await api("DELETE", `/v1/storage/volumes/${encodeURIComponent(name)}`); } catch (e) { setError(errText(e)); }
    reload();
  }
  const p = pool.data;
  return html`<section aria-labelledby="storage-title"><h1 id="storage-title">Storage</h1>
    ${p && html`<p>Pool <strong>${p.name}</strong> (${p.path}): ${bytes(p.allocation)} used of ${bytes(p.capacity)},
      ${bytes(p.available)} free. <meter min="0" max=${p.capacity} value=${p.allocation}></meter></p>`}
    <form id="iso-upload" class="bar" onSubmit=${upload}><label for="iso">Upload an ISO</label>
      <input type="file" id="iso" name="iso" accept=".iso" /><button type="submit">Upload</button></form>
    ${up && html`<p id="upload-state" role="status">${up.name}: ${up.error ? up.error : up.done ? "uploaded" : html`<progress max="100"
      value=${up.pct}></progress> ${up.pct}% <button type="button" id="upload-cancel"
      onClick=${() => xhrRef.current.abort()}>Cancel</button>`}</p>`}
    <${Err} text=${error || vols.error || pool.error} />
    <table class="list" id="volumes"><thead><tr><th>Volume</th><th>Size</th><th>Used</th><th>Actions</th></tr></thead><tbody>
      ${(vols.data || []).map((v) => html`<tr key=${v.name} data-volume=${v.name}><td>${v.name}</td>
      <td>${bytes(v.capacity)}</td><td>${bytes(v.allocation)}</td><td><button type="button" class="danger"
      data-action="delete" onClick=${() => drop(v.name)}>Delete</button></td></tr>`)}</tbody></table></section>`;
}

function Networks() {
  const [nets, reload] = useLoad(() => api("GET", "/v1/networks"));
  const [f, setF] = useState({ name: "", on: "" });
  const [error, setError] = useState(null);
  async function create(ev) {
    ev.preventDefault();
    setError(null);
    const [kind, dev] = f.on.split(":");
    try { await api("POST", "/v1/networks", { body: { name: f.name, [kind]: dev } }); setF({ name: "", on: "" }); }
    catch (e) { setError(errText(e)); }
    reload();
  }
  async function drop(name) {
    setError(null);
    if (!confirm(`Delete VM network ${name}?`)) return;
    try { await api("DELETE", `/v1/networks/${encodeURIComponent(name)}`); } catch (e) { setError(errText(e)); }
    reload();
  }
  const n = nets.data;
  return html`<section aria-labelledby="net-title"><h1 id="net-title">Networks</h1><${Err} text=${error || nets.error} />
    ${n && html`<h2>VM networks</h2><table class="list" id="networks"><thead><tr><th>Name</th><th>Kind</th><th>Active</th>
      <th>Actions</th></tr></thead><tbody>${n.networks.map((x) => html`<tr key=${x.name} data-network=${x.name}>
      <td>${x.name}</td><td>${x.forward || ""} ${x.bridge || x.interface || ""}</td><td>${x.active ? "yes" : "no"}</td>
      <td><button type="button" class="danger" data-action="delete" onClick=${() => drop(x.name)}>Delete</button></td>
      </tr>`)}</tbody></table>
      <h2>New VM network</h2>
      ${n.host.length ? html`<form id="net-create" class="bar" onSubmit=${create}>
        <label for="net-name">Name</label><input id="net-name" required pattern="[A-Za-z0-9][A-Za-z0-9_.\\-]{0,62}"
          value=${f.name} onInput=${(e) => setF({ ...f, name: e.target.value })} />
        <label for="net-on">On</label><select id="net-on" required value=${f.on}
          onChange=${(e) => setF({ ...f, on: e.target.value })}><option value="">choose…</option>
          ${n.host.map((x) => html`<option value=${`${x.kind === "bridge" ? "bridge" : "interface"}:${x.name}`}>
            ${x.kind} ${x.name}</option>`)}</select>
        <button type="submit">Create</button></form>`
        : html`<p class="muted">The host has no bridge or VLAN interface to put a VM network on (the console's
          network menu makes them).</p>`}
      <h2>Host bridges and VLANs</h2>${n.host.length ? html`<ul>${n.host.map((x) => html`<li>${x.name}</li>`)}</ul>`
        : html`<p class="muted">None.</p>`}`}</section>`;
}

function Host() {
  const [host] = useLoad(() => api("GET", "/v1/host"));
  const [hw] = useLoad(() => api("GET", "/v1/hardware"));
  const [maint, reloadMaint] = useLoad(() => api("GET", "/v1/host/maintenance"));
  const [error, setError] = useState(null);
  const [note, setNote] = useState(null);
  useEvents((kind) => { if (kind === "maintenance") reloadMaint(); });
  async function run(fn) { setError(null); try { setNote(await fn()); } catch (e) { setError(errText(e)); } }
  const toggle = () => run(async () => {
    const on = !(maint.data && maint.data.maintenance);
    const stop = on ? document.getElementById("maint-stop").value : "none";
    await api("POST", "/v1/host/maintenance", { body: { enabled: on, stop_vms: stop } });
    reloadMaint();
    return on ? "Maintenance mode is on: no VM starts." : "Maintenance mode is off.";
  });
  const power = (action) => run(async () => {
    if (!confirm(`${action === "reboot" ? "Reboot" : "Shut down"} this host now?`)) return null;
    await api("POST", `/v1/host/${action}`, { body: { force: false } });
    return `The host will ${action === "reboot" ? "reboot" : "shut down"} in a moment.`;
  });
  const h0 = host.data;
  const inMaint = maint.data && maint.data.maintenance;
  return html`<section aria-labelledby="host-title"><h1 id="host-title">Host</h1><${Err} text=${host.error || hw.error || error} />
    ${note && html`<p role="status" id="host-note">${note}</p>`}
    <h2>Maintenance and power</h2>
    <div class="bar" id="host-power"><span id="maint-state">Maintenance mode: ${maint.data ? (inMaint ? "on" : "off") : "…"}</span>
      ${!inMaint && html`<label>Running VMs: <select id="maint-stop"><option value="none">keep running</option>
        <option value="shutdown">shut down</option><option value="stop">power off</option></select></label>`}
      <button type="button" id="maint-toggle" onClick=${toggle}>${inMaint ? "Leave" : "Enter"} maintenance mode</button>
      <button type="button" class="danger" id="host-reboot" onClick=${() => power("reboot")}>Reboot</button>
      <button type="button" class="danger" id="host-shutdown" onClick=${() => power("shutdown")}>Shut down</button></div>
    ${h0 && html`<dl class="facts"><dt>Hostname</dt><dd>${h0.hostname}</dd><dt>Kernel</dt><dd>${h0.kernel}</dd>
      <dt>libvirt</dt><dd>${h0.libvirt}</dd><dt>CPU</dt><dd>${h0.cpu_model} (${h0.cpu_cores} cores)</dd></dl>`}
    ${hw.data && html`<h2>Disks</h2><ul>${hw.data.disks.map((d) => html`<li>${d.name}: ${d.model || ""}
      ${bytes(d.size_bytes)}</li>`)}</ul><h2>Network adapters</h2><ul>${hw.data.nics.map((n) =>
      html`<li>${n.name}</li>`)}</ul>`}
    <${Updates} /><${HostServices} /><${Journal} /><${Certificate} /></section>`;
}

// The host's A/B updates through the node API (qx-update on the host): the state and both slots, the channel,
// check, install (a task: its progress from the event stream, and polled), roll back or cancel. Rebooting into
// an installed update is the Reboot button above.
const CHANNELS = ["stable", "beta", "dev"];
async function waitTask(t, onUpdate) {
  while (t.state === "running") {
    await new Promise((r) => setTimeout(r, 1000));
    t = await api("GET", t.url, { background: true });
    onUpdate(t);
  }
  return t;
}
function slotHealth(s) {
  if (s.version == null) return "no boot entry";
  if (s.bad) return "bad";
  return s.blessed ? "blessed" : `on trial (${s.tries_left} tries left)`;
}
function Updates() {
  const [st, reload] = useLoad(() => api("GET", "/v1/host/updates"));
  const [channel, setChannel] = useState("");
  const [busy, setBusy] = useState(null);
  const [task, setTask] = useState(null);
  const [note, setNote] = useState(null);
  const [error, setError] = useState(null);
  useEvents((kind, d) => { if (kind === "task" && d.task.kind === "update") setTask(d.task); });
  useEffect(() => { if (st.data && !channel) setChannel(st.data.channel); }, [st.data]);
  async function act(what, fn) {
    setBusy(what); setError(null); setNote(null);
    try { setNote(await fn()); } catch (e) { setError(errText(e)); } finally { setBusy(null); reload(); }
  }
  const check = () => act("check", async () => (await api("POST", "/v1/host/updates/check")).message);
  const apply = () => act("apply", async () => {
    let t = await api("POST", "/v1/host/updates/apply");
    setTask(t);
    t = await waitTask(t, setTask);
    if (t.state !== "succeeded") throw new ApiError((t.error && t.error.status) || 500, t.error);
    return t.result.message;
  });
  const rollback = () => act("rollback", async () => {
    const u = st.data;
    if (!confirm(u.awaiting_reboot ? `Cancel the installed update to ${u.awaiting_reboot}?`
                                   : "Boot the other slot's release at the next boot?")) return null;
    return (await api("POST", "/v1/host/updates/rollback")).message;
  });
  const save = (ev) => { ev.preventDefault(); act("channel", async () =>
    `Channel set to ${(await api("PUT", "/v1/host/updates/channel", { body: { channel } })).channel}.`); };
  const u = st.data;
  const lc = u && u.last_check;
  return html`<h2>Updates</h2><${Err} text=${st.error || error} />
    ${note && html`<p role="status" id="update-note">${note}</p>`}
    ${u && html`<p id="update-summary" data-state=${u.state}><strong>${updateText(u)}</strong></p>
      <p class="muted">${u.message}</p>
      <table class="list" id="update-slots"><thead><tr><th>Slot</th><th>Release</th><th>Health</th><th></th></tr></thead>
        <tbody>${Object.entries(u.slots).map(([n, s]) => html`<tr key=${n} data-slot=${n}><td>${n.toUpperCase()}</td>
          <td>${s.version || "—"}</td><td>${slotHealth(s)}</td>
          <td>${[s.active && "running", s.next_boot && "next boot"].filter(Boolean).join(", ")}</td></tr>`)}</tbody></table>
      <dl class="facts"><dt>Last check</dt><dd id="update-last-check">${lc ? `${lc.at}: ${lc.result}` +
        `${lc.version ? ` ${lc.version}` : ""}${lc.error ? ` (${lc.error})` : ""}` : "never"}</dd>
        ${u.rollback && html`<dt>Last rollback</dt><dd id="update-last-rollback">${rollbackText(u.rollback)}</dd>`}</dl>
      <form id="update-channel" class="bar" onSubmit=${save}><label for="channel">Channel</label>
        <select id="channel" value=${channel} onChange=${(e) => setChannel(e.target.value)}>
          ${CHANNELS.map((c) => html`<option value=${c}>${c}</option>`)}</select>
        <button type="submit" id="channel-save" disabled=${!!busy || channel === u.channel}>Set channel</button></form>
      <div class="bar"><button type="button" id="update-check" onClick=${check} disabled=${!!busy}>Check for updates</button>
        <button type="button" id="update-apply" onClick=${apply} disabled=${!!busy || u.applying || !u.available}>
          Install${u.available ? ` ${u.available}` : ""}</button>
        <button type="button" class="danger" id="update-rollback-btn" onClick=${rollback} disabled=${!!busy || u.applying}>
          ${u.awaiting_reboot ? `Cancel ${u.awaiting_reboot}` : "Roll back"}</button></div>`}
    ${task && html`<p id="update-task" role="status" data-state=${task.state}>Install: ${task.state}
      <progress max="100" value=${task.progress || 0}></progress> ${Math.round(task.progress || 0)}%
      <small>${task.message}</small>${task.error ? ` — ${task.error.error}` : ""}</p>`}`;
}

// The host's services as systemd reports them; where it cannot tell (no systemd as PID 1), the reason.
function HostServices() {
  const [svc, reload] = useLoad(() => api("GET", "/v1/host/services"));
  const d = svc.data;
  return html`<h2>Services</h2><${Err} text=${svc.error} />
    ${d && !d.available && html`<p role="status" id="services-reason">State unknown: ${d.reason}</p>`}
    ${d && html`<table class="list" id="services"><thead><tr><th>Service</th><th>What for</th><th>State</th>
      <th>Enabled</th><th>Since</th></tr></thead><tbody>${d.services.map((s) => html`<tr data-unit=${s.unit}
        data-state=${s.state}><td>${s.unit}</td><td>${s.purpose}</td>
        <td>${s.state}${s.sub_state ? ` (${s.sub_state})` : ""}</td><td>${s.enabled || "—"}</td>
        <td>${s.since || "—"}</td></tr>`)}</tbody></table>`}
    <button type="button" id="services-reload" onClick=${reload}>Refresh</button>`;
}

// The journal, filtered by the API (journalctl on the host); newest entries last.
const PRIO = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"];
function Journal() {
  const [f, setF] = useState({ unit: "", priority: "", grep: "" });
  const [q, setQ] = useState({});
  const [log] = useLoad(() => api("GET", "/v1/host/journal?" + new URLSearchParams({ lines: "200", ...q })), [q]);
  function submit(ev) {
    ev.preventDefault();
    setQ(Object.fromEntries(Object.entries(f).filter(([_k, v]) => v !== "")));
  }
  const d = log.data;
  return html`<h2>Logs</h2><form class="bar" id="journal-filter" onSubmit=${submit}>
      <label>Service <input id="journal-unit" value=${f.unit} onInput=${(e) => setF({ ...f, unit: e.target.value })}
        placeholder="qx-node.service" /></label>
      <label>At least <select id="journal-priority" value=${f.priority}
        onChange=${(e) => setF({ ...f, priority: e.target.value })}><option value="">any</option>
        ${PRIO.map((p, i) => html`<option value=${String(i)}>${p}</option>`)}</select></label>
      <label>Text <input id="journal-grep" value=${f.grep} onInput=${(e) => setF({ ...f, grep: e.target.value })} /></label>
      <button type="submit" id="journal-show">Show</button></form>
    <${Err} text=${log.error} />
    ${d && !d.available && html`<p role="status" id="journal-reason">${d.reason}</p>`}
    ${d && d.available && !d.entries.length && html`<p class="muted" id="journal-empty">No entries.</p>`}
    ${d && d.entries.length > 0 && html`<pre class="journal" id="journal">${d.entries.map((e) =>
      `${e.time || ""} ${e.priority === null ? "" : PRIO[e.priority]} ${e.unit || e.identifier || ""}: ${e.message}\n`)}</pre>`}`;
}

// The fingerprint an operator compares with the one the browser shows for the self-signed certificate,
// and the API token's rotation: the new token is shown here once (the server keeps only its file).
function Certificate() {
  const [cert] = useLoad(() => api("GET", "/v1/host/certificate"));
  const [token, setToken] = useState(null);
  const [error, setError] = useState(null);
  async function rotate() {
    if (!confirm("Make a new API token? The current one stops working at once, for every client.")) return;
    setError(null);
    try { setToken((await api("POST", "/v1/host/api-token/rotate")).token); } catch (e) { setError(errText(e)); }
  }
  const c = cert.data;
  return html`<h2>API access</h2><${Err} text=${cert.error || error} />
    ${c && html`<dl class="facts"><dt>Certificate SHA-256 fingerprint</dt><dd id="cert-sha256"><code>${c.sha256 ||
      `unknown: ${c.reason}`}</code></dd></dl>`}
    <button type="button" class="danger" id="token-rotate" onClick=${rotate}>Rotate the API token</button>
    ${token && html`<p role="status" id="token-new">New API token (shown only now; copy it):
      <code id="token-value">${token}</code></p>`}`;
}

// -------------------------------------------------------------------------------------------- shell
const PAGES = [["#/", "Dashboard"], ["#/vms", "Virtual machines"], ["#/storage", "Storage"],
               ["#/networks", "Networks"], ["#/host", "Host"]];

function Shell({ session, onOut }) {
  const hash = useHash();
  const [menu, setMenu] = useState(false);
  useEffect(() => { startEvents(); startStats(); return () => { stopEvents(); stopStats(); }; }, []);
  // Keyboard and screen-reader users land on the new page's heading, not on the link they left.
  const first = useRef(true);
  useEffect(() => {
    if (first.current) { first.current = false; return; }
    requestAnimationFrame(() => { const h1 = document.querySelector("main h1");
                                  if (h1) { h1.tabIndex = -1; h1.focus({ preventScroll: true }); } });
  }, [hash]);
  let page;
  const m = hash.match(/^#\/vms\/([^/]+)\/(console|serial)$/);
  if (hash === "#/vms/new") page = html`<${CreateVm} />`;
  else if (m && m[2] === "console") page = html`<${Console} name=${decodeURIComponent(m[1])} />`;
  else if (m) page = html`<${Serial} name=${decodeURIComponent(m[1])} />`;
  else if (hash.match(/^#\/vms\/[^/]+$/)) page = html`<${VmDetail} name=${decodeURIComponent(hash.slice(6))} />`;
  else if (hash.startsWith("#/vms")) page = html`<${VmList} />`;
  else if (hash.startsWith("#/storage")) page = html`<${Storage} />`;
  else if (hash.startsWith("#/networks")) page = html`<${Networks} />`;
  else if (hash.startsWith("#/host")) page = html`<${Host} />`;
  else page = html`<${Dashboard} />`;
  const current = PAGES.slice().reverse().find(([p]) => hash.startsWith(p));
  async function signOut() {
    // A poll still on its way when the session ends would come back 401 (an error in the browser's log).
    stopStats();
    await stats.inflight;
    try { await api("POST", "/ui/logout"); } catch (_e) { /* ended anyway */ }
    onOut(null);
  }
  return html`<a class="skip" href="#main">Skip to content</a>
    <header class="top"><span class="brand">Quantix</span>
      <button type="button" class="menu" aria-expanded=${menu} aria-controls="nav" onClick=${() => setMenu(!menu)}>Menu</button>
      <nav id="nav" class=${menu ? "open" : ""} aria-label="Main">${PAGES.map(([p, label]) => html`<a href=${p}
        aria-current=${current && current[0] === p ? "page" : undefined} onClick=${() => setMenu(false)}>${label}</a>`)}</nav>
      <span class="who">${session.via === "password" ? "root" : "API token"}</span>
      <button type="button" id="sign-out" onClick=${signOut}>Sign out</button></header>
    <main id="main" tabindex="-1">${page}</main>`;
}

function App() {
  const [session, setSession] = useState(undefined);
  const [reason, setReason] = useState(null);
  useEffect(() => {
    onSignedOut = (why) => { csrf = null; setReason(why); setSession(null); };
    api("GET", "/ui/session").then((s) => { csrf = s.signed_in ? s.csrf : null; setSession(s.signed_in ? s : null); })
      .catch((e) => { setReason(errText(e)); setSession(null); });
  }, []);
  useEffect(() => { document.body.dataset.signedIn = session ? "1" : "0"; }, [session]);
  if (session === undefined) return html`<p class="loading">Loading…</p>`;
  if (!session) return html`<${SignIn} reason=${reason} onIn=${(s) => { csrf = s.csrf; setReason(null); setSession(s); }} />`;
  return html`<${Shell} session=${session} onOut=${(why) => { csrf = null; setReason(why); setSession(null); }} />`;
}

render(html`<${App} />`, document.getElementById("app"));
