// Admin page: plain JS, no build step. The token stays in sessionStorage of this tab only.
"use strict";
const $ = (s) => document.querySelector(s);
let token = sessionStorage.getItem("qx-token") || "";

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return e;
}

async function api(method, path, body) {
  const r = await fetch(path, {
    method, headers: {"Authorization": "Bearer " + token, "Content-Type": "application/json"},
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = r.status === 204 ? {} : await r.json();
  if (!r.ok) throw new Error(data.error || data.detail || r.statusText);
  return data;
}

function status(msg, isError = false) { const s = $("#status"); s.textContent = msg; s.className = isError ? "error" : ""; }

async function act(method, path, body, what) {
  try { await api(method, path, body); status(what + ": done"); } catch (e) { status(what + ": " + e.message, true); }
  await refresh();
}

// The page polls every few seconds. Rebuilding the channel tables would throw away what the user is
// typing into a rollout percentage (and its focus), so they are rebuilt only when the data changed,
// and a typed but not yet submitted percentage (a draft) survives a rebuild.
const drafts = new Map();  // version -> percentage typed into its rollout field
let shownReleases = "";

function renderChannels(data) {
  const key = JSON.stringify(data);
  if (key === shownReleases) return;
  shownReleases = key;
  const list = $("#channel-list"); list.replaceChildren();
  for (const ch of data.channels) {
    const rels = data.releases.filter((r) => r.channels.includes(ch));
    const tbody = el("tbody");
    for (const r of rels) {
      const v = r.version, ro = r.rollout;
      const actions = el("td", {});
      for (const to of data.channels.filter((c) => !r.channels.includes(c))) {
        actions.append(el("button", {"data-action": `promote-${v}-${to}`,
          onclick: () => act("POST", `/v1/releases/${v}/promote`, {to}, `promote ${v} to ${to}`)}, `promote to ${to}`));
      }
      const pct = el("input", {type: "number", min: "0", max: "100", step: "any", size: "4", "data-input": `percent-${v}`,
                               value: drafts.has(v) ? drafts.get(v) : String(Math.round(Number(ro.fraction) * 100)),
                               oninput: () => drafts.set(v, pct.value)});
      actions.append(pct, el("button", {"data-action": `rollout-${v}`, onclick: () => {
        if (pct.value.trim() === "" || !pct.checkValidity()) { status(`rollout ${v}: enter a percentage from 0 to 100`, true); return; }
        drafts.delete(v);
        act("POST", `/v1/releases/${v}/rollout`, {percent: Number(pct.value)}, `rollout ${v} to ${Number(pct.value)}%`);
      }}, "set rollout %"));
      const verb = ro.paused ? "resume" : "pause";
      actions.append(el("button", {"data-action": `pause-${v}`,
        onclick: () => act("POST", `/v1/releases/${v}/rollout`, {paused: !ro.paused}, `${verb} ${v}`)}, verb));
      actions.append(el("button", {"data-action": `yank-${v}`, onclick: () => {
        if (confirm(`Yank ${v}? Hosts will no longer be offered it.`)) act("POST", `/v1/releases/${v}/yank`, undefined, `yank ${v}`);
      }}, "yank"));
      tbody.append(el("tr", {"data-release": v},
        el("td", {}, v), el("td", {}, r.security_epoch),
        el("td", {}, `${Math.round(Number(ro.fraction) * 100)}%${ro.paused ? " (paused)" : ""} since ${ro.start}`),
        el("td", {}, r.published_at || ""), el("td", {}, r.notes), actions));
    }
    const table = el("table", {"data-channel": ch},
      el("thead", {}, el("tr", {}, ...["version", "epoch", "rollout", "published", "notes", "actions"].map((h) => el("th", {}, h)))), tbody);
    list.append(el("div", {class: "channel"}, el("h3", {}, `${ch} (${rels.length})`), rels.length ? table : el("p", {}, "no releases")));
  }
  const yanked = data.releases.filter((r) => r.yanked);
  if (yanked.length) list.append(el("p", {class: "yanked"}, "yanked: " + yanked.map((r) => r.version).join(", ")));
}

// The fleet is paged by the server (GET /v1/fleet?limit=&after=): the page shows one page and the
// totals, so 20,000 hosts cost what 200 do. `cursors` holds the `after` of each page shown so far.
const FLEET_PAGE = 200;
let cursors = [null];
let fleetSummary = null;

function fleetPath() {
  const after = cursors[cursors.length - 1];
  return `/v1/fleet?limit=${FLEET_PAGE}` + (after === null ? "" : `&after=${encodeURIComponent(after)}`);
}

function renderFleet(page) {
  if (page.summary) fleetSummary = page.summary;
  const s = fleetSummary;
  $("#fleet-summary").textContent = s ? `${s.total} hosts — ` + Object.entries(s.health).map(([h, n]) => `${h}: ${n}`).join(", ") : "";
  $("#fleet-page").textContent = `page ${cursors.length}`;
  $("#fleet-prev").disabled = cursors.length === 1;
  const next = $("#fleet-next");
  next.disabled = !page.next;
  next.dataset.after = page.next || "";
  const hosts = page.hosts;
  const tbody = $("#fleet-table tbody"); tbody.replaceChildren();
  for (const h of hosts) {
    tbody.append(el("tr", {"data-host": h.host_id}, el("td", {}, h.host_id), el("td", {}, h.version), el("td", {}, h.slot),
      el("td", {}, h.channel), el("td", {}, h.last_seen), el("td", {class: "health-" + h.health}, h.health), el("td", {}, h.last_error || ""),
      el("td", {class: "identity-" + h.identity, title: h.identity === "key" ? "bound to the host's key" :
        "no host key: any check-in token may report this host id"}, h.identity === "key" ? "key" : "unverified")));
  }
}

function renderKeys(k) {
  const warn = $("#key-warnings"); warn.replaceChildren();
  const table = $("#key-table"); table.replaceChildren();
  if (!k.initialized) {
    warn.append(el("div", {class: "warning"}, "No signing keys yet: set the server up with offline root keys " +
      "(qx-release keys init --offline DIR, then qx-update-server init), or for development qx-release keys init"));
    return;
  }
  table.append(el("tr", {}, ...["role", "version", "expires", "days left", "keys present / threshold"].map((h) => el("th", {}, h))));
  for (const [role, r] of Object.entries(k.roles)) {
    table.append(el("tr", {"data-role": role, class: r.warning ? "expiring" : ""}, el("td", {}, role), el("td", {}, r.version), el("td", {}, r.expires),
      el("td", {}, r.days_left), el("td", {}, `${r.keys_present} / ${r.threshold}`)));
    if (r.warning) warn.append(el("div", {class: "warning", "data-warning": role}, r.warning));
  }
  // Where the root keys are: offline, or (development setups) on this server.
  if (k.root_keys) warn.append(el("div", {id: "root-keys", class: k.root_keys === "offline" ? "note" : "warning"},
    `root keys: ${k.root_keys}`));
}

// Tokens (scope "tokens"): listed without secrets; any can be revoked here (a leaked one at once).
// Created only with qx-update-server token create or POST /v1/tokens: a secret never appears on this page.
function renderTokens(data) {
  const tbody = $("#token-table tbody"); tbody.replaceChildren();
  if (data === null) { $("#tokens-note").textContent = "this token lacks the tokens scope: tokens are not shown"; return; }
  $("#tokens-note").textContent = "";
  const now = new Date().toISOString().slice(0, 19) + "Z";
  for (const t of data.tokens) {
    const state = t.revoked ? "revoked " + t.revoked : (t.expires && t.expires <= now ? "expired" : "active");
    const revoke = t.revoked ? "" : el("button", {type: "button", "data-action": "revoke-" + t.id, onclick: () => {
      if (confirm(`Revoke token ${t.name} (${t.id})? Every request with it is refused from now on.`))
        act("POST", `/v1/tokens/${encodeURIComponent(t.id)}/revoke`, undefined, "revoke " + t.name);
    }}, "revoke");
    tbody.append(el("tr", {"data-token": t.id}, el("td", {}, t.id), el("td", {}, t.name), el("td", {}, t.scopes.join(",")),
      el("td", {}, t.created), el("td", {}, t.expires || "never"), el("td", {}, t.last_used || "-"),
      el("td", {}, state + (t.host_id ? ` (host ${t.host_id})` : "")), el("td", {}, revoke)));
  }
}

// One refresh at a time: a refresh asked for while one runs is folded into a single follow-up, and
// the periodic one is scheduled 3 s after the previous one *ended* — so a slow server never piles up
// overlapping requests (setInterval would).
let running = null;
let again = false;
let timer = null;

async function refreshOnce() {
  if (!token) { status("enter an API token (scope read; promote/yank/rollout to change releases)"); return; }
  try {
    const [rels, fleet, keys, tokens] = await Promise.all([api("GET", "/v1/releases"), api("GET", fleetPath()),
      api("GET", "/v1/keys/status"), api("GET", "/v1/tokens").catch(() => null)]);
    renderChannels(rels); renderFleet(fleet); renderKeys(keys); renderTokens(tokens);
    document.body.dataset.loaded = String(Date.now());
  } catch (e) { status(e.message, true); }
}

async function refresh() {
  if (running) { again = true; return running; }
  clearTimeout(timer);
  running = (async () => {
    do { again = false; await refreshOnce(); } while (again);
  })();
  try { await running; } finally { running = null; timer = setTimeout(refresh, 3000); }
}

$("#login").addEventListener("submit", (ev) => {
  ev.preventDefault(); token = $("#token").value.trim(); sessionStorage.setItem("qx-token", token); status(""); refresh();
});
$("#fleet-next").addEventListener("click", () => { const a = $("#fleet-next").dataset.after; if (a) { cursors.push(a); refresh(); } });
$("#fleet-prev").addEventListener("click", () => { if (cursors.length > 1) { cursors.pop(); refresh(); } });
refresh();
