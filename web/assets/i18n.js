// English and Chinese text of the dashboard. Elements carry data-i18n (text) or
// data-i18n-placeholder (placeholder); the choice is kept in localStorage.
"use strict";
const I18N = {
  en: {},
  zh: {
    "login.title": "登录管理面板", "login.username": "用户名", "login.password": "密码", "login.submit": "登录",
    "login.failed": "用户名或密码错误。", "login.throttled": "失败次数过多，请稍后再试。",
    "tab.overview": "概览", "tab.keys": "上游密钥", "tab.clients": "客户端密钥", "tab.logs": "请求日志", "tab.settings": "设置",
    "logout": "退出登录", "refresh": "刷新", "save": "保存", "copy": "复制", "copied": "已复制。",
    "card.usable": "可用密钥", "card.cooling": "冷却中", "card.out": "已停用", "card.requests": "今日请求",
    "card.tokens": "今日 token", "card.errors": "今日错误率", "card.total": "累计",
    "chart.hourly": "每小时请求数（24 小时）", "chart.daily": "每日 token 数",
    "focus.showing": "仅显示", "focus.clear": "显示全部", "focus.hint": "点击只看这一项的用量",
    "focus.model": "模型", "focus.client_key_id": "客户端密钥", "focus.upstream_key_id": "上游密钥",
    "by.model": "按模型", "by.client": "按客户端密钥", "by.upstream": "按上游密钥",
    "keys.add": "添加密钥", "keys.addHelp": "一个或多个密钥，用逗号、空格或换行分隔；每项为 KEY 或 KEY@PROJECT。同一 Google Cloud 项目的密钥共享配额。",
    "keys.projectPlaceholder": "项目（可选）", "keys.addButton": "添加", "keys.search": "搜索密钥或项目",
    "keys.added": "已添加 {added} 个，重复 {duplicates} 个。", "keys.confirmDelete": "删除这个密钥？",
    "keys.testOk": "密钥可用。", "keys.summary": "共 {total} 个：可用 {active}，冷却 {cooling}，检查中 {checking}，停用 {invalid}，禁用 {disabled}",
    "status.all": "全部", "status.active": "可用", "status.cooling": "冷却中", "status.checking": "检查中", "status.invalid": "已停用", "status.disabled": "已禁用",
    "col.quota": "按模型的配额", "col.upstream": "上游",
    "accounting.failing": "用量无法写入数据库：{pending} 条记录在内存中等待重试，已丢弃 {dropped} 条。请检查数据库。",
    "accounting.dropped": "用量写入曾积压过多：已丢弃 {dropped} 条请求记录。",
    "quota.perMinute": "每分钟", "quota.perDay": "每日", "quota.learned": "限额由 Google 告知", "quota.cooling": "冷却（{reason}）至 {time}",
    "reason.quota": "配额", "reason.capacity": "容量不足", "reason.health": "无可用密钥", "reason.lease": "等待共享配额",
    "models.title": "当前模型状态", "models.help": "每个模型：现在能接收请求的项目数，以及其余项目不能服务的原因。",
    "models.serving": "可服务", "models.quota": "冷却：配额", "models.capacity": "冷却：容量", "models.state": "状态",
    "models.ok": "正常", "models.none": "无项目可用", "models.probing": "上游容量不足，每秒试探一次（下次 {time}）",
    "logs.attempts": "{attempts} 次调用 {trouble}",
    "trouble.capacity": "（上游容量不足）", "trouble.quota": "（配额用尽）", "trouble.key_error": "（密钥错误）",
    "trouble.empty_answer": "（空回答，已重试）", "trouble.malformed_answer": "（回答不完整）", "trouble.connection": "（连接失败）",
    "trouble.project_unusable": "（项目不可用）", "trouble.request_error": "（请求错误）",
    "col.key": "密钥", "col.project": "项目", "col.status": "状态", "col.today": "今日", "col.requests": "请求",
    "col.tokens": "Token", "col.lastError": "最近错误", "col.name": "名称", "col.limits": "限额", "col.lastUsed": "最近使用",
    "col.time": "时间", "col.route": "路由", "col.model": "模型", "col.client": "客户端", "col.latency": "耗时",
    "action.test": "测试", "action.enable": "启用", "action.disable": "禁用", "action.delete": "删除",
    "clients.create": "创建客户端密钥", "clients.name": "名称", "clients.rpm": "每分钟请求", "clients.rpd": "每日请求",
    "clients.tokens": "每日 token", "clients.concurrent": "同时请求数", "clients.atOnce": "同时 {limit} 个", "clients.models": "允许的模型", "clients.expires": "过期日期", "clients.createButton": "创建",
    "clients.once": "请立即复制此密钥：它只显示这一次。", "clients.confirmDelete": "吊销这个客户端密钥？", "clients.none": "无限额",
    "logs.model": "模型", "logs.ok": "成功", "logs.error": "失败", "logs.anyClient": "任意客户端密钥",
    "settings.title": "运行时设置", "settings.help": "限额按 Google Cloud 项目和模型计算。修改立即生效，重启后保留。留空表示不限。",
    "settings.rpm": "默认每分钟请求", "settings.rpd": "默认每日请求", "settings.tpm": "默认每分钟 token",
    "settings.retries": "换密钥重试次数", "settings.retention": "请求日志保留天数", "settings.models": "按模型的限额（JSON）", "settings.saved": "设置已保存。",
    "pager.prev": "上一页", "pager.next": "下一页", "pager.page": "第 {page} / {pages} 页", "refreshed": "更新于 {time}",
    "never": "从未", "invalidJson": "按模型的限额不是有效的 JSON。",
    "resources.title": "文件和缓存内容",
    "resources.help": "通过网关上传的文件和创建的缓存内容，只有创建它的客户端密钥能使用和列出。保留 7 天。",
    "col.resource": "资源", "col.owner": "客户端密钥", "col.created": "创建时间",
    "resources.anyone": "未记录（任何客户端密钥可用）", "resources.deleted": "#{id}（已删除）", "resources.none": "暂无文件或缓存内容。",
  },
};
I18N.en = {
  "login.failed": "Wrong user name or password.", "login.throttled": "Too many failed attempts; try again later.",
  "keys.added": "Added {added}, {duplicates} already there.", "keys.confirmDelete": "Delete this key?",
  "keys.testOk": "The key works.", "keys.summary": "{total} keys: {active} active, {cooling} cooling, {checking} being checked, {invalid} out of service, {disabled} disabled",
  "status.all": "All", "status.active": "Active", "status.cooling": "Cooling", "status.checking": "Being checked",
  "accounting.failing": "Usage cannot be written to the database: {pending} records wait in memory and are retried, {dropped} were dropped. Check the database.",
  "accounting.dropped": "Usage writing fell too far behind: {dropped} request records were dropped.",
  "quota.perMinute": "per minute", "quota.perDay": "per day", "quota.learned": "limit told by Google", "quota.cooling": "cooling ({reason}) until {time}",
  "reason.quota": "quota", "reason.capacity": "upstream capacity", "reason.health": "no usable key", "reason.lease": "waiting for shared quota",
  "models.ok": "serving", "models.none": "no project can serve", "models.probing": "upstream short of capacity: one probe a second (next {time})",
  "logs.attempts": "{attempts} calls {trouble}",
  "trouble.capacity": "(upstream capacity)", "trouble.quota": "(quota used up)", "trouble.key_error": "(key error)",
  "trouble.empty_answer": "(empty answer, retried)", "trouble.malformed_answer": "(answer cut short)", "trouble.connection": "(no connection)",
  "trouble.project_unusable": "(project cannot serve)", "trouble.request_error": "(request error)",
  "status.invalid": "Out of service", "status.disabled": "Disabled",
  "action.test": "Test", "action.enable": "Enable", "action.disable": "Disable", "action.delete": "Delete",
  "clients.confirmDelete": "Revoke this client key?", "clients.atOnce": "{limit} at once", "clients.none": "no limits", "copied": "Copied.",
  "settings.saved": "Settings saved.", "pager.prev": "Previous", "pager.next": "Next", "pager.page": "Page {page} of {pages}",
  "focus.hint": "Click to see only this one's usage", "focus.model": "model",
  "focus.client_key_id": "client key", "focus.upstream_key_id": "upstream key",
  "refreshed": "Updated {time}", "never": "never", "card.total": "total", "invalidJson": "The per-model limits are not valid JSON.",
  "resources.anyone": "not recorded (any client key may use it)", "resources.deleted": "#{id} (deleted)",
  "resources.none": "No files or cached contents.",
};

function currentLanguage() {
  return localStorage.getItem("lang") === "zh" ? "zh" : "en";
}

/** Text for `key`, with {placeholders} filled from `values`. */
function t(key, values) {
  const lang = currentLanguage();
  let text = (I18N[lang] && I18N[lang][key]) || I18N.en[key] || key;
  for (const [name, value] of Object.entries(values || {})) {
    text = text.replaceAll(`{${name}}`, String(value));
  }
  return text;
}

function applyLanguage() {
  const lang = currentLanguage();
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  for (const element of document.querySelectorAll("[data-i18n]")) {
    if (!element.dataset.i18nDefault) element.dataset.i18nDefault = element.textContent;
    const key = element.dataset.i18n;
    element.textContent = lang === "en" ? (I18N.en[key] || element.dataset.i18nDefault) : t(key);
  }
  for (const element of document.querySelectorAll("[data-i18n-placeholder]")) {
    if (!element.dataset.i18nDefaultPlaceholder) element.dataset.i18nDefaultPlaceholder = element.placeholder;
    const key = element.dataset.i18nPlaceholder;
    element.placeholder = lang === "en" ? element.dataset.i18nDefaultPlaceholder : t(key);
  }
  const toggle = document.getElementById("lang-toggle");
  if (toggle) toggle.textContent = lang === "zh" ? "English" : "中文";
}

function setupLanguageToggle(onChange) {
  applyLanguage();
  const toggle = document.getElementById("lang-toggle");
  if (!toggle) return;
  toggle.addEventListener("click", () => {
    localStorage.setItem("lang", currentLanguage() === "zh" ? "en" : "zh");
    applyLanguage();
    if (onChange) onChange();
  });
}
