-- What happened upstream for each request: calls made and the last trouble met (an empty
-- answer retried, a capacity or quota failure, a key error), also when a later key succeeded.
ALTER TABLE request_logs ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE request_logs ADD COLUMN upstream_error TEXT;

-- Limits Google named for a project and model (QuotaFailure.quotaValue); NULL where nothing
-- was learned. Believed for a day after learned_at_ms.
CREATE TABLE learned_limits (
    project       TEXT   NOT NULL,
    model         TEXT   NOT NULL,
    rpm           BIGINT,
    rpd           BIGINT,
    tpm           BIGINT,
    learned_at_ms BIGINT NOT NULL,
    PRIMARY KEY (project, model)
);
