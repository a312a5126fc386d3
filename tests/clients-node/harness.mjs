// Starts the real `mock-gemini` and `gemini-pool` binaries on port 0, as tests/python/conftest.py
// does: each prints "listening on http://…" once it accepts connections. The binaries come from
// GEMINI_POOL_BIN_DIR (default: target/debug of this repository), which scripts/test.sh builds.
// Importing this module also confines the test process to loopback: any fetch or name lookup of
// another host is refused and recorded, and `outsideLoopback()` lists what was tried.

import { spawn } from "node:child_process";
import dns from "node:dns";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const binDir = process.env.GEMINI_POOL_BIN_DIR || join(repo, "target", "debug");

const outside = [];

function isLoopback(hostname) {
  const host = hostname.replace(/^\[|\]$/g, "").toLowerCase();
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

const realFetch = globalThis.fetch;
globalThis.fetch = async (input, init) => {
  const url = new URL(input instanceof Request ? input.url : String(input));
  if (!isLoopback(url.hostname)) {
    outside.push(`fetch ${url.href}`);
    throw new TypeError(`these tests reach nothing beyond loopback (fetch ${url.href})`);
  }
  return realFetch(input, init);
};
const realLookup = dns.lookup;
dns.lookup = function lookup(hostname, ...rest) {
  if (!isLoopback(String(hostname))) {
    outside.push(`lookup ${hostname}`);
    const callback = rest.at(-1);
    const error = Object.assign(new Error(`these tests reach nothing beyond loopback (lookup ${hostname})`), { code: "ENOTFOUND" });
    if (typeof callback === "function") process.nextTick(callback, error);
    return undefined;
  }
  return realLookup.call(this, hostname, ...rest);
};

/** The fetches and name lookups beyond loopback that something in this process tried. */
export function outsideLoopback() {
  return [...outside];
}

export const CLIENT_KEY = "node-client-test-key";
const UPSTREAM_KEYS = [
  "AIzaSyNodeClientKeyA0000000000000000000@project-a",
  "AIzaSyNodeClientKeyB0000000000000000000@project-b",
].join(",");

/** Starts a binary; resolves with { child, url, output() } once it announces its address. */
function start(binary, args, options = {}) {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(join(binDir, binary), args, { ...options, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    let url = null;
    const timer = setTimeout(() => reject(new Error(`${binary} did not start:\n${output}`)), 30000);
    const onData = (data) => {
      output += data;
      const match = url === null && output.match(/listening on (http:\/\/\S+)/);
      if (match) {
        url = match[1];
        clearTimeout(timer);
        resolvePromise({ child, url, output: () => output });
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("error", (error) => { clearTimeout(timer); reject(error); });
    child.on("exit", (code) => {
      clearTimeout(timer);
      if (url === null) reject(new Error(`${binary} exited with ${code}:\n${output}`));
    });
  });
}

/** The mock Gemini API and the gateway in front of it; `stop()` ends both. */
export async function startGatewayAndMock() {
  const mock = await start("mock-gemini", ["--keys", UPSTREAM_KEYS]);
  const data = mkdtempSync(join(tmpdir(), "gemini-pool-node-clients-"));
  let gateway;
  try {
    gateway = await start("gemini-pool", [], {
      cwd: data,
      env: {
        PATH: process.env.PATH,
        LISTEN_ADDR: "127.0.0.1:0",
        DATABASE_URL: `sqlite://${data}/gateway.db?mode=rwc`,
        GEMINI_API_KEYS: UPSTREAM_KEYS,
        GEMINI_BASE_URL: mock.url,
        CLIENT_API_KEYS: CLIENT_KEY,
        RUST_LOG: "info",
        // These tests are not about quotas: the default 10 per minute would get in the way.
        DEFAULT_RPM_LIMIT: "100000",
        DEFAULT_RPD_LIMIT: "1000000",
      },
    });
  } catch (error) {
    mock.child.kill("SIGTERM");
    throw error;
  }
  return {
    mock,
    gateway,
    /** The generateContent / streamGenerateContent bodies the mock received, oldest first. */
    async generateBodies() {
      const response = await fetch(`${mock.url}/__mock/requests`);
      const calls = await response.json();
      return calls.filter((call) => call.path.includes("enerateContent")).map((call) => call.body);
    },
    async stop() {
      for (const { child } of [gateway, mock]) {
        if (child.exitCode === null) {
          const exited = new Promise((resolveExit) => child.once("exit", resolveExit));
          child.kill("SIGTERM");
          await exited;
        }
      }
      rmSync(data, { recursive: true, force: true });
    },
  };
}
