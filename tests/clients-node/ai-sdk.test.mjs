// The Vercel AI SDK (`ai` + `@ai-sdk/openai`) with its default OpenAI provider, only the base URL
// swapped: `openai(model)` speaks the Responses API, `openai.chat(model)` chat completions. The
// mock's answers are deterministic ("Echo: <last user text>", calls signed "mock-sig:<name>" on
// thinking models, JSON following responseJsonSchema), so every value is checked exactly.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createOpenAI } from "@ai-sdk/openai";
import { generateObject, generateText, Output, stepCountIs, streamText, tool } from "ai";
import { z } from "zod";
import { CLIENT_KEY, outsideLoopback, startGatewayAndMock } from "./harness.mjs";

const FLASH = "gemini-2.5-flash";
const GEMINI3 = "gemini-3-flash-preview";

let env;
let openai;
/** What the SDK sent to the gateway: { url, body } per request, oldest first. */
let sent = [];

before(async () => {
  env = await startGatewayAndMock();
  openai = createOpenAI({
    baseURL: `${env.gateway.url}/v1`,
    apiKey: CLIENT_KEY,
    // Passes every request on unchanged, keeping a copy of what the SDK sent.
    fetch: async (url, init) => {
      sent.push({ url: String(url), body: init?.body ? JSON.parse(init.body) : null });
      return fetch(url, init);
    },
  });
});

after(async () => {
  await env?.stop();
  assert.deepEqual(outsideLoopback(), [], "something tried to reach beyond loopback");
});

function weatherTool() {
  return tool({
    description: "Current weather in a city.",
    inputSchema: z.object({ city: z.string() }),
    execute: async ({ city }) => ({ city, sky: "clear" }),
  });
}

/** The last `count` generate bodies the mock received. */
async function lastBodies(count) {
  const bodies = await env.generateBodies();
  assert.ok(bodies.length >= count, `the mock saw ${bodies.length} generate calls`);
  return bodies.slice(-count);
}

/** Checks the mock's two calls of a tool round trip: the call, then the signed history. */
async function assertSignedRoundTrip(city) {
  const [first, second] = await lastBodies(2);
  assert.deepEqual(first.contents, [{ role: "user", parts: [{ text: city }] }]);
  assert.equal(first.tools[0].functionDeclarations[0].name, "get_weather");
  const model = second.contents.filter((content) => content.role === "model");
  assert.equal(model.length, 1);
  assert.deepEqual(model[0].parts, [
    { functionCall: { name: "get_weather", args: { city } }, thoughtSignature: "mock-sig:get_weather" },
  ]);
  assert.deepEqual(second.contents.at(-1), {
    role: "user",
    parts: [{ functionResponse: { name: "get_weather", response: { city, sky: "clear" } } }],
  });
}

test("generateText through the Responses API: text, finish reason, usage, system prompt", async () => {
  sent = [];
  const result = await generateText({
    model: openai(FLASH),
    system: "Be brief.",
    prompt: "Hello there",
    maxOutputTokens: 100,
  });
  assert.equal(result.text, "Echo: Hello there");
  assert.equal(result.finishReason, "stop");
  // The mock counts words: 2 in, 3 visible out, 5 of thinking (counted as reasoning output).
  assert.equal(result.usage.inputTokens, 2);
  assert.equal(result.usage.outputTokens, 8);
  assert.equal(result.usage.outputTokenDetails.reasoningTokens, 5);
  assert.equal(result.usage.totalTokens, 10);
  assert.match(result.providerMetadata.openai.responseId, /^resp_/);
  assert.equal(result.response.modelId, FLASH);

  assert.deepEqual(sent.map((request) => new URL(request.url).pathname), ["/v1/responses"]);
  const [body] = await lastBodies(1);
  assert.deepEqual(body.systemInstruction, { parts: [{ text: "Be brief." }] });
  assert.deepEqual(body.contents, [{ role: "user", parts: [{ text: "Hello there" }] }]);
  assert.equal(body.generationConfig.maxOutputTokens, 100);
});

test("streamText assembles the streamed text, finish reason and usage", async () => {
  const errors = [];
  const result = streamText({
    model: openai(FLASH),
    prompt: "Tell me a story please",
    onError: ({ error }) => errors.push(error),
  });
  const deltas = [];
  for await (const delta of result.textStream) deltas.push(delta);
  assert.deepEqual(errors, []);
  assert.ok(deltas.length >= 2, `one delta per upstream chunk, got ${JSON.stringify(deltas)}`);
  assert.equal(deltas.join(""), "Echo: Tell me a story please");
  assert.equal(await result.text, "Echo: Tell me a story please");
  assert.equal(await result.finishReason, "stop");
  const usage = await result.usage;
  assert.equal(usage.inputTokens, 5);
  assert.equal(usage.outputTokens, 6 + 5);
  assert.equal(usage.outputTokenDetails.reasoningTokens, 5);
  assert.equal(usage.totalTokens, 16);
});

test("a zod tool with execute over two steps on Gemini 3: the thought signature comes back", async () => {
  sent = [];
  const result = await generateText({
    model: openai(GEMINI3),
    prompt: "Weather in Paris?",
    tools: { get_weather: weatherTool() },
    stopWhen: stepCountIs(2),
  });
  assert.equal(result.steps.length, 2);
  const [call] = result.steps[0].toolCalls;
  assert.equal(call.toolName, "get_weather");
  assert.deepEqual(call.input, { city: "Weather in Paris?" });
  assert.equal(result.steps[0].finishReason, "tool-calls");
  assert.deepEqual(result.steps[0].toolResults[0].output, { city: "Weather in Paris?", sky: "clear" });
  assert.equal(result.text, 'Tool results: get_weather={"city":"Weather in Paris?","sky":"clear"}');
  assert.equal(result.finishReason, "stop");

  // With the provider's default (store: true) the SDK refers to the stored reasoning item by id
  // instead of resending it: the gateway must find the signature behind that reference.
  assert.equal(sent.length, 2);
  const reference = sent[1].body.input.find((item) => item.type === "item_reference");
  assert.match(reference?.id ?? "", /^rs_/);
  await assertSignedRoundTrip("Weather in Paris?");
});

test("the same round trip with store: false carries the signature as encrypted reasoning", async () => {
  sent = [];
  const result = await generateText({
    model: openai(GEMINI3),
    prompt: "Weather in Rome?",
    tools: { get_weather: weatherTool() },
    stopWhen: stepCountIs(2),
    providerOptions: { openai: { store: false, include: ["reasoning.encrypted_content"] } },
  });
  assert.equal(result.text, 'Tool results: get_weather={"city":"Weather in Rome?","sky":"clear"}');
  const reasoning = sent[1].body.input.find((item) => item.type === "reasoning");
  assert.equal(reasoning?.encrypted_content, "mock-sig:get_weather");
  await assertSignedRoundTrip("Weather in Rome?");
});

test("streamText with a tool over two steps", async () => {
  const errors = [];
  const result = streamText({
    model: openai(GEMINI3),
    prompt: "Weather in Oslo?",
    tools: { get_weather: weatherTool() },
    stopWhen: stepCountIs(2),
    onError: ({ error }) => errors.push(error),
  });
  const kinds = [];
  for await (const part of result.fullStream) kinds.push(part.type);
  assert.deepEqual(errors, []);
  assert.ok(kinds.includes("tool-call") && kinds.includes("tool-result"), kinds.join(","));
  assert.equal(await result.text, 'Tool results: get_weather={"city":"Weather in Oslo?","sky":"clear"}');
  assert.equal((await result.steps).length, 2);
  assert.equal(await result.finishReason, "stop");
  await assertSignedRoundTrip("Weather in Oslo?");
});

const WeatherSchema = z.object({ city: z.string(), temperature: z.number().int() });

test("generateObject fills a zod schema through responseJsonSchema", async () => {
  const result = await generateObject({ model: openai(FLASH), prompt: "Weather in Paris", schema: WeatherSchema });
  // The mock fills strings with the prompt and numbers with 1.
  assert.deepEqual(result.object, { city: "Weather in Paris", temperature: 1 });
  assert.equal(result.finishReason, "stop");
  const [body] = await lastBodies(1);
  assert.equal(body.generationConfig.responseMimeType, "application/json");
  assert.deepEqual(body.generationConfig.responseJsonSchema.required, ["city", "temperature"]);
  assert.equal(body.generationConfig.responseJsonSchema.properties.temperature.type, "integer");
});

test("generateText with Output.object (generateObject's successor)", async () => {
  const result = await generateText({
    model: openai(FLASH),
    prompt: "Weather in Lyon",
    output: Output.object({ schema: WeatherSchema }),
  });
  assert.deepEqual(result.output, { city: "Weather in Lyon", temperature: 1 });
});

test("openai.chat(model) speaks chat completions", async () => {
  sent = [];
  const result = await generateText({ model: openai.chat(FLASH), prompt: "Hello chat" });
  assert.deepEqual(sent.map((request) => new URL(request.url).pathname), ["/v1/chat/completions"]);
  assert.equal(result.text, "Echo: Hello chat");
  assert.equal(result.finishReason, "stop");
  assert.equal(result.usage.inputTokens, 2);
  assert.equal(result.usage.outputTokens, 8);
  assert.equal(result.usage.outputTokenDetails.reasoningTokens, 5);
});
