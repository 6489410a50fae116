-- Placeholder: migration 0008 belongs to another branch (the claim's `type` filter). Migrations
-- must be numbered 1..n, so this branch holds the number with a no-op until that one is merged;
-- the merge replaces this file with it.
SELECT 1;
