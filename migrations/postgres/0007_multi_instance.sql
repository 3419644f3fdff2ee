-- Multi-instance user tasks (会签 / 或签 / 票签 / 顺序会签, DESIGN §11): the activations being
-- signed, as JSON (activity id -> signers, votes, how many are open), beside the join state.
ALTER TABLE instances ADD COLUMN multi TEXT NOT NULL DEFAULT '{}';
