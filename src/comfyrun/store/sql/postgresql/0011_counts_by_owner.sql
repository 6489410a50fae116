-- An API key's jobs counted per status without reading its history's rows (JobStore.counts
-- with an owner: RunPod's /health, /stats and ComfyUI's queue size for a key), and its oldest
-- queued job found at once (oldest_queued_at: /api/v2/stats).
CREATE INDEX jobs_owner_status ON jobs (owner, status, created_at) WHERE owner IS NOT NULL;
