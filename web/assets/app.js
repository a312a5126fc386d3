// The dashboard: tabs, the management API, live numbers. Everything user-controlled is inserted
// with textContent (never innerHTML), so names and model ids cannot inject markup.
"use strict";

const state = { keysPage: 1, logsPage: 1, resourcesPage: 1, clients: [], focus: null };

/** Calls the management API; a 401 goes back to the login page, other errors are shown. */
async function api(method, path, body) {
  const headers = { "content-type": "application/json" };
  // State-changing calls made with the session cookie carry the CSRF guard header.
  if (method !== "GET") headers["x-gemini-pool-csrf"] = "1";
  const response = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    window.location.assign("/login.html");
    throw new Error("not logged in");
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const message = (data && data.error && data.error.message) || `HTTP ${response.status}`;
    const field = data && data.error && data.error.field;
    throw new Error(field ? `${message} (${field})` : message);
  }
  return data;
}

function toast(message, isError) {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.className = isError ? "error" : "";
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, isError ? 8000 : 3000);
}

/** Runs an action, showing its error instead of swallowing it. */
async function attempt(action) {
  try {
    await action();
  } catch (error) {
    if (error.message !== "not logged in") toast(error.message, true);
  }
}

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== undefined && value !== null) node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function number(value) {
  return (value || 0).toLocaleString();
}

function when(ms) {
  return ms ? new Date(ms).toLocaleString() : t("never");
}

function badge(status) {
  return el("span", { class: `badge ${status}`, "data-status": status }, t(`status.${status}`));
}

function pager(container, page, total, perPage, go) {
  const pages = Math.max(1, Math.ceil(total / perPage));
  container.replaceChildren(
    el("button", { class: "secondary small", disabled: page <= 1 ? "" : null, onclick: () => go(page - 1) }, t("pager.prev")),
    el("span", { class: "muted" }, t("pager.page", { page, pages })),
    el("button", { class: "secondary small", disabled: page >= pages ? "" : null, onclick: () => go(page + 1) }, t("pager.next")),
  );
}

// ---------------------------------------------------------------- overview

async function loadOverview() {
  const days = document.getElementById("days").value;
  // A row clicked in a breakdown narrows the cards, charts and other breakdowns to it.
  const focus = state.focus ? `&${state.focus.param}=${encodeURIComponent(state.focus.value)}` : "";
  const stats = await api("GET", `/api/stats?days=${days}${focus}`);
  const chip = document.getElementById("focus");
  chip.hidden = !state.focus;
  document.getElementById("focus-label").textContent = state.focus ? state.focus.label : "";
  const pool = stats.pool;
  const alert = document.getElementById("accounting-alert");
  const accounting = stats.accounting || { writing: true };
  alert.hidden = accounting.writing && !accounting.dropped;
  alert.textContent = accounting.writing
    ? t("accounting.dropped", { dropped: number(accounting.dropped) })
    : t("accounting.failing", { pending: number(accounting.pending), dropped: number(accounting.dropped) });
  document.getElementById("card-usable").textContent = number(pool.usable);
  document.getElementById("card-keys").textContent = `/ ${number(pool.keys)}`;
  document.getElementById("card-cooling").textContent = number(pool.cooling);
  document.getElementById("card-out").textContent = number(pool.out_of_service + pool.disabled);
  document.getElementById("card-requests").textContent = number(stats.today.requests);
  document.getElementById("card-requests-total").textContent = `${t("card.total")} ${number(stats.total.requests)}`;
  document.getElementById("card-tokens").textContent = formatNumber(stats.today.tokens);
  document.getElementById("card-tokens-total").textContent = `${t("card.total")} ${formatNumber(stats.total.tokens)}`;
  document.getElementById("card-errors").textContent = `${(stats.today.error_rate * 100).toFixed(1)}%`;

  // 24 hourly buckets, oldest first, zeros where nothing happened.
  const hour = 3600000;
  const lastHour = Math.floor(stats.now_ms / hour) * hour;
  const byHour = new Map(stats.hourly.map((p) => [p.bucket, p.requests]));
  const hours = Array.from({ length: 24 }, (_, i) => lastHour - (23 - i) * hour);
  drawBars(document.getElementById("chart-hourly"),
    hours.map((h) => `${new Date(h).getHours()}:00`), hours.map((h) => byHour.get(h) || 0));
  const byDay = new Map(stats.daily.map((p) => [p.bucket, p.tokens]));
  const dayNumbers = Array.from({ length: Number(days) }, (_, i) => stats.today_day - (Number(days) - 1 - i));
  drawBars(document.getElementById("chart-daily"),
    dayNumbers.map((d) => dayLabel(d, stats.today_day)), dayNumbers.map((d) => byDay.get(d) || 0), { color: "#8a5cff" });

  breakdown("by-model", stats.by_model, (row) => ({ param: "model", value: row.name }));
  breakdown("by-client", stats.by_client_key, (row) => ({ param: "client_key_id", value: row.id }));
  breakdown("by-upstream", stats.by_upstream_key, (row) => ({ param: "upstream_key_id", value: row.id }));
  fill(document.querySelector("#models-now tbody"), (pool.models || []).map((model) => el("tr", { "data-model": model.model },
    el("td", {}, model.model),
    el("td", {}, `${number(model.serving)} / ${number(model.projects)}`),
    el("td", {}, number(model.cooling_quota)),
    el("td", {}, number(model.cooling_capacity)),
    el("td", {}, model.next_probe_ms
      ? el("span", { class: "badge cooling" }, t("models.probing", { time: new Date(model.next_probe_ms).toLocaleTimeString() }))
      : model.serving > 0 ? el("span", { class: "badge active" }, t("models.ok")) : el("span", { class: "badge invalid" }, t("models.none"))),
  )));
  document.getElementById("refreshed").textContent = t("refreshed", { time: new Date().toLocaleTimeString() });
}

/** A Pacific day number as a month/day label, counted back from today. */
function dayLabel(day, today) {
  const date = new Date(Date.now() - (today - day) * 86400000);
  return `${date.getMonth() + 1}/${date.getDate()}`;
}

function breakdown(id, rows, focusOf) {
  const max = Math.max(1, ...rows.map((r) => r.requests));
  const table = document.getElementById(id);
  const focusOn = (row) => {
    const focus = focusOf(row);
    if (focus.value === undefined || focus.value === null || focus.value === "") return;
    state.focus = { ...focus, label: `${t(`focus.${focus.param}`)}: ${row.name}` };
    attempt(loadOverview);
  };
  table.replaceChildren(...rows.slice(0, 12).map((row) => el("tr", { class: "focusable", title: t("focus.hint"), onclick: () => focusOn(row) },
    el("td", {}, row.name || "—"),
    el("td", {}, number(row.requests)),
    el("td", {}, formatNumber(row.prompt_tokens + row.completion_tokens)),
    el("td", { style: null }, el("div", { class: "bar", "data-width": String(Math.round((100 * row.requests) / max)) })),
  )));
  for (const bar of table.querySelectorAll(".bar")) bar.style.width = `${bar.dataset.width}%`;
}

document.getElementById("focus-clear").addEventListener("click", () => {
  state.focus = null;
  attempt(loadOverview);
});

// ---------------------------------------------------------------- upstream keys

async function loadKeys() {
  const search = encodeURIComponent(document.getElementById("keys-search").value.trim());
  const status = document.getElementById("keys-status").value;
  const data = await api("GET", `/api/keys?page=${state.keysPage}&per_page=50&q=${search}&status=${status}`);
  document.getElementById("keys-summary").textContent = t("keys.summary", data.summary);
  fill(document.querySelector("#keys-table tbody"), data.items.map((key) => el("tr", { "data-key-id": key.id },
    el("td", {}, el("code", {}, key.masked)),
    el("td", {}, key.project || "—"),
    el("td", {}, badge(key.status)),
    el("td", {}, number(key.requests_today)),
    el("td", {}, number(key.requests)),
    el("td", {}, formatNumber(key.prompt_tokens + key.completion_tokens)),
    el("td", { class: "wrap quota" }, ...(key.quota || []).map(quotaLine)),
    el("td", { class: "wrap" }, key.last_error || ""),
    el("td", {},
      el("button", { class: "secondary small", onclick: () => attempt(async () => {
        const result = await api("POST", `/api/keys/${key.id}/test`);
        toast(result.ok ? t("keys.testOk") : `${result.status}: ${result.message}`, !result.ok);
        await loadKeys();
      }) }, t("action.test")),
      " ",
      el("button", { class: "secondary small", onclick: () => attempt(async () => {
        await api("PATCH", `/api/keys/${key.id}`, { enabled: !key.enabled });
        await loadKeys();
      }) }, key.enabled ? t("action.disable") : t("action.enable")),
      " ",
      el("button", { class: "danger small", onclick: () => attempt(async () => {
        if (!window.confirm(t("keys.confirmDelete"))) return;
        await api("DELETE", `/api/keys/${key.id}`);
        await loadKeys();
      }) }, t("action.delete")),
    ),
  )));
  pager(document.getElementById("keys-pager"), data.page, data.total, data.per_page, (page) => {
    state.keysPage = page;
    attempt(loadKeys);
  });
}

/** One line per model of a key's project: used and limit per minute and day, learned limits,
 * and a cooldown with its reason. */
function quotaLine(quota) {
  const limit = (used, max) => (max === null || max === undefined ? `${number(used)}` : `${number(used)}/${number(max)}`);
  const parts = [`${limit(quota.minute_used, quota.minute_limit)} ${t("quota.perMinute")}`,
    `${limit(quota.day_used, quota.day_limit)} ${t("quota.perDay")}`];
  if (quota.learned) parts.push(t("quota.learned"));
  const line = el("div", { "data-model": quota.model }, el("strong", {}, quota.model), " ", parts.join(" · "));
  if (quota.cooling_until) {
    line.append(" ", el("span", { class: "badge cooling" },
      t("quota.cooling", { reason: t(`reason.${quota.cooling_reason}`), time: new Date(quota.cooling_until).toLocaleTimeString() })));
  }
  return line;
}

document.getElementById("add-keys").addEventListener("submit", (event) => {
  event.preventDefault();
  attempt(async () => {
    const keys = document.getElementById("new-keys").value;
    const project = document.getElementById("new-keys-project").value.trim();
    const result = await api("POST", "/api/keys", project ? { keys, project } : { keys });
    toast(t("keys.added", result));
    document.getElementById("new-keys").value = "";
    await loadKeys();
  });
});

// ---------------------------------------------------------------- client keys

function limitsText(client) {
  const parts = [];
  if (client.rpm_limit) parts.push(`${client.rpm_limit}/min`);
  if (client.rpd_limit) parts.push(`${client.rpd_limit}/day`);
  if (client.daily_token_limit) parts.push(`${formatNumber(client.daily_token_limit)} tok/day`);
  if (client.max_concurrent) parts.push(t("clients.atOnce", { limit: client.max_concurrent }));
  if (client.allowed_models) parts.push(client.allowed_models.join(", "));
  if (client.expires_at) parts.push(`⏱ ${new Date(client.expires_at).toLocaleDateString()}`);
  return parts.join(" · ") || t("clients.none");
}

async function loadClients() {
  const data = await api("GET", "/api/client-keys");
  state.clients = data.items;
  fill(document.querySelector("#clients-table tbody"), data.items.map((client) => el("tr", { "data-client-id": client.id },
    el("td", {}, client.name),
    el("td", {}, el("code", {}, client.prefix)),
    el("td", {}, badge(client.enabled ? "active" : "disabled")),
    el("td", { class: "wrap" }, limitsText(client)),
    el("td", {}, number(client.requests_today)),
    el("td", {}, number(client.requests)),
    el("td", {}, formatNumber(client.prompt_tokens + client.completion_tokens)),
    el("td", {}, when(client.last_used_at)),
    el("td", {},
      el("button", { class: "secondary small", onclick: () => attempt(async () => {
        await api("PATCH", `/api/client-keys/${client.id}`, { enabled: !client.enabled });
        await loadClients();
      }) }, client.enabled ? t("action.disable") : t("action.enable")),
      " ",
      el("button", { class: "danger small", onclick: () => attempt(async () => {
        if (!window.confirm(t("clients.confirmDelete"))) return;
        await api("DELETE", `/api/client-keys/${client.id}`);
        await loadClients();
      }) }, t("action.delete")),
    ),
  )));
  for (const id of ["logs-client", "resources-client"]) {
    const select = document.getElementById(id);
    const chosen = select.value;
    select.replaceChildren(select.options[0], ...data.items.map((c) => el("option", { value: c.id }, c.name)));
    select.value = chosen;
  }
}

/** Files and cached contents with the client key that owns each (only it can use them). */
async function loadResources() {
  const params = new URLSearchParams({ page: state.resourcesPage, per_page: 50 });
  const client = document.getElementById("resources-client").value;
  if (client) params.set("client_key_id", client);
  const data = await api("GET", `/api/resources?${params}`);
  const owner = (row) => {
    if (row.client_name) return row.client_name;
    return row.client_key_id === null ? t("resources.anyone") : t("resources.deleted", { id: row.client_key_id });
  };
  const rows = data.items.map((row) => el("tr", { "data-resource": row.resource },
    el("td", {}, el("code", {}, row.resource)),
    el("td", {}, row.project),
    el("td", {}, owner(row)),
    el("td", {}, when(row.created_at_ms)),
  ));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "4", class: "muted" }, t("resources.none"))));
  fill(document.querySelector("#resources-table tbody"), rows);
  pager(document.getElementById("resources-pager"), data.page, data.total, data.per_page, (page) => {
    state.resourcesPage = page;
    attempt(loadResources);
  });
}

document.getElementById("resources-client").addEventListener("change", () => { state.resourcesPage = 1; attempt(loadResources); });
document.getElementById("resources-refresh").addEventListener("click", () => attempt(loadResources));

function optionalNumber(id) {
  const value = document.getElementById(id).value.trim();
  return value === "" ? undefined : Number(value);
}

document.getElementById("create-client").addEventListener("submit", (event) => {
  event.preventDefault();
  attempt(async () => {
    const models = document.getElementById("client-models").value.split(",").map((m) => m.trim()).filter(Boolean);
    const expires = document.getElementById("client-expires").value;
    const created = await api("POST", "/api/client-keys", {
      name: document.getElementById("client-name").value,
      rpm_limit: optionalNumber("client-rpm"),
      rpd_limit: optionalNumber("client-rpd"),
      daily_token_limit: optionalNumber("client-tokens"),
      max_concurrent: optionalNumber("client-concurrent"),
      allowed_models: models.length ? models : undefined,
      expires_at: expires ? new Date(`${expires}T23:59:59`).getTime() : undefined,
    });
    document.getElementById("new-client-key-value").textContent = created.key;
    document.getElementById("new-client-key").hidden = false;
    document.getElementById("create-client").reset();
    await loadClients();
  });
});

document.getElementById("copy-client-key").addEventListener("click", () => attempt(async () => {
  await navigator.clipboard.writeText(document.getElementById("new-client-key-value").textContent);
  toast(t("copied"));
}));

// ---------------------------------------------------------------- request log

async function loadLogs() {
  const params = new URLSearchParams({ page: state.logsPage, per_page: 50 });
  const model = document.getElementById("logs-model").value.trim();
  const status = document.getElementById("logs-status").value;
  const client = document.getElementById("logs-client").value;
  if (model) params.set("model", model);
  if (status) params.set("status", status);
  if (client) params.set("client_key_id", client);
  const data = await api("GET", `/api/logs?${params}`);
  fill(document.querySelector("#logs-table tbody"), data.items.map((row) => el("tr", {},
    el("td", {}, new Date(row.at_ms).toLocaleString()),
    el("td", {}, row.route),
    el("td", {}, row.model || "—"),
    el("td", {}, row.client_name || "—"),
    el("td", {}, row.upstream_key_masked || "—"),
    el("td", {}, el("span", { class: `badge ${row.status < 400 ? "active" : "invalid"}` }, String(row.status))),
    el("td", {}, `${row.latency_ms} ms`),
    el("td", {}, number(row.prompt_tokens + row.completion_tokens)),
    el("td", {}, row.attempts > 1 || row.upstream_error
      ? t("logs.attempts", { attempts: row.attempts, trouble: row.upstream_error ? t(`trouble.${row.upstream_error}`) : "" })
      : ""),
  )));
  pager(document.getElementById("logs-pager"), data.page, data.total, data.per_page, (page) => {
    state.logsPage = page;
    attempt(loadLogs);
  });
}

for (const id of ["logs-status", "logs-client"]) {
  document.getElementById(id).addEventListener("change", () => { state.logsPage = 1; attempt(loadLogs); });
}
document.getElementById("logs-model").addEventListener("change", () => { state.logsPage = 1; attempt(loadLogs); });
document.getElementById("logs-refresh").addEventListener("click", () => attempt(loadLogs));

// ---------------------------------------------------------------- settings

async function loadSettings() {
  const settings = await api("GET", "/api/settings");
  document.getElementById("set-rpm").value = settings.default_rpm_limit ?? "";
  document.getElementById("set-rpd").value = settings.default_rpd_limit ?? "";
  document.getElementById("set-tpm").value = settings.default_tpm_limit ?? "";
  document.getElementById("set-retries").value = settings.max_retries;
  document.getElementById("set-retention").value = settings.log_retention_days;
  document.getElementById("set-models").value = JSON.stringify(settings.model_limits, null, 2);
}

document.getElementById("settings-form").addEventListener("submit", (event) => {
  event.preventDefault();
  attempt(async () => {
    let models;
    try {
      models = JSON.parse(document.getElementById("set-models").value || "{}");
    } catch {
      throw new Error(t("invalidJson"));
    }
    const orNull = (id) => optionalNumber(id) ?? null;
    await api("PATCH", "/api/settings", {
      default_rpm_limit: orNull("set-rpm"),
      default_rpd_limit: orNull("set-rpd"),
      default_tpm_limit: orNull("set-tpm"),
      max_retries: Number(document.getElementById("set-retries").value),
      log_retention_days: Number(document.getElementById("set-retention").value),
      model_limits: models,
    });
    toast(t("settings.saved"));
    await loadSettings();
  });
});

// ---------------------------------------------------------------- tabs and refresh

async function loadClientsTab() {
  await loadClients();
  await loadResources();
}

const loaders = { overview: loadOverview, keys: loadKeys, clients: loadClientsTab, logs: loadLogs, settings: loadSettings };
let activeTab = "overview";

function showTab(name) {
  activeTab = name;
  for (const button of document.querySelectorAll("#tabs button")) button.classList.toggle("active", button.dataset.tab === name);
  for (const section of document.querySelectorAll(".tab")) section.classList.toggle("active", section.id === `tab-${name}`);
  window.location.hash = name;
  attempt(loaders[name]);
}

for (const button of document.querySelectorAll("#tabs button")) {
  button.addEventListener("click", () => showTab(button.dataset.tab));
}
document.getElementById("days").addEventListener("change", () => attempt(loadOverview));
document.getElementById("keys-search").addEventListener("input", () => {
  clearTimeout(loadKeys.timer);
  loadKeys.timer = setTimeout(() => { state.keysPage = 1; attempt(loadKeys); }, 250);
});
document.getElementById("keys-status").addEventListener("change", () => { state.keysPage = 1; attempt(loadKeys); });
document.getElementById("logout").addEventListener("click", () => attempt(async () => {
  await api("POST", "/api/auth/logout");
  window.location.assign("/login.html");
}));

// Live numbers: the overview, keys and log refresh every 10 s while the page is visible.
setInterval(() => {
  if (document.visibilityState === "visible" && ["overview", "keys", "logs"].includes(activeTab)) {
    attempt(loaders[activeTab]);
  }
}, 10000);

setupLanguageToggle(() => attempt(loaders[activeTab]));
attempt(async () => {
  await api("GET", "/api/session");
  await loadClients();
  const initial = window.location.hash.slice(1);
  showTab(loaders[initial] ? initial : "overview");
});
