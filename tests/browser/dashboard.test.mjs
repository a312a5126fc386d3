// The dashboard in Debian's headless Chromium, driven by playwright-core: log in, add keys in
// bulk, create a client key and use it through the OpenAI endpoint, see a file it uploads listed
// with it as the owner, see the request in the log and the charts, disable the client key and
// see it refused, switch to Chinese, log out.
// Screenshots of each page go to artifacts/screenshots/.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "../..");
const binDir = process.env.GEMINI_POOL_BIN_DIR || join(repo, "target", "debug");
const shots = join(repo, "artifacts", "screenshots");
const PASSWORD = "browser-test-password";
const KEYS = ["AIzaSyBrowserKeyA000000000000000000000", "AIzaSyBrowserKeyB000000000000000000000"];

/** Starts a binary and resolves with its URL once it prints "listening on http://…". */
function start(binary, args, env) {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(join(binDir, binary), args, { env, cwd: env && env.WORKDIR, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    const timer = setTimeout(() => reject(new Error(`${binary} did not start:\n${output}`)), 30000);
    const onData = (data) => {
      output += data;
      const match = output.match(/listening on (http:\/\/\S+)/);
      if (match) {
        clearTimeout(timer);
        resolvePromise({ child, url: match[1] });
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("exit", (code) => reject(new Error(`${binary} exited with ${code}:\n${output}`)));
  });
}

let mock, gateway, browser, page;

before(async () => {
  mkdirSync(shots, { recursive: true });
  mock = await start("mock-gemini", ["--keys", KEYS.map((k, i) => `${k}@project-${i}`).join(",")]);
  const data = mkdtempSync(join(tmpdir(), "gemini-pool-browser-"));
  gateway = await start("gemini-pool", [], {
    PATH: process.env.PATH,
    WORKDIR: data,
    LISTEN_ADDR: "127.0.0.1:0",
    DATABASE_URL: `sqlite://${data}/gateway.db?mode=rwc`,
    GEMINI_BASE_URL: mock.url,
    ADMIN_PASSWORD: PASSWORD,
    RUST_LOG: "info",
  });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  page = await context.newPage();
  page.on("pageerror", (error) => { throw error; });
});

after(async () => {
  await browser?.close();
  gateway?.child.kill("SIGTERM");
  mock?.child.kill("SIGTERM");
});

/** Uploads a small file with the client key `key` (Gemini's resumable protocol: the chunk
 * carries no key); resolves with the file's metadata. */
async function uploadFile(key, text) {
  const start = await fetch(`${gateway.url}/upload/v1beta/files`, {
    method: "POST",
    headers: {
      "x-goog-api-key": key, "content-type": "application/json", "x-goog-upload-protocol": "resumable",
      "x-goog-upload-command": "start", "x-goog-upload-header-content-type": "text/plain",
    },
    body: JSON.stringify({ file: { display_name: "notes.txt" } }),
  });
  assert.equal(start.status, 200);
  const done = await fetch(start.headers.get("x-goog-upload-url"), {
    method: "POST",
    headers: { "x-goog-upload-offset": "0", "x-goog-upload-command": "upload, finalize" },
    body: text,
  });
  assert.equal(done.status, 200);
  return (await done.json()).file;
}

async function chat(key) {
  const response = await fetch(`${gateway.url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify({ model: "gemini-2.5-flash", messages: [{ role: "user", content: "hello from the browser test" }] }),
  });
  return response.status;
}

test("the dashboard from login to logout", async () => {
  await page.goto(`${gateway.url}/`);
  await page.waitForURL("**/login.html");
  await page.screenshot({ path: join(shots, "login.png") });

  await page.fill("#password", "wrong password");
  await page.click("#login-button");
  await page.waitForSelector("#login-error:not([hidden])");
  assert.match(await page.textContent("#login-error"), /Wrong user name or password/);

  await page.fill("#password", PASSWORD);
  await page.click("#login-button");
  await page.waitForURL("**/management.html**");
  await page.waitForFunction(() => document.getElementById("card-usable").textContent !== "–");
  assert.equal(await page.textContent("#card-usable"), "0");

  // Add two keys in bulk, each with its project.
  await page.click("button[data-tab=keys]");
  await page.fill("#new-keys", KEYS.map((k, i) => `${k}@project-${i}`).join("\n"));
  await page.click("#add-keys button[type=submit]");
  try {
    await page.waitForSelector("#keys-table tbody tr:nth-child(2)", { timeout: 10000 });
  } catch (error) {
    await page.screenshot({ path: join(shots, "failure.png"), fullPage: true });
    throw new Error(`${error.message}\ntoast: ${await page.textContent("#toast")}`);
  }
  assert.match(await page.textContent("#toast"), /Added 2/);
  const keysText = await page.textContent("#keys-table");
  assert.ok(keysText.includes("AIza…0000"), keysText);
  for (const key of KEYS) assert.ok(!(await page.content()).includes(key), "a whole key is on the page");
  await page.screenshot({ path: join(shots, "keys.png"), fullPage: true });

  // Create a client key; it is shown once.
  await page.click("button[data-tab=clients]");
  await page.fill("#client-name", "browser test");
  await page.fill("#client-rpm", "100");
  await page.click("#create-client button[type=submit]");
  await page.waitForSelector("#new-client-key:not([hidden])");
  const clientKey = (await page.textContent("#new-client-key-value")).trim();
  assert.match(clientKey, /^gp-[A-Za-z0-9]{40}$/);
  await page.waitForSelector("#clients-table tbody tr[data-client-id]");
  await page.screenshot({ path: join(shots, "client-keys.png"), fullPage: true });

  // It works through the OpenAI endpoint at once.
  assert.equal(await chat(clientKey), 200);

  // The request shows in the log (written behind, within a few seconds) ...
  await page.click("button[data-tab=logs]");
  let found = false;
  for (let i = 0; i < 30 && !found; i++) {
    await page.click("#logs-refresh");
    await page.waitForTimeout(300);
    found = (await page.textContent("#logs-table tbody")).includes("gemini-2.5-flash");
  }
  assert.ok(found, "the request never appeared in the log");
  assert.match(await page.textContent("#logs-table tbody"), /browser test/);
  await page.screenshot({ path: join(shots, "logs.png"), fullPage: true });

  // ... and in the overview's numbers and charts.
  await page.click("button[data-tab=overview]");
  await page.waitForFunction(() => document.getElementById("card-requests").textContent === "1");
  assert.equal(await page.textContent("#card-usable"), "2");
  const drawn = await page.evaluate(() => {
    const canvas = document.getElementById("chart-hourly");
    const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let coloured = 0;
    for (let i = 0; i < pixels.length; i += 4) if (pixels[i + 3] > 0 && pixels[i + 2] > pixels[i] + 40) coloured++;
    return coloured;
  });
  assert.ok(drawn > 20, `the hourly chart shows no bar (${drawn} pixels)`);
  assert.match(await page.textContent("#by-model"), /gemini-2\.5-flash/);
  await page.screenshot({ path: join(shots, "overview.png"), fullPage: true });

  // A breakdown row narrows the overview to itself, until "Show all".
  const narrowed = page.waitForResponse((r) => r.url().includes("/api/stats") && r.url().includes("model=gemini-2.5-flash"));
  await page.click("#by-model tr:has-text('gemini-2.5-flash')");
  assert.equal((await narrowed).status(), 200);
  await page.waitForSelector("#focus:not([hidden])");
  assert.match(await page.textContent("#focus-label"), /model: gemini-2\.5-flash/);
  assert.equal(await page.textContent("#card-requests"), "1");
  await page.screenshot({ path: join(shots, "overview-one-model.png"), fullPage: true });
  await page.click("#focus-clear");
  await page.waitForSelector("#focus", { state: "hidden" });

  // An overload of every key: while the upstream answers 503, the keys show as cooling for its
  // capacity (never "active" while the pool holds them back) and the overview says the model is
  // being probed; once the upstream recovers, the keys are active again.
  await fetch(`${mock.url}/__mock/outage?mode=overloaded`, { method: "POST" });
  let storming = true;
  const load = (async () => { while (storming) { await chat(clientKey); await new Promise((r) => setTimeout(r, 50)); } })();
  let honest = false;
  for (let i = 0; i < 40 && !honest; i++) {
    await page.click("button[data-tab=keys]");
    await page.waitForTimeout(150);
    const text = await page.textContent("#keys-table tbody");
    honest = text.includes("upstream capacity") && !(await page.$("#keys-table [data-status=active]"));
  }
  assert.ok(honest, `the keys did not show the capacity cooldown: ${await page.textContent("#keys-table tbody")}`);
  await page.screenshot({ path: join(shots, "keys-overloaded.png"), fullPage: true });
  let probing = false;
  for (let i = 0; i < 40 && !probing; i++) {
    await page.click("button[data-tab=overview]");
    await page.waitForTimeout(150);
    probing = /one probe a second/.test(await page.textContent("#models-now"))
      && (await page.textContent("#card-usable")) === "0";
  }
  assert.ok(probing, `the overview did not show the probing model: ${await page.textContent("#models-now")}`);
  await page.screenshot({ path: join(shots, "overview-overloaded.png"), fullPage: true });
  await fetch(`${mock.url}/__mock/outage?mode=off`, { method: "POST" });
  storming = false;
  await load;
  // Served again within two seconds (the gate lets one probe through a second).
  const lifted = Date.now();
  let served = false;
  while (!served && Date.now() - lifted < 2000) {
    served = (await chat(clientKey)) === 200;
    if (!served) await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(served, "not served within 2 s of the recovery");
  let recovered = false;
  for (let i = 0; i < 40 && !recovered; i++) {
    await page.click("button[data-tab=keys]");
    await page.waitForTimeout(150);
    recovered = (await page.$$("#keys-table [data-status=active]")).length === 2;
  }
  assert.ok(recovered, "the keys did not come back as active");

  // A file it uploads shows under its name in the files and cached contents (written behind).
  await page.click("button[data-tab=clients]");
  const file = await uploadFile(clientKey, "notes from the browser test");
  const fileRow = `#resources-table tbody tr[data-resource="${file.name}"]`;
  let listed = false;
  for (let i = 0; i < 30 && !listed; i++) {
    await page.click("#resources-refresh");
    await page.waitForTimeout(200);
    listed = (await page.$(fileRow)) !== null;
  }
  assert.ok(listed, `the uploaded file never appeared: ${await page.textContent("#resources-table tbody")}`);
  const fileText = await page.textContent(fileRow);
  assert.ok(fileText.includes("browser test"), `no owner: ${fileText}`);
  assert.match(fileText, /project-[01]/);
  await page.screenshot({ path: join(shots, "client-keys-resources.png"), fullPage: true });

  // Disable the client key: refused at once.
  await page.click("button[data-tab=clients]");
  const row = page.locator("#clients-table tbody tr", { hasText: "browser test" });
  await row.getByRole("button", { name: "Disable" }).click();
  await page.waitForSelector("#clients-table tbody tr:has-text('browser test') [data-status=disabled]");
  assert.equal(await chat(clientKey), 401);

  // Chinese.
  await page.click("#lang-toggle");
  assert.equal((await page.textContent("button[data-tab=overview]")).trim(), "概览");
  assert.equal((await page.textContent("[data-i18n='resources.title']")).trim(), "文件和缓存内容");
  await page.click("button[data-tab=overview]");
  await page.screenshot({ path: join(shots, "overview-zh.png"), fullPage: true });
  await page.click("#lang-toggle");

  // Log out: back to the login page, and the session is gone.
  await page.click("#logout");
  await page.waitForURL("**/login.html");
  const session = await page.evaluate(async () => (await fetch("/api/session")).status);
  assert.equal(session, 401);
});
