-- An API key's jobs counted per status without reading its history's rows (JobStore.counts
-- with an owner: RunPod's /health, /stats and ComfyUI's queue size for a key).
CREATE INDEX jobs_owner_status ON jobs (owner, status) WHERE owner IS NOT NULL;
