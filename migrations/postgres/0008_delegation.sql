-- 委派 (DESIGN §11): a delegated task remembers its owner (who delegated it and decides once the
-- delegate's opinion is back) and where the delegation stands: none, pending, resolved.
ALTER TABLE tasks ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN delegation_state TEXT NOT NULL DEFAULT 'none';
