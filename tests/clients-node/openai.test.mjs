// The official `openai` npm package's Responses API (create, create with stream: true, retrieve)
// with only its base URL swapped, against the gateway and the mock Gemini API.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import { CLIENT_KEY, outsideLoopback, startGatewayAndMock } from "./harness.mjs";

const FLASH = "gemini-2.5-flash";

let env;
let client;

before(async () => {
  env = await startGatewayAndMock();
  client = new OpenAI({ apiKey: CLIENT_KEY, baseURL: `${env.gateway.url}/v1`, maxRetries: 0 });
});

after(async () => {
  await env?.stop();
  assert.deepEqual(outsideLoopback(), [], "something tried to reach beyond loopback");
});

test("responses.create answers in OpenAI's shape, and responses.retrieve gives it back", async () => {
  const response = await client.responses.create({
    model: FLASH,
    input: "Hello there",
    instructions: "Be brief.",
    metadata: { team: "node" },
  });
  assert.match(response.id, /^resp_/);
  assert.equal(response.object, "response");
  assert.equal(response.status, "completed");
  assert.equal(response.model, FLASH);
  assert.equal(response.output_text, "Echo: Hello there");
  assert.equal(response.output.length, 1);
  const [message] = response.output;
  assert.equal(message.type, "message");
  assert.match(message.id, /^msg_/);
  assert.deepEqual(message.content.map((part) => [part.type, part.text]), [["output_text", "Echo: Hello there"]]);
  assert.deepEqual(response.metadata, { team: "node" });
  assert.equal(response.usage.input_tokens, 2);
  assert.equal(response.usage.output_tokens, 8);
  assert.equal(response.usage.output_tokens_details.reasoning_tokens, 5);
  assert.equal(response.usage.total_tokens, 10);
  const [body] = (await env.generateBodies()).slice(-1);
  assert.deepEqual(body.systemInstruction, { parts: [{ text: "Be brief." }] });

  const again = await client.responses.retrieve(response.id);
  assert.equal(again.id, response.id);
  assert.equal(again.output_text, "Echo: Hello there");
  assert.equal(again.output[0].id, message.id);
  assert.deepEqual(again.usage, response.usage);
  assert.deepEqual(again.metadata, { team: "node" });
});

test("responses.create with stream: true follows OpenAI's event sequence; the result is stored", async () => {
  const stream = await client.responses.create({ model: FLASH, input: "Tell me a story please", stream: true });
  const events = [];
  for await (const event of stream) events.push(event);
  const kinds = events.map((event) => event.type);
  assert.deepEqual(kinds.slice(0, 4), [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
  ]);
  assert.deepEqual(kinds.slice(-4), [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
  ]);
  const deltas = events.filter((event) => event.type === "response.output_text.delta").map((event) => event.delta);
  assert.ok(deltas.length >= 2, `one delta per upstream chunk, got ${JSON.stringify(deltas)}`);
  assert.equal(deltas.join(""), "Echo: Tell me a story please");
  assert.deepEqual(events.map((event) => event.sequence_number), events.map((_, index) => index));
  const completed = events.at(-1).response;
  assert.equal(completed.status, "completed");
  // output_text is the SDK's own convenience on whole responses, not a field of the event.
  assert.equal(completed.output[0].content[0].text, "Echo: Tell me a story please");
  assert.equal(completed.usage.output_tokens, 6 + 5);

  const again = await client.responses.retrieve(completed.id);
  assert.equal(again.output_text, "Echo: Tell me a story please");
  assert.deepEqual(again.usage, completed.usage);
});

test("responses.retrieve of an unknown id is a 404 NotFoundError", async () => {
  await assert.rejects(
    client.responses.retrieve("resp_doesnotexist0000000000000000000000000000000000"),
    (error) => error instanceof OpenAI.NotFoundError && error.status === 404,
  );
});
