// Kickstand's status page. One request every POLL_MS (/api/status),
// however many hosts there are; the page is rebuilt from that document,
// never per host. The hosts table holds one page of rows (PAGE_ROWS), and
// the appliance filters, sorts and cuts the rack for it (the request says
// which page, column and filter), so a 5,000-host rack costs a poll the
// bytes and the DOM work of a 100-host one. Filter, sort, page and
// selection live in this script, not in the DOM, so a poll redraws without
// undoing what the operator chose; changing one polls at once. Operator actions send the operator token the user typed
// (kept for this tab only) as `Authorization: Bearer`, and only over
// HTTPS: the appliance refuses the token on plain HTTP, where anyone on the
// rack LAN could read it, so a page loaded over HTTP is read-only and links
// to the HTTPS one.
"use strict";

const POLL_MS = 2000;
let state = null;
let sort = { key: "phase", dir: 1 };
let selected = null;
let filter = "";
let pageIndex = 0;

const PAGE_ROWS = 100;


const SECURE = location.protocol === "https:";

function token() { return SECURE ? sessionStorage.getItem("kickstand-operator-token") || "" : ""; }

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return e;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function ago(secs) {
  if (secs === null || secs === undefined) return "–";
  if (secs < 90) return secs + " s";
  if (secs < 5400) return Math.round(secs / 60) + " min";
  if (secs < 172800) return (secs / 3600).toFixed(1) + " h";
  return Math.round(secs / 86400) + " d";
}

function dl(target, rows) {
  target.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

async function action(method, path, body) {
  const resp = await fetch(path, {
    method,
    headers: { "Authorization": "Bearer " + token(), "Content-Type": "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await resp.text();
  if (!resp.ok) alert(method + " " + path + ": " + resp.status + "\n" + text);
  await poll();
}

function progress(h) {
  if (h.phase !== "installing" && h.phase !== "booting") {
    return h.pulled_files ? bytes(h.pulled_bytes) : "";
  }
  const label = bytes(h.pulled_bytes) + (h.expected_bytes ? " of " + bytes(h.expected_bytes) : "");
  return el("span", {},
    el("progress", h.expected_bytes
      ? { max: h.expected_bytes, value: Math.min(h.pulled_bytes, h.expected_bytes) }
      : {}),
    " " + label);
}

// The power column: the state the daemon last read from the host's BMC
// (it polls them; the page never waits for a BMC), its address and the
// time of the read, or why the read failed.
function power(h) {
  const p = h.power;
  if (!p) return el("span", { class: "muted", title: "no bmc: in its profile" }, "–");
  const when = p.read_at ? " at " + p.read_at : " (not read yet)";
  return p.error
    ? el("span", { class: "error", title: p.bmc + ": " + p.error }, "BMC error")
    : el("span", { class: "power power-" + (p.state || "unknown"), title: "BMC " + p.bmc + when }, p.state || "…");
}

// Power buttons, for the operator, each confirmed: a power cycle into a
// one-time network boot (a reinstall when the host is re-armed), off, on.
function powerButtons(h, canAct) {
  if (!h.power) return [];
  const title = canAct ? "through its BMC, " + h.power.bmc : SECURE ? "needs the operator token" : "operator actions need HTTPS";
  const act = (verb, body, question) => el("button", {
    disabled: !canAct, title, "data-power": verb,
    onclick: (ev) => { ev.stopPropagation(); if (confirm(question)) action("POST", "/api/hosts/" + h.mac + "/power/" + verb, body); },
  }, verb === "cycle" ? "cycle → PXE" : verb);
  const buttons = [act("cycle", { pxe: true, yes: true }, "Power cycle " + h.hostname + " into a network boot? Its power is cut without a shutdown.")];
  if (h.power.state !== "off") buttons.push(act("off", { yes: true }, "Power off " + h.hostname + "? Its power is cut without a shutdown."));
  if (h.power.state !== "on") buttons.push(act("on", {}, "Power on " + h.hostname + "?"));
  return buttons;
}

// What the next poll asks of the hosts: this page, in this order, of the
// hosts whose hostname, MAC or phase contains the filter text.
function hostsQuery() {
  return new URLSearchParams({
    rows: PAGE_ROWS, page: pageIndex, sort: sort.key, dir: sort.dir, filter: filter.trim(),
  }).toString();
}

// The pager, as the appliance placed the page: a poll can shrink the list
// under the operator, and the page then falls back to the last one that
// still exists.
function showPager(at) {
  pageIndex = at.page;
  const from = at.page * at.rows, to = Math.min(from + at.rows, at.matching);
  document.getElementById("host-range").textContent = at.matching
    ? (from + 1) + "–" + to + " of " + at.matching
    : "0 of 0";
  document.getElementById("host-prev").disabled = at.page === 0;
  document.getElementById("host-next").disabled = to >= at.matching;
}

// The column headers say the order asked for, at once (the rows follow
// the appliance's answer).
function markSort() {
  for (const th of document.querySelectorAll("#hosts th[data-key]")) {
    th.setAttribute("aria-sort", th.dataset.key === sort.key ? (sort.dir > 0 ? "ascending" : "descending") : "none");
  }
}

function renderHosts() {
  const at = state.hosts_page;
  showPager(at);
  document.getElementById("host-count").textContent = "(" + at.total + ")";
  markSort();
  const canAct = token() !== "";
  const rows = state.hosts.map(h => el("tr", {
      "data-mac": h.mac, "data-phase": h.phase,
      class: h.mac === selected ? "selected" : "",
      onclick: () => { selected = h.mac; showDetail(h); renderHosts(); },
    },
    el("td", {}, h.hostname),
    el("td", { class: "mono" }, h.mac),
    el("td", {}, h.os),
    el("td", {}, el("span", { class: "phase phase-" + h.phase }, h.phase)),
    el("td", {}, power(h)),
    el("td", { class: "progress" }, progress(h)),
    el("td", {}, ago(h.in_phase_secs)),
    el("td", {}, h.last_event ? h.last_event.kind : "–"),
    el("td", { class: h.last_error ? "error" : "" }, h.last_error || h.diagnosis || ""),
    el("td", { class: "actions" }, (h.phase === "installed" || h.phase === "failed")
      ? el("button", {
          disabled: !canAct,
          title: canAct ? "send it back to the installer" : SECURE ? "needs the operator token" : "operator actions need HTTPS",
          onclick: (ev) => { ev.stopPropagation(); if (confirm("Re-arm " + h.hostname + "? Its next network boot reinstalls it.")) action("POST", "/api/hosts/" + h.mac + "/rearm"); },
        }, "re-arm")
      : "", ...powerButtons(h, canAct)),
  ));
  document.querySelector("#hosts tbody").replaceChildren(...rows);
  markFirstTable();
}

// Marks (performance.mark, read by tests/beds/browser/bench-5k.sh) when
// the hosts table was first painted: the time an operator waits for it.
// A requestAnimationFrame callback runs just before the frame's layout and
// paint; a task it queues runs after them.
function markFirstTable() {
  if (performance.getEntriesByName("kickstand-hosts-painted").length) return;
  requestAnimationFrame(() => setTimeout(() => performance.mark("kickstand-hosts-painted")));
}

function renderDiscovered() {
  const canAct = token() !== "";
  document.getElementById("discovered-count").textContent = "(" + state.discovered.length + ")";
  document.querySelector("#discovered tbody").replaceChildren(...state.discovered.map(d => el("tr", { "data-mac": d.mac },
    el("td", { class: "mono" }, d.mac),
    el("td", {}, [d.facts.manufacturer, d.facts.product].filter(Boolean).join(" ")),
    el("td", {}, d.facts.serial || ""),
    el("td", { class: "mono" }, d.facts.uuid || ""),
    el("td", {}, d.ip || ""),
    el("td", {}, d.last_seen),
    el("td", {}, canAct
      ? el("button", { onclick: () => {
          const hostname = prompt("Hostname for " + d.mac);
          if (hostname) action("POST", "/api/discovered/" + d.mac + "/adopt", { hostname });
        } }, "adopt")
      : el("code", {}, d.adopt)),
  )));
}

// Who answers the segment, as the status text says it.
function segmentText(s) {
  const since = s.since ? new Date(s.since * 1000).toISOString().replace(".000", "") : "–";
  const role = s.role === "active" ? "ACTIVE: this appliance answers it"
    : s.role === "standby" ? "standby: " + s.active + " answers it"
    : "not answering: the state database cannot be asked who does";
  return s.segment + " — " + role + (s.role === "unknown" ? "" : " (term " + s.term + ", since " + since + ")")
    + (s.error ? "; last round failed: " + s.error : "");
}

function renderCards() {
  const a = state.appliance, p = state.profiles, c = state.cache;
  document.getElementById("appliance-address").textContent = a.base_url;
  dl(document.querySelector("#card-appliance dl"), [
    ["address", a.base_url],
    ["ProxyDHCP", a.dhcp_mode + (a.interfaces.length ? " on " + a.interfaces.join(", ") : "")],
    ["unknown machines", a.unknown],
    ["boot loaders", a.loaders.map(l => l.file + (l.present ? "" : " (missing)")).join(", ")],
    ["office proxy", a.proxy || "none: mirrors are reached directly"],
    ["mirrors", a.mirrors.map(m => m.name).join(", ")],
  ].concat(a.segment ? [["segment", segmentText(a.segment)]] : []));
  dl(document.querySelector("#card-profiles dl"), [
    ["in force", "generation " + p.generation + ", loaded " + p.loaded_at],
    ["files", p.files + " file(s), " + p.oses + " OS, " + p.hosts + " host(s)"],
    ["last reload", p.errors.length ? "rejected (see above)" : "ok"],
  ]);
  const served = c.hits + c.coalesced + c.misses;
  dl(document.querySelector("#card-cache dl"), [
    ["hit ratio", served ? Math.round(100 * c.hits / served) + " % of " + served + " file(s)" : "–"],
    ["fetched upstream", bytes(c.upstream_bytes) + " in " + c.upstream_fetches + " download(s)"],
    ["cached", c.entries + " file(s), " + bytes(c.bytes) + " of " + bytes(c.max_bytes)],
    ["in flight", c.downloads_in_flight + " download(s)"],
    ["failures", c.failures + (c.disk_full ? " — DISK FULL, passing through" : "")],
  ]);
}

function renderChannel() {
  if (SECURE) return;
  const a = state.appliance, link = document.getElementById("https-link");
  link.href = a.https_url;
  link.textContent = a.https_url;
  link.title = "its certificate's SHA-256 fingerprint: " + a.fingerprint;
}

async function renderAudit() {
  const panel = document.getElementById("audit");
  panel.hidden = token() === "";
  if (panel.hidden) return;
  const resp = await fetch("/api/audit", { headers: { "Authorization": "Bearer " + token() }, cache: "no-store" });
  const body = panel.querySelector("tbody");
  if (!resp.ok) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 6, class: "error" }, await resp.text())));
    return;
  }
  body.replaceChildren(...(await resp.json()).map(r => el("tr", { "data-action": r.action },
    el("td", {}, r.time), el("td", {}, r.peer), el("td", { class: "mono" }, r.token_id || "–"),
    el("td", {}, r.action), el("td", { class: "mono" }, r.target),
    el("td", { class: r.result === "ok" ? "" : "error" }, r.result))));
}

function renderWarnings() {
  const w = [];
  for (const e of state.profiles.errors) w.push(el("div", { class: "warning bad" }, "Profile edit rejected (the last good profiles are in force): " + e));
  for (const r of state.appliance.rogue_dhcp) w.push(el("div", { class: "warning bad rogue" },
    "Another server offers boot information on this segment: " + r.server + " offered " + r.offered + " (last seen " + r.last_seen + "). It can take machines away from Kickstand."));
  for (const t of state.appliance.tokens_withheld) w.push(t.reason === "conflict"
    ? el("div", { class: "warning bad spoofing" }, "Two addresses claim " + t.mac + ": possible spoofing (" + t.addresses.join(", ") +
      "). No address gets its build token and the host is held until an operator re-arms it (last seen " + t.last_seen + ").")
    : el("div", { class: "warning withheld" }, "The boot script of " + t.mac + " was asked from " + t.ip + " and served without its build token: " +
      t.message + " (" + t.times + " time(s), last " + t.last_seen + ")."));
  for (const l of state.appliance.loaders) if (!l.present) w.push(el("div", { class: "warning" },
    "Boot loader " + l.file + " is missing from the TFTP root: PXE clients that are offered it will fail."));
  const db = state.database;
  if (db && !db.up) w.push(el("div", { class: "warning bad database" }, "The state database is unreachable since " + db.since +
    " (last primary " + (db.primary || "a Unix socket") + "): hosts are answered from memory and installs go on; " + db.waiting_changes +
    " change(s) wait to be written when it is back. Last error: " + (db.last_error || "none")));
  if (!state.appliance.proxy) w.push(el("div", { class: "warning" }, "No office proxy is set: Kickstand reaches the mirrors directly."));
  document.getElementById("warnings").replaceChildren(...w);
}

async function showDetail(h) {
  const panel = document.getElementById("detail");
  panel.hidden = false;
  document.getElementById("detail-title").textContent = h.hostname + " (" + h.mac + ")";
  document.getElementById("detail-log").href = "/api/hosts/" + h.mac + "/log";
  document.getElementById("detail-json").href = "/api/hosts/" + h.mac + "/timeline";
  const t = await (await fetch("/api/hosts/" + h.mac + "/timeline")).json();
  document.getElementById("detail-diagnosis").textContent = t.diagnosis;
  document.querySelector("#timeline tbody").replaceChildren(...t.events.slice().reverse().map(e =>
    el("tr", {}, el("td", {}, e.time), el("td", {}, e.kind), el("td", {}, e.appliance),
      el("td", { class: "mono" }, JSON.stringify(e.detail)))));
}

// Polls sent, and the newest whose answer is shown: an answer that comes
// back after a newer one (the operator paged meanwhile) is dropped.
let sent = 0, shown = 0;

async function poll() {
  const mine = ++sent;
  try {
    const resp = await fetch("/api/status?" + hostsQuery(), { cache: "no-store" });
    if (!resp.ok) throw new Error(resp.status + " " + (await resp.text()));
    const doc = await resp.json();
    if (mine < shown) return;
    shown = mine;
    state = doc;
    renderCards(); renderChannel(); renderWarnings(); renderHosts(); renderDiscovered();
    await renderAudit();
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
  } catch (e) {
    document.getElementById("updated").textContent = "cannot reach the appliance: " + e;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const th of document.querySelectorAll("#hosts th[data-key]")) {
    th.addEventListener("click", () => {
      sort = { key: th.dataset.key, dir: sort.key === th.dataset.key ? -sort.dir : 1 };
      pageIndex = 0;
      markSort();
      poll();
    });
  }
  document.getElementById("host-filter").addEventListener("input", (ev) => {
    filter = ev.target.value;
    pageIndex = 0;
    poll();
  });
  for (const [id, step] of [["host-prev", -1], ["host-next", 1]]) {
    document.getElementById(id).addEventListener("click", () => {
      pageIndex = Math.max(0, pageIndex + step);
      poll();
    });
  }
  document.getElementById("operator").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem("kickstand-operator-token", document.getElementById("token").value.trim());
    document.getElementById("mode").textContent = token() ? "operator" : "read-only";
    poll();
  });
  document.getElementById("mode").textContent = token() ? "operator" : "read-only";
  document.getElementById(SECURE ? "operator" : "use-https").hidden = false;
  poll();
  setInterval(poll, POLL_MS);
});
