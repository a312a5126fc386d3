-- Stored Responses (`/v1/responses` with `store`, OpenAI's default): what
-- `previous_response_id`, `item_reference`, `GET /v1/responses/{id}` and its `input_items` read.
-- Kept for the request-log retention period; owned by the client key that created them.
CREATE TABLE responses (
    id TEXT PRIMARY KEY,
    client_key_id INTEGER,
    created_at_ms INTEGER NOT NULL,
    previous_response_id TEXT,
    -- The response object (JSON), thought signatures included.
    response TEXT NOT NULL,
    -- The request's input items (JSON array), references resolved, ids assigned.
    input_items TEXT NOT NULL
);
CREATE INDEX responses_by_age ON responses (created_at_ms);

-- Output items by id, for `item_reference` (the Vercel AI SDK's default history).
CREATE TABLE response_items (
    id TEXT PRIMARY KEY,
    response_id TEXT NOT NULL,
    client_key_id INTEGER,
    item TEXT NOT NULL
);
CREATE INDEX response_items_by_response ON response_items (response_id);
